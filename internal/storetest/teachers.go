package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/alignet/alignet"
)

// jsonOf renders v as JSON, which compares times by instant whatever their
// location.
func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testStudySettings(t *testing.T, s Store) {
	ctx := context.Background()
	if _, _, err := s.PutSpace(ctx, "sp", 2); err != nil {
		t.Fatal(err)
	}
	custom := alignet.DefaultStudySettings()
	custom.Learner.RefitFactor, custom.Learner.Lambdas = 2, []float64{0.5}
	st, created, err := s.CreateStudy(ctx, alignet.Study{ID: "c", Task: alignet.TaskOddOneOut, Space: "sp", Settings: custom})
	if err != nil || !created || !reflect.DeepEqual(st.Settings, custom) {
		t.Fatalf("CreateStudy with settings = %+v, %v, %v", st.Settings, created, err)
	}
	if got, err := s.GetStudy(ctx, "c"); err != nil || !reflect.DeepEqual(got.Settings, custom) {
		t.Fatalf("GetStudy settings = %+v, %v; want %+v", got.Settings, err, custom)
	}
	// Creating again keeps the stored settings.
	again, created, err := s.CreateStudy(ctx, alignet.Study{ID: "c", Task: alignet.TaskOddOneOut, Space: "sp"})
	if err != nil || created || !reflect.DeepEqual(again.Settings, custom) {
		t.Fatalf("CreateStudy again = %+v, %v, %v; want the stored settings", again.Settings, created, err)
	}
	plain, _, err := s.CreateStudy(ctx, alignet.Study{ID: "d", Task: alignet.TaskAnchor, Space: "sp"})
	if err != nil || !reflect.DeepEqual(plain.Settings, alignet.DefaultStudySettings()) {
		t.Fatalf("CreateStudy without settings = %+v, %v; want the defaults", plain.Settings, err)
	}
	up, err := s.UpdateStudySettings(ctx, "c", func(cur alignet.StudySettings) (alignet.StudySettings, error) {
		if !reflect.DeepEqual(cur, custom) {
			t.Errorf("update saw %+v, want %+v", cur, custom)
		}
		return cur.Patch([]byte(`{"learner":{"lambdas":null,"min_judgments":50}}`))
	})
	want := custom
	want.Learner.Lambdas, want.Learner.MinJudgments = alignet.DefaultLearnerSettings().Lambdas, 50
	if err != nil || up.ID != "c" || up.Task != alignet.TaskOddOneOut || !reflect.DeepEqual(up.Settings, want) {
		t.Fatalf("UpdateStudySettings = %+v, %v; want settings %+v", up, err, want)
	}
	if got, err := s.GetStudy(ctx, "c"); err != nil || !reflect.DeepEqual(got.Settings, want) {
		t.Fatalf("GetStudy after update = %+v, %v", got.Settings, err)
	}
	refused := errors.New("refused")
	if _, err := s.UpdateStudySettings(ctx, "c", func(alignet.StudySettings) (alignet.StudySettings, error) {
		return alignet.StudySettings{}, refused
	}); !errors.Is(err, refused) {
		t.Fatalf("UpdateStudySettings with a failing update = %v, want its error", err)
	}
	if got, _ := s.GetStudy(ctx, "c"); !reflect.DeepEqual(got.Settings, want) {
		t.Fatalf("a failed update changed the settings to %+v", got.Settings)
	}
	if _, err := s.UpdateStudySettings(ctx, "ghost", func(x alignet.StudySettings) (alignet.StudySettings, error) { return x, nil }); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("UpdateStudySettings of a missing study = %v, want ErrNotFound", err)
	}
}

