package monitor_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/monitor"
)

const (
	nItems = 40
	dim    = 8
)

// world is a study whose teacher is the raw embedding space (W = I), with
// simulated people who choose by the teacher's own model or at random.
type world struct {
	t     *testing.T
	d     *db.DB
	x     []float32
	items []string
	r     *rand.Rand
	seq   int
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, d: dbtest.New(t), r: rand.New(rand.NewPCG(11, 12))}
	ctx := context.Background()
	for i := range nItems {
		w.items = append(w.items, fmt.Sprintf("i%02d", i))
	}
	w.x = make([]float32, nItems*dim)
	for i := range w.x {
		w.x[i] = float32(1.5 * w.r.NormFloat64())
	}
	for _, sp := range []string{"emb", "stu"} {
		if _, _, err := w.d.PutSpace(ctx, sp, dim); err != nil {
			t.Fatal(err)
		}
		if _, err := w.d.UpsertEmbeddings(ctx, sp, w.items, w.x); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := w.d.CreateStudy(ctx, alignet.Study{ID: "s", Task: alignet.TaskOddOneOut, Space: "emb"}); err != nil {
		t.Fatal(err)
	}
	return w
}

// judgment draws a triplet and the person's odd one: from the teacher's
// softmax when model, uniformly otherwise.
func (w *world) judgment(worker string, model bool, at time.Time) alignet.Judgment {
	perm := w.r.Perm(nItems)[:3]
	o := w.r.IntN(3)
	if model {
		l := learner.Logits(w.x, dim, learner.Triplet{I: int32(perm[0]), J: int32(perm[1]), K: int32(perm[2])})
		p := learner.Softmax3(l, 1)
		u := w.r.Float64()
		o = 2
		if u < p[0] {
			o = 0
		} else if u < p[0]+p[1] {
			o = 1
		}
	}
	// Outcome 0: K odd, 1: J odd, 2: I odd.
	odd := perm[2-o]
	w.seq++
	return alignet.Judgment{ID: fmt.Sprintf("j%06d", w.seq), Study: "s", Task: alignet.TaskOddOneOut, Worker: worker,
		Items: [3]string{w.items[perm[0]], w.items[perm[1]], w.items[perm[2]]}, Odd: w.items[odd],
		RTMillis: int32(800 + w.r.IntN(400)), ReceivedAt: at}
}

// modelAccuracy is the teacher's accuracy on n fresh model judgments:
// the reference a stored version would have recorded.
func (w *world) modelAccuracy(n int) float64 {
	correct := 0
	for range n {
		j := w.judgment("ref", true, time.Now())
		row := func(it string) int32 {
			var i int
			fmt.Sscanf(it, "i%02d", &i)
			return int32(i)
		}
		var pair []int32
		for _, it := range j.Items {
			if it != j.Odd {
				pair = append(pair, row(it))
			}
		}
		if learner.Correct(learner.TaskOddOneOut, learner.Logits(w.x, dim, learner.Triplet{I: pair[0], J: pair[1], K: row(j.Odd)})) {
			correct++
		}
	}
	return float64(correct) / float64(n)
}

func (w *world) insert(js []alignet.Judgment) {
	w.t.Helper()
	if _, err := w.d.InsertJudgments(context.Background(), js); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) storeTeacher(acc float64, n int) {
	w.t.Helper()
	wm := make([]float32, dim*dim)
	for i := range dim {
		wm[i*dim+i] = 1
	}
	now := time.Now()
	st := alignet.TeacherState{Study: "s", Status: alignet.TeacherFitted, Version: 1, UpdatedAt: now, JudgmentsSeen: 3060,
		NewestAcceptedAt: now.Add(-time.Second),
		Params:           alignet.TeacherParams{Task: alignet.TaskOddOneOut, D: dim, P: dim, W: wm, B: make([]float32, dim), Mean: 0, Std: 1, Tau: 1},
		Prequential:      []alignet.Prequential{{Window: 1000, N: 1000, Accuracy: acc, LogLoss: 1}},
		Eval:             &alignet.TeacherEval{Teacher: alignet.TeacherMetrics{N: n, Accuracy: acc, NLL: 1.0}}}
	if err := w.d.SaveLearnerProgress(context.Background(), alignet.LearnerProgress{Group: "g", Topic: "t",
		Offsets: map[int32]int64{0: 1}, States: []alignet.TeacherState{st}}); err != nil {
		w.t.Fatal(err)
	}
}

