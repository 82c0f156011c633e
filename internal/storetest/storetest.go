// Package storetest is one test suite for every implementation of the
// store interfaces package api consumes: the real *db.DB (db's tests run it
// against Postgres) and the API's in-memory fake (api's tests run it), so
// the fake the API is tested against cannot drift from the real store.
//
// The suite asserts only what the interfaces document, plus what Postgres
// imposes on text (no NUL, valid UTF-8), which the API must therefore
// reject before it reaches a store.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/alignet/alignet"
)

// Store is everything the suite exercises: the methods of api.SpaceStore,
// api.StudyStore, api.SettingsStore, api.JudgmentExporter, api.KeyStore,
// api.WorkerStore, api.ItemStore, api.TeacherStore, api.TeacherSource,
// api.SessionStore, api.FlagStore and api.ReadinessChecker, plus what the
// persister and the learner write and read with, which the suite needs to
// seed the rest: InsertJudgments, SaveLearnerProgress, TakeRefitRequests
// and FlagChangesSince.
type Store interface {
	PutSpace(ctx context.Context, name string, dim int) (alignet.Space, bool, error)
	GetSpace(ctx context.Context, name string) (alignet.Space, error)
	UpsertEmbeddings(ctx context.Context, space string, ids []string, vectors []float32) (int64, error)
	CountEmbeddings(ctx context.Context, space string) (int64, error)

	CreateStudy(ctx context.Context, s alignet.Study) (alignet.Study, bool, error)
	GetStudy(ctx context.Context, id string) (alignet.Study, error)
	ListStudies(ctx context.Context) ([]alignet.Study, error)
	AddStudyItems(ctx context.Context, study string, items []string) (int64, error)
	StudyItems(ctx context.Context, study string) ([]string, error)
	CountJudgments(ctx context.Context, study string) (int64, error)
	UpdateStudySettings(ctx context.Context, id string, update func(alignet.StudySettings) (alignet.StudySettings, error)) (alignet.Study, error)
	LoadEmbeddings(ctx context.Context, space string, ids []string) ([]float32, []bool, error)
	StudyStamps(ctx context.Context, studies []string) (map[string]alignet.StudyStamp, error)

	SaveLearnerProgress(ctx context.Context, p alignet.LearnerProgress) error
	TeacherState(ctx context.Context, study string) (alignet.TeacherState, error)
	TeacherStateMeta(ctx context.Context, study string) (alignet.TeacherState, error)
	InsertTeacherVersion(ctx context.Context, v alignet.TeacherVersion, keep int) (alignet.TeacherVersion, error)
	TeacherVersions(ctx context.Context, study string) ([]alignet.TeacherVersion, error)
	TeacherVersion(ctx context.Context, study string, n int64) (alignet.TeacherVersion, error)
	RequestRefit(ctx context.Context, study string) error
	TakeRefitRequests(ctx context.Context, studies []string) ([]string, error)

	InsertJudgments(ctx context.Context, js []alignet.Judgment) (int64, error)
	ExportJudgments(ctx context.Context, f alignet.JudgmentFilter, fn func(alignet.Judgment) error) error
	ExportJudgmentQueries(ctx context.Context, f alignet.JudgmentFilter, fn func(alignet.Judgment, *alignet.Query) error) error
	WorkerSummary(ctx context.Context, worker string) ([]alignet.WorkerStudy, error)

	CreateAPIKey(ctx context.Context, k alignet.APIKey, hash []byte) (alignet.APIKey, error)
	EnsureAPIKey(ctx context.Context, k alignet.APIKey, hash []byte) error
	APIKeyByHash(ctx context.Context, hash []byte) (alignet.APIKey, error)
	ListAPIKeys(ctx context.Context) ([]alignet.APIKey, error)
	RevokeAPIKey(ctx context.Context, id string) error
	KeysRevokedSince(ctx context.Context, since time.Time) ([]string, time.Time, error)

	OpenSession(ctx context.Context, s alignet.Session) (alignet.Session, bool, error)
	GetSession(ctx context.Context, study, id string) (alignet.Session, error)
	CompleteSession(ctx context.Context, study, id string, at time.Time) error
	LogQueries(ctx context.Context, qs []alignet.Query) (int64, error)
	GetQuery(ctx context.Context, study, id string) (alignet.Query, error)
	WorkerQueries(ctx context.Context, study, worker string) ([]alignet.Query, error)
	AnswerQueries(ctx context.Context, study string, as []alignet.Answer, flags alignet.FlagSettings) ([]alignet.AnswerOutcome, error)
	UnanswerQueries(ctx context.Context, study string, as []alignet.Answer, flags alignet.FlagSettings) error
	WorkerFlags(ctx context.Context, study string) ([]alignet.WorkerFlags, error)
	FlagChangesSince(ctx context.Context, since time.Time) ([]alignet.WorkerFlags, time.Time, error)
	RepeatSet(ctx context.Context, study string) ([][3]string, error)
	EnsureRepeatSet(ctx context.Context, study string, ts [][3]string) ([][3]string, error)
	PutItemDisplays(ctx context.Context, ds []alignet.ItemDisplay) (int64, error)
	ItemDisplays(ctx context.Context, items []string) ([]alignet.ItemDisplay, error)
	PutItemImage(ctx context.Context, item, contentType string, data []byte) (alignet.ItemImage, error)
	ItemImage(ctx context.Context, item string) (alignet.ItemImage, []byte, error)

	Ready(ctx context.Context) error

	PutPool(ctx context.Context, p alignet.Pool) (alignet.Pool, error)
	GetPool(ctx context.Context, study string) (alignet.Pool, error)
	PutItemLabels(ctx context.Context, space string, labels []alignet.ItemLabels) (int64, error)
	ItemLabels(ctx context.Context, space string) (map[string][]string, error)
	CreateStudent(ctx context.Context, s alignet.Student) (alignet.Student, bool, error)
	GetStudent(ctx context.Context, study, id string) (alignet.Student, error)
	ListStudents(ctx context.Context, study string) ([]alignet.Student, error)
	DeleteStudent(ctx context.Context, study, id string) error
	StudentVersions(ctx context.Context, study, id string) ([]alignet.StudentVersion, error)
	StudentVersion(ctx context.Context, study, id string, n int64) (alignet.StudentVersion, error)
	Datasets(ctx context.Context, study string) ([]alignet.Dataset, error)
	GetDataset(ctx context.Context, study string, n int64) (alignet.Dataset, error)
	GetArtifact(ctx context.Context, id int64) (alignet.Artifact, error)
	ReadArtifact(ctx context.Context, id, off, n int64, w io.Writer) error

	// SeedDataset stores data as the study's next dataset (as the trainer
	// does: an artifact completed with the dataset row) and keeps the
	// newest keep; SeedStudentVersion stores head as a student's next
	// version. The suite needs them to seed reads.
	SeedDataset(ctx context.Context, ds alignet.Dataset, data []byte, keep int) (alignet.Dataset, error)
	SeedStudentVersion(ctx context.Context, v alignet.StudentVersion, head []byte) (alignet.StudentVersion, error)
}

