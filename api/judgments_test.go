package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet"
	dto "github.com/prometheus/client_model/go"
)

const okOdd = `{"worker":"w1","items":["c1","c2","c3"],"odd":"c3","rt_ms":1500}`
const okAnchor = `{"worker":"w1","head":"c1","close":"c2","far":"c3","rt_ms":900}`

func decodeAccepted(t *testing.T, rec *httptest.ResponseRecorder) acceptedBody {
	t.Helper()
	var b acceptedBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatalf("decode 202 body: %v: %s", err, rec.Body)
	}
	return b
}

func TestPostJudgmentAccepted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect,
		`{"id":"client-1","worker":"w1","items":["c1","c2","c3"],"odd":"c2","rt_ms":1500.4}`)
	b := decodeAccepted(t, rec)
	if b.Accepted != 1 || len(b.IDs) != 1 || b.IDs[0] != "client-1" {
		t.Fatalf("body %+v", b)
	}
	got := e.pub.published()
	if len(got) != 1 {
		t.Fatalf("published %d judgments", len(got))
	}
	j := got[0]
	want := alignet.Judgment{ID: "client-1", Study: "s1", Task: alignet.TaskOddOneOut, Worker: Pseudonym([]byte(testPseudonymKey), "w1"),
		Items: [3]string{"c1", "c2", "c3"}, Odd: "c2", RTMillis: 1500, ReceivedAt: j.ReceivedAt}
	if !reflect.DeepEqual(j, want) {
		t.Fatalf("published %+v\nwant %+v", j, want)
	}
	if !b.ReceivedAt.Equal(j.ReceivedAt) || b.ReceivedAt.IsZero() {
		t.Fatalf("202 says received_at %v, the judgment carries %v", b.ReceivedAt, j.ReceivedAt)
	}
	if j.ReceivedAt.IsZero() || time.Since(j.ReceivedAt) > time.Minute || j.ReceivedAt.Location() != time.UTC {
		t.Fatalf("ReceivedAt %v", j.ReceivedAt)
	}

	rec = e.must(http.StatusAccepted, "POST", "/v1/studies/a1/judgments", e.collect, "["+okAnchor+","+
		`{"worker":"w2","head":"c4","close":"c6","far":"c5"}`+"]")
	b = decodeAccepted(t, rec)
	if b.Accepted != 2 || len(b.IDs) != 2 || b.IDs[0] == b.IDs[1] {
		t.Fatalf("body %+v", b)
	}
	got = e.pub.published()[1:]
	for i, id := range b.IDs {
		if got[i].ID != id || got[i].Task != alignet.TaskAnchor || got[i].Odd != "" {
			t.Fatalf("judgment %d: %+v", i, got[i])
		}
	}
	if got[1].Items != [3]string{"c4", "c6", "c5"} || got[1].RTMillis != 0 {
		t.Fatalf("anchor items/rt: %+v", got[1])
	}
	if e.pub.batchCount() != 2 {
		t.Fatalf("a batch must be published as one call; %d calls", e.pub.batchCount())
	}
}

