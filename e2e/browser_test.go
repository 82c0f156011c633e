package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browserTrials is the trial budget of the browser tests' study.
const browserTrials = 20

// browserStudy is the study the browser tests run, with its stimuli.
type browserStudy struct {
	dev     *devServer
	study   string
	items   []string
	key     string                    // bound to study
	display map[string]map[string]any // what GET /v1/items/{item} says pages show
}

// seedBrowserStudy creates an odd-one-out study over shoe pictures (the
// Zappos images of the shared data when present, drawn squares otherwise)
// with labels and random embeddings (the teacher until the learner has
// one), its page texts, a budget of browserTrials, generic sessions sent
// to doneURL on completion, and a key bound to it.
func seedBrowserStudy(t *testing.T, d *devServer, study, doneURL string) *browserStudy {
	t.Helper()
	bs := &browserStudy{dev: d, study: study}
	rng := rand.New(rand.NewPCG(7, 11))
	type embedding struct {
		ID     string    `json:"id"`
		Vector []float32 `json:"vector"`
	}
	var embs []embedding
	for i := range 12 {
		id := fmt.Sprintf("zappos-%d", i)
		bs.items = append(bs.items, id)
		v := make([]float32, 4)
		for k := range v {
			v[k] = float32(rng.NormFloat64())
		}
		embs = append(embs, embedding{ID: id, Vector: v})
	}
	d.call(t, "PUT", "/v1/spaces/shoes", d.adminKey, map[string]int{"dim": 4}, http.StatusCreated, nil)
	d.call(t, "POST", "/v1/spaces/shoes/embeddings", d.adminKey, map[string]any{"items": embs}, http.StatusOK, nil)
	d.call(t, "POST", "/v1/studies", d.adminKey, map[string]string{"id": study, "task": "odd-one-out", "space": "shoes"}, http.StatusCreated, nil)
	d.patchSettings(t, study, map[string]any{
		"page": map[string]string{
			"title":        "Which shoe is the odd one out?",
			"consent":      "This is a test study.\n\nBy clicking I agree you consent to take part.",
			"instructions": "Tap the shoe that fits least with the other two.",
		},
		"queries": map[string]any{
			"trials":     browserTrials,
			"completion": map[string]string{"redirect": doneURL + "?cc={code}&session={session}"},
		},
	})
	var labels []map[string]string
	zappos := filepath.Join("..", "..", "shared", "data", "zappos", "images")
	for i, id := range bs.items {
		pic, err := os.ReadFile(filepath.Join(zappos, fmt.Sprintf("%d.jpg", i)))
		if err != nil {
			pic = squarePNG(t, color.RGBA{uint8(20 * i), 90, 160, 255})
		}
		d.call(t, "PUT", "/v1/items/"+id+"/image", d.adminKey, pic, http.StatusOK, nil)
		labels = append(labels, map[string]string{"id": id, "label": fmt.Sprintf("Shoe %d", i+1)})
	}
	d.call(t, "POST", "/v1/items", d.adminKey, map[string]any{"items": labels}, http.StatusOK, nil)
	d.call(t, "POST", "/v1/studies/"+study+"/items", d.adminKey, map[string]any{"items": bs.items}, http.StatusOK, nil)
	bs.key = d.boundKey(t, study)
	bs.display = map[string]map[string]any{}
	for _, it := range bs.items {
		var b struct {
			Display map[string]any `json:"display"`
		}
		d.call(t, "GET", "/v1/items/"+it, d.adminKey, nil, http.StatusOK, &b)
		if b.Display["label"] == nil || b.Display["image"] == nil {
			t.Fatalf("item %s: display %v, want a label and an image", it, b.Display)
		}
		bs.display[it] = b.Display
	}
	return bs
}

