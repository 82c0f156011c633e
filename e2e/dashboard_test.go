package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/alignet/alignet/internal/offline"
	"github.com/alignet/alignet/internal/testenv"
)

// dashboardCheckJS reports, for every chart of the dashboard, how many
// points the page says it plotted, whether uPlot drew, and how many pixels
// of its canvas are neither transparent nor white.
const dashboardCheckJS = `JSON.stringify([...document.querySelectorAll('.chart')].map(c => {
  const cv = c.querySelector('canvas');
  let ink = 0;
  if (cv && cv.width > 0 && cv.height > 0) {
    const px = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i+3] > 0 && (px[i] < 240 || px[i+1] < 240 || px[i+2] < 240)) ink++;
    }
  }
  return {id: c.id, points: Number(c.dataset.points || 0), drawn: c.dataset.drawn || '', ink: ink};
}))`

// TestDashboardTHINGS opens the built-in dashboard in headless Chromium on
// a study fed THINGS judgments (Hebart et al. 2023, CC-BY 4.0) through the
// whole stack: the learner refits a teacher, the trainer distils a word2vec
// student, the drift monitor snapshots every second. Every chart must
// report plotted points and show ink on its canvas; the screenshot is kept
// in the test's artifact directory (go test -artifacts).
func TestDashboardTHINGS(t *testing.T) {
	e := setup(t)
	chromiumPath(t) // skip before the expensive part
	src := testenv.SharedData(t, "things")
	s := newStack(t, e, e.brokers)
	srv := s.startEnv("api,persister,learner,trainer", "ALIGNET_KAFKA_TRIPLETS_TOPIC="+s.topic+".triplets",
		"ALIGNET_LEARNER_GROUP="+s.topic+".learner", "ALIGNET_DRIFT_INTERVAL=1s")
	waitReady(t, srv.url())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(e.bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("alignet %s: %v\n%s", strings.Join(args, " "), err, tail(string(out), 2000))
		}
	}
	// 400 THINGS judgments create the study; a quick refit recipe (hard
	// targets, one λ) keeps the test short. Then 4,000: the learner's
	// first refit runs at 500 (its default) and stores a version scored
	// on the held-out share.
	run("import", "things", "--dir", src, "--limit", "400", "--server", srv.url(), "--key", s.adminKey)
	s.setSettings("things", map[string]any{"learner": map[string]any{"distill": false, "lambdas": []float64{0.1}, "max_iter": 30}})
	run("import", "things", "--dir", src, "--limit", "4000", "--server", srv.url(), "--key", s.adminKey)
	s.waitCount("things", 4000, 2*time.Minute)
	// A version of the teacher once the learner has seen them all: the
	// trainer regenerates on it whether or not the learner's own refit
	// has landed (a refit that is not clearly better is kept out).
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var st struct {
			JudgmentsSeen int64 `json:"judgments_seen"`
		}
		s.api(srv.url(), "GET", "/v1/studies/things/teacher", nil, &st, 200)
		if st.JudgmentsSeen >= 4000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the learner saw %d of 4000 judgments after 2m", st.JudgmentsSeen)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.api(srv.url(), "POST", "/v1/studies/things/teacher/versions", nil, nil, 201)
	run("import", "embeddings", "--space", "word2vec", "--npy", filepath.Join(src, "word2vec.npy"), "--ids", filepath.Join(src, "concepts.txt"),
		"--server", srv.url(), "--key", s.adminKey)
	concepts, err := offline.ReadIDs(filepath.Join(src, "concepts.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s.setTrainer("things", map[string]any{"triplets": 20000, "min_interval": "1s"})
	s.api(srv.url(), "PUT", "/v1/studies/things/pool", map[string]any{"space": "clip-vit-b32", "items": concepts}, nil, 200)
	s.api(srv.url(), "POST", "/v1/studies/things/students", map[string]any{"id": "w2v", "space": "word2vec"}, nil, 201)
	s.waitStudent(srv.url(), "things", "w2v", 1, 2*time.Minute)
	// More judgments after the student's promotion: its fresh accuracy.
	run("import", "things", "--dir", src, "--limit", "8000", "--server", srv.url(), "--key", s.adminKey)
	s.waitCount("things", 8000, 2*time.Minute)

	// Wait for snapshots that score the teacher and the student.
	deadline = time.Now().Add(time.Minute)
	for {
		var d struct {
			Current *struct {
				Signals []struct {
					Name    string
					Student string
					Value   *float64
				}
			}
			History []any
		}
		s.api(srv.url(), "GET", "/v1/studies/things/drift", nil, &d, 200)
		scored := 0
		if d.Current != nil {
			for _, sig := range d.Current.Signals {
				if sig.Value != nil && (sig.Name == "teacher_accuracy" || sig.Name == "student_accuracy") {
					scored++
				}
			}
		}
		if scored == 2 && len(d.History) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no drift snapshot scores the teacher and the student: %+v", d)
		}
		time.Sleep(500 * time.Millisecond)
	}

	var key struct{ Key string }
	s.api(srv.url(), "POST", "/v1/keys", map[string]any{"name": "dashboard", "scopes": []string{"read"}}, &key, http.StatusCreated)
	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1400, 1000), chromedp.Navigate(srv.url()+"/dashboard/things#k="+key.Key)); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(pctx, chromedp.Poll[bool](`document.body.dataset.loaded === '1' &&
		[...document.querySelectorAll('.chart')].every(c => c.dataset.drawn === '1' || c.dataset.drawn === 'empty')`)); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText.slice(0, 2000)`))
		t.Fatalf("the dashboard did not draw: %v\n%s", err, body)
	}
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](dashboardCheckJS))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.ArtifactDir(), "dashboard-things.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s; charts %s", path, raw)
	var charts []struct {
		ID     string
		Points int
		Drawn  string
		Ink    int
	}
	if err := jsonUnmarshal(raw, &charts); err != nil {
		t.Fatal(err)
	}
	if len(charts) != 7 {
		t.Fatalf("%d charts, want 7: %s", len(charts), raw)
	}
	for _, c := range charts {
		if c.Points == 0 || c.Drawn != "1" || c.Ink < 200 {
			t.Errorf("chart %s drew no data: %d points, drawn %q, %d inked pixels", c.ID, c.Points, c.Drawn, c.Ink)
		}
	}
	// The key left the address bar; the page sends no Referer.
	if href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`)); err != nil || strings.Contains(href, key.Key) {
		t.Errorf("address bar %q (%v) still holds the key", href, err)
	}
}
