package online

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/internal/testenv"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/npy"
	"github.com/alignet/alignet/stream"
)

// things is the THINGS data: concept ids, CLIP embeddings and the human
// triplets of triplets_train.txt in file order (subject in the fourth
// column).
type things struct {
	concepts []string
	x        []float32
	n, d     int
	ts       []learner.Triplet
	subjects []string
}

func loadThings(tb testing.TB) *things {
	tb.Helper()
	thingsDir := testenv.SharedData(tb, "things")
	th := &things{}
	f, err := os.Open(filepath.Join(thingsDir, "concepts.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		th.concepts = append(th.concepts, strings.TrimSpace(sc.Text()))
	}
	ef, err := os.Open(filepath.Join(thingsDir, "clip_vit_b32.npy"))
	if err != nil {
		tb.Fatal(err)
	}
	defer ef.Close()
	x, shape, err := npy.ReadFloat32(bufio.NewReader(ef))
	if err != nil {
		tb.Fatal(err)
	}
	th.x, th.n, th.d = x, shape[0], shape[1]
	tf, err := os.Open(filepath.Join(thingsDir, "triplets_train.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	defer tf.Close()
	sc = bufio.NewScanner(tf)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		var v [3]int32
		for a := range 3 {
			k, err := strconv.Atoi(fs[a])
			if err != nil {
				tb.Fatal(err)
			}
			v[a] = int32(k)
		}
		th.ts = append(th.ts, learner.Triplet{I: v[0], J: v[1], K: v[2]})
		th.subjects = append(th.subjects, fs[3])
	}
	if len(th.concepts) != th.n || len(th.ts) == 0 {
		tb.Fatalf("THINGS: %d concepts for %d embeddings, %d triplets", len(th.concepts), th.n, len(th.ts))
	}
	return th
}

// split returns the deterministic 90% of the file that is fed (every line
// but each tenth, in file order) and the other 10%, as in the README's
// offline figures.
func (th *things) split() (fed, other []int) {
	for i := range th.ts {
		if (i+1)%10 == 0 {
			other = append(other, i)
		} else {
			fed = append(fed, i)
		}
	}
	return fed, other
}

// judgment returns line i of the file as a judgment of study: the pair
// i, j shown first and k, the odd one, last.
func (th *things) judgment(study string, i int, now time.Time) alignet.Judgment {
	t := th.ts[i]
	return alignet.Judgment{
		ID: fmt.Sprintf("t%06d", i), Study: study, Task: alignet.TaskOddOneOut,
		Worker: "s" + th.subjects[i], RTMillis: 1000, ReceivedAt: now,
		Items: [3]string{th.concepts[t.I], th.concepts[t.J], th.concepts[t.K]},
		Odd:   th.concepts[t.K],
	}
}

// createThingsStudy stores the CLIP space (once) and a study over all
// concepts with the given settings.
func createThingsStudy(t testing.TB, d *db.DB, th *things, id, settings string) {
	t.Helper()
	ctx := context.Background()
	if _, created, err := d.PutSpace(ctx, "clip", th.d); err != nil {
		t.Fatal(err)
	} else if created {
		if _, err := d.UpsertEmbeddings(ctx, "clip", th.concepts, th.x); err != nil {
			t.Fatal(err)
		}
	}
	st := alignet.Study{ID: id, Task: alignet.TaskOddOneOut, Space: "clip"}
	var err error
	if st.Settings, err = alignet.DefaultStudySettings().Patch([]byte(settings)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.CreateStudy(ctx, st); err != nil {
		t.Fatal(err)
	}
	if _, err := d.AddStudyItems(ctx, id, th.concepts); err != nil {
		t.Fatal(err)
	}
}

// accuracyOn scores the stored teacher of a state on triplets of th.
func accuracyOn(th *things, st alignet.TeacherState, idx []int) float64 {
	t := modelfile.TeacherOf(st.Params)
	z := t.Transform(th.x, th.n)
	ts := make([]learner.Triplet, len(idx))
	for a, i := range idx {
		ts[a] = th.ts[i]
	}
	return learner.Accuracy(learner.TaskOddOneOut, z, t.P, ts)
}

// refitAll waits until Postgres holds n judgments of the "refit" study,
// requests a refit and waits until one has read all of them.
func refitAll(t *testing.T, d *db.DB, n int64) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, 5*time.Minute, "the persister to store everything", func() bool {
		c, err := d.CountJudgments(ctx, "refit")
		return err == nil && c == n
	})
	if err := d.RequestRefit(ctx, "refit"); err != nil {
		t.Fatal(err)
	}
	// A refit that does not predict the held-out judgments better than the
	// serving teacher is not swapped in; it still counts as the refit.
	waitFor(t, 30*time.Minute, "a refit of the whole record", func() bool {
		return state(t, d, "refit").LastRefitJudgments == n
	})
}

// converged waits until the stored state of study stopped changing: its
// idle steps are done.
func converged(t *testing.T, d *db.DB, study string) {
	t.Helper()
	var last time.Time
	stable := time.Now()
	waitFor(t, 10*time.Minute, study+" to converge", func() bool {
		st := state(t, d, study)
		if !st.UpdatedAt.Equal(last) {
			last, stable = st.UpdatedAt, time.Now()
		}
		return time.Since(stable) > 3*time.Second
	})
}

// TestTHINGSThroughTheStream feeds 90% of the THINGS triplets, in file
// order and in growing chunks, into a real topic (as the API would: one
// message per batch, keyed by study) for two studies: one with the
// default refits, one that only ever takes online steps. A persister
// stores them, as in production. At each chunk boundary both stored
// teachers are scored on the other 10% of the file (the learning curves);
// at the end the refitted teacher must reach 57% (parity with the offline
// fit) and the online-only teacher must come within 1.5 points of it.
func TestTHINGSThroughTheStream(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("heavy THINGS proof (minutes); run without -race and -short")
	}
	th := loadThings(t)
	brokers := realBrokers(t)
	d := newDB(t)
	topic := newTopic(t, brokers, 2)
	// Distillation is tested on its own; the parity figure is the hard fit.
	createThingsStudy(t, d, th, "refit", `{"learner":{"distill":false}}`)
	createThingsStudy(t, d, th, "online", `{"learner":{"refits":false}}`)
	pers, err := stream.NewPersister(stream.PersisterConfig{
		Brokers: brokers, Topic: topic, GroupID: uniqueName(t, "p"), Logger: testLogger(t),
	}, d)
	if err != nil {
		t.Fatal(err)
	}
	pctx, pstop := context.WithCancel(context.Background())
	pdone := make(chan error, 1)
	go func() { pdone <- pers.Run(pctx) }()
	t.Cleanup(func() { pstop(); <-pdone })
	run := startLearner(t, Config{Brokers: brokers, Topic: topic, Group: uniqueName(t, "g"), RefitWorkers: 2, IdleShare: 1}, d)

	// ALIGNET_THINGS_SETTLE=1 settles both teachers at every chunk (a
	// refit of everything so far, the online teacher's idle steps), for
	// the learning curves of the closing note; it takes far longer.
	settle := os.Getenv("ALIGNET_THINGS_SETTLE") != ""
	fed, other := th.split()
	prod := newProducer(t, brokers, topic)
	bounds := []int{500, 2000, 8000, 32000, len(fed)}
	sent := 0
	start := time.Now()
	for _, b := range bounds {
		now := time.Now().UTC()
		for _, study := range []string{"refit", "online"} {
			js := make([]alignet.Judgment, 0, b-sent)
			for _, i := range fed[sent:b] {
				js = append(js, th.judgment(study, i, now))
			}
			publish(t, prod, js, 500)
		}
		sent = b
		for _, study := range []string{"refit", "online"} {
			waitFor(t, 5*time.Minute, fmt.Sprintf("%s to apply %d judgments", study, b), func() bool {
				return state(t, d, study).JudgmentsSeen == int64(b)
			})
		}
		if settle && b < len(fed) {
			// The settled curve: a refit of everything so far, and the
			// online-only teacher after its idle steps.
			refitAll(t, d, int64(b))
			converged(t, d, "online")
		}
		r, o := state(t, d, "refit"), state(t, d, "online")
		t.Logf("curve: %6d judgments seen: refit-on teacher %.2f%% (%s, last refit read %d), online-only teacher %.2f%%  [%v]",
			b, 100*accuracyOn(th, r, other), r.Status, r.LastRefitJudgments, 100*accuracyOn(th, o, other), time.Since(start).Round(time.Second))
	}
	ctx := context.Background()
	refitAll(t, d, int64(len(fed)))
	converged(t, d, "online")
	r, o := state(t, d, "refit"), state(t, d, "online")
	accR, accO := accuracyOn(th, r, other), accuracyOn(th, o, other)
	t.Logf("final (%v): refit-on teacher (%s, version %d, λ=%g τ=%.3f) %.2f%% on the other 10%%, online-only %.2f%%",
		time.Since(start).Round(time.Second), r.Status, r.Version, r.Params.Lambda, r.Params.Tau, 100*accR, 100*accO)
	if r.Status != alignet.TeacherFitted || r.Eval == nil {
		t.Errorf("the refit of the whole record was not swapped in (status %s)", r.Status)
	}
	if accR < 0.57 {
		t.Errorf("refitted teacher: %.2f%% on the other 10%%, want ≥ 57%%", 100*accR)
	}
	if accO < accR-0.015 {
		t.Errorf("online-only teacher: %.2f%%, want within 1.5 points of the refitted %.2f%%", 100*accO, 100*accR)
	}
	vs, err := d.TeacherVersions(ctx, "refit")
	if err != nil {
		t.Fatal(err)
	}
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		t.Logf("version %d (%s, %d judgments): held-out accuracy %.2f%% (raw %.2f%%) on %d", v.Version, v.Kind, v.JudgmentsSeen,
			100*v.Eval.Teacher.Accuracy, 100*v.Eval.Raw.Accuracy, v.Eval.Teacher.N)
	}
	run.stop(t)
}