func squarePNG(t *testing.T, c color.Color) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 96, 96))
	for x := range 96 {
		for y := range 96 {
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// doneServer stands for a lab's completion page.
type doneServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits []string
}

func newDoneServer(t *testing.T) *doneServer {
	d := &doneServer{}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.hits = append(d.hits, r.URL.RequestURI())
		d.mu.Unlock()
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<!doctype html><title>done</title><p>Submitted.</p>"))
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *doneServer) hit(uri string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Contains(d.hits, uri)
}

// mturkSite answers a tab's requests to MTurk's submit hosts (the only
// ones dev redirects MTurk participants to) in MTurk's place, and records
// them.
type mturkSite struct {
	mu   sync.Mutex
	hits []string
}

func interceptMTurk(t *testing.T, ctx context.Context) *mturkSite {
	t.Helper()
	m := &mturkSite{}
	page := []byte("<!doctype html><title>mturk</title><p>Submitted.</p>")
	if err := chromedp.Listen(ctx, func(ev any) {
		e, ok := ev.(*fetch.EventRequestPaused)
		if !ok {
			return
		}
		m.mu.Lock()
		m.hits = append(m.hits, e.Request.URL)
		m.mu.Unlock()
		go func() { // the listener must not run commands itself
			_, _ = chromedp.Call(ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{RequestID: e.RequestID, ResponseCode: http.StatusOK,
				ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "text/html"}}, Body: page})
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{
		{URLPattern: "https://www.mturk.com/*"}, {URLPattern: "https://workersandbox.mturk.com/*"},
	}}); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *mturkSite) hit(u string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Contains(m.hits, u)
}

// pageState is what the participant page shows now.
type pageState struct {
	State   string `json:"state"`
	Query   string `json:"query"`
	Stimuli int    `json:"stimuli"`
	Primary string `json:"primary"`
	Href    string `json:"href"`
	Error   string `json:"error"`
}

const pageStateJS = `(() => {
	const q = document.querySelector('[data-query]');
	const enabled = [...document.querySelectorAll('button.stim, button.alignet-stim')].filter(b => !b.disabled);
	const primary = [...document.querySelectorAll('button.primary, button.jspsych-btn')].find(b => !b.disabled);
	const err = document.querySelector('.error');
	return {state: document.body.dataset.state || '', query: q ? q.dataset.query : '',
		stimuli: enabled.length, primary: primary ? primary.textContent : '', href: location.href,
		error: err ? err.textContent : ''};
})()`

// stimuliCheck reports whether the three stimuli of the trial on screen
// are inside the viewport, large enough to tap, loaded, and on top (a
// click at their centre reaches them).
const stimuliCheckJS = `(() => {
	const els = [...document.querySelectorAll('.stim, .alignet-stim')];
	const vw = window.innerWidth, vh = window.innerHeight;
	const out = els.map(el => {
		const r = el.getBoundingClientRect();
		const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
		const img = el.querySelector('img');
		return {w: r.width, h: r.height, inside: r.left >= 0 && r.top >= 0 && r.right <= vw && r.bottom <= vh,
			onTop: !!hit && el.contains(hit), loaded: !!img && img.complete && img.naturalWidth > 0};
	});
	return JSON.stringify({vw, vh, stimuli: out});
})()`

type stimuliReport struct {
	VW, VH  float64
	Stimuli []struct {
		W, H                  float64
		Inside, OnTop, Loaded bool
	}
}

// checkTrialOnScreen asserts that the trial shows three visible, clickable
// stimuli and saves a screenshot as name in the test's artifact dir.
func checkTrialOnScreen(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](stimuliCheckJS))
	if err != nil {
		t.Fatal(err)
	}
	var rep stimuliReport
	if err := jsonUnmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Stimuli) != 3 {
		t.Fatalf("%s: %d stimuli on screen, want 3: %s", name, len(rep.Stimuli), raw)
	}
	for i, s := range rep.Stimuli {
		if !s.Inside || !s.OnTop || !s.Loaded || s.W < 60 || s.H < 60 {
			t.Fatalf("%s: stimulus %d is not fully visible, loaded and clickable in a %gx%g viewport: %s", name, i, rep.VW, rep.VH, raw)
		}
	}
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%gx%g viewport)", path, rep.VW, rep.VH)
}

