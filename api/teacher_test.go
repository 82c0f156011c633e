package api

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/modelfile"
)

// testVectors are the embeddings of the env's items in space "clip"; c6
// has none.
var testVectors = map[string][]float32{
	"c1": {1, 0, 0.5, 0},
	"c2": {0.9, 0.1, 0.4, -0.2},
	"c3": {0, 1, 0, 0.2},
	"c4": {0.1, 0.8, -0.3, 0.3},
	"c5": {-0.5, 0.2, 1, 0},
}

// embed uploads testVectors.
func (e *env) embed() {
	e.t.Helper()
	var items []map[string]any
	for _, id := range slices.Sorted(maps.Keys(testVectors)) {
		items = append(items, map[string]any{"id": id, "vector": testVectors[id]})
	}
	b, _ := json.Marshal(map[string]any{"items": items})
	e.must(http.StatusOK, "POST", "/v1/spaces/clip/embeddings", e.admin, string(b))
}

// testTeacherParams returns a 3×4 teacher of task for space "clip".
func testTeacherParams(task alignet.Task) alignet.TeacherParams {
	return alignet.TeacherParams{
		Task: task, D: 4, P: 3,
		W:    []float32{1.5, 0.2, 0, -0.4, 0, 1, 0.7, 0.1, -0.3, 0.5, 0, 2},
		B:    []float32{0.1, -0.2, 0.05},
		Mean: 0.25, Std: 0.5, Tau: 0.7, Lambda: 0.03,
	}
}

// testState returns a fitted teacher state of study as the learner would
// store it, updated at the env's clock minus 2s.
func (e *env) testState(study string, task alignet.Task) alignet.TeacherState {
	now := e.clock.Now().UTC().Truncate(time.Microsecond)
	refit := now.Add(-time.Minute)
	maj := 0.75
	return alignet.TeacherState{
		Study: study, Status: alignet.TeacherFitted, Version: 0, UpdatedAt: now.Add(-2 * time.Second),
		JudgmentsSeen: 1200, JudgmentsTrained: 1000, NewestAcceptedAt: now.Add(-2500 * time.Millisecond),
		Params: testTeacherParams(task),
		Hyper:  alignet.TeacherHyper{Targets: "distilled", Lambdas: []float64{0.3, 0.1, 0.03}, LearningRate: 1e-3, Seed: 7},
		Prequential: []alignet.Prequential{{Window: 1000, N: 1000, Accuracy: 0.55, LogLoss: 0.95},
			{Window: 10000, N: 1200, Accuracy: 0.53, LogLoss: 0.97}},
		Eval: &alignet.TeacherEval{Teacher: alignet.TeacherMetrics{N: 120, Accuracy: 0.6, NLL: 0.9, ECE: 0.04, Repeats: 4, Majority: &maj},
			Raw: alignet.TeacherMetrics{N: 120, Accuracy: 0.5, NLL: 1.05, ECE: 0.08}},
		LastRefitAt: &refit, LastRefitJudgments: 1000, Skipped: map[string]int64{"held_out": 120, "no_embedding": 80},
	}
}