// storeStudent promotes an identity head over "stu" (the same vectors), so
// the student predicts what the teacher does.
func (w *world) storeStudent(acc float64, n int) {
	w.t.Helper()
	ctx := context.Background()
	if _, _, err := w.d.CreateStudent(ctx, alignet.Student{Study: "s", ID: "st", Space: "stu", Settings: alignet.DefaultStudentSettings()}); err != nil {
		w.t.Fatal(err)
	}
	h, err := learner.NewStudentHead(dim, learner.HeadConfig{Init: learner.InitIdentity})
	if err != nil {
		w.t.Fatal(err)
	}
	aw, err := w.d.CreateArtifact(ctx, "student")
	if err != nil {
		w.t.Fatal(err)
	}
	if err := modelfile.WriteStudent(aw, h, modelfile.Provenance{}); err != nil {
		w.t.Fatal(err)
	}
	a, err := aw.Close()
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.d.InsertStudentVersion(ctx, alignet.StudentVersion{Study: "s", Student: "st", Dataset: 1, TeacherVersion: 1, Promoted: true,
		Settings: alignet.DefaultStudentSettings(), D: dim, P: dim, Artifact: a.ID,
		Metrics: alignet.StudentMetrics{Held: alignet.TeacherMetrics{N: n, Accuracy: acc}, HeldTeacherAgreement: 0.95}}, a, 5); err != nil {
		w.t.Fatal(err)
	}
}

func signal(t *testing.T, s alignet.DriftSnapshot, name, student string) alignet.DriftSignal {
	t.Helper()
	for _, sig := range s.Signals {
		if sig.Name == name && sig.Student == student {
			return sig
		}
	}
	t.Fatalf("no signal %s %q in %+v", name, student, s.Signals)
	return alignet.DriftSignal{}
}