// participant clicks through a session in one tab.
type participant struct {
	t    *testing.T
	ctx  context.Context
	done string // the start of the URL of the completion site
	// before and after run around the answer of trial n (from 1).
	before, after func(n int)
}

// run loads pageURL, agrees, starts, answers every trial (choosing the
// stimulus n%3 on trial n) and returns the number of trials answered and
// the URL of the page once it has landed on the completion site.
func (p *participant) run(pageURL string) (int, string) {
	t := p.t
	var mu sync.Mutex
	var console []string
	if err := chromedp.Listen(p.ctx, func(ev any) {
		var line string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			for _, a := range ev.Args {
				line += " " + string(a.Value) + a.Description
			}
			line = string(ev.Type) + ":" + line
		case *runtime.EventExceptionThrown:
			line = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				line += " " + ev.ExceptionDetails.Exception.Description
			}
		default:
			return
		}
		mu.Lock()
		console = append(console, line)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("browser console:\n%s", strings.Join(console, "\n"))
			mu.Unlock()
		}
	}()
	if err := chromedp.Do(p.ctx, chromedp.Navigate(pageURL)); err != nil {
		t.Fatal(err)
	}
	trials, last := 0, ""
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		st, err := chromedp.Run(p.ctx, chromedp.Evaluate[pageState](pageStateJS))
		if err != nil {
			// A navigation (reload, completion) can end an evaluation.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		switch {
		case strings.HasPrefix(st.Href, p.done):
			return trials, st.Href
		case st.Error != "":
			t.Fatalf("the page shows an error after %d trials: %s", trials, st.Error)
		case st.Primary != "":
			if err := chromedp.Do(p.ctx, chromedp.Click(chromedp.CSS("button.primary:not(:disabled), button.jspsych-btn:not(:disabled)"))); err != nil {
				t.Fatalf("click %q: %v", st.Primary, err)
			}
		case st.Stimuli > 0 && st.Query != last:
			trials++
			last = st.Query
			if p.before != nil {
				p.before(trials)
			}
			sel := fmt.Sprintf("(() => [...document.querySelectorAll('button.stim, button.alignet-stim')][%d])()", trials%st.Stimuli)
			if err := chromedp.Do(p.ctx, chromedp.Click(chromedp.JSPath(sel))); err != nil {
				t.Fatalf("trial %d: click: %v", trials, err)
			}
			if p.after != nil {
				p.after(trials)
			}
			continue
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, _ := chromedp.Run(p.ctx, chromedp.Evaluate[pageState](pageStateJS))
	body, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`typeof AlignetJsPsych + " " + typeof initJsPsych + " " + document.scripts.length + " " + document.body.innerHTML.slice(0, 2000)`))
	t.Fatalf("the page did not reach %s after %d trials; it shows %+v:\n%s", p.done, trials, st, body)
	return 0, ""
}