// Run runs the whole suite as parallel subtests, each on a fresh, empty
// store from newStore.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, Store)
	}{
		{"Spaces", testSpaces},
		{"Embeddings", testEmbeddings},
		{"Studies", testStudies},
		{"StudyItems", testStudyItems},
		{"Judgments", testJudgments},
		{"Keys", testKeys},
		{"KeysRevokedSince", testKeysRevokedSince},
		{"BoundKeys", testBoundKeys},
		{"ItemDisplays", testItemDisplays},
		{"ItemImages", testItemImages},
		{"RejectsText", testRejectsText},
		{"Pools", testPools},
		{"Labels", testLabels},
		{"Students", testStudents},
		{"Datasets", testDatasets},
		{"StudySettings", testStudySettings},
		{"LoadEmbeddings", testLoadEmbeddings},
		{"StudyStamps", testStudyStamps},
		{"TeacherState", testTeacherState},
		{"TeacherVersions", testTeacherVersions},
		{"RefitRequests", testRefitRequests},
		{"Sessions", testSessions},
		{"QueryLog", testQueryLog},
		{"Answers", testAnswers},
		{"RepeatSet", testRepeatSet},
		{"Ready", func(t *testing.T, s Store) {
			if err := s.Ready(context.Background()); err != nil {
				t.Fatalf("Ready: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func hashOf(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func mustSpaceStudy(t *testing.T, s Store, study string, task alignet.Task) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := s.PutSpace(ctx, "space-"+study, 2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateStudy(ctx, alignet.Study{ID: study, Task: task, Space: "space-" + study}); err != nil {
		t.Fatal(err)
	}
}

func testSpaces(t *testing.T, s Store) {
	ctx := context.Background()
	sp, created, err := s.PutSpace(ctx, "clip", 3)
	if err != nil || !created || sp.Name != "clip" || sp.Dim != 3 || sp.CreatedAt.IsZero() {
		t.Fatalf("PutSpace = %+v, %v, %v", sp, created, err)
	}
	again, created, err := s.PutSpace(ctx, "clip", 3)
	if err != nil || created || !again.CreatedAt.Equal(sp.CreatedAt) {
		t.Fatalf("PutSpace again = %+v, %v, %v; want the existing space, created=false", again, created, err)
	}
	if _, _, err := s.PutSpace(ctx, "clip", 4); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("PutSpace with another dim: err = %v, want ErrConflict", err)
	}
	got, err := s.GetSpace(ctx, "clip")
	if err != nil || got.Dim != 3 || !got.CreatedAt.Equal(sp.CreatedAt) {
		t.Fatalf("GetSpace = %+v, %v", got, err)
	}
	if _, err := s.GetSpace(ctx, "nope"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("GetSpace missing: err = %v, want ErrNotFound", err)
	}
}

func testEmbeddings(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.UpsertEmbeddings(ctx, "nope", []string{"a"}, []float32{1, 2}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("UpsertEmbeddings into missing space: err = %v, want ErrNotFound", err)
	}
	if _, err := s.CountEmbeddings(ctx, "nope"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("CountEmbeddings of missing space: err = %v, want ErrNotFound", err)
	}
	if _, _, err := s.PutSpace(ctx, "sp", 2); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountEmbeddings(ctx, "sp"); err != nil || n != 0 {
		t.Fatalf("CountEmbeddings of empty space = %d, %v", n, err)
	}
	if n, err := s.UpsertEmbeddings(ctx, "sp", []string{"a", "b"}, []float32{1, 2, 3, 4}); err != nil || n != 2 {
		t.Fatalf("UpsertEmbeddings = %d, %v; want 2", n, err)
	}
	if n, err := s.UpsertEmbeddings(ctx, "sp", []string{"b", "c"}, []float32{5, 6, 7, 8}); err != nil || n != 2 {
		t.Fatalf("UpsertEmbeddings overlapping = %d, %v; want 2 rows written", n, err)
	}
	for _, bad := range []struct {
		ids  []string
		vecs []float32
	}{
		{[]string{"d", "d"}, []float32{1, 2, 3, 4}}, // duplicate id
		{[]string{"d", ""}, []float32{1, 2, 3, 4}},  // empty id
		{[]string{"d", "e"}, []float32{1, 2, 3}},    // wrong length
	} {
		if _, err := s.UpsertEmbeddings(ctx, "sp", bad.ids, bad.vecs); err == nil {
			t.Errorf("UpsertEmbeddings(%q, %d floats) succeeded", bad.ids, len(bad.vecs))
		}
	}
	if n, err := s.CountEmbeddings(ctx, "sp"); err != nil || n != 3 {
		t.Fatalf("CountEmbeddings = %d, %v; want 3 (failed upserts store nothing)", n, err)
	}
}

func testStudies(t *testing.T, s Store) {
	ctx := context.Background()
	if _, _, err := s.CreateStudy(ctx, alignet.Study{ID: "s1", Task: alignet.TaskOddOneOut, Space: "ghost"}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("CreateStudy in missing space: err = %v, want ErrNotFound", err)
	}
	for _, sp := range []string{"clip", "dino"} {
		if _, _, err := s.PutSpace(ctx, sp, 2); err != nil {
			t.Fatal(err)
		}
	}
	st, created, err := s.CreateStudy(ctx, alignet.Study{ID: "s2", Task: alignet.TaskOddOneOut, Space: "clip"})
	if err != nil || !created || st.ID != "s2" || st.Task != alignet.TaskOddOneOut || st.Space != "clip" || st.CreatedAt.IsZero() {
		t.Fatalf("CreateStudy = %+v, %v, %v", st, created, err)
	}
	again, created, err := s.CreateStudy(ctx, alignet.Study{ID: "s2", Task: alignet.TaskOddOneOut, Space: "clip"})
	if err != nil || created || !again.CreatedAt.Equal(st.CreatedAt) {
		t.Fatalf("CreateStudy again = %+v, %v, %v; want the existing study, created=false", again, created, err)
	}
	for _, other := range []alignet.Study{
		{ID: "s2", Task: alignet.TaskAnchor, Space: "clip"},
		{ID: "s2", Task: alignet.TaskOddOneOut, Space: "dino"},
	} {
		if _, _, err := s.CreateStudy(ctx, other); !errors.Is(err, alignet.ErrConflict) {
			t.Fatalf("CreateStudy(%+v) over s2: err = %v, want ErrConflict", other, err)
		}
	}
	if _, _, err := s.CreateStudy(ctx, alignet.Study{ID: "a1", Task: alignet.TaskAnchor, Space: "dino"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetStudy(ctx, "s2")
	if err != nil || got.Task != alignet.TaskOddOneOut || got.Space != "clip" || !got.CreatedAt.Equal(st.CreatedAt) {
		t.Fatalf("GetStudy = %+v, %v", got, err)
	}
	if _, err := s.GetStudy(ctx, "nope"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("GetStudy missing: err = %v, want ErrNotFound", err)
	}
	list, err := s.ListStudies(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "a1" || list[1].ID != "s2" || list[0].Task != alignet.TaskAnchor {
		t.Fatalf("ListStudies = %+v, %v; want a1, s2 sorted by id", list, err)
	}
}

func testStudyItems(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.AddStudyItems(ctx, "nope", []string{"a"}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("AddStudyItems to missing study: err = %v, want ErrNotFound", err)
	}
	if _, err := s.StudyItems(ctx, "nope"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("StudyItems of missing study: err = %v, want ErrNotFound", err)
	}
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	items, err := s.StudyItems(ctx, "s")
	if err != nil || items == nil || len(items) != 0 {
		t.Fatalf("StudyItems of empty study = %#v, %v; want empty, non-nil", items, err)
	}
	if n, err := s.AddStudyItems(ctx, "s", []string{"b", "é", "a", "B", "b"}); err != nil || n != 4 {
		t.Fatalf("AddStudyItems = %d, %v; want 4 new", n, err)
	}
	if n, err := s.AddStudyItems(ctx, "s", []string{"a", "c"}); err != nil || n != 1 {
		t.Fatalf("AddStudyItems overlapping = %d, %v; want 1 new", n, err)
	}
	if _, err := s.AddStudyItems(ctx, "s", []string{"d", ""}); err == nil {
		t.Fatal("AddStudyItems with an empty item succeeded")
	}
	want := []string{"B", "a", "b", "c", "é"} // bytewise
	if items, err := s.StudyItems(ctx, "s"); err != nil || !slices.Equal(items, want) {
		t.Fatalf("StudyItems = %q, %v; want %q", items, err, want)
	}
}

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func judgment(study, id, worker string, sec int) alignet.Judgment {
	return alignet.Judgment{
		ID: id, Study: study, Task: alignet.TaskOddOneOut, Worker: worker,
		Items: [3]string{"x-" + id, "y", "z"}, Odd: "y", RTMillis: int32(1000 + sec),
		QueryID: "q-" + id, QueryKind: alignet.QueryActive, ReceivedAt: t0.Add(time.Duration(sec) * time.Second),
	}
}

func testJudgments(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	mustSpaceStudy(t, s, "other", alignet.TaskOddOneOut)
	if _, err := s.CountJudgments(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("CountJudgments of missing study: err = %v, want ErrNotFound", err)
	}
	if _, err := s.InsertJudgments(ctx, []alignet.Judgment{judgment("s", "x", "w", 1), judgment("ghost", "x", "w", 1)}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("InsertJudgments into a missing study: err = %v, want ErrNotFound", err)
	}
	// Out of order, ties on received_at broken by id, one anchor judgment.
	js := []alignet.Judgment{
		judgment("s", "c", "w1", 30), judgment("s", "b", "w2", 10), judgment("s", "a", "w1", 30),
		judgment("s", "d", "w1", 20), judgment("s", "e", "w2", 40), judgment("other", "a", "w1", 15),
	}
	js[1].Odd, js[1].QueryID, js[1].QueryKind, js[1].Task = "", "", "", alignet.TaskAnchor
	if n, err := s.InsertJudgments(ctx, js); err != nil || n != 6 {
		t.Fatalf("InsertJudgments = %d, %v; want 6", n, err)
	}
	// Idempotent on (study, id): the stored judgment wins.
	dup := judgment("s", "a", "w9", 99)
	if n, err := s.InsertJudgments(ctx, []alignet.Judgment{dup, judgment("s", "f", "w2", 50), judgment("s", "f", "w3", 51)}); err != nil || n != 1 {
		t.Fatalf("InsertJudgments with repeats = %d, %v; want 1 new", n, err)
	}
	if n, err := s.CountJudgments(ctx, "s"); err != nil || n != 6 {
		t.Fatalf("CountJudgments = %d, %v; want 6", n, err)
	}
	export := func(f alignet.JudgmentFilter) []alignet.Judgment {
		t.Helper()
		var out []alignet.Judgment
		if err := s.ExportJudgments(ctx, f, func(j alignet.Judgment) error { out = append(out, j); return nil }); err != nil {
			t.Fatalf("ExportJudgments(%+v): %v", f, err)
		}
		return out
	}
	keys := func(js []alignet.Judgment) []string {
		var out []string
		for _, j := range js {
			out = append(out, j.Study+"/"+j.ID)
		}
		return out
	}
	for _, tc := range []struct {
		f    alignet.JudgmentFilter
		want []string
	}{
		{alignet.JudgmentFilter{Study: "s"}, []string{"s/b", "s/d", "s/a", "s/c", "s/e", "s/f"}},
		{alignet.JudgmentFilter{Study: "s", Since: t0.Add(20 * time.Second)}, []string{"s/d", "s/a", "s/c", "s/e", "s/f"}},
		{alignet.JudgmentFilter{Study: "s", Until: t0.Add(30 * time.Second)}, []string{"s/b", "s/d"}},
		{alignet.JudgmentFilter{Study: "s", Worker: "w1"}, []string{"s/d", "s/a", "s/c"}},
		{alignet.JudgmentFilter{Worker: "w1"}, []string{"other/a", "s/d", "s/a", "s/c"}},
		{alignet.JudgmentFilter{}, []string{"s/b", "other/a", "s/d", "s/a", "s/c", "s/e", "s/f"}},
	} {
		if got := keys(export(tc.f)); !slices.Equal(got, tc.want) {
			t.Errorf("ExportJudgments(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	// Every field round-trips, the empty odd and query id of the anchor too.
	got := export(alignet.JudgmentFilter{Study: "s", Until: t0.Add(20 * time.Second)})
	if len(got) != 1 || !got[0].ReceivedAt.Equal(js[1].ReceivedAt) {
		t.Fatalf("export = %+v", got)
	}
	got[0].ReceivedAt = js[1].ReceivedAt
	if got[0] != js[1] {
		t.Fatalf("exported %+v, want %+v", got[0], js[1])
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.ExportJudgments(ctx, alignet.JudgmentFilter{Study: "s"}, func(alignet.Judgment) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("export with failing fn: err = %v after %d calls", err, calls)
	}
	calls = 0
	if err := s.ExportJudgments(ctx, alignet.JudgmentFilter{Study: "ghost"}, func(alignet.Judgment) error { calls++; return nil }); !errors.Is(err, alignet.ErrNotFound) || calls != 0 {
		t.Fatalf("export of missing study: err = %v after %d calls, want ErrNotFound before any", err, calls)
	}
	sum, err := s.WorkerSummary(ctx, "w1")
	want := []alignet.WorkerStudy{
		{Study: "other", Judgments: 1, First: t0.Add(15 * time.Second), Last: t0.Add(15 * time.Second)},
		{Study: "s", Judgments: 3, First: t0.Add(20 * time.Second), Last: t0.Add(30 * time.Second)},
	}
	if err != nil || !slices.EqualFunc(sum, want, func(a, b alignet.WorkerStudy) bool {
		return a.Study == b.Study && a.Judgments == b.Judgments && a.First.Equal(b.First) && a.Last.Equal(b.Last)
	}) {
		t.Fatalf("WorkerSummary(w1) = %+v, %v; want %+v", sum, err, want)
	}
	if sum, err := s.WorkerSummary(ctx, "nobody"); err != nil || sum == nil || len(sum) != 0 {
		t.Fatalf("WorkerSummary(nobody) = %#v, %v; want empty, non-nil", sum, err)
	}
}

func testKeys(t *testing.T, s Store) {
	ctx := context.Background()
	k, err := s.CreateAPIKey(ctx, alignet.APIKey{Name: "lab", Scopes: []string{"collect", "read"}, Prefix: "alg_12"}, hashOf("secret-1"))
	if err != nil || k.ID == "" || k.Name != "lab" || k.Prefix != "alg_12" || k.CreatedAt.IsZero() || k.RevokedAt != nil ||
		!slices.Equal(k.Scopes, []string{"collect", "read"}) {
		t.Fatalf("CreateAPIKey = %+v, %v", k, err)
	}
	if _, err := s.CreateAPIKey(ctx, alignet.APIKey{Name: "dup"}, hashOf("secret-1")); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("CreateAPIKey with a stored hash: err = %v, want ErrConflict", err)
	}
	if _, err := s.CreateAPIKey(ctx, alignet.APIKey{ID: k.ID, Name: "dup"}, hashOf("secret-2")); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("CreateAPIKey with a stored id: err = %v, want ErrConflict", err)
	}
	if _, err := s.CreateAPIKey(ctx, alignet.APIKey{Name: "short"}, []byte("abc")); err == nil {
		t.Fatal("CreateAPIKey with a 3-byte hash succeeded")
	}
	got, err := s.APIKeyByHash(ctx, hashOf("secret-1"))
	if err != nil || got.ID != k.ID || got.Name != "lab" || !slices.Equal(got.Scopes, k.Scopes) || !got.CreatedAt.Equal(k.CreatedAt) {
		t.Fatalf("APIKeyByHash = %+v, %v", got, err)
	}
	if _, err := s.APIKeyByHash(ctx, hashOf("unknown")); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("APIKeyByHash unknown: err = %v, want ErrNotFound", err)
	}
	admin := alignet.APIKey{ID: "admin", Name: "bootstrap admin", Scopes: []string{"admin"}, Prefix: "alg_ad"}
	for i := range 2 {
		if err := s.EnsureAPIKey(ctx, admin, hashOf("admin-key")); err != nil {
			t.Fatalf("EnsureAPIKey #%d: %v", i, err)
		}
	}
	if err := s.EnsureAPIKey(ctx, alignet.APIKey{ID: "admin", Name: "x"}, hashOf("other")); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("EnsureAPIKey with a taken id and a new hash: err = %v, want ErrConflict", err)
	}
	if err := s.RevokeAPIKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	keys, err := s.ListAPIKeys(ctx)
	if err != nil || len(keys) != 2 || keys[0].ID != k.ID || keys[1].ID != "admin" || keys[0].RevokedAt == nil || keys[1].RevokedAt != nil {
		t.Fatalf("ListAPIKeys = %+v, %v; want %s (revoked) then admin, oldest first", keys, err, k.ID)
	}
	first := *keys[0].RevokedAt
	if err := s.RevokeAPIKey(ctx, k.ID); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if keys, err := s.ListAPIKeys(ctx); err != nil || !keys[0].RevokedAt.Equal(first) {
		t.Fatalf("revoking twice changed the revocation time: %+v, %v", keys, err)
	}
	if err := s.RevokeAPIKey(ctx, "nope"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("RevokeAPIKey unknown: err = %v, want ErrNotFound", err)
	}
	if _, err := s.APIKeyByHash(ctx, hashOf("secret-1")); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("APIKeyByHash revoked: err = %v, want ErrNotFound", err)
	}
}

func testKeysRevokedSince(t *testing.T, s Store) {
	ctx := context.Background()
	var ids []string
	for _, name := range []string{"k1", "k2"} {
		k, err := s.CreateAPIKey(ctx, alignet.APIKey{Name: name, Scopes: []string{"read"}}, hashOf(name))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	none, asOf0, err := s.KeysRevokedSince(ctx, time.Time{})
	if err != nil || len(none) != 0 || asOf0.IsZero() {
		t.Fatalf("KeysRevokedSince before revocations = %v, %v, %v", none, asOf0, err)
	}
	if err := s.RevokeAPIKey(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	got, asOf1, err := s.KeysRevokedSince(ctx, asOf0)
	if err != nil || !slices.Equal(got, ids[:1]) || asOf1.Before(asOf0) {
		t.Fatalf("KeysRevokedSince(before revocation) = %v, %v, %v; want [%s]", got, asOf1, err, ids[0])
	}
	if got, _, err := s.KeysRevokedSince(ctx, time.Time{}); err != nil || !slices.Equal(got, ids[:1]) {
		t.Fatalf("KeysRevokedSince(zero) = %v, %v; want [%s]", got, err, ids[0])
	}
	if got, _, err := s.KeysRevokedSince(ctx, asOf1); err != nil || len(got) != 0 {
		t.Fatalf("KeysRevokedSince(after revocation) = %v, %v; want none", got, err)
	}
}

// testRejectsText checks that text Postgres cannot store (NUL, invalid
// UTF-8) fails, and stores nothing, in every store: the API must reject it
// first.
func testRejectsText(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	for _, bad := range []string{"a\x00b", "a\xffb"} {
		if _, _, err := s.PutSpace(ctx, bad, 2); err == nil {
			t.Errorf("PutSpace(%q) succeeded", bad)
		}
		if _, err := s.CreateAPIKey(ctx, alignet.APIKey{Name: bad, Scopes: []string{"read"}}, hashOf(bad)); err == nil {
			t.Errorf("CreateAPIKey with name %q succeeded", bad)
		}
		if _, err := s.AddStudyItems(ctx, "s", []string{"ok-" + bad, bad}); err == nil {
			t.Errorf("AddStudyItems(%q) succeeded", bad)
		}
		j := judgment("s", "j", bad, 1)
		if _, err := s.InsertJudgments(ctx, []alignet.Judgment{j}); err == nil {
			t.Errorf("InsertJudgments with worker %q succeeded", bad)
		}
	}
	if items, err := s.StudyItems(ctx, "s"); err != nil || len(items) != 0 {
		t.Fatalf("StudyItems after rejected adds = %q, %v", items, err)
	}
	if n, err := s.CountJudgments(ctx, "s"); err != nil || n != 0 {
		t.Fatalf("CountJudgments after rejected inserts = %d, %v", n, err)
	}
	if keys, err := s.ListAPIKeys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("ListAPIKeys after rejected creates = %+v, %v", keys, err)
	}
	// Lookups fail too, rather than find nothing: the API must not pass
	// such text on as an id or filter.
	bad := "a\x00b"
	if _, err := s.GetStudy(ctx, bad); err == nil || errors.Is(err, alignet.ErrNotFound) {
		t.Errorf("GetStudy(%q): err = %v, want a failure", bad, err)
	}
	if err := s.ExportJudgments(ctx, alignet.JudgmentFilter{Study: "s", Worker: bad}, func(alignet.Judgment) error { return nil }); err == nil {
		t.Errorf("ExportJudgments with worker %q succeeded", bad)
	}
	if _, err := s.WorkerSummary(ctx, bad); err == nil {
		t.Errorf("WorkerSummary(%q) succeeded", bad)
	}
}

func testPools(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut) // space-s, dim 2
	if _, _, err := s.PutSpace(ctx, "big", 2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutSpace(ctx, "wide", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpsertEmbeddings(ctx, "big", []string{"a", "b", "c", "d"}, []float32{1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPool(ctx, "s"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("GetPool before PutPool: err = %v, want ErrNotFound", err)
	}
	for _, p := range []alignet.Pool{{Study: "ghost", Space: "big"}, {Study: "s", Space: "ghost"}} {
		if _, err := s.PutPool(ctx, p); !errors.Is(err, alignet.ErrNotFound) {
			t.Errorf("PutPool(%+v): err = %v, want ErrNotFound", p, err)
		}
	}
	var fe *alignet.FieldError
	if _, err := s.PutPool(ctx, alignet.Pool{Study: "s", Space: "wide"}); !errors.As(err, &fe) || fe.Field != "space" {
		t.Errorf("PutPool over a space of another dim: err = %v, want a FieldError on space", err)
	}
	if _, err := s.PutPool(ctx, alignet.Pool{Study: "s", Space: "big", Items: []string{"a", "zz", "b"}}); !errors.As(err, &fe) || fe.Field != "items[1]" {
		t.Errorf("PutPool with an item without embedding: err = %v, want a FieldError on items[1]", err)
	}
	all, err := s.PutPool(ctx, alignet.Pool{Study: "s", Space: "big"})
	if err != nil || all.Items != nil || all.UpdatedAt.IsZero() {
		t.Fatalf("PutPool(all) = %+v, %v", all, err)
	}
	if _, err := s.PutPool(ctx, alignet.Pool{Study: "s", Space: "big", Items: []string{"c", "a", "b"}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetPool(ctx, "s")
	if err != nil || got.Space != "big" || !slices.Equal(got.Items, []string{"c", "a", "b"}) {
		t.Fatalf("GetPool = %+v, %v; want the listed items in their order", got, err)
	}
}

func testLabels(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.PutItemLabels(ctx, "ghost", []alignet.ItemLabels{{Item: "a", Labels: []string{"x"}}}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("PutItemLabels into a missing space: err = %v, want ErrNotFound", err)
	}
	if _, _, err := s.PutSpace(ctx, "sp", 2); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PutItemLabels(ctx, "sp", []alignet.ItemLabels{{Item: "a", Labels: []string{"animal", "pet \"x\""}}, {Item: "b", Labels: []string{}}}); err != nil || n != 2 {
		t.Fatalf("PutItemLabels = %d, %v", n, err)
	}
	if _, err := s.PutItemLabels(ctx, "sp", []alignet.ItemLabels{{Item: "b", Labels: []string{"tool"}}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ItemLabels(ctx, "sp")
	if err != nil || len(got) != 2 || !slices.Equal(got["a"], []string{"animal", "pet \"x\""}) || !slices.Equal(got["b"], []string{"tool"}) {
		t.Fatalf("ItemLabels = %q, %v", got, err)
	}
}

func testStudents(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	if _, _, err := s.PutSpace(ctx, "w2v", 3); err != nil {
		t.Fatal(err)
	}
	set := alignet.DefaultStudentSettings()
	set.Epochs = 7
	if _, _, err := s.CreateStudent(ctx, alignet.Student{Study: "ghost", ID: "a", Space: "w2v", Settings: set}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("CreateStudent in a missing study: err = %v", err)
	}
	if _, _, err := s.CreateStudent(ctx, alignet.Student{Study: "s", ID: "a", Space: "ghost", Settings: set}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("CreateStudent over a missing space: err = %v", err)
	}
	st, created, err := s.CreateStudent(ctx, alignet.Student{Study: "s", ID: "w", Space: "w2v", Settings: set})
	if err != nil || !created || st.Settings.Epochs != 7 || st.Current != 0 || st.CreatedAt.IsZero() {
		t.Fatalf("CreateStudent = %+v, %v, %v", st, created, err)
	}
	again, created, err := s.CreateStudent(ctx, alignet.Student{Study: "s", ID: "w", Space: "w2v", Settings: alignet.DefaultStudentSettings()})
	if err != nil || created || again.Settings.Epochs != 7 {
		t.Fatalf("CreateStudent again = %+v, %v, %v; want the stored one", again, created, err)
	}
	if _, _, err := s.CreateStudent(ctx, alignet.Student{Study: "s", ID: "w", Space: "space-s", Settings: set}); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("CreateStudent with another space: err = %v, want ErrConflict", err)
	}
	if _, _, err := s.CreateStudent(ctx, alignet.Student{Study: "s", ID: "a", Space: "w2v", Settings: set}); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListStudents(ctx, "s")
	if err != nil || len(list) != 2 || list[0].ID != "a" || list[1].ID != "w" {
		t.Fatalf("ListStudents = %+v, %v", list, err)
	}
	if vs, err := s.StudentVersions(ctx, "s", "w"); err != nil || vs == nil || len(vs) != 0 {
		t.Fatalf("StudentVersions before training = %#v, %v", vs, err)
	}
	if _, err := s.StudentVersion(ctx, "s", "w", 0); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("StudentVersion(current) before a promotion: err = %v, want ErrNotFound", err)
	}
	v1, err := s.SeedStudentVersion(ctx, alignet.StudentVersion{Study: "s", Student: "w", Dataset: 1, Promoted: true, Settings: set, D: 3, P: 3}, []byte("head-1"))
	if err != nil || v1.Version != 1 {
		t.Fatalf("SeedStudentVersion = %+v, %v", v1, err)
	}
	v2, err := s.SeedStudentVersion(ctx, alignet.StudentVersion{Study: "s", Student: "w", Dataset: 2, Parent: 1, Reason: "worse", Settings: set, D: 3, P: 3,
		Metrics: alignet.StudentMetrics{Held: alignet.TeacherMetrics{N: 5, Accuracy: 0.4}}}, []byte("head-2"))
	if err != nil || v2.Version != 2 {
		t.Fatal(err)
	}
	cur, err := s.StudentVersion(ctx, "s", "w", 0)
	if err != nil || cur.Version != 1 || !cur.Promoted {
		t.Fatalf("current = %+v, %v; want version 1 (2 was not promoted)", cur, err)
	}
	got2, err := s.StudentVersion(ctx, "s", "w", 2)
	if err != nil || got2.Promoted || got2.Reason != "worse" || got2.Parent != 1 || got2.Metrics.Held.Accuracy != 0.4 || got2.Settings.Epochs != 7 {
		t.Fatalf("version 2 = %+v, %v", got2, err)
	}
	var buf bytes.Buffer
	if err := s.ReadArtifact(ctx, got2.Artifact, 0, 6, &buf); err != nil || buf.String() != "head-2" {
		t.Fatalf("head of version 2 = %q, %v", buf.String(), err)
	}
	if vs, err := s.StudentVersions(ctx, "s", "w"); err != nil || len(vs) != 2 || vs[0].Version != 2 {
		t.Fatalf("StudentVersions = %+v, %v; want newest first", vs, err)
	}
	if st, err := s.GetStudent(ctx, "s", "w"); err != nil || st.Current != 1 {
		t.Fatalf("GetStudent = %+v, %v; want current 1", st, err)
	}
	if err := s.DeleteStudent(ctx, "s", "w"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetStudent(ctx, "s", "w"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("GetStudent after delete: err = %v", err)
	}
	if _, err := s.GetArtifact(ctx, got2.Artifact); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("the deleted student's head is still there: err = %v", err)
	}
	if err := s.DeleteStudent(ctx, "s", "w"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("DeleteStudent twice: err = %v, want ErrNotFound", err)
	}
}

func testDatasets(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	if _, err := s.Datasets(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("Datasets of a missing study: err = %v", err)
	}
	if ds, err := s.Datasets(ctx, "s"); err != nil || ds == nil || len(ds) != 0 {
		t.Fatalf("Datasets before any = %#v, %v", ds, err)
	}
	if _, err := s.GetDataset(ctx, "s", 0); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("GetDataset(current) before any: err = %v", err)
	}
	data := [][]byte{bytes.Repeat([]byte("0123456789"), 1000), []byte("second dataset"), []byte("third")}
	info := alignet.DatasetInfo{Strategies: []alignet.StrategyCount{{Strategy: "random", Triplets: 5}}, Clusters: 3, Stages: map[string]float64{"load": 1.5}}
	var made []alignet.Dataset
	for i, d := range data {
		ds, err := s.SeedDataset(ctx, alignet.Dataset{Study: "s", TeacherVersion: int64(10 + i), Seed: 1 << 63, Triplets: 5, Items: 4,
			Space: "space-s", InputHash: "h", Info: info}, d, 2)
		if err != nil || ds.Version != int64(i+1) || ds.Size != int64(len(d)) || ds.SHA256 == "" {
			t.Fatalf("SeedDataset #%d = %+v, %v", i, ds, err)
		}
		made = append(made, ds)
	}
	list, err := s.Datasets(ctx, "s")
	if err != nil || len(list) != 2 || list[0].Version != 3 || list[1].Version != 2 {
		t.Fatalf("Datasets = %+v, %v; want versions 3 and 2 (keep 2)", list, err)
	}
	if list[1].Seed != 1<<63 || list[1].TeacherVersion != 11 || list[1].Info.Clusters != 3 || list[1].Info.Stages["load"] != 1.5 || list[1].Info.Strategies[0].Triplets != 5 {
		t.Fatalf("dataset 2 = %+v", list[1])
	}
	cur, err := s.GetDataset(ctx, "s", 0)
	if err != nil || cur.Version != 3 {
		t.Fatalf("GetDataset(current) = %+v, %v", cur, err)
	}
	if _, err := s.GetDataset(ctx, "s", 1); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("GetDataset(1) after retention: err = %v", err)
	}
	if _, err := s.GetArtifact(ctx, made[0].Artifact); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("the retired dataset's artifact is still there: err = %v", err)
	}
	a, err := s.GetArtifact(ctx, cur.Artifact)
	if err != nil || a.Size != int64(len(data[2])) || a.SHA256 != cur.SHA256 {
		t.Fatalf("GetArtifact = %+v, %v", a, err)
	}
	var buf bytes.Buffer
	if err := s.ReadArtifact(ctx, list[1].Artifact, 3, 8, &buf); err != nil || buf.String() != "ond data" {
		t.Fatalf("ReadArtifact range = %q, %v", buf.String(), err)
	}
	if err := s.ReadArtifact(ctx, list[1].Artifact, 10, 10, io.Discard); err == nil {
		t.Fatal("ReadArtifact beyond the end succeeded")
	}
}

func testBoundKeys(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s1", alignet.TaskOddOneOut)
	k, err := s.CreateAPIKey(ctx, alignet.APIKey{Name: "page", Scopes: []string{"collect"}, Study: "s1"}, hashOf("bound"))
	if err != nil || k.Study != "s1" {
		t.Fatalf("CreateAPIKey bound to s1 = %+v, %v", k, err)
	}
	if got, err := s.APIKeyByHash(ctx, hashOf("bound")); err != nil || got.Study != "s1" {
		t.Fatalf("APIKeyByHash of a bound key = %+v, %v; want study s1", got, err)
	}
	free, err := s.CreateAPIKey(ctx, alignet.APIKey{Name: "free", Scopes: []string{"collect"}}, hashOf("free"))
	if err != nil || free.Study != "" {
		t.Fatalf("CreateAPIKey unbound = %+v, %v", free, err)
	}
	if _, err := s.CreateAPIKey(ctx, alignet.APIKey{Name: "x", Scopes: []string{"collect"}, Study: "nope"}, hashOf("x")); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("CreateAPIKey bound to a missing study: err = %v, want ErrNotFound", err)
	}
	keys, err := s.ListAPIKeys(ctx)
	if err != nil || len(keys) != 2 || keys[0].Study != "s1" || keys[1].Study != "" {
		t.Fatalf("ListAPIKeys = %+v, %v; want the bound key, then the unbound one", keys, err)
	}
}

func testItemDisplays(t *testing.T, s Store) {
	ctx := context.Background()
	if got, err := s.ItemDisplays(ctx, []string{"a", "b"}); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("ItemDisplays before any = %#v, %v; want empty, non-nil", got, err)
	}
	n, err := s.PutItemDisplays(ctx, []alignet.ItemDisplay{
		{Item: "b", Label: "bee"},
		{Item: "a", Label: "ant", ImageURL: "https://example.org/a.jpg"},
		{Item: "c", Label: "first"},
		{Item: "c", Label: "cat"},
	})
	if err != nil || n != 3 {
		t.Fatalf("PutItemDisplays = %d, %v; want 3 rows (c once)", n, err)
	}
	got, err := s.ItemDisplays(ctx, []string{"c", "a", "zz", "a"})
	if err != nil || len(got) != 2 || got[0].Item != "a" || got[1].Item != "c" {
		t.Fatalf("ItemDisplays(c, a, zz, a) = %+v, %v; want a then c", got, err)
	}
	if got[0].Label != "ant" || got[0].ImageURL != "https://example.org/a.jpg" || got[0].Image != nil || got[0].UpdatedAt.IsZero() ||
		got[1].Label != "cat" || got[1].ImageURL != "" {
		t.Fatalf("ItemDisplays = %+v", got)
	}
	// Replacing clears what is not given.
	if _, err := s.PutItemDisplays(ctx, []alignet.ItemDisplay{{Item: "a", Label: "aardvark"}}); err != nil {
		t.Fatal(err)
	}
	got, err = s.ItemDisplays(ctx, []string{"a"})
	if err != nil || len(got) != 1 || got[0].Label != "aardvark" || got[0].ImageURL != "" {
		t.Fatalf("ItemDisplays after replacing a = %+v, %v", got, err)
	}
	// An uploaded image alone is display data too, and keeps the label.
	if _, err := s.PutItemImage(ctx, "d", "image/png", []byte("png bytes")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutItemImage(ctx, "b", "image/gif", []byte("gif bytes")); err != nil {
		t.Fatal(err)
	}
	got, err = s.ItemDisplays(ctx, []string{"b", "d"})
	if err != nil || len(got) != 2 || got[0].Label != "bee" || got[0].Image == nil || got[0].Image.ContentType != "image/gif" ||
		got[1].Item != "d" || got[1].Label != "" || got[1].Image == nil || got[1].Image.Size != 9 || got[1].UpdatedAt.IsZero() {
		t.Fatalf("ItemDisplays(b, d) = %+v, %v; want b with label and image, d with an image only", got, err)
	}
	if _, err := s.PutItemDisplays(ctx, []alignet.ItemDisplay{{Item: "ok"}, {Item: ""}}); err == nil {
		t.Fatal("PutItemDisplays with an empty item succeeded")
	}
	if got, err := s.ItemDisplays(ctx, []string{"ok"}); err != nil || len(got) != 0 {
		t.Fatalf("a failed PutItemDisplays stored %+v, %v", got, err)
	}
}

func testItemImages(t *testing.T, s Store) {
	ctx := context.Background()
	if _, _, err := s.ItemImage(ctx, "a"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("ItemImage before upload: err = %v, want ErrNotFound", err)
	}
	data := []byte("\xff\xd8\xff jpeg bytes")
	img, err := s.PutItemImage(ctx, "a", "image/jpeg", data)
	sum := sha256.Sum256(data)
	if err != nil || img.ContentType != "image/jpeg" || img.Size != int64(len(data)) || img.SHA256 != hex.EncodeToString(sum[:]) || img.UpdatedAt.IsZero() {
		t.Fatalf("PutItemImage = %+v, %v", img, err)
	}
	got, b, err := s.ItemImage(ctx, "a")
	if err != nil || !bytes.Equal(b, data) || got.SHA256 != img.SHA256 || got.Size != img.Size || !got.UpdatedAt.Equal(img.UpdatedAt) {
		t.Fatalf("ItemImage = %+v, %q, %v", got, b, err)
	}
	next := []byte("a png now")
	img2, err := s.PutItemImage(ctx, "a", "image/png", next)
	if err != nil || img2.SHA256 == img.SHA256 || img2.UpdatedAt.Before(img.UpdatedAt) {
		t.Fatalf("PutItemImage again = %+v, %v", img2, err)
	}
	if got, b, err := s.ItemImage(ctx, "a"); err != nil || got.ContentType != "image/png" || !bytes.Equal(b, next) {
		t.Fatalf("ItemImage after replacing = %+v, %q, %v", got, b, err)
	}
	if _, err := s.PutItemImage(ctx, "b", "text/html", []byte("<p>")); !errors.Is(err, alignet.ErrInvalid) {
		t.Fatalf("PutItemImage text/html: err = %v, want ErrInvalid", err)
	}
	if _, _, err := s.ItemImage(ctx, "b"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("a refused image was stored: %v", err)
	}
}