func decodeJSON[T any](t testing.TB, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func TestTeacherBeforeAnyState(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := decodeJSON[map[string]any](t, e.must(http.StatusOK, "GET", "/v1/studies/s1/teacher", e.read, "").Body.Bytes())
	if got["status"] != "empty" || !strings.Contains(got["message"].(string), "raw embedding space") ||
		got["version"] != 0.0 || got["updated_at"] != nil || got["judgments_seen"] != 0.0 || got["tau"] != 1.0 ||
		got["task"] != "odd-one-out" || got["eval"] != nil || got["last_refit"] != nil {
		t.Fatalf("teacher before any state = %v", got)
	}
	if d := got["dims"].(map[string]any); d["d"] != 4.0 || d["p"] != 4.0 {
		t.Fatalf("dims = %v, want the space's 4", d)
	}
	rec := e.must(http.StatusNotFound, "GET", "/v1/studies/s1/teacher.npz", e.read, "")
	if ae := apiErr(t, rec); ae.Code != CodeNotFound || !strings.Contains(ae.Message, "no teacher yet") {
		t.Fatalf("teacher.npz before any state: %+v", ae)
	}
	if rec.Header().Get("Content-Disposition") != "" {
		t.Fatal("error answer carries a Content-Disposition")
	}
	if ae := apiErr(t, e.must(http.StatusConflict, "POST", "/v1/studies/s1/teacher/versions", e.admin, "")); ae.Code != CodeConflict {
		t.Fatalf("manual version before any state: %+v", ae)
	}
	list := decodeJSON[map[string]any](t, e.must(http.StatusOK, "GET", "/v1/studies/s1/teacher/versions", e.read, "").Body.Bytes())
	if vs, ok := list["versions"].([]any); !ok || len(vs) != 0 {
		t.Fatalf("versions before any = %v", list)
	}
	if ae := apiErr(t, e.must(http.StatusNotFound, "GET", "/v1/studies/s1/teacher/versions/1", e.read, "")); ae.Field != "version" {
		t.Fatalf("missing version: %+v", ae)
	}
	for _, path := range []string{"/v1/studies/s1/teacher/versions/0", "/v1/studies/s1/teacher/versions/x",
		"/v1/studies/s1/teacher.npz?version=-1", "/v1/studies/s1/teacher.npz?version=1.5"} {
		if ae := apiErr(t, e.must(http.StatusBadRequest, "GET", path, e.read, "")); ae.Code != CodeInvalidParameter || ae.Field != "version" {
			t.Fatalf("GET %s: %+v", path, ae)
		}
	}
	for _, r := range []struct{ method, path string }{
		{"GET", "/v1/studies/ghost/teacher"}, {"GET", "/v1/studies/ghost/teacher.npz"},
		{"GET", "/v1/studies/ghost/teacher/versions"}, {"GET", "/v1/studies/ghost/teacher/versions/1"},
		{"GET", "/v1/studies/ghost/teacher.npz?version=1"}, {"POST", "/v1/studies/ghost/teacher/versions"},
		{"POST", "/v1/studies/ghost/teacher/refit"},
	} {
		key := e.read
		if r.method == "POST" {
			key = e.admin
		}
		e.must(http.StatusNotFound, r.method, r.path, key, "")
	}
}

func TestTeacherState(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	st := e.testState("s1", alignet.TaskOddOneOut)
	e.store.setState(st)
	rec := e.must(http.StatusOK, "GET", "/v1/studies/s1/teacher", e.read, "")
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(rec.Body.Bytes(), &raw)
	for _, k := range []string{"w", "W", "b", "B", "params"} {
		if _, ok := raw[k]; ok {
			t.Fatalf("teacher JSON has member %q: %s", k, rec.Body)
		}
	}
	var got teacherBody
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	wantFresh := st.UpdatedAt.Sub(st.NewestAcceptedAt).Seconds()
	wantStale := e.clock.Now().Sub(st.UpdatedAt).Seconds()
	if got.Status != alignet.TeacherFitted || got.Message != "" || got.Version != 0 || !got.UpdatedAt.Equal(st.UpdatedAt) ||
		!got.NewestAcceptedAt.Equal(st.NewestAcceptedAt) || math.Abs(*got.FreshnessSeconds-wantFresh) > 1e-9 ||
		math.Abs(*got.StalenessSeconds-wantStale) > 1e-9 || got.JudgmentsSeen != 1200 || got.JudgmentsTrained != 1000 ||
		got.Lambda != 0.03 || got.Tau != 0.7 || got.Dims != (dimsBody{D: 4, P: 3}) || got.Task != alignet.TaskOddOneOut {
		t.Fatalf("teacher = %s", rec.Body)
	}
	if got.LastRefit == nil || !got.LastRefit.At.Equal(*st.LastRefitAt) || got.LastRefit.Judgments != 1000 {
		t.Fatalf("last_refit = %+v", got.LastRefit)
	}
	if jsonOf(t, got.Eval) != jsonOf(t, st.Eval) || jsonOf(t, got.Prequential) != jsonOf(t, st.Prequential) ||
		jsonOf(t, got.Skipped) != jsonOf(t, st.Skipped) || jsonOf(t, got.Hyper) != jsonOf(t, st.Hyper) {
		t.Fatalf("metrics = %s, want those of %+v", rec.Body, st)
	}
	if e.store.callCount("TeacherState") != 0 {
		t.Fatal("GET .../teacher read W and b")
	}
	// An online-only teacher says so.
	st.Status = alignet.TeacherOnline
	e.store.setState(st)
	got = decodeJSON[teacherBody](t, e.must(http.StatusOK, "GET", "/v1/studies/s1/teacher", e.read, "").Body.Bytes())
	if got.Status != alignet.TeacherOnline || !strings.Contains(got.Message, "no full refit") {
		t.Fatalf("online teacher = %+v", got)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestManualVersionsAndList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(http.StatusOK, "PATCH", "/v1/studies/s1", e.admin, `{"settings":{"learner":{"keep_versions":2}}}`)
	st := e.testState("s1", alignet.TaskOddOneOut)
	e.store.setState(st)
	var made []versionBody
	for i := 1; i <= 3; i++ {
		rec := e.must(http.StatusCreated, "POST", "/v1/studies/s1/teacher/versions", e.admin, "")
		v := decodeJSON[versionBody](t, rec.Body.Bytes())
		if v.Version != int64(i) || v.Kind != alignet.VersionManual || v.Parent != int64(i-1) || v.JudgmentsSeen != 1200 ||
			jsonOf(t, v.Eval) != jsonOf(t, *st.Eval) || v.Dims != (dimsBody{4, 3}) || v.Tau != 0.7 || v.Hyper.Seed != 7 {
			t.Fatalf("manual version %d = %s", i, rec.Body)
		}
		if loc := rec.Header().Get("Location"); loc != "/v1/studies/s1/teacher/versions/"+itoa(i) {
			t.Fatalf("Location %q", loc)
		}
		if strings.Contains(rec.Body.String(), `"w"`) {
			t.Fatalf("version JSON holds W: %s", rec.Body)
		}
		made = append(made, v)
	}
	stored, err := e.store.TeacherVersion(t.Context(), "s1", 3)
	if err != nil || !slices.Equal(stored.Params.W, st.Params.W) || !slices.Equal(stored.Params.B, st.Params.B) {
		t.Fatalf("stored manual version = %+v, %v; want the state's parameters", stored.Params, err)
	}
	list := decodeJSON[struct {
		Study    string        `json:"study"`
		Versions []versionBody `json:"versions"`
	}](t, e.must(http.StatusOK, "GET", "/v1/studies/s1/teacher/versions", e.read, "").Body.Bytes())
	if list.Study != "s1" || len(list.Versions) != 2 || list.Versions[0].Version != 3 || list.Versions[1].Version != 2 {
		t.Fatalf("versions (keep 2) = %+v", list)
	}
	one := decodeJSON[versionBody](t, e.must(http.StatusOK, "GET", "/v1/studies/s1/teacher/versions/2", e.read, "").Body.Bytes())
	if jsonOf(t, one) != jsonOf(t, list.Versions[1]) || one.Kind != made[1].Kind {
		t.Fatalf("version 2 = %+v, want %+v", one, list.Versions[1])
	}
	e.must(http.StatusNotFound, "GET", "/v1/studies/s1/teacher/versions/1", e.read, "")
	if cur, _ := e.store.TeacherStateMeta(t.Context(), "s1"); cur.Version != 3 {
		t.Fatalf("state version = %d, want 3", cur.Version)
	}
}

func TestTeacherNPZ(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	st := e.testState("a1", alignet.TaskAnchor)
	e.store.setState(st)
	read := func(rec interface{ Header() http.Header }, body []byte) (w, b []float64, prov modelfile.Provenance, tau float64) {
		t.Helper()
		tch, p, err := modelfile.ReadTeacher(bytes.NewReader(body), int64(len(body)))
		if err != nil {
			t.Fatalf("ReadTeacher: %v", err)
		}
		if tch.D != 4 || tch.P != 3 || tch.Mean != st.Params.Mean || tch.Std != st.Params.Std || string(tch.Task) != "anchor" || tch.Lambda != 0.03 {
			t.Fatalf("teacher = %+v", tch)
		}
		return tch.W, tch.B, p, tch.Tau
	}
	rec := e.must(http.StatusOK, "GET", "/v1/studies/a1/teacher.npz", e.read, "")
	if cd := rec.Header().Get("Content-Disposition"); cd != `attachment; filename="a1-teacher.npz"` {
		t.Fatalf("Content-Disposition %q", cd)
	}
	if rec.Header().Get("Content-Length") == "" && rec.Body.Len() == 0 {
		t.Fatal("empty download")
	}
	w, b, prov, tau := read(rec, rec.Body.Bytes())
	for i, v := range st.Params.W {
		if w[i] != float64(v) {
			t.Fatalf("W[%d] = %v, want %v", i, w[i], v)
		}
	}
	for i, v := range st.Params.B {
		if b[i] != float64(v) {
			t.Fatalf("b[%d] = %v, want %v", i, b[i], v)
		}
	}
	if tau != 0.7 || prov.Kind != modelfile.KindTeacher || prov.Seed != 7 || prov.Task != "anchor" ||
		prov.Extra["study"] != "a1" || prov.Extra["version_kind"] != "current" || prov.Extra["judgments_seen"] != 1200.0 ||
		prov.Extra["version"] != 0.0 || prov.Hyper["targets"] != "distilled" {
		t.Fatalf("provenance = %+v", prov)
	}

	// A stored version is served as it was, whatever the state became.
	e.must(http.StatusCreated, "POST", "/v1/studies/a1/teacher/versions", e.admin, "")
	st.Params.W[0], st.JudgmentsSeen = 9, 1300
	e.store.setState(st)
	rec = e.must(http.StatusOK, "GET", "/v1/studies/a1/teacher.npz?version=1", e.read, "")
	if cd := rec.Header().Get("Content-Disposition"); cd != `attachment; filename="a1-teacher-v1.npz"` {
		t.Fatalf("Content-Disposition %q", cd)
	}
	w, _, prov, _ = read(rec, rec.Body.Bytes())
	if w[0] != 1.5 || prov.Extra["version"] != 1.0 || prov.Extra["version_kind"] != alignet.VersionManual ||
		prov.Extra["judgments_seen"] != 1200.0 {
		t.Fatalf("version 1: W[0] = %v, provenance %+v", w[0], prov)
	}
	rec = e.must(http.StatusOK, "GET", "/v1/studies/a1/teacher.npz", e.read, "")
	if w, _, prov, _ = read(rec, rec.Body.Bytes()); w[0] != 9 || prov.Extra["judgments_seen"] != 1300.0 || prov.Extra["version"] != 1.0 {
		t.Fatalf("current after a change: W[0] = %v, provenance %+v", w[0], prov)
	}
	e.must(http.StatusNotFound, "GET", "/v1/studies/a1/teacher.npz?version=2", e.read, "")
}

func TestRefitRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := e.must(http.StatusAccepted, "POST", "/v1/studies/s1/teacher/refit", e.admin, "")
	got := decodeJSON[map[string]any](t, rec.Body.Bytes())
	if got["study"] != "s1" || !strings.Contains(got["message"].(string), "learner that owns the study") {
		t.Fatalf("refit answer = %v", got)
	}
	if taken, err := e.store.TakeRefitRequests(t.Context(), []string{"s1", "a1"}); err != nil || !slices.Equal(taken, []string{"s1"}) {
		t.Fatalf("refit requests = %v, %v; want [s1]", taken, err)
	}
	e.must(http.StatusForbidden, "POST", "/v1/studies/s1/teacher/refit", e.read, "")
}