// checkStored waits for the persister and the query log and asserts
// that every query of session was answered by exactly one stored
// judgment, matching what was served with the display data of its items,
// carrying the kind dev logged for the query, and that nothing else of
// the session was stored. It returns the number of answers of each kind.
func checkStored(t *testing.T, bs *browserStudy, p *proxy, session string, trials int) map[string]int {
	t.Helper()
	var mine []storedJudgment
	var logged map[string]loggedQuery
	deadline := time.Now().Add(30 * time.Second)
	for {
		mine = mine[:0]
		for _, j := range bs.dev.judgmentsOf(t, bs.study) {
			p.mu.Lock()
			sq, ok := p.served[j.QueryID]
			p.mu.Unlock()
			if ok && sq.Session == session {
				mine = append(mine, j)
			}
		}
		logged = bs.dev.queryLog(t, bs.study)
		inLog := 0
		for _, j := range mine {
			if _, ok := logged[j.QueryID]; ok {
				inLog++
			}
		}
		if len(mine) >= trials && inLog == len(mine) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	ids, queries, kinds := map[string]bool{}, map[string]bool{}, map[string]int{}
	for _, j := range mine {
		p.mu.Lock()
		sq := p.served[j.QueryID]
		p.mu.Unlock()
		if ids[j.ID] || queries[j.QueryID] {
			t.Errorf("session %s: judgment %s (query %s) stored twice", session, j.ID, j.QueryID)
		}
		ids[j.ID], queries[j.QueryID] = true, true
		if j.Items != sq.Items || !slices.Contains(sq.Items[:], j.Odd) || j.RTMillis <= 0 {
			t.Errorf("session %s: stored %+v for query %s served as %v", session, j, j.QueryID, sq.Items)
		}
		for k, it := range sq.Items {
			if !reflect.DeepEqual(sq.Display[k], bs.display[it]) {
				t.Errorf("session %s: query %s showed %s as %v, want its display data %v", session, j.QueryID, it, sq.Display[k], bs.display[it])
			}
		}
		lq, ok := logged[j.QueryID]
		switch {
		case !ok:
			t.Errorf("session %s: query %s is not in the query log", session, j.QueryID)
		case lq.Session != session || lq.Items != sq.Items:
			t.Errorf("session %s: query %s logged as %+v, served as %v", session, j.QueryID, lq, sq.Items)
		case j.QueryKind != lq.Kind:
			t.Errorf("session %s: judgment %s carries query kind %q, dev served its query as %q", session, j.ID, j.QueryKind, lq.Kind)
		}
		kinds[j.QueryKind]++
	}
	if len(mine) != trials || len(queries) != trials {
		t.Fatalf("session %s: %d judgments stored for %d queries, want %d answered once each", session, len(mine), len(queries), trials)
	}
	return kinds
}

// checkCompletion asserts that the page landed on the completion URL dev
// gives the participant's session, that the completion site was asked
// for it, and that it is the URL want builds from the session's
// completion code.
func checkCompletion(t *testing.T, bs *browserStudy, session, href string, hit func(string) bool, want func(code string) string) {
	t.Helper()
	code, redirect := bs.dev.completionOf(t, bs.study, session)
	if href != redirect || redirect != want(code) {
		t.Fatalf("session %s: the page landed on %s; dev redirects to %s, want %s", session, href, redirect, want(code))
	}
	if !hit(href) {
		t.Fatalf("session %s: the completion site was never asked for %s", session, href)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// TestParticipantPagesInBrowser runs the built-in page in headless
// Chromium against dev's real sessions and query selection: a desktop
// participant on a clean network, then a phone participant (MTurk) whose
// posts are dropped, whose answers' 202s are lost, who goes offline, and
// who reloads the page with answers still unsent; then a jsPsych
// experiment with the plugin, hosted on another origin (CORS), on a phone
// with a reload. Every answer is stored exactly once with its query id
// and the kind dev served the query as, each page lands on the completion
// URL dev gives its session, and a returning page gets its session back.
// Finally a page of an origin that is not allowed cannot call the API.
func TestParticipantPagesInBrowser(t *testing.T) {
	e := setup(t)
	browser := newBrowser(t)
	lab := newLabSite(t)
	other := newLabSite(t)
	dev := startDev(t, e, lab.srv.URL)
	done := newDoneServer(t)
	bs := seedBrowserStudy(t, dev, "shoes", done.srv.URL+"/generic")
	const trials = browserTrials
	px := newProxy(t, dev.base)
	kinds := map[string]int{}
	addKinds := func(m map[string]int) {
		for k, n := range m {
			kinds[k] += n
		}
	}
	t.Logf("screenshots go to %s (keep them with go test -artifacts -outputdir DIR)", t.ArtifactDir())

	t.Run("desktop", func(t *testing.T) {
		ctx, cancel := chromedp.NewContext(browser)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
			t.Fatal(err)
		}
		q := url.Values{"k": {bs.key}, "worker": {"desk-1"}}
		p := &participant{t: t, ctx: ctx, done: done.srv.URL + "/generic?"}
		p.before = func(n int) {
			if n == 1 {
				checkTrialOnScreen(t, ctx, "desktop-trial.png")
			}
		}
		n, href := p.run(px.url() + "/run/" + bs.study + "?" + q.Encode())
		if n != trials {
			t.Fatalf("answered %d trials, want %d", n, trials)
		}
		sess := px.sessionOf(t, "desk-1")
		addKinds(checkStored(t, bs, px, sess, trials))
		checkCompletion(t, bs, sess, href, func(u string) bool { return done.hit(strings.TrimPrefix(u, done.srv.URL)) },
			func(code string) string { return done.srv.URL + "/generic?cc=" + code + "&session=" + sess })
	})

	t.Run("phone flaky reload", func(t *testing.T) {
		ctx, cancel := chromedp.NewContext(browser)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateTouch)); err != nil {
			t.Fatal(err)
		}
		mturk := interceptMTurk(t, ctx)
		px.mu.Lock()
		base := px.posts
		px.mu.Unlock()
		px.setFaults(func(n int) fault {
			switch n - base {
			case 2, 9:
				return faultDrop
			case 4, 6:
				return faultLoseAnswer
			}
			return faultNone
		})
		defer px.setFaults(nil)
		var release func()
		p := &participant{t: t, ctx: ctx, done: "https://www.mturk.com/"}
		p.before = func(n int) {
			switch n {
			case 1:
				checkTrialOnScreen(t, ctx, "phone-trial.png")
			case 11:
				px.setOffline(true)
			case 16:
				release = px.holdPosts()
			}
		}
		p.after = func(n int) {
			switch n {
			case 11:
				time.AfterFunc(1500*time.Millisecond, func() { px.setOffline(false) })
			case 17:
				// Two answers are unsent; the page is reloaded.
				if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
					t.Fatalf("reload: %v", err)
				}
				release()
			}
		}
		q := url.Values{"k": {bs.key}, "workerId": {"W-PHONE"}, "assignmentId": {"A-1"}, "hitId": {"H-1"}, "turkSubmitTo": {"https://www.mturk.com"}}
		n, href := p.run(px.url() + "/run/" + bs.study + "?" + q.Encode())
		if n < trials {
			t.Fatalf("answered %d trials, want at least %d", n, trials)
		}
		sess := px.sessionOf(t, "W-PHONE") // the reloaded page got its session back
		addKinds(checkStored(t, bs, px, sess, trials))
		checkCompletion(t, bs, sess, href, mturk.hit,
			func(code string) string {
				return "https://www.mturk.com/mturk/externalSubmit?assignmentId=A-1&completion_code=" + code
			})
		px.mu.Lock()
		posts := px.posts - base
		px.mu.Unlock()
		if posts < trials+4 {
			t.Fatalf("%d judgment posts for %d answers: the four faulted posts were not retried", posts, trials)
		}
		t.Logf("%d judgment posts for %d answers (4 faulted, an offline spell, a reload with 2 unsent)", posts, trials)
		// Nothing of the first participant was stored twice meanwhile.
		checkStored(t, bs, px, px.sessionOf(t, "desk-1"), trials)
		if got := len(bs.dev.judgmentsOf(t, bs.study)); got != 2*trials {
			t.Fatalf("%d judgments stored in all, want %d", got, 2*trials)
		}
	})

	t.Run("jspsych plugin cross-origin", func(t *testing.T) {
		ctx, cancel := chromedp.NewContext(browser)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateTouch)); err != nil {
			t.Fatal(err)
		}
		mturk := interceptMTurk(t, ctx)
		px.mu.Lock()
		base := px.posts
		px.mu.Unlock()
		px.setFaults(func(n int) fault {
			switch n - base {
			case 3:
				return faultDrop
			case 5:
				return faultLoseAnswer
			}
			return faultNone
		})
		defer px.setFaults(nil)
		var release func()
		p := &participant{t: t, ctx: ctx, done: "https://workersandbox.mturk.com/"}
		p.before = func(n int) {
			switch n {
			case 1:
				checkTrialOnScreen(t, ctx, "jspsych-phone-trial.png")
			case 9:
				release = px.holdPosts()
			}
		}
		p.after = func(n int) {
			if n == 10 {
				if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
					t.Fatalf("reload: %v", err)
				}
				release()
			}
		}
		q := url.Values{"server": {px.url()}, "k": {bs.key}, "study": {bs.study},
			"workerId": {"W-JSPSYCH"}, "assignmentId": {"A-2"}, "hitId": {"H-1"}, "turkSubmitTo": {"https://workersandbox.mturk.com"}}
		n, href := p.run(lab.srv.URL + "/experiment.html?" + q.Encode())
		if n < trials {
			t.Fatalf("answered %d trials, want at least %d", n, trials)
		}
		sess := px.sessionOf(t, "W-JSPSYCH")
		addKinds(checkStored(t, bs, px, sess, trials))
		checkCompletion(t, bs, sess, href, mturk.hit,
			func(code string) string {
				return "https://workersandbox.mturk.com/mturk/externalSubmit?assignmentId=A-2&completion_code=" + code
			})
		if got := len(bs.dev.judgmentsOf(t, bs.study)); got != 3*trials {
			t.Fatalf("%d judgments stored in all, want %d", got, 3*trials)
		}
	})

	t.Run("cors", func(t *testing.T) {
		ctx, cancel := chromedp.NewContext(browser)
		defer cancel()
		api := dev.base + "/v1/studies/" + bs.study + "/page"
		for _, c := range []struct {
			origin, want string
		}{{lab.srv.URL, "status 200"}, {other.srv.URL, "blocked: TypeError"}} {
			if err := chromedp.Do(ctx, chromedp.Navigate(c.origin+"/blank.html")); err != nil {
				t.Fatal(err)
			}
			got, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(corsFetchJS, api, bs.key), chromedp.EvalAwaitPromise))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("fetch from %s: %s, want %s", c.origin, got, c.want)
			}
		}
	})

	// The pages were served the study's mix, not one kind only.
	t.Logf("answers by query kind: %v", kinds)
	if !t.Failed() && len(kinds) < 2 {
		t.Errorf("every answer was to a query of kind %v: the mix was not served", kinds)
	}
}

