package api

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/query"
)

// queryEnv is an env with a study "qs" over n items i0..i{n-1} of a
// space "emb" (dim 8) with random embeddings, created with the given
// settings.
func queryEnv(t *testing.T, n int, mod func(*alignet.StudySettings), mods ...func(*Config)) *env {
	t.Helper()
	e := newEnv(t, mods...)
	e.queryStudy("qs", n, mod)
	return e
}

func (e *env) queryStudy(id string, n int, mod func(*alignet.StudySettings)) {
	e.t.Helper()
	if e.req("GET", "/v1/spaces/emb", e.admin, "").Code == http.StatusNotFound {
		e.must(http.StatusCreated, "PUT", "/v1/spaces/emb", e.admin, `{"dim":8}`)
	}
	rng := rand.New(rand.NewPCG(uint64(n), 3))
	type item struct {
		ID     string    `json:"id"`
		Vector []float32 `json:"vector"`
	}
	var items []item
	var ids []string
	for i := range n {
		v := make([]float32, 8)
		for k := range v {
			v[k] = float32(rng.NormFloat64())
		}
		items = append(items, item{ID: "i" + strconv.Itoa(i), Vector: v})
		ids = append(ids, "i"+strconv.Itoa(i))
	}
	b, _ := json.Marshal(map[string]any{"items": items})
	e.must(http.StatusOK, "POST", "/v1/spaces/emb/embeddings", e.admin, string(b))
	settings := alignet.DefaultStudySettings()
	settings.Queries.PoolSize = 2000
	if mod != nil {
		mod(&settings)
	}
	if err := settings.Validate(); err != nil {
		e.t.Fatal(err)
	}
	if _, _, err := e.store.CreateStudy(context.Background(), alignet.Study{ID: id, Task: alignet.TaskOddOneOut, Space: "emb", Settings: settings}); err != nil {
		e.t.Fatal(err)
	}
	b, _ = json.Marshal(map[string]any{"items": ids})
	e.must(http.StatusOK, "POST", "/v1/studies/"+id+"/items", e.admin, string(b))
}