func testLoadEmbeddings(t *testing.T, s Store) {
	ctx := context.Background()
	if _, _, err := s.LoadEmbeddings(ctx, "ghost", []string{"a"}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("LoadEmbeddings from a missing space = %v, want ErrNotFound", err)
	}
	if _, _, err := s.PutSpace(ctx, "sp", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpsertEmbeddings(ctx, "sp", []string{"a", "b"}, []float32{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	vecs, found, err := s.LoadEmbeddings(ctx, "sp", []string{"b", "x", "a", "b"})
	if err != nil || !slices.Equal(vecs, []float32{3, 4, 0, 0, 1, 2, 3, 4}) || !slices.Equal(found, []bool{true, false, true, true}) {
		t.Fatalf("LoadEmbeddings = %v, %v, %v", vecs, found, err)
	}
	vecs, found, err = s.LoadEmbeddings(ctx, "sp", nil)
	if err != nil || len(vecs) != 0 || len(found) != 0 {
		t.Fatalf("LoadEmbeddings of no ids = %v, %v, %v", vecs, found, err)
	}
}

// teacherParams returns valid parameters for a space of dimension 2.
func teacherParams(scale float32) alignet.TeacherParams {
	return alignet.TeacherParams{Task: alignet.TaskOddOneOut, D: 2, P: 2, W: []float32{scale, 0, 0.5, scale},
		B: []float32{0.25, -1e-7}, Mean: 0.1, Std: 2, Tau: 1.5, Lambda: 0.1}
}

func saveState(t *testing.T, s Store, st alignet.TeacherState) {
	t.Helper()
	if err := s.SaveLearnerProgress(context.Background(), alignet.LearnerProgress{Group: "g", Topic: "t",
		States: []alignet.TeacherState{st}}); err != nil {
		t.Fatal(err)
	}
}

func testStudyStamps(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	mustSpaceStudy(t, s, "other", alignet.TaskOddOneOut)
	stamp := func() alignet.StudyStamp {
		t.Helper()
		m, err := s.StudyStamps(ctx, []string{"s", "ghost"})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m["ghost"]; ok || len(m) != 1 {
			t.Fatalf("StudyStamps = %+v; want only s", m)
		}
		return m["s"]
	}
	s0 := stamp()
	if !s0.TeacherUpdatedAt.IsZero() || s0.TeacherVersion != 0 {
		t.Fatalf("stamp of a study without a teacher = %+v", s0)
	}
	if _, err := s.AddStudyItems(ctx, "s", []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	s1 := stamp()
	if s1.Inputs <= s0.Inputs {
		t.Fatalf("adding items moved Inputs from %d to %d", s0.Inputs, s1.Inputs)
	}
	if _, err := s.AddStudyItems(ctx, "s", []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpsertEmbeddings(ctx, "space-other", []string{"a"}, []float32{1, 2}); err != nil {
		t.Fatal(err)
	}
	if got := stamp(); got != s1 {
		t.Fatalf("adding no new item or writing another space changed the stamp from %+v to %+v", s1, got)
	}
	if _, err := s.UpsertEmbeddings(ctx, "space-s", []string{"a", "zz"}, []float32{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	s2 := stamp()
	if s2.Inputs <= s1.Inputs {
		t.Fatalf("writing embeddings of the study's space moved Inputs from %d to %d", s1.Inputs, s2.Inputs)
	}
	at := time.Now().UTC().Truncate(time.Microsecond)
	st := alignet.TeacherState{Study: "s", Status: alignet.TeacherOnline, UpdatedAt: at, Params: teacherParams(1)}
	saveState(t, s, st)
	s3 := stamp()
	if !s3.TeacherUpdatedAt.Equal(at) || s3.TeacherVersion != 0 || s3.Inputs != s2.Inputs {
		t.Fatalf("stamp after a state flush = %+v; want updated at %v", s3, at)
	}
	if _, err := s.InsertTeacherVersion(ctx, alignet.TeacherVersion{Study: "s", Kind: alignet.VersionManual,
		Params: teacherParams(1)}, 10); err != nil {
		t.Fatal(err)
	}
	if s4 := stamp(); s4.TeacherVersion != 1 || !s4.TeacherUpdatedAt.Equal(at) {
		t.Fatalf("stamp after a version = %+v; want version 1", s4)
	}
	if m, err := s.StudyStamps(ctx, nil); err != nil || len(m) != 0 {
		t.Fatalf("StudyStamps(nil) = %v, %v", m, err)
	}
}

func testTeacherState(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	for name, get := range map[string]func(context.Context, string) (alignet.TeacherState, error){
		"TeacherState": s.TeacherState, "TeacherStateMeta": s.TeacherStateMeta,
	} {
		for _, study := range []string{"s", "ghost"} {
			if _, err := get(ctx, study); !errors.Is(err, alignet.ErrNotFound) {
				t.Fatalf("%s(%s) without a state = %v, want ErrNotFound", name, study, err)
			}
		}
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	refit := now.Add(-time.Minute)
	kl := 0.3
	st := alignet.TeacherState{
		Study: "s", Status: alignet.TeacherFitted, Version: 0, UpdatedAt: now, JudgmentsSeen: 70, JudgmentsTrained: 60,
		NewestAcceptedAt: now.Add(-300 * time.Millisecond), Params: teacherParams(2),
		Hyper:       alignet.TeacherHyper{Targets: "distilled", Lambdas: []float64{0.1, 0.3}, LearningRate: 1e-3, Seed: 4},
		Prequential: []alignet.Prequential{{Window: 1000, N: 70, Accuracy: 0.5, LogLoss: 1.01}, {Window: 10000, N: 70, Accuracy: 0.5, LogLoss: 1.01}},
		Eval: &alignet.TeacherEval{Teacher: alignet.TeacherMetrics{N: 7, Accuracy: 0.6, NLL: 0.9, ECE: 0.05, Repeats: 2, KLHuman: &kl},
			Raw: alignet.TeacherMetrics{N: 7, Accuracy: 0.4, NLL: 1.1}},
		LastRefitAt: &refit, LastRefitJudgments: 50, Skipped: map[string]int64{"held_out": 10},
	}
	saveState(t, s, st)
	got, err := s.TeacherState(ctx, "s")
	if err != nil || jsonOf(t, got) != jsonOf(t, st) || !reflect.DeepEqual(got.Params, st.Params) {
		t.Fatalf("TeacherState = %+v, %v\nwant %+v", got, err, st)
	}
	meta, err := s.TeacherStateMeta(ctx, "s")
	if err != nil || jsonOf(t, meta) != jsonOf(t, st) || meta.Params.W != nil || meta.Params.B != nil {
		t.Fatalf("TeacherStateMeta = %+v, %v; want the state without W and b", meta, err)
	}
	// A missing study fails the whole flush; bad parameters are invalid.
	ghost := st
	ghost.Study = "ghost"
	next := st
	next.JudgmentsSeen = 99
	if err := s.SaveLearnerProgress(ctx, alignet.LearnerProgress{Group: "g", Topic: "t",
		States: []alignet.TeacherState{next, ghost}}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("SaveLearnerProgress with a missing study = %v, want ErrNotFound", err)
	}
	bad := next
	bad.Params.B = bad.Params.B[:1]
	if err := s.SaveLearnerProgress(ctx, alignet.LearnerProgress{Group: "g", Topic: "t",
		States: []alignet.TeacherState{bad}}); !errors.Is(err, alignet.ErrInvalid) {
		t.Fatalf("SaveLearnerProgress with bad parameters = %v, want ErrInvalid", err)
	}
	if got, _ := s.TeacherState(ctx, "s"); got.JudgmentsSeen != 70 {
		t.Fatalf("failed flushes stored judgments_seen %d", got.JudgmentsSeen)
	}
}

func testTeacherVersions(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	if _, err := s.TeacherVersions(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("TeacherVersions of a missing study = %v, want ErrNotFound", err)
	}
	if vs, err := s.TeacherVersions(ctx, "s"); err != nil || vs == nil || len(vs) != 0 {
		t.Fatalf("TeacherVersions without versions = %#v, %v; want empty, non-nil", vs, err)
	}
	if _, err := s.TeacherVersion(ctx, "s", 0); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("newest version without versions = %v, want ErrNotFound", err)
	}
	if _, err := s.InsertTeacherVersion(ctx, alignet.TeacherVersion{Study: "ghost", Kind: alignet.VersionManual,
		Params: teacherParams(1)}, 10); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("InsertTeacherVersion for a missing study = %v, want ErrNotFound", err)
	}
	badParams := teacherParams(1)
	badParams.W = badParams.W[:3]
	if _, err := s.InsertTeacherVersion(ctx, alignet.TeacherVersion{Study: "s", Kind: alignet.VersionManual,
		Params: badParams}, 10); !errors.Is(err, alignet.ErrInvalid) {
		t.Fatalf("InsertTeacherVersion with bad parameters = %v, want ErrInvalid", err)
	}
	saveState(t, s, alignet.TeacherState{Study: "s", Status: alignet.TeacherOnline, UpdatedAt: time.Now().UTC(), Params: teacherParams(1)})
	kinds := []string{alignet.VersionRefit, alignet.VersionOnline, alignet.VersionManual}
	for i := 1; i <= 3; i++ {
		v, err := s.InsertTeacherVersion(ctx, alignet.TeacherVersion{
			Study: "s", Kind: kinds[i-1], Parent: int64(i - 1), JudgmentsSeen: int64(10 * i),
			Offsets: map[int32]int64{1: int64(100 * i)}, Params: teacherParams(float32(i)),
			Hyper: alignet.TeacherHyper{Targets: "hard"},
			Eval:  alignet.TeacherEval{Teacher: alignet.TeacherMetrics{N: i, Accuracy: 0.5}},
		}, 2)
		if err != nil || v.Version != int64(i) || v.CreatedAt.IsZero() {
			t.Fatalf("InsertTeacherVersion #%d = %+v, %v", i, v, err)
		}
	}
	vs, err := s.TeacherVersions(ctx, "s")
	if err != nil || len(vs) != 2 || vs[0].Version != 3 || vs[1].Version != 2 {
		t.Fatalf("TeacherVersions keeping 2 = %+v, %v; want 3, 2", vs, err)
	}
	if v := vs[0]; v.Kind != alignet.VersionManual || v.Parent != 2 || v.JudgmentsSeen != 30 || v.Offsets[1] != 300 ||
		v.Params.W != nil || v.Params.B != nil || v.Params.P != 2 || v.Params.Tau != 1.5 || v.Eval.Teacher.N != 3 || v.Hyper.Targets != "hard" {
		t.Fatalf("version metadata = %+v", v)
	}
	v2, err := s.TeacherVersion(ctx, "s", 2)
	if err != nil || !reflect.DeepEqual(v2.Params, teacherParams(2)) || v2.Kind != alignet.VersionOnline {
		t.Fatalf("TeacherVersion(2) = %+v, %v", v2, err)
	}
	if newest, err := s.TeacherVersion(ctx, "s", 0); err != nil || newest.Version != 3 || !reflect.DeepEqual(newest.Params, teacherParams(3)) {
		t.Fatalf("TeacherVersion(0) = %+v, %v; want version 3", newest, err)
	}
	for _, n := range []int64{1, 4} {
		if _, err := s.TeacherVersion(ctx, "s", n); !errors.Is(err, alignet.ErrNotFound) {
			t.Fatalf("TeacherVersion(%d) = %v, want ErrNotFound", n, err)
		}
	}
	if st, err := s.TeacherState(ctx, "s"); err != nil || st.Version != 3 {
		t.Fatalf("state version after three versions = %d, %v; want 3", st.Version, err)
	}
}

func testRefitRequests(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s1", alignet.TaskOddOneOut)
	mustSpaceStudy(t, s, "s2", alignet.TaskAnchor)
	if err := s.RequestRefit(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("RequestRefit of a missing study = %v, want ErrNotFound", err)
	}
	for _, id := range []string{"s1", "s1", "s2"} {
		if err := s.RequestRefit(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.TakeRefitRequests(ctx, []string{"s1", "ghost"}); err != nil || !slices.Equal(got, []string{"s1"}) {
		t.Fatalf("TakeRefitRequests = %v, %v; want [s1]", got, err)
	}
	if got, err := s.TakeRefitRequests(ctx, []string{"s1", "s2"}); err != nil || !slices.Equal(got, []string{"s2"}) {
		t.Fatalf("second TakeRefitRequests = %v, %v; want [s2]", got, err)
	}
}