func repeatBatch(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = okOdd
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func TestPostJudgmentBadInputs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A previously accepted batch must survive every bad request.
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, "["+okOdd+","+okOdd+"]")
	before := e.pub.published()
	if len(before) != 2 {
		t.Fatalf("setup: %d published", len(before))
	}
	long := strings.Repeat("x", 129)
	cases := []struct {
		name, study, ctype, body string
		status                   int
		code, field              string
	}{
		{"malformed json", "s1", "", `{"worker":`, 400, CodeInvalidJSON, ""},
		{"syntax error", "s1", "", `{"worker" "w1"}`, 400, CodeInvalidJSON, ""},
		{"not an object", "s1", "", `"hello"`, 400, CodeInvalidJSON, ""},
		{"empty body", "s1", "", ``, 400, CodeInvalidJSON, ""},
		{"trailing data", "s1", "", okOdd + okOdd, 400, CodeInvalidJSON, ""},
		{"unknown field", "s1", "", `{"worker":"w1","items":["c1","c2","c3"],"odd":"c1","color":"red"}`, 400, CodeInvalidJSON, "color"},
		{"unknown field in batch", "s1", "", "[" + okOdd + `,{"worker":"w1","oops":1}]`, 400, CodeInvalidJSON, "[1].oops"},
		{"rt_ms wrong type", "s1", "", `{"worker":"w1","items":["c1","c2","c3"],"odd":"c1","rt_ms":"fast"}`, 400, CodeInvalidJSON, "rt_ms"},
		{"worker wrong type", "s1", "", `{"worker":7,"items":["c1","c2","c3"],"odd":"c1"}`, 400, CodeInvalidJSON, "worker"},
		{"batch element not object", "s1", "", "[" + okOdd + `,42]`, 400, CodeInvalidJSON, "[1]"},
		{"wrong content type", "s1", "text/plain", okOdd, 415, CodeUnsupportedMedia, ""},
		{"unknown study", "nope", "", okOdd, 404, CodeNotFound, ""},
		{"missing worker", "s1", "", `{"items":["c1","c2","c3"],"odd":"c1"}`, 422, CodeMissingField, "worker"},
		{"empty worker", "s1", "", `{"worker":"","items":["c1","c2","c3"],"odd":"c1"}`, 422, CodeInvalidField, "worker"},
		{"worker too long", "s1", "", `{"worker":"` + long + `","items":["c1","c2","c3"],"odd":"c1"}`, 422, CodeInvalidField, "worker"},
		{"missing items", "s1", "", `{"worker":"w1","odd":"c1"}`, 422, CodeMissingField, "items"},
		{"two items", "s1", "", `{"worker":"w1","items":["c1","c2"],"odd":"c1"}`, 422, CodeInvalidField, "items"},
		{"four items", "s1", "", `{"worker":"w1","items":["c1","c2","c3","c4"],"odd":"c1"}`, 422, CodeInvalidField, "items"},
		{"unknown item", "s1", "", `{"worker":"w1","items":["c1","c2","zz"],"odd":"c1"}`, 422, CodeUnknownItem, "items[2]"},
		{"empty item", "s1", "", `{"worker":"w1","items":["","c2","c3"],"odd":"c2"}`, 422, CodeInvalidField, "items[0]"},
		{"duplicate item", "s1", "", `{"worker":"w1","items":["c1","c1","c3"],"odd":"c3"}`, 422, CodeInvalidField, "items[1]"},
		{"odd not among items", "s1", "", `{"worker":"w1","items":["c1","c2","c3"],"odd":"c4"}`, 422, CodeInvalidField, "odd"},
		{"missing odd", "s1", "", `{"worker":"w1","items":["c1","c2","c3"]}`, 422, CodeMissingField, "odd"},
		{"negative rt", "s1", "", `{"worker":"w1","items":["c1","c2","c3"],"odd":"c1","rt_ms":-1}`, 422, CodeInvalidField, "rt_ms"},
		{"rt too large", "s1", "", `{"worker":"w1","items":["c1","c2","c3"],"odd":"c1","rt_ms":600001}`, 422, CodeInvalidField, "rt_ms"},
		{"bad id chars", "s1", "", `{"id":"a b","worker":"w1","items":["c1","c2","c3"],"odd":"c1"}`, 422, CodeInvalidField, "id"},
		{"id too long", "s1", "", `{"id":"` + strings.Repeat("a", 65) + `","worker":"w1","items":["c1","c2","c3"],"odd":"c1"}`, 422, CodeInvalidField, "id"},
		{"query_id too long", "s1", "", `{"query_id":"` + strings.Repeat("q", 65) + `","worker":"w1","items":["c1","c2","c3"],"odd":"c1"}`, 422, CodeInvalidField, "query_id"},
		{"anchor body on odd-one-out study", "s1", "", okAnchor, 422, CodeInvalidField, "head"},
		{"odd-one-out body on anchor study", "a1", "", okOdd, 422, CodeInvalidField, "items"},
		{"anchor with odd", "a1", "", `{"worker":"w1","head":"c1","close":"c2","far":"c3","odd":"c1"}`, 422, CodeInvalidField, "odd"},
		{"anchor missing far", "a1", "", `{"worker":"w1","head":"c1","close":"c2"}`, 422, CodeMissingField, "far"},
		{"anchor repeated item", "a1", "", `{"worker":"w1","head":"c1","close":"c1","far":"c3"}`, 422, CodeInvalidField, "close"},
		{"anchor unknown item", "a1", "", `{"worker":"w1","head":"c1","close":"c2","far":"nope"}`, 422, CodeUnknownItem, "far"},
		{"batch with one bad element", "s1", "", "[" + okOdd + "," + okOdd + `,{"worker":"w1","items":["c1","c2","c3"],"odd":"c9"}]`, 422, CodeInvalidField, "[2].odd"},
		{"batch with unknown item", "s1", "", "[" + okOdd + `,{"worker":"w1","items":["c1","c2","zz"],"odd":"c1"}]`, 422, CodeUnknownItem, "[1].items[2]"},
		{"duplicate ids in batch", "s1", "", `[{"id":"x1","worker":"w1","items":["c1","c2","c3"],"odd":"c1"},{"id":"x1","worker":"w1","items":["c1","c2","c4"],"odd":"c1"}]`, 422, CodeDuplicateID, "[1].id"},
		{"empty batch", "s1", "", `[]`, 422, CodeInvalidField, ""},
		{"batch over MaxBatch", "s1", "", repeatBatch(1001), 413, CodeTooLarge, ""},
		{"body over cap", "s1", "", `{"worker":"w1","items":["c1","c2","c3"],"odd":"c1","query_id":"` + strings.Repeat("q", 300<<10) + `"}`, 413, CodeTooLarge, ""},
	}
	if len(cases) < 25 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/v1/studies/"+tc.study+"/judgments", strings.NewReader(tc.body))
			ct := tc.ctype
			if ct == "" {
				ct = "application/json"
			}
			req.Header.Set("Content-Type", ct)
			rec := e.send(req, e.collect)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			got := apiErr(t, rec)
			if got.Code != tc.code || got.Field != tc.field {
				t.Fatalf("code %q field %q, want %q %q (%s)", got.Code, got.Field, tc.code, tc.field, got.Message)
			}
			if after := e.pub.published(); !reflect.DeepEqual(after, before) {
				t.Fatalf("publisher changed: %d judgments, want the %d accepted before", len(after), len(before))
			}
		})
	}
	if e.pub.batchCount() != 1 {
		t.Fatalf("%d publish calls, want 1", e.pub.batchCount())
	}
	var m dto.Metric
	if err := e.s.metrics.rejected.WithLabelValues(reasonUnknownItem).Write(&m); err != nil || m.GetCounter().GetValue() != 3 {
		t.Fatalf("rejected{unknown_item} = %v (%v)", m.GetCounter().GetValue(), err)
	}
}