func (e *env) openSession(study, body string, status int) sessionBody {
	e.t.Helper()
	rec := e.must(status, "POST", "/v1/studies/"+study+"/sessions", e.collect, body)
	var s sessionBody
	if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) next(study, session string, n int) nextBody {
	e.t.Helper()
	rec := e.must(http.StatusOK, "GET", fmt.Sprintf("/v1/studies/%s/sessions/%s/next?n=%d", study, session, n), e.collect, "")
	if strings.Contains(rec.Body.String(), `"kind"`) {
		e.t.Fatalf("next reveals the query kind: %s", rec.Body)
	}
	var b nextBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// answerBody is a judgment answering q as worker, choosing odd.
func answerBody(id, worker string, q queryBody, odd string, rt int) string {
	b, _ := json.Marshal(map[string]any{"id": id, "worker": worker, "items": q.Items, "odd": odd, "rt_ms": rt, "query_id": q.QueryID})
	return string(b)
}

func TestSessionOpenReturnAndPlatforms(t *testing.T) {
	t.Parallel()
	e := queryEnv(t, 30, func(s *alignet.StudySettings) { s.Queries.Trials = 7 })
	a := e.openSession("qs", `{"worker":"alice","platform":"generic"}`, http.StatusCreated)
	if a.ID == "" || a.Trials != 7 || a.Complete || a.Platform != alignet.PlatformGeneric || a.Progress.Remaining != 7 {
		t.Fatalf("opened %+v", a)
	}
	if again := e.openSession("qs", `{"worker":"alice"}`, http.StatusOK); again.ID != a.ID {
		t.Fatalf("returning worker got session %s, want %s", again.ID, a.ID)
	}
	stored, err := e.store.GetSession(context.Background(), "qs", a.ID)
	if err != nil || stored.Worker != Pseudonym([]byte(testPseudonymKey), "alice") {
		t.Fatalf("stored session %+v, %v; want the pseudonym of alice", stored, err)
	}
	// Prolific needs a completion code; its raw worker id is never stored.
	rec := e.req("POST", "/v1/studies/qs/sessions", e.collect, `{"platform":"prolific","params":{"PROLIFIC_PID":"p1","STUDY_ID":"st","SESSION_ID":"se"}}`)
	if rec.Code != http.StatusConflict || apiErr(t, rec).Code != CodeNotReady {
		t.Fatalf("prolific without a code: %d %s", rec.Code, rec.Body)
	}
	e.queryStudy("pro", 30, func(s *alignet.StudySettings) { s.Queries.Completion.Code = "C0DE1" })
	p := e.openSession("pro", `{"platform":"prolific","params":{"PROLIFIC_PID":"p1","STUDY_ID":"st","SESSION_ID":"se"}}`, http.StatusCreated)
	ps, _ := e.store.GetSession(context.Background(), "pro", p.ID)
	if ps.Worker != Pseudonym([]byte(testPseudonymKey), "p1") || ps.External != "se" || ps.Params["STUDY_ID"] != "st" || ps.Params["PROLIFIC_PID"] != "" {
		t.Fatalf("stored prolific session %+v", ps)
	}
	for body, field := range map[string]string{
		`{"worker":"x","platform":"prolific","params":{"PROLIFIC_PID":"y"}}`: "worker",
		`{"platform":"zoom","worker":"x"}`:                                   "platform",
		`{"platform":"generic"}`:                                             "worker",
		`{"platform":"mturk","params":{"workerId":"m1"}}`:                    "params.assignmentId",
		`{"platform":"mturk","params":{"workerId":"m1","assignmentId":"a1","turkSubmitTo":"https://evil.example"}}`: "params.turkSubmitTo",
		`{"worker":"w\u0001"}`: "worker",
	} {
		rec := e.req("POST", "/v1/studies/pro/sessions", e.collect, body)
		if rec.Code != http.StatusUnprocessableEntity || apiErr(t, rec).Field != field {
			t.Errorf("%s: %d %s, want 422 naming %s", body, rec.Code, rec.Body, field)
		}
	}
	// An MTurk preview gets example items and no session.
	before := len(e.store.sessions)
	rec = e.must(http.StatusOK, "POST", "/v1/studies/qs/sessions", e.collect, `{"platform":"mturk","params":{"assignmentId":"ASSIGNMENT_ID_NOT_AVAILABLE","hitId":"h"}}`)
	var pv previewBody
	if err := json.Unmarshal(rec.Body.Bytes(), &pv); err != nil || !pv.Preview || len(pv.Queries) != 1 || pv.Queries[0].QueryID != "" {
		t.Fatalf("preview %s (%v)", rec.Body, err)
	}
	if len(e.store.sessions) != before {
		t.Fatal("a preview stored a session")
	}
	m := e.openSession("qs", `{"platform":"mturk","params":{"workerId":"m1","assignmentId":"a1","hitId":"h1","turkSubmitTo":"https://workersandbox.mturk.com"}}`, http.StatusCreated)
	if m.Params["workerId"] != "" || m.Params["assignmentId"] != "a1" {
		t.Fatalf("mturk session params %v", m.Params)
	}
	// Scopes: a read key may not open sessions; unknown studies are 404.
	if rec := e.req("POST", "/v1/studies/qs/sessions", e.read, `{"worker":"x"}`); rec.Code != http.StatusForbidden {
		t.Fatalf("read key opened a session: %d", rec.Code)
	}
	if rec := e.req("POST", "/v1/studies/nope/sessions", e.collect, `{"worker":"x"}`); rec.Code != http.StatusNotFound {
		t.Fatalf("session in an unknown study: %d", rec.Code)
	}
	if rec := e.req("GET", "/v1/studies/qs/sessions/nope/next", e.collect, ""); rec.Code != http.StatusNotFound {
		t.Fatalf("next of an unknown session: %d %s", rec.Code, rec.Body)
	}
	if rec := e.req("GET", "/v1/studies/qs/sessions/"+a.ID+"/next?n=0", e.collect, ""); rec.Code != http.StatusBadRequest || apiErr(t, rec).Field != "n" {
		t.Fatalf("n=0: %d %s", rec.Code, rec.Body)
	}
	// A study without embeddings cannot serve.
	if rec := e.req("POST", "/v1/studies/s1/sessions", e.collect, `{"worker":"x"}`); rec.Code != http.StatusConflict || apiErr(t, rec).Code != CodeNotReady {
		t.Fatalf("session in a study without embeddings: %d %s", rec.Code, rec.Body)
	}
}

func TestNextServesAnswersAndCompletes(t *testing.T) {
	t.Parallel()
	e := queryEnv(t, 40, func(s *alignet.StudySettings) {
		s.Queries.Trials = 5
		s.Queries.Completion.Redirect = "https://lab.example/done?code={code}&s={session}"
	})
	// Display data for the even items: a label, and for every fourth an
	// external picture too; the odd items have none.
	want := map[string]displayBody{}
	var ds []map[string]string
	for i := 0; i < 40; i += 2 {
		id := "i" + strconv.Itoa(i)
		d := map[string]string{"id": id, "label": "Item " + strconv.Itoa(i)}
		if i%4 == 0 {
			d["image_url"] = "https://img.example/" + id + ".jpg"
		}
		ds = append(ds, d)
		want[id] = displayBody{Label: d["label"], Image: d["image_url"]}
	}
	raw, _ := json.Marshal(map[string]any{"items": ds})
	e.must(http.StatusOK, "POST", "/v1/items", e.admin, string(raw))
	s := e.openSession("qs", `{"worker":"w1"}`, http.StatusCreated)
	b := e.next("qs", s.ID, 3)
	if len(b.Queries) != 3 || b.Complete || b.Progress.Open != 3 || b.Progress.Answered != 0 {
		t.Fatalf("next = %+v", b)
	}
	for _, q := range b.Queries {
		if q.QueryID == "" {
			t.Fatalf("query %+v", q)
		}
		for k, it := range q.Items {
			if q.Display[k] != want[it] {
				t.Fatalf("query %+v: display of %s is %+v, want %+v", q, it, q.Display[k], want[it])
			}
		}
	}
	// Reloading the page gets the same open queries back first.
	again := e.next("qs", s.ID, 2)
	if again.Queries[0].QueryID != b.Queries[0].QueryID || again.Queries[1].QueryID != b.Queries[1].QueryID {
		t.Fatalf("reload served %+v, want the open queries %+v", again.Queries, b.Queries[:2])
	}
	answered := 0
	for !b.Complete {
		for _, q := range b.Queries {
			e.must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", e.collect, answerBody("", "w1", q, q.Items[0], 1500))
			answered++
		}
		b = e.next("qs", s.ID, 3)
	}
	if answered != 5 || len(b.Queries) != 0 || b.Progress.Answered != 5 || b.Completion == nil {
		t.Fatalf("after %d answers: %+v", answered, b)
	}
	code := b.Completion.Code
	if len(code) != 10 || b.Completion.Redirect != "https://lab.example/done?code="+code+"&s="+url.QueryEscape(s.ID) {
		t.Fatalf("completion %+v", b.Completion)
	}
	if st, _ := e.store.GetSession(context.Background(), "qs", s.ID); st.CompletedAt == nil {
		t.Fatal("completion not stored")
	}
	// The linked judgments carry their query's kind, from the server.
	kinds := 0
	for _, j := range e.pub.published() {
		if j.QueryID != "" && j.QueryKind.Valid() && j.ID == "q:"+j.QueryID {
			kinds++
		}
	}
	if kinds != 5 {
		t.Fatalf("%d of 5 linked judgments carry a query kind and the derived id", kinds)
	}
	// A returning worker whose session completed opens a new one.
	if n := e.openSession("qs", `{"worker":"w1"}`, http.StatusCreated); n.ID == s.ID {
		t.Fatal("a completed session was reopened")
	}
	// A client cannot claim a kind.
	rec := e.req("POST", "/v1/studies/qs/judgments", e.collect, `{"worker":"w1","items":["i1","i2","i3"],"odd":"i1","query_kind":"check"}`)
	if rec.Code != http.StatusBadRequest || apiErr(t, rec).Field != "query_kind" {
		t.Fatalf("posted query_kind: %d %s", rec.Code, rec.Body)
	}
}

func TestCompletionRedirects(t *testing.T) {
	t.Parallel()
	e := queryEnv(t, 30, func(s *alignet.StudySettings) {
		s.Queries.Trials = 1
		s.Queries.Completion.Code = "CODE 7"
	})
	for _, c := range []struct{ body, want string }{
		{`{"platform":"prolific","params":{"PROLIFIC_PID":"p9","SESSION_ID":"x"}}`, "https://app.prolific.com/submissions/complete?cc=CODE+7"},
		{`{"platform":"mturk","params":{"workerId":"m9","assignmentId":"A B","turkSubmitTo":"https://www.mturk.com/"}}`,
			"https://www.mturk.com/mturk/externalSubmit?assignmentId=A+B&completion_code=CODE+7"},
	} {
		s := e.openSession("qs", c.body, http.StatusCreated)
		b := e.next("qs", s.ID, 1)
		worker := "p9"
		if strings.Contains(c.body, "m9") {
			worker = "m9"
		}
		e.must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", e.collect, answerBody("", worker, b.Queries[0], b.Queries[0].Items[1], 900))
		b = e.next("qs", s.ID, 1)
		if !b.Complete || b.Completion == nil || b.Completion.Redirect != c.want || b.Completion.Code != "CODE 7" {
			t.Fatalf("%s: completion %+v, want redirect %s", c.body, b.Completion, c.want)
		}
		got := e.must(http.StatusOK, "GET", "/v1/studies/qs/sessions/"+s.ID, e.collect, "")
		var sb sessionBody
		if err := json.Unmarshal(got.Body.Bytes(), &sb); err != nil || !sb.Complete || sb.Completion == nil || sb.Completion.Redirect != c.want {
			t.Fatalf("GET session = %s", got.Body)
		}
	}
}

// TestLinkingRefusesAndPublishesNothing checks every refusal of a linked
// judgment, that nothing of a refused request is published, and that a
// retry of the same judgment id succeeds.
func TestLinkingRefusesAndPublishesNothing(t *testing.T) {
	t.Parallel()
	e := queryEnv(t, 40, func(s *alignet.StudySettings) { s.Queries.TTL = alignet.Duration(time.Minute) })
	a := e.openSession("qs", `{"worker":"alice"}`, http.StatusCreated)
	e.openSession("qs", `{"worker":"bob"}`, http.StatusCreated)
	qs := e.next("qs", a.ID, 4).Queries
	published := func() int { return len(e.pub.published()) }
	refuse := func(name, body string, status int, code, field string) {
		t.Helper()
		before := published()
		rec := e.req("POST", "/v1/studies/qs/judgments", e.collect, body)
		if rec.Code != status {
			t.Fatalf("%s: %d %s, want %d", name, rec.Code, rec.Body, status)
		}
		if ae := apiErr(t, rec); ae.Code != code || ae.Field != field {
			t.Fatalf("%s: error %+v, want %s on %q", name, ae, code, field)
		}
		if published() != before {
			t.Fatalf("%s: a refused request published judgments", name)
		}
	}
	q0 := qs[0]
	e.must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", e.collect, answerBody("j1", "alice", q0, q0.Items[2], 1200))
	// A retry of the same judgment succeeds again (pages retry).
	e.must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", e.collect, answerBody("j1", "alice", q0, q0.Items[2], 1200))
	refuse("replay", answerBody("j2", "alice", q0, q0.Items[1], 1200), http.StatusConflict, CodeQueryAnswered, "query_id")
	refuse("foreign", answerBody("b1", "bob", qs[1], qs[1].Items[0], 1200), http.StatusConflict, CodeQueryForeign, "query_id")
	bad := qs[1]
	bad.Items[0] = "i39"
	if bad.Items[1] == "i39" || bad.Items[2] == "i39" {
		bad.Items[0] = "i38"
	}
	refuse("mismatch", answerBody("m1", "alice", bad, bad.Items[1], 1200), http.StatusUnprocessableEntity, CodeQueryMismatch, "items")
	unknown := qs[1]
	unknown.QueryID = "never-served"
	refuse("unknown", answerBody("u1", "alice", unknown, unknown.Items[1], 1200), http.StatusUnprocessableEntity, CodeUnknownQuery, "query_id")
	// A batch is all or nothing: its fresh query stays unanswered.
	refuse("batch", "["+answerBody("k1", "alice", qs[1], qs[1].Items[0], 900)+","+answerBody("k2", "alice", q0, q0.Items[0], 900)+"]",
		http.StatusConflict, CodeQueryAnswered, "[1].query_id")
	if q, _ := e.store.GetQuery(context.Background(), "qs", qs[1].QueryID); q.AnsweredBy != "" {
		t.Fatalf("a refused batch bound query %+v", q)
	}
	// Kafka down: nothing is accepted and the binding is taken back, so a
	// retry with another judgment id (a page that lets the server pick
	// ids) succeeds once Kafka is back.
	e.pub.setFail(true)
	if rec := e.req("POST", "/v1/studies/qs/judgments", e.collect, answerBody("k3", "alice", qs[1], qs[1].Items[0], 900)); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("with Kafka down: %d %s", rec.Code, rec.Body)
	}
	e.pub.setFail(false)
	e.must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", e.collect, answerBody("k4", "alice", qs[1], qs[1].Items[0], 900))
	// After the TTL an open query is refused as expired, and served anew.
	e.clock.Advance(2 * time.Minute)
	refuse("expired", answerBody("x1", "alice", qs[2], qs[2].Items[0], 900), http.StatusGone, CodeQueryExpired, "query_id")
	fresh := e.next("qs", a.ID, 2).Queries
	for _, f := range fresh {
		if f.QueryID == qs[2].QueryID || f.QueryID == qs[3].QueryID {
			t.Fatalf("expired query %s served again", f.QueryID)
		}
	}
	// The retry of an answer given in time succeeds even after the TTL.
	e.must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", e.collect, answerBody("j1", "alice", q0, q0.Items[2], 1200))
}