// TestMonitorDetectsShift feeds people who choose as the teacher predicts
// (and one careless worker), then people who choose at random: the first
// window flags nothing but the careless worker, the second flags the drop
// of the teacher's and the student's accuracy.
func TestMonitorDetectsShift(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	refAcc := w.modelAccuracy(4000)
	start := time.Now().Add(-time.Hour)
	var js []alignet.Judgment
	for i := range 3000 {
		js = append(js, w.judgment(fmt.Sprintf("w%02d", i%30), true, start.Add(time.Duration(i)*time.Second)))
	}
	// Few enough not to move the teacher's accuracy beyond chance.
	for i := range 60 {
		js = append(js, w.judgment("careless", false, start.Add(time.Duration(i)*50*time.Second+time.Millisecond)))
	}
	w.insert(js)
	w.storeTeacher(refAcc, 4000)

	reg := prometheus.NewRegistry()
	m, err := monitor.New(monitor.Config{Window: 3060, Registerer: reg}, w.d)
	if err != nil {
		t.Fatal(err)
	}
	n, err := m.Pass(ctx)
	if err != nil || n != 1 {
		t.Fatalf("pass: %d, %v", n, err)
	}
	snaps, err := w.d.DriftSnapshots(ctx, "s", time.Time{}, 10)
	if err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots %v %v", snaps, err)
	}
	s := snaps[0]
	acc := signal(t, s, alignet.SignalTeacherAccuracy, "")
	t.Logf("stationary: accuracy %.3f on %d held-out (reference %.3f), z %.2f, cusum %.2f/%.2f", *acc.Value, acc.N, refAcc, *acc.Z, *acc.CUSUM, *acc.Threshold)
	if !acc.Enough || acc.Change || acc.RefN != 4000 || math.Abs(*acc.Reference-refAcc) > 1e-3 {
		t.Errorf("stationary teacher accuracy %+v", acc)
	}
	if len(s.Changes) != 0 {
		t.Errorf("stationary changes %v", s.Changes)
	}
	if s.Quality.LowAgreement != 1 || s.Quality.TestedWorkers != 31 || len(s.Quality.WorkerList) == 0 ||
		s.Quality.WorkerList[0].Worker != "careless" || !s.Quality.WorkerList[0].Low {
		t.Errorf("quality %+v", s.Quality)
	}
	if s.Quality.RTMillis == nil || s.Quality.RTMillis.P10 < 800 || s.Quality.RTMillis.P90 > 1200 || s.QueryMix["none"] != 3060 {
		t.Errorf("quality %+v mix %v", s.Quality.RTMillis, s.QueryMix)
	}
	var bins int
	for _, b := range s.Reliability {
		bins += b.Count
	}
	if bins != 3*acc.N || len(s.PerMinute) != 60 {
		t.Errorf("%d reliability predictions for %d judgments, %d minutes", bins, acc.N, len(s.PerMinute))
	}
	if got := gauge(t, reg, "alignet_drift_teacher_accuracy"); math.Abs(got-*acc.Value) > 1e-12 {
		t.Errorf("gauge %v, signal %v", got, *acc.Value)
	}

	// The student is promoted now; people then choose at random.
	w.storeStudent(refAcc, 4000)
	later := time.Now().Add(time.Second)
	js = js[:0]
	for i := range 3000 {
		js = append(js, w.judgment(fmt.Sprintf("w%02d", i%30), false, later.Add(time.Duration(i)*time.Millisecond)))
	}
	w.insert(js)
	m2, err := monitor.New(monitor.Config{Window: 3000, Registerer: reg}, w.d)
	if err != nil {
		t.Fatal(err)
	}
	s, err = m2.Snapshot(ctx, alignet.Study{ID: "s", Task: alignet.TaskOddOneOut, Space: "emb", Settings: alignet.DefaultStudySettings()})
	if err != nil {
		t.Fatal(err)
	}
	acc = signal(t, s, alignet.SignalTeacherAccuracy, "")
	t.Logf("shifted: accuracy %.3f on %d held-out, z %.2f, cusum %.2f", *acc.Value, acc.N, *acc.Z, *acc.CUSUM)
	if !acc.Change || *acc.Z >= -3 || *acc.CUSUM < *acc.Threshold {
		t.Errorf("shifted teacher accuracy %+v", acc)
	}
	if ll := signal(t, s, alignet.SignalTeacherLogLoss, ""); ll.Value == nil || ll.N != acc.N {
		t.Errorf("log-loss %+v", ll)
	}
	sa := signal(t, s, alignet.SignalStudentAccuracy, "st")
	ag := signal(t, s, alignet.SignalStudentAgreement, "st")
	if sa.N != acc.N || !sa.Change || *sa.Value != *acc.Value {
		t.Errorf("student accuracy %+v (teacher %+v)", sa, acc)
	}
	// The identity student over the same vectors agrees with the teacher
	// everywhere: above its reference, no change.
	if ag.N != acc.N || *ag.Value != 1 || ag.Change {
		t.Errorf("student agreement %+v", ag)
	}
	want := []string{alignet.SignalTeacherAccuracy, alignet.SignalTeacherLogLoss, alignet.SignalStudentAccuracy + ":st"}
	if strings.Join(s.Changes, ",") != strings.Join(want, ",") {
		t.Errorf("changes %v, want %v", s.Changes, want)
	}
	if s.Roles.StudentAt == nil || s.Roles.LearnerStaleness == nil || s.Roles.PersisterLag == nil {
		t.Errorf("roles %+v", s.Roles)
	}
}

// gauge returns the value of the single series of a gauge family.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single series of %s", name)
	return 0
}