func TestPostJudgmentMaxBatchAccepted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, repeatBatch(1000))
	if b := decodeAccepted(t, rec); b.Accepted != 1000 || len(e.pub.published()) != 1000 {
		t.Fatalf("accepted %d, published %d", b.Accepted, len(e.pub.published()))
	}
}

func TestPostJudgmentWaitsForPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	e.pub.mu.Lock()
	e.pub.gate, e.pub.entered = gate, entered
	e.pub.mu.Unlock()
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- e.req("POST", "/v1/studies/s1/judgments", e.collect, okOdd) }()
	<-entered
	select {
	case rec := <-done:
		t.Fatalf("response %d sent before Publish returned", rec.Code)
	case <-time.After(50 * time.Millisecond):
	}
	if n := len(e.pub.published()); n != 0 {
		t.Fatalf("%d published before release", n)
	}
	close(gate)
	rec := <-done
	if rec.Code != http.StatusAccepted || len(e.pub.published()) != 1 {
		t.Fatalf("status %d, published %d", rec.Code, len(e.pub.published()))
	}
}

func TestPostJudgmentKafkaDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, okOdd)
	e.pub.setFail(true)
	rec := e.req("POST", "/v1/studies/s1/judgments", e.collect, "["+okOdd+","+okOdd+"]")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("status %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if got := apiErr(t, rec); got.Code != CodeUnavailable {
		t.Fatalf("code %q", got.Code)
	}
	if strings.Contains(rec.Body.String(), "accepted") || len(e.pub.published()) != 1 {
		t.Fatalf("something accepted: %s, published %d", rec.Body, len(e.pub.published()))
	}
	var m dto.Metric
	_ = e.s.metrics.rejected.WithLabelValues(reasonUnavailable).Write(&m)
	if m.GetCounter().GetValue() != 1 {
		t.Fatalf("rejected{unavailable} = %v", m.GetCounter().GetValue())
	}
	e.pub.setFail(false)
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, okOdd)
}

func TestPostJudgmentStoreDownOnColdCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.s.studies.Invalidate("s1")
	e.store.setDown(fmt.Errorf("pg: %w", alignet.ErrUnavailable))
	rec := e.req("POST", "/v1/studies/s1/judgments", e.collect, okOdd)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if len(e.pub.published()) != 0 {
		t.Fatal("published while the study could not be loaded")
	}
}

func TestPostJudgmentHotPathUsesCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, okOdd)
	gets, keys := e.store.callCount("GetStudy"), e.store.callCount("APIKeyByHash")
	for range 20 {
		e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, okOdd)
	}
	if e.store.callCount("GetStudy") != gets || e.store.callCount("APIKeyByHash") != keys {
		t.Fatalf("hot path queried the store: GetStudy %d→%d, APIKeyByHash %d→%d",
			gets, e.store.callCount("GetStudy"), keys, e.store.callCount("APIKeyByHash"))
	}
}

func TestPoolRefresh(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Items added through this server are usable at once.
	e.must(http.StatusOK, "POST", "/v1/studies/s1/items", e.admin, `{"items":["c7"]}`)
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, `{"worker":"w","items":["c1","c2","c7"],"odd":"c7"}`)

	// Items added by another server: with a short TTL the pool is reloaded.
	e2 := newEnv(t, func(c *Config) { c.PoolCacheTTL = time.Millisecond })
	if _, err := e2.store.AddStudyItems(context.Background(), "s1", []string{"c8"}); err != nil {
		t.Fatal(err)
	}
	e2.clock.Advance(5 * time.Millisecond)
	e2.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e2.collect, `{"worker":"w","items":["c1","c2","c8"],"odd":"c8"}`)
}