// labSite serves a lab's own experiment page: web/example/index.html with
// jsPsych and the plugin's browser bundle, as a lab would host it.
type labSite struct {
	srv *httptest.Server
}

func newLabSite(t *testing.T) *labSite {
	t.Helper()
	web := filepath.Join("..", "web")
	files := map[string]string{
		"/experiment.html":                    filepath.Join(web, "example", "index.html"),
		"/jspsych/index.browser.min.js":       filepath.Join(web, "node_modules", "jspsych", "dist", "index.browser.min.js"),
		"/jspsych/jspsych.css":                filepath.Join(web, "node_modules", "jspsych", "css", "jspsych.css"),
		"/alignet/alignet-jspsych.browser.js": filepath.Join(web, "dist", "alignet-jspsych.browser.js"),
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			msg := fmt.Sprintf("%s is missing: run (cd web && npm ci && npm run build)", f)
			if os.Getenv("CI") == "true" {
				t.Fatal("CI=true: " + msg)
			}
			t.Skip(msg)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/blank.html" {
			_, _ = w.Write([]byte("<!doctype html><title>blank</title>"))
			return
		}
		f, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		b, err := os.ReadFile(f)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		http.ServeContent(w, r, filepath.Base(f), time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(srv.Close)
	return &labSite{srv: srv}
}

const corsFetchJS = `fetch(%q, {headers: {Authorization: "Bearer " + %q}}).then(r => "status " + r.status, e => "blocked: " + e.name)`
