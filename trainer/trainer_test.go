package trainer

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/stream"
)

// recorder is a Publisher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	chunks []stream.TripletChunk
}

func (r *recorder) Publish(_ context.Context, cs []stream.TripletChunk) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chunks = append(r.chunks, cs...)
	return nil
}

func (r *recorder) Ping(context.Context) error { return nil }

// fixture is a study "s" over a clustered synthetic space "base" (its
// pool) with a student space "stu", and judgments that follow the
// geometry of "base".
type fixture struct {
	t     *testing.T
	store *db.DB
	tr    *Trainer
	pub   *recorder
	reg   *prometheus.Registry
	n, d  int
	x     []float32
}

func newFixture(t *testing.T, settings string) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t, store: dbtest.New(t), pub: &recorder{}, reg: prometheus.NewRegistry(), n: 240, d: 6}
	rng := rand.New(rand.NewPCG(3, 4))
	ids := make([]string, f.n)
	f.x = make([]float32, f.n*f.d)
	for i := range ids {
		ids[i] = fmt.Sprintf("it%03d", i)
		for k := 0; k < f.d; k++ {
			var centre float32
			if k < 4 && i%4 == k {
				centre = 2
			}
			f.x[i*f.d+k] = centre + 0.4*float32(rng.NormFloat64())
		}
	}
	for _, sp := range []string{"base", "stu"} {
		if _, _, err := f.store.PutSpace(ctx, sp, f.d); err != nil {
			t.Fatal(err)
		}
		if _, err := f.store.UpsertEmbeddings(ctx, sp, ids, f.x); err != nil {
			t.Fatal(err)
		}
	}
	st, _, err := f.store.CreateStudy(ctx, alignet.Study{ID: "s", Task: alignet.TaskOddOneOut, Space: "base"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.AddStudyItems(ctx, "s", ids); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.UpdateStudySettings(ctx, "s", func(s alignet.StudySettings) (alignet.StudySettings, error) {
		return s.Patch([]byte(settings))
	}); err != nil {
		t.Fatal(err)
	}
	// Held-out judgments that follow the base geometry.
	var js []alignet.Judgment
	for i := 0; len(js) < 300; i++ {
		id := fmt.Sprintf("j%d", i)
		if alignet.TrainingRole(alignet.Judgment{Study: st.ID, ID: id}, st.Settings, false) != alignet.RoleHeldOut {
			continue
		}
		a, b, c := rng.IntN(f.n), rng.IntN(f.n), rng.IntN(f.n)
		if a == b || a == c || b == c {
			continue
		}
		dot := func(p, q int) float32 {
			var s float32
			for k := 0; k < f.d; k++ {
				s += f.x[p*f.d+k] * f.x[q*f.d+k]
			}
			return s
		}
		odd := c
		if s01, s02, s12 := dot(a, b), dot(a, c), dot(b, c); s02 > s01 && s02 >= s12 {
			odd = b
		} else if s12 > s01 && s12 > s02 {
			odd = a
		}
		js = append(js, alignet.Judgment{ID: id, Study: "s", Task: alignet.TaskOddOneOut, Worker: "w",
			Items: [3]string{ids[a], ids[b], ids[c]}, Odd: ids[odd], ReceivedAt: time.Now()})
	}
	if _, err := f.store.InsertJudgments(ctx, js); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.PutPool(ctx, alignet.Pool{Study: "s", Space: "base"}); err != nil {
		t.Fatal(err)
	}
	f.tr, err = New(Config{Registerer: f.reg, Logger: slog.New(slog.DiscardHandler), PublishChunk: 700},
		f.store, AdaptArtifacts[*db.ArtifactWriter](f.store), f.pub)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// teacher stores a teacher version whose W is scale·I plus noise·N(0,1).
func (f *fixture) teacher(kind string, scale, noise float64, seed uint64) alignet.TeacherVersion {
	f.t.Helper()
	d := f.d
	rng := rand.New(rand.NewPCG(seed, 9))
	p := alignet.TeacherParams{Task: alignet.TaskOddOneOut, D: d, P: d, Mean: 0, Std: 1, Tau: 1, W: make([]float32, d*d), B: make([]float32, d)}
	for i := range p.W {
		p.W[i] = float32(noise * rng.NormFloat64())
	}
	for k := 0; k < d; k++ {
		p.W[k*d+k] += float32(scale)
	}
	v, err := f.store.InsertTeacherVersion(context.Background(), alignet.TeacherVersion{Study: "s", Kind: kind, Params: p}, 100)
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func (f *fixture) pass() int {
	f.t.Helper()
	n, err := f.tr.Pass(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func TestRegenerationTriggersAndInterval(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `{"trainer":{"triplets":3000,"clusters":4,"min_interval":"1h","min_teacher_change":0.1}}`)
	ctx := context.Background()
	if f.pass() != 0 {
		t.Fatal("regenerated without a teacher version")
	}
	v1 := f.teacher(alignet.VersionOnline, 1, 0, 1)
	if f.pass() != 1 {
		t.Fatal("no first dataset")
	}
	ds, err := f.store.GetDataset(ctx, "s", 0)
	if err != nil || ds.Version != 1 || ds.TeacherVersion != v1.Version || ds.Triplets != 3000 || ds.Items != f.n || ds.InputHash == "" {
		t.Fatalf("dataset %+v, %v", ds, err)
	}
	if f.pass() != 0 {
		t.Fatal("regenerated for the same teacher version")
	}
	// Published in order, complete, carrying the dataset version.
	var got int64
	for _, c := range f.pub.chunks {
		if c.Dataset != 1 || c.Study != "s" || c.Offset != got || c.Total != 3000 || c.TeacherVersion != v1.Version {
			t.Fatalf("chunk %+v after %d triplets", c, got)
		}
		got += int64(len(c.Indices) / 3)
	}
	if got != 3000 || len(f.pub.chunks) != 5 {
		t.Fatalf("published %d triplets in %d chunks", got, len(f.pub.chunks))
	}
	// A small online change is not enough; a large one waits for the
	// interval; a refit only for the interval too.
	f.teacher(alignet.VersionOnline, 1, 0.001, 2)
	big := f.teacher(alignet.VersionOnline, 1, 1, 3)
	if f.pass() != 0 {
		t.Fatal("regenerated within the minimum interval")
	}
	if _, err := f.store.UpdateStudySettings(ctx, "s", func(s alignet.StudySettings) (alignet.StudySettings, error) {
		s.Trainer.MinInterval = alignet.Duration(time.Second)
		return s, nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if f.pass() != 1 {
		t.Fatal("a large teacher change did not regenerate")
	}
	if ds, _ := f.store.GetDataset(ctx, "s", 0); ds.TeacherVersion != big.Version || ds.Seed != 2 {
		t.Fatalf("second dataset %+v: want teacher version %d and seed 2", ds, big.Version)
	}
	f.teacher(alignet.VersionOnline, 1, 1, 3) // the same parameters as big: no change
	time.Sleep(1100 * time.Millisecond)
	if f.pass() != 0 {
		t.Fatal("a tiny online change regenerated")
	}
	refit := f.teacher(alignet.VersionRefit, 1, 0.001, 5)
	if f.pass() != 1 {
		t.Fatal("a refit did not regenerate")
	}
	if ds, _ := f.store.GetDataset(ctx, "s", 0); ds.TeacherVersion != refit.Version {
		t.Fatalf("third dataset from teacher version %d, want %d", ds.TeacherVersion, refit.Version)
	}
	if v := testutil.ToFloat64(f.tr.m.regenerations.WithLabelValues("ok")); v != 3 {
		t.Fatalf("alignet_trainer_regenerations_total{result=ok} = %v", v)
	}
}

func TestLockedStudyIsLeftToItsHolder(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `{"trainer":{"triplets":1000,"clusters":4}}`)
	f.teacher(alignet.VersionRefit, 1, 0, 1)
	unlock, ok, err := f.store.TryTrainerLock(context.Background(), "s")
	if err != nil || !ok {
		t.Fatalf("lock: %v, %v", ok, err)
	}
	if f.pass() != 0 {
		t.Fatal("regenerated a study another trainer holds")
	}
	if u, ok2, err := f.store.TryTrainerLock(context.Background(), "s"); err != nil || ok2 {
		if ok2 {
			u()
		}
		t.Fatalf("the lock was taken twice (%v)", err)
	}
	unlock()
	if f.pass() != 1 {
		t.Fatal("no regeneration once the lock was free")
	}
}

func TestStudentVersionsWarmStartAndPromotion(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `{"trainer":{"triplets":20000,"clusters":4,"min_interval":"1s","strategies":{"random":1}}}`)
	ctx := context.Background()
	if _, _, err := f.store.CreateStudent(ctx, alignet.Student{Study: "s", ID: "st", Space: "stu", Settings: func() alignet.StudentSettings {
		s := alignet.DefaultStudentSettings()
		s.BatchSize, s.Epochs = 512, 3
		return s
	}()}); err != nil {
		t.Fatal(err)
	}
	// Version 1 from a teacher that matches the judgments' geometry.
	f.teacher(alignet.VersionRefit, 1, 0, 1)
	f.pass()
	v1, err := f.store.StudentVersion(ctx, "s", "st", 0)
	if err != nil || v1.Version != 1 || !v1.Promoted || v1.Parent != 0 || v1.Metrics.Held.N == 0 {
		t.Fatalf("first version %+v, %v", v1, err)
	}
	stu, _ := f.store.GetStudent(ctx, "s", "st")
	if stu.InitArtifact == 0 || stu.Current != 1 {
		t.Fatalf("student %+v: want θ₀ stored and version 1 current", stu)
	}
	// A teacher of noise: its data makes a worse student, which is stored
	// but not promoted.
	time.Sleep(1100 * time.Millisecond)
	f.teacher(alignet.VersionRefit, 0, 3, 7)
	f.pass()
	vs, err := f.store.StudentVersions(ctx, "s", "st")
	if err != nil || len(vs) != 2 {
		t.Fatalf("versions %+v, %v", vs, err)
	}
	v2 := vs[0]
	if v2.Promoted || !strings.Contains(v2.Reason, "below the current version 1") || v2.Parent != 1 || v2.Dataset != 2 {
		t.Fatalf("second version %+v: want it stored, not promoted, with the reason", v2)
	}
	if !(v2.Metrics.Held.Accuracy < v1.Metrics.Held.Accuracy) {
		t.Fatalf("held-out accuracy %.4f → %.4f", v1.Metrics.Held.Accuracy, v2.Metrics.Held.Accuracy)
	}
	cur, _ := f.store.StudentVersion(ctx, "s", "st", 0)
	again, _ := f.store.GetStudent(ctx, "s", "st")
	if cur.Version != 1 || again.InitArtifact != stu.InitArtifact {
		t.Fatalf("current %d, θ₀ artifact %d → %d: want 1 and θ₀ kept", cur.Version, stu.InitArtifact, again.InitArtifact)
	}
	if testutil.ToFloat64(f.tr.m.versions.WithLabelValues("s", "st", "false")) != 1 {
		t.Fatal("the unpromoted version was not counted")
	}
	// A student registered later is trained on the newest dataset on the
	// next pass, without a regeneration.
	if _, _, err := f.store.CreateStudent(ctx, alignet.Student{Study: "s", ID: "late", Space: "stu", Settings: alignet.DefaultStudentSettings()}); err != nil {
		t.Fatal(err)
	}
	if f.pass() != 0 {
		t.Fatal("a new student made the trainer regenerate")
	}
	if v, err := f.store.StudentVersion(ctx, "s", "late", 1); err != nil || v.Dataset != 2 {
		t.Fatalf("late student %+v, %v", v, err)
	}
}

func TestPlanMix(t *testing.T) {
	t.Parallel()
	parts := planMix(map[string]float64{"random": 1, "cluster_border": 3, "class_border": 2}, 1001, false)
	if len(parts) != 2 || parts[0].Strategy != "cluster_border" || parts[1].Strategy != "random" || parts[0].Triplets+parts[1].Triplets != 1001 || parts[0].Triplets != 751 {
		t.Fatalf("plan without labels %+v", parts)
	}
	parts = planMix(map[string]float64{"class_border": 1}, 10, false)
	if len(parts) != 1 || parts[0].Strategy != "cluster_border" || parts[0].Triplets != 10 {
		t.Fatalf("plan of class strategies only, unlabelled: %+v", parts)
	}
	parts = planMix(map[string]float64{"class_border": 1, "random": 1}, 10, true)
	if len(parts) != 2 || parts[0].Strategy != "random" || parts[1].Strategy != "class_border" {
		t.Fatalf("labelled plan %+v", parts)
	}
	if k := effectiveClusters(500, 1854); k != 9 {
		t.Fatalf("k for THINGS = %d", k)
	}
	if k := effectiveClusters(500, 1_280_000); k != 500 {
		t.Fatalf("k for ImageNet = %d", k)
	}
}

func TestTransformInPlaceMatchesTransform(t *testing.T) {
	t.Parallel()
	const n, d, p = transformBlock + 77, 5, 3
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	tp := alignet.TeacherParams{Task: alignet.TaskOddOneOut, D: d, P: p, Mean: 0.1, Std: 1.5, Tau: 1, W: make([]float32, p*d), B: []float32{1, 2, 3}}
	for i := range tp.W {
		tp.W[i] = float32(rng.NormFloat64())
	}
	teacher := modelfile.TeacherOf(tp)
	want := teacher.Transform(x, n)
	got := transformInPlace(teacher, x, n)
	if len(got) != len(want) {
		t.Fatalf("%d values, want %d", len(got), len(want))
	}
	for i := range want {
		if d := got[i] - want[i]; d > 1e-5 || d < -1e-5 {
			t.Fatalf("value %d: %v, want %v", i, got[i], want[i])
		}
	}
}