// TestChecksFlagWorkers answers attention checks and fast trials through
// the API: one failed check does not flag a worker, two do, and so do
// mostly too-fast answers; flagged workers' judgments never get a
// training role.
func TestChecksFlagWorkers(t *testing.T) {
	t.Parallel()
	var checks []alignet.CheckTriplet
	for i := range 10 {
		checks = append(checks, alignet.CheckTriplet{Items: [3]string{"i" + strconv.Itoa(3*i), "i" + strconv.Itoa(3*i+1), "i" + strconv.Itoa(3*i+2)},
			Answer: "i" + strconv.Itoa(3*i+2)})
	}
	e := queryEnv(t, 40, func(s *alignet.StudySettings) {
		s.Queries.Mix = alignet.QueryMix{Active: 0.5, Check: 0.5}
		s.Queries.Repeats = 0
		s.Queries.Trials = 12
		s.Checks = checks
	})
	expected := map[[3]string]string{}
	for _, c := range checks {
		expected[c.Items] = c.Answer
	}
	expectedOf := func(q queryBody) (string, bool) {
		for items, ans := range expected {
			if sameItems(alignet.TaskOddOneOut, q.Items, items) {
				return ans, true
			}
		}
		return "", false
	}
	// play answers every query of a session: wrongChecks checks wrongly,
	// the rest right, all with response time rt.
	play := func(worker string, wrongChecks, rt int) {
		s := e.openSession("qs", `{"worker":"`+worker+`"}`, http.StatusCreated)
		wrong := 0
		for {
			b := e.next("qs", s.ID, 4)
			if b.Complete {
				return
			}
			for _, q := range b.Queries {
				odd := q.Items[0]
				if ans, isCheck := expectedOf(q); isCheck {
					odd = ans
					if wrong < wrongChecks {
						odd = q.Items[0]
						if odd == ans {
							odd = q.Items[1]
						}
						wrong++
					}
				}
				e.must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", e.collect, answerBody("", worker, q, odd, rt))
			}
		}
	}
	play("careful", 0, 2000)
	play("once", 1, 2000)
	play("twice", 2, 2000)
	play("fast", 0, 100)
	rec := e.must(http.StatusOK, "GET", "/v1/studies/qs/workers", e.read, "")
	var wb struct {
		Workers []workerBody `json:"workers"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &wb); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"careful": {}, "once": {}, "twice": {alignet.FlagFailedChecks}, "fast": {alignet.FlagFastResponses}}
	flagged := map[string]bool{}
	for _, w := range wb.Workers {
		for raw, reasons := range want {
			if w.Worker != Pseudonym([]byte(testPseudonymKey), raw) {
				continue
			}
			if w.Trials != 12 || strings.Join(w.Reasons, ",") != strings.Join(reasons, ",") || w.Flagged != (len(reasons) > 0) {
				t.Errorf("%s: %+v, want 12 trials and reasons %v", raw, w, reasons)
			}
			if raw == "twice" && w.ChecksFailed != 2 || raw == "once" && w.ChecksFailed != 1 {
				t.Errorf("%s: %d failed checks", raw, w.ChecksFailed)
			}
			flagged[w.Worker] = w.Flagged
			delete(want, raw)
		}
	}
	if len(want) != 0 {
		t.Fatalf("workers missing from GET workers: %v (%s)", want, rec.Body)
	}
	// The metrics count each check once, as the worker flags do, and
	// every session opened.
	var passed, failed int64
	for _, w := range wb.Workers {
		passed, failed = passed+w.ChecksPassed, failed+w.ChecksFailed
	}
	metrics := e.must(http.StatusOK, "GET", "/metrics", "", "").Body.String()
	for _, want := range []string{
		fmt.Sprintf(`alignet_attention_checks_total{result="passed",study="qs"} %d`, passed),
		fmt.Sprintf(`alignet_attention_checks_total{result="failed",study="qs"} %d`, failed),
		`alignet_sessions_opened_total{outcome="new",platform="generic"} 4`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	if passed == 0 || failed != 3 {
		t.Errorf("%d checks passed and %d failed, want some and 3", passed, failed)
	}
	only := e.must(http.StatusOK, "GET", "/v1/studies/qs/workers?flagged=true", e.read, "")
	if strings.Count(only.Body.String(), `"worker"`) != 2 {
		t.Fatalf("flagged=true: %s", only.Body)
	}
	if rec := e.req("GET", "/v1/studies/qs/workers", e.collect, ""); rec.Code != http.StatusForbidden {
		t.Fatalf("collect key read workers: %d", rec.Code)
	}
	// The root rule at its boundary: flagged workers' judgments and checks
	// are excluded; nothing else is.
	st, _ := e.store.GetStudy(context.Background(), "qs")
	roles := map[alignet.Role]int{}
	for _, j := range e.pub.published() {
		r := alignet.TrainingRole(j, st.Settings, flagged[j.Worker])
		if (flagged[j.Worker] || j.QueryKind == alignet.QueryCheck) != (r == alignet.RoleExcluded) {
			t.Fatalf("judgment %+v (flagged %v) got role %s", j, flagged[j.Worker], r)
		}
		roles[r]++
	}
	if roles[alignet.RoleExcluded] < 24 || roles[alignet.RoleTrain]+roles[alignet.RoleHeldOut] == 0 {
		t.Fatalf("roles %v", roles)
	}
}

// fakeTeachers is a TeacherSource the test controls.
type fakeTeachers struct {
	mu      sync.Mutex
	t       *query.Teacher
	changes chan string
}

func (f *fakeTeachers) Teacher(context.Context, string) (*query.Teacher, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t, nil
}

func (f *fakeTeachers) Changes() <-chan string { return f.changes }

func (f *fakeTeachers) publish(study string, t *query.Teacher) {
	f.mu.Lock()
	f.t = t
	f.mu.Unlock()
	f.changes <- study
}

func randomQueryTeacher(n int, seed uint64, version int64) *query.Teacher {
	rng := rand.New(rand.NewPCG(seed, 9))
	t := &query.Teacher{Version: version, Task: learner.TaskOddOneOut, Tau: 0.5, P: 6, Z: make([]float32, n*6)}
	for i := range n {
		t.Items = append(t.Items, "i"+strconv.Itoa(i))
	}
	for i := range t.Z {
		t.Z[i] = float32(rng.NormFloat64())
	}
	return t
}

// TestRescoringChangesServedQueries publishes a new teacher snapshot: the
// queries served afterwards come from its scores, and each served score is
// the entropy of the teacher's own probabilities.
func TestRescoringChangesServedQueries(t *testing.T) {
	t.Parallel()
	teachers := &fakeTeachers{t: randomQueryTeacher(50, 1, 1), changes: make(chan string, 1)}
	e := &env{t: t, store: newFakeStore(), pub: &fakePublisher{}, clock: newTestClock(),
		reg: prometheus.NewRegistry(), logs: &syncBuffer{}, teachers: teachers}
	e.start()
	s := e.s
	e.queryStudy("qs", 50, func(st *alignet.StudySettings) {
		st.Queries.Mix = alignet.QueryMix{Active: 1}
		st.Queries.Repeats = 0
	})
	serve := func(tag string) []alignet.Query {
		var out []alignet.Query
		for i := range 15 {
			sess := e.openSession("qs", `{"worker":"`+tag+strconv.Itoa(i)+`"}`, http.StatusCreated)
			b := e.next("qs", sess.ID, 1)
			eng, _ := s.sel.loaded("qs")
			q, ok := eng.Lookup(b.Queries[0].QueryID)
			if !ok {
				t.Fatalf("served query %s not held", b.Queries[0].QueryID)
			}
			out = append(out, q)
		}
		return out
	}
	check := func(teacher *query.Teacher, qs []alignet.Query) {
		t.Helper()
		idx := map[string]int32{}
		for i, it := range teacher.Items {
			idx[it] = int32(i)
		}
		for _, q := range qs {
			tr := learner.Triplet{I: idx[q.Items[0]], J: idx[q.Items[1]], K: idx[q.Items[2]]}
			p := learner.TaskProbs(learner.TaskOddOneOut, learner.Logits(teacher.Z, teacher.P, tr), teacher.Tau)
			h := 0.0
			for _, v := range p {
				h -= v * math.Log(v)
			}
			if q.TeacherVersion != teacher.Version || math.Abs(h-q.Score) > 1e-4 {
				t.Fatalf("query %+v: want version %d and score %g (entropy of the teacher's probabilities)", q, teacher.Version, h)
			}
		}
	}
	first := serve("a")
	check(teachers.t, first)
	tb := randomQueryTeacher(50, 2, 2)
	teachers.publish("qs", tb)
	deadline := time.Now().Add(10 * time.Second)
	for {
		eng, _ := s.sel.loaded("qs")
		if eng.Snapshot().TeacherVersion == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new teacher was not applied within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	second := serve("b")
	check(tb, second)
	same := 0
	for i := range first {
		if query.TripletKey(learner.TaskOddOneOut, first[i].Items) == query.TripletKey(learner.TaskOddOneOut, second[i].Items) {
			same++
		}
	}
	if same > 2 {
		t.Fatalf("%d of 15 queries unchanged by the new teacher", same)
	}
}

// TestQueryLogAndExportJoin checks that served queries reach the store
// through the query log and that the export joins every linked judgment
// to its query.
func TestQueryLogAndExportJoin(t *testing.T) {
	t.Parallel()
	e := queryEnv(t, 40, func(s *alignet.StudySettings) { s.Queries.Trials = 6 }, func(c *Config) { c.QueryLogInterval = 5 * time.Millisecond })
	s := e.openSession("qs", `{"worker":"w"}`, http.StatusCreated)
	b := e.next("qs", s.ID, 6)
	deadline := time.Now().Add(5 * time.Second)
	for e.s.qlog.pendingCount() > 0 || len(e.store.queries) < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("query log wrote %d of 6 queries", len(e.store.queries))
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, q := range b.Queries[:4] {
		e.must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", e.collect, answerBody("", "w", q, q.Items[0], 1000))
	}
	e.store.addJudgments(e.pub.published())
	rec := e.must(http.StatusOK, "GET", "/v1/studies/qs/judgments?format=jsonl&join=queries", e.read, "")
	lines := strings.Split(strings.TrimSpace(rec.Body.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("export has %d lines", len(lines))
	}
	for _, l := range lines {
		var row struct {
			alignet.Judgment
			Query *queryJoin `json:"query"`
		}
		if err := json.Unmarshal([]byte(l), &row); err != nil || row.Query == nil || row.Query.Session != s.ID ||
			row.Query.Kind != string(row.QueryKind) || row.Query.ServedAt.IsZero() {
			t.Fatalf("export row %s (%v)", l, err)
		}
	}
	csvRec := e.must(http.StatusOK, "GET", "/v1/studies/qs/judgments?join=queries", e.read, "")
	if first, _, _ := strings.Cut(csvRec.Body.String(), "\n"); first != CSVHeader+","+CSVQueryColumns {
		t.Fatalf("CSV header %q", first)
	}
	if rec := e.req("GET", "/v1/studies/qs/judgments?join=sessions", e.read, ""); rec.Code != http.StatusBadRequest || apiErr(t, rec).Field != "join" {
		t.Fatalf("join=sessions: %d %s", rec.Code, rec.Body)
	}
}

// fakeStudents returns the teacher itself as the student, or nothing.
type fakeStudents struct{ have bool }

func (f fakeStudents) Student(_ context.Context, _, _ string, t *query.Teacher) (*query.Teacher, error) {
	if !f.have {
		return nil, fmt.Errorf("student: %w", alignet.ErrNotFound)
	}
	return t, nil
}

// TestDisagreementNeedsAStudent serves a study whose scorer compares the
// teacher with a student: without one, entropy scores it and the fallback
// is counted; with one, nothing falls back.
func TestDisagreementNeedsAStudent(t *testing.T) {
	t.Parallel()
	for _, have := range []bool{false, true} {
		e := &env{t: t, store: newFakeStore(), pub: &fakePublisher{}, clock: newTestClock(),
			reg: prometheus.NewRegistry(), logs: &syncBuffer{}, students: fakeStudents{have: have}}
		e.start()
		s := e.s
		e.queryStudy("qs", 30, func(st *alignet.StudySettings) {
			st.Queries.Scorer, st.Queries.Student = alignet.ScorerDisagreement, "w2v"
		})
		sess := e.openSession("qs", `{"worker":"w"}`, http.StatusCreated)
		if b := e.next("qs", sess.ID, 2); len(b.Queries) != 2 {
			t.Fatalf("next = %+v", b)
		}
		eng, _ := s.sel.loaded("qs")
		snap := eng.Snapshot()
		fell := snap.ScorerError != nil
		if fell == have || (fell && snap.Scorer != alignet.ScorerEntropy) || (!fell && snap.Scorer != alignet.ScorerDisagreement) {
			t.Fatalf("with a student %v: scorer %q, error %v", have, snap.Scorer, snap.ScorerError)
		}
	}
}

// TestQueriesFollowTheLearnersTeacher goes through the server's teacher
// cache: queries are first scored by the raw embeddings, and once the
// learner stores a teacher state the candidates are rescored under it and
// every served score is the entropy of that teacher's probabilities.
func TestQueriesFollowTheLearnersTeacher(t *testing.T) {
	t.Parallel()
	e := queryEnv(t, 60, func(s *alignet.StudySettings) {
		s.Queries.Mix = alignet.QueryMix{Active: 1}
		s.Queries.Repeats = 0
	}, func(c *Config) { c.TeacherPollInterval = 5 * time.Millisecond })
	e.serve()
	items, _ := e.store.StudyItems(context.Background(), "qs")
	x, _, _ := e.store.LoadEmbeddings(context.Background(), "emb", items)
	index := map[string]int32{}
	for i, it := range items {
		index[it] = int32(i)
	}
	// entropyUnder is the served score a teacher with representation z
	// (rows in the order of items) and temperature tau gives q.
	entropyUnder := func(z []float32, p int, tau float64, q alignet.Query) float64 {
		tr := learner.Triplet{I: index[q.Items[0]], J: index[q.Items[1]], K: index[q.Items[2]]}
		pr := learner.TaskProbs(learner.TaskOddOneOut, learner.Logits(z, p, tr), tau)
		h := 0.0
		for _, v := range pr {
			h -= v * math.Log(v)
		}
		return h
	}
	served := func(worker string) alignet.Query {
		s := e.openSession("qs", `{"worker":"`+worker+`"}`, http.StatusCreated)
		b := e.next("qs", s.ID, 1)
		eng, _ := e.s.sel.loaded("qs")
		q, ok := eng.Lookup(b.Queries[0].QueryID)
		if !ok {
			t.Fatalf("query %s not held", b.Queries[0].QueryID)
		}
		return q
	}
	raw := served("before")
	if raw.TeacherVersion != 0 || math.Abs(raw.Score-entropyUnder(x, 8, 1, raw)) > 1e-4 {
		t.Fatalf("raw query %+v: want version 0 and the entropy of the raw embeddings", raw)
	}
	rng := rand.New(rand.NewPCG(4, 4))
	params := alignet.TeacherParams{Task: alignet.TaskOddOneOut, D: 8, P: 8, W: make([]float32, 64), B: make([]float32, 8),
		Mean: 0.1, Std: 1.3, Tau: 0.6, Lambda: 0.1}
	for i := range params.W {
		params.W[i] = float32(rng.NormFloat64())
	}
	st := e.testState("qs", alignet.TaskOddOneOut)
	st.Params, st.Version = params, 3
	e.store.setState(st)
	eventually(t, "the engine rescored under the stored teacher", func() bool {
		eng, ok := e.s.sel.loaded("qs")
		return ok && eng.Snapshot().TeacherVersion == 3
	})
	lt := &learner.Teacher{D: 8, P: 8, W: make([]float64, 64), B: make([]float64, 8), Mean: params.Mean, Std: params.Std,
		Tau: params.Tau, Task: learner.TaskOddOneOut}
	for i, v := range params.W {
		lt.W[i] = float64(v)
	}
	z := lt.Transform(x, len(items))
	for i := range 10 {
		q := served("after" + strconv.Itoa(i))
		if want := entropyUnder(z, 8, params.Tau, q); q.TeacherVersion != 3 || math.Abs(q.Score-want) > 1e-4 {
			t.Fatalf("query %+v: want version 3 and score %g, the entropy of the stored teacher's probabilities", q, want)
		}
	}
}

// TestSettingsPatchReachesTheEngine changes the mix through PATCH: the
// queries served afterwards follow the new shares, and a bad mix is
// refused naming its path.
func TestSettingsPatchReachesTheEngine(t *testing.T) {
	t.Parallel()
	e := queryEnv(t, 40, nil)
	s := e.openSession("qs", `{"worker":"w"}`, http.StatusCreated)
	e.next("qs", s.ID, 1)
	rec := e.req("PATCH", "/v1/studies/qs", e.admin, `{"settings":{"queries":{"mix":{"active":0.5}}}}`)
	if rec.Code != http.StatusUnprocessableEntity || apiErr(t, rec).Field != "settings.queries.mix" {
		t.Fatalf("PATCH with a mix summing to 1.25: %d %s", rec.Code, rec.Body)
	}
	e.must(http.StatusOK, "PATCH", "/v1/studies/qs", e.admin, `{"settings":{"queries":{"mix":{"active":0,"random":1,"repeat":0,"check":0},"trials":20}}}`)
	s2 := e.openSession("qs", `{"worker":"w2"}`, http.StatusCreated)
	if s2.Trials != 20 {
		t.Fatalf("new session after PATCH has %d trials, want 20", s2.Trials)
	}
	b := e.next("qs", s2.ID, 10)
	eng, _ := e.s.sel.loaded("qs")
	for _, q := range b.Queries {
		got, ok := eng.Lookup(q.QueryID)
		if !ok || got.Kind != alignet.QueryRandom {
			t.Fatalf("query %+v after the mix became random only", got)
		}
	}
}