func TestPseudonymisation(t *testing.T) {
	t.Parallel()
	const raw = "PROLIFIC-5f1e2d3c4b5a"
	e := newEnv(t)
	body := `{"worker":"` + raw + `","items":["c1","c2","c3"],"odd":"c3"}`
	r1 := e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, body)
	e.must(http.StatusAccepted, "POST", "/v1/studies/a1/judgments", e.collect, `{"worker":"`+raw+`","head":"c1","close":"c2","far":"c3"}`)
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, `{"worker":"someone-else","items":["c1","c2","c3"],"odd":"c3"}`)
	got := e.pub.published()
	if len(got) != 3 {
		t.Fatalf("published %d", len(got))
	}
	all, _ := json.Marshal(got)
	if bytes.Contains(all, []byte(raw)) || strings.Contains(r1.Body.String(), raw) || strings.Contains(e.logs.String(), raw) {
		t.Fatal("raw worker id leaked into published judgments, response or logs")
	}
	p := got[0].Worker
	if len(p) != 32 || strings.Trim(p, "0123456789abcdef") != "" {
		t.Fatalf("pseudonym %q is not 32 hex digits", p)
	}
	if got[1].Worker != p {
		t.Fatalf("same raw id gave %q and %q", p, got[1].Worker)
	}
	if got[2].Worker == p {
		t.Fatal("different raw ids gave the same pseudonym")
	}

	e2 := newEnv(t, func(c *Config) { c.PseudonymKey = []byte("another-pseudonym-key-xyz") })
	e2.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e2.collect, body)
	if q := e2.pub.published()[0].Worker; q == p || len(q) != 32 {
		t.Fatalf("different key gave pseudonym %q (first key: %q)", q, p)
	}

	// Lookup maps the raw id to the same pseudonym.
	e.store.addJudgments(got)
	rec := e.must(http.StatusOK, "POST", "/v1/workers/lookup", e.read, `{"worker":"`+raw+`"}`)
	var lk struct {
		Pseudonym string            `json:"pseudonym"`
		Studies   []workerStudyBody `json:"studies"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &lk); err != nil {
		t.Fatal(err)
	}
	if lk.Pseudonym != p || len(lk.Studies) != 2 || lk.Studies[0].Study != "a1" || lk.Studies[1].Judgments != 1 {
		t.Fatalf("lookup %+v", lk)
	}
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	e.pub.mu.Lock()
	e.pub.gate, e.pub.entered = gate, entered
	e.pub.mu.Unlock()
	srv := httptest.NewUnstartedServer(nil)
	ln := srv.Listener
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.s.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String()

	type result struct {
		status int
		err    error
	}
	resc := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", url+"/v1/studies/s1/judgments", strings.NewReader(okOdd))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+e.collect)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			resc <- result{err: err}
			return
		}
		resp.Body.Close()
		resc <- result{status: resp.StatusCode}
	}()
	<-entered
	cancel()
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v before the in-flight request finished", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	r := <-resc
	if r.err != nil || r.status != http.StatusAccepted {
		t.Fatalf("in-flight request: %d %v", r.status, r.err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Fatal("server still accepts connections after shutdown")
	}
}

// TestPostJudgmentEncodedTooLarge posts a batch within the body cap whose
// stream encoding is over the publisher's limit: long ids of characters
// that encoding/json escapes (six bytes each) and non-ASCII ones. It must
// get 413 telling the client to split the batch, not a 503 that it would
// retry for ever.
func TestPostJudgmentEncodedTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxJudgmentBody = DefaultMaxJudgmentBody })
	e.pub.maxBytes = 1 << 20
	var items [3]string
	for k := range items {
		items[k] = strings.Repeat("<\u2028", alignet.MaxItemIDLen/2-1) + "&" + string(rune('a'+k))
	}
	// Written by hand: encoding/json would escape the characters here too.
	e.must(http.StatusOK, "POST", "/v1/studies/s1/items", e.admin,
		`{"items":["`+items[0]+`","`+items[1]+`","`+items[2]+`"]}`)
	one := `{"worker":"w1","items":["` + items[0] + `","` + items[1] + `","` + items[2] + `"],"odd":"` + items[2] + `"}`
	batch := func(n int) string { return "[" + strings.Repeat(one+",", n-1) + one + "]" }

	body := batch(1000)
	if len(body) > DefaultMaxJudgmentBody {
		t.Fatalf("test body of %d bytes is over the body cap", len(body))
	}
	rec := e.req("POST", "/v1/studies/s1/judgments", e.collect, body)
	if rec.Code != http.StatusRequestEntityTooLarge || rec.Header().Get("Retry-After") != "" {
		t.Fatalf("status %d, Retry-After %q: %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if got := apiErr(t, rec); got.Code != CodeTooLarge || !strings.Contains(got.Message, "split") {
		t.Fatalf("error %+v", got)
	}
	if len(e.pub.published()) != 0 {
		t.Fatal("an oversized batch was published")
	}
	var m dto.Metric
	if err := e.s.metrics.rejected.WithLabelValues(reasonTooLarge).Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("rejected{too_large} = %v (%v)", m.GetCounter().GetValue(), err)
	}
	// Split, the same judgments go through.
	for range 10 {
		e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, batch(100))
	}
	if n := len(e.pub.published()); n != 1000 {
		t.Fatalf("%d published after splitting, want 1000", n)
	}
}
