package db_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
)

// newStudy creates space "clip" (dim 3) and an odd-one-out study over it.
func newStudy(t *testing.T, d *db.DB, id string) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := d.PutSpace(ctx, "clip", 3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: id, Task: alignet.TaskOddOneOut, Space: "clip"}); err != nil {
		t.Fatal(err)
	}
}

func testParams(scale float32) alignet.TeacherParams {
	return alignet.TeacherParams{
		Task: alignet.TaskOddOneOut, D: 3, P: 2,
		W:    []float32{1 * scale, 0, 0, 0, 1 * scale, -0.5},
		B:    []float32{0.25, -1e-7},
		Mean: 0.1, Std: 2, Tau: 1.5, Lambda: 0.1,
	}
}

// jsonOf renders v as JSON, which compares times by instant and ignores
// their location.
func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStudySettingsDefaultsAndUpdate(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	newStudy(t, d, "s1")
	s, err := d.GetStudy(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Settings, alignet.DefaultStudySettings()) {
		t.Fatalf("settings of a new study = %+v, want the defaults", s.Settings)
	}
	up, err := d.UpdateStudySettings(ctx, "s1", func(cur alignet.StudySettings) (alignet.StudySettings, error) {
		return cur.Patch([]byte(`{"learner":{"refit_factor":2,"lambdas":[0.5]}}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if up.Settings.Learner.RefitFactor != 2 || !reflect.DeepEqual(up.Settings.Learner.Lambdas, []float64{0.5}) ||
		up.Settings.Learner.MinJudgments != alignet.DefaultLearnerSettings().MinJudgments {
		t.Fatalf("patched settings = %+v", up.Settings.Learner)
	}
	again, err := d.GetStudy(ctx, "s1")
	if err != nil || !reflect.DeepEqual(again.Settings, up.Settings) {
		t.Fatalf("settings after reload = %+v, %v; want %+v", again.Settings, err, up.Settings)
	}
	bad := errors.New("refused")
	if _, err := d.UpdateStudySettings(ctx, "s1", func(alignet.StudySettings) (alignet.StudySettings, error) {
		return alignet.StudySettings{}, bad
	}); !errors.Is(err, bad) {
		t.Fatalf("UpdateStudySettings with a failing update = %v, want its error", err)
	}
	if _, err := d.UpdateStudySettings(ctx, "ghost", func(s alignet.StudySettings) (alignet.StudySettings, error) { return s, nil }); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("UpdateStudySettings of a missing study = %v, want ErrNotFound", err)
	}
}

func TestLearnerProgressRoundTrip(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	newStudy(t, d, "s1")
	if _, err := d.TeacherState(ctx, "s1"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("TeacherState before any progress = %v, want ErrNotFound", err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	refit := now.Add(-time.Minute)
	st := alignet.TeacherState{
		Study: "s1", Status: alignet.TeacherOnline, UpdatedAt: now, JudgmentsSeen: 7, JudgmentsTrained: 6,
		NewestAcceptedAt: now.Add(-time.Second), Params: testParams(1),
		Hyper:       alignet.TeacherHyper{Targets: "hard", LearningRate: 1e-3, Seed: 3},
		Prequential: []alignet.Prequential{{Window: 1000, N: 7, Accuracy: 0.5, LogLoss: 1.01}},
		Eval:        &alignet.TeacherEval{Teacher: alignet.TeacherMetrics{N: 1, Accuracy: 1}},
		LastRefitAt: &refit, LastRefitJudgments: 5, Skipped: map[string]int64{"held_out": 1},
	}
	p := alignet.LearnerProgress{
		Group: "g", Topic: "t", Offsets: map[int32]int64{0: 10, 3: 4},
		States: []alignet.TeacherState{st}, Seen: map[string][]uint64{"s1": {1, 2, 1 << 63}},
	}
	if err := d.SaveLearnerProgress(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := d.TeacherState(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if g, w := jsonOf(t, got), jsonOf(t, st); g != w || !reflect.DeepEqual(got.Params, st.Params) {
		t.Fatalf("TeacherState =\n%s\nwant\n%s", g, w)
	}
	// A second flush moves offsets, appends ids and replaces the state.
	st.JudgmentsSeen, st.UpdatedAt, st.Params = 9, now.Add(time.Second), testParams(2)
	p = alignet.LearnerProgress{Group: "g", Topic: "t", Offsets: map[int32]int64{0: 12},
		States: []alignet.TeacherState{st}, Seen: map[string][]uint64{"s1": {5}}}
	if err := d.SaveLearnerProgress(ctx, p); err != nil {
		t.Fatal(err)
	}
	offs, err := d.LearnerOffsets(ctx, "g", "t")
	if err != nil || !reflect.DeepEqual(offs, map[int32]int64{0: 12, 3: 4}) {
		t.Fatalf("LearnerOffsets = %v, %v", offs, err)
	}
	if other, err := d.LearnerOffsets(ctx, "other", "t"); err != nil || len(other) != 0 {
		t.Fatalf("offsets of another group = %v, %v; want none", other, err)
	}
	seen, err := d.LearnerSeen(ctx, "s1")
	if err != nil || !reflect.DeepEqual(seen, []uint64{1, 2, 1 << 63, 5}) {
		t.Fatalf("LearnerSeen = %v, %v", seen, err)
	}
	since, err := d.TeacherStatesSince(ctx, now)
	if err != nil || len(since) != 1 || since[0].JudgmentsSeen != 9 || since[0].Params.W[0] != 2 {
		t.Fatalf("TeacherStatesSince = %+v, %v", since, err)
	}
	if none, err := d.TeacherStatesSince(ctx, now.Add(time.Second)); err != nil || len(none) != 0 {
		t.Fatalf("TeacherStatesSince(latest) = %d states, %v; want none", len(none), err)
	}

	// Invalid parameters and unknown studies store nothing.
	bad := st
	bad.Params.W = bad.Params.W[:2]
	if err := d.SaveLearnerProgress(ctx, alignet.LearnerProgress{Group: "g", Topic: "t", States: []alignet.TeacherState{bad},
		Offsets: map[int32]int64{0: 99}}); !errors.Is(err, alignet.ErrInvalid) {
		t.Fatalf("SaveLearnerProgress with bad params = %v, want ErrInvalid", err)
	}
	ghost := st
	ghost.Study = "ghost"
	if err := d.SaveLearnerProgress(ctx, alignet.LearnerProgress{Group: "g", Topic: "t", States: []alignet.TeacherState{ghost},
		Offsets: map[int32]int64{0: 99}}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("SaveLearnerProgress for a missing study = %v, want ErrNotFound", err)
	}
	if offs, _ := d.LearnerOffsets(ctx, "g", "t"); offs[0] != 12 {
		t.Fatalf("a failed save moved the offset to %d", offs[0])
	}
}

func TestTeacherVersions(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	newStudy(t, d, "s1")
	if vs, err := d.TeacherVersions(ctx, "s1"); err != nil || len(vs) != 0 {
		t.Fatalf("TeacherVersions of a new study = %v, %v; want empty", vs, err)
	}
	if _, err := d.TeacherVersions(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("TeacherVersions of a missing study = %v, want ErrNotFound", err)
	}
	if _, err := d.TeacherVersion(ctx, "s1", 0); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("newest version of a study without versions = %v, want ErrNotFound", err)
	}
	st := alignet.TeacherState{Study: "s1", Status: alignet.TeacherOnline, UpdatedAt: time.Now(), Params: testParams(1)}
	if err := d.SaveLearnerProgress(ctx, alignet.LearnerProgress{Group: "g", Topic: "t", States: []alignet.TeacherState{st}}); err != nil {
		t.Fatal(err)
	}
	kl := 0.2
	for i := 1; i <= 4; i++ {
		v := alignet.TeacherVersion{
			Study: "s1", Kind: alignet.VersionRefit, Parent: int64(i - 1), JudgmentsSeen: int64(100 * i),
			Offsets: map[int32]int64{2: int64(1000 * i)}, Params: testParams(float32(i)),
			Hyper: alignet.TeacherHyper{Targets: "distilled", Lambdas: []float64{0.1}},
			Eval:  alignet.TeacherEval{Teacher: alignet.TeacherMetrics{N: 10, Accuracy: 0.5, KLHuman: &kl, Repeats: 3}},
		}
		got, err := d.InsertTeacherVersion(ctx, v, 3)
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != int64(i) || got.CreatedAt.IsZero() {
			t.Fatalf("version %d stored as %d at %v", i, got.Version, got.CreatedAt)
		}
	}
	vs, err := d.TeacherVersions(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 || vs[0].Version != 4 || vs[2].Version != 2 {
		t.Fatalf("versions after keeping 3 of 4: %+v", vs)
	}
	if vs[0].Params.W != nil || vs[0].Params.P != 2 || vs[0].Offsets[2] != 4000 || *vs[0].Eval.Teacher.KLHuman != kl {
		t.Fatalf("version metadata = %+v", vs[0])
	}
	v3, err := d.TeacherVersion(ctx, "s1", 3)
	if err != nil || !reflect.DeepEqual(v3.Params, testParams(3)) || v3.Hyper.Targets != "distilled" {
		t.Fatalf("TeacherVersion(3) = %+v, %v", v3, err)
	}
	newest, err := d.TeacherVersion(ctx, "s1", 0)
	if err != nil || newest.Version != 4 {
		t.Fatalf("TeacherVersion(0) = %d, %v; want 4", newest.Version, err)
	}
	if _, err := d.TeacherVersion(ctx, "s1", 1); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("pruned version 1 = %v, want ErrNotFound", err)
	}
	cur, err := d.TeacherState(ctx, "s1")
	if err != nil || cur.Version != 4 {
		t.Fatalf("state version after inserts = %d, %v; want 4", cur.Version, err)
	}
	// A later state flush must not move the version back.
	st.Version = 1
	if err := d.SaveLearnerProgress(ctx, alignet.LearnerProgress{Group: "g", Topic: "t", States: []alignet.TeacherState{st}}); err != nil {
		t.Fatal(err)
	}
	if cur, _ := d.TeacherState(ctx, "s1"); cur.Version != 4 {
		t.Fatalf("state version after an older flush = %d, want 4", cur.Version)
	}
}

func TestRefitRequests(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	newStudy(t, d, "s1")
	newStudy(t, d, "s2")
	if err := d.RequestRefit(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("RequestRefit for a missing study = %v, want ErrNotFound", err)
	}
	for _, s := range []string{"s1", "s1", "s2"} {
		if err := d.RequestRefit(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	got, err := d.TakeRefitRequests(ctx, []string{"s1", "other"})
	if err != nil || !reflect.DeepEqual(got, []string{"s1"}) {
		t.Fatalf("TakeRefitRequests = %v, %v; want [s1]", got, err)
	}
	if again, _ := d.TakeRefitRequests(ctx, []string{"s1", "s2"}); !reflect.DeepEqual(again, []string{"s2"}) {
		t.Fatalf("second take = %v, want [s2]", again)
	}
}
