package api

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/prometheus/client_golang/prometheus"
)

// route lists every authenticated route with a body that passes auth.
var authRoutes = []struct {
	method, path, body, scope string
}{
	{"GET", "/v1/openapi.json", "", scopeAny},
	{"PUT", "/v1/spaces/clip", `{"dim":4}`, alignet.ScopeAdmin},
	{"GET", "/v1/spaces/clip", "", alignet.ScopeRead},
	{"POST", "/v1/spaces/clip/embeddings", `{"items":[{"id":"c1","vector":[1,2,3,4]}]}`, alignet.ScopeAdmin},
	{"POST", "/v1/studies", `{"id":"s1","task":"odd-one-out","space":"clip"}`, alignet.ScopeAdmin},
	{"GET", "/v1/studies", "", alignet.ScopeRead},
	{"GET", "/v1/studies/s1", "", alignet.ScopeRead},
	{"PATCH", "/v1/studies/s1", `{"settings":{"learner":{"min_judgments":100}}}`, alignet.ScopeAdmin},
	{"POST", "/v1/studies/s1/items", `{"items":["c1"]}`, alignet.ScopeAdmin},
	{"GET", "/v1/studies/s1/items", "", alignet.ScopeRead},
	{"POST", "/v1/studies/s1/judgments", okOdd, alignet.ScopeCollect},
	{"GET", "/v1/studies/s1/judgments", "", alignet.ScopeRead},
	{"GET", "/v1/studies/s1/teacher", "", alignet.ScopeRead},
	{"GET", "/v1/studies/s1/teacher.npz", "", alignet.ScopeRead},
	{"POST", "/v1/studies/s1/teacher/refit", "", alignet.ScopeAdmin},
	{"GET", "/v1/studies/s1/teacher/versions", "", alignet.ScopeRead},
	{"POST", "/v1/studies/s1/teacher/versions", "", alignet.ScopeAdmin},
	{"GET", "/v1/studies/s1/teacher/versions/1", "", alignet.ScopeRead},
	{"POST", "/v1/studies/s1/predict", `{"triplets":[["c1","c2","c3"]]}`, alignet.ScopeRead},
	{"GET", "/v1/studies/s1/items/c1/neighbours", "", alignet.ScopeRead},
	{"POST", "/v1/keys", `{"name":"k","scopes":["read"]}`, alignet.ScopeAdmin},
	{"GET", "/v1/keys", "", alignet.ScopeAdmin},
	{"DELETE", "/v1/keys/no-such-key", "", alignet.ScopeAdmin},
	{"POST", "/v1/workers/lookup", `{"worker":"w1"}`, alignet.ScopeRead},
}

func TestAuthMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	keys := map[string]string{"collect": e.collect, "read": e.read, "admin": e.admin, "admin2": e.newKey("admin"),
		"read+collect": e.newKey("read", "collect")}
	scopesOf := map[string][]string{"collect": {"collect"}, "read": {"read"}, "admin": {"admin"}, "admin2": {"admin"},
		"read+collect": {"read", "collect"}}
	for _, r := range authRoutes {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			for name, key := range map[string]string{"none": "", "unknown": "alg_doesnotexist", "malformed": "-"} {
				req := r
				rec := e.req(req.method, req.path, key, req.body)
				if name == "malformed" {
					hreq := newReq(req.method, req.path, req.body)
					hreq.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
					rec = e.send(hreq, "")
				}
				if rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("%s key: status %d, WWW-Authenticate %q", name, rec.Code, rec.Header().Get("WWW-Authenticate"))
				}
				if apiErr(t, rec).Code != CodeUnauthorized {
					t.Fatalf("%s key: wrong code", name)
				}
			}
			for name, key := range keys {
				rec := e.req(r.method, r.path, key, r.body)
				allowed := hasScope(scopesOf[name], r.scope)
				switch {
				case allowed && (rec.Code == 401 || rec.Code == 403):
					t.Fatalf("%s key refused: %d %s", name, rec.Code, rec.Body)
				case !allowed && rec.Code != http.StatusForbidden:
					t.Fatalf("%s key: status %d, want 403", name, rec.Code)
				case !allowed && apiErr(t, rec).Code != CodeForbidden:
					t.Fatalf("%s key: wrong code", name)
				}
			}
		})
	}
	// Unauthenticated routes.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if rec := e.req("GET", p, "", ""); rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d", p, rec.Code)
		}
	}
}

func newReq(method, path, body string) *http.Request {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func TestKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := e.must(http.StatusCreated, "POST", "/v1/keys", e.admin, `{"name":"prolific-pages","scopes":["collect","collect"]}`)
	var k keyBody
	_ = json.Unmarshal(rec.Body.Bytes(), &k)
	if !strings.HasPrefix(k.Key, KeyPrefix) || len(k.Key) != len(KeyPrefix)+43 || k.ID == "" ||
		!reflect.DeepEqual(k.Scopes, []string{"collect"}) || !strings.HasPrefix(k.Key, k.Prefix) {
		t.Fatalf("created key %+v", k)
	}
	list := e.must(http.StatusOK, "GET", "/v1/keys", e.admin, "")
	if strings.Contains(list.Body.String(), k.Key) || strings.Contains(list.Body.String(), `"key"`) {
		t.Fatal("key list leaks secrets")
	}
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", k.Key, okOdd)

	// Revoked through this server: refused at once.
	e.must(http.StatusNoContent, "DELETE", "/v1/keys/"+k.ID, e.admin, "")
	if rec := e.req("POST", "/v1/studies/s1/judgments", k.Key, okOdd); rec.Code != http.StatusUnauthorized {
		t.Fatalf("revoked key: %d", rec.Code)
	}
	e.must(http.StatusNotFound, "DELETE", "/v1/keys/nope", e.admin, "")
	e.must(http.StatusConflict, "DELETE", "/v1/keys/"+e.s.adminKeyID(), e.admin, "")

	// Revoked elsewhere: cached for KeyCacheTTL (30s by default).
	e.must(http.StatusOK, "GET", "/v1/studies", e.read, "")
	readID := keyIDOf(t, e, e.read)
	if err := e.store.RevokeAPIKey(context.Background(), readID); err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusOK, "GET", "/v1/studies", e.read, "")
	e.s.forgetKey(readID) // as if the TTL had passed
	if rec := e.req("GET", "/v1/studies", e.read, ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("revoked key after cache expiry: %d", rec.Code)
	}

	for _, body := range []string{`{"name":"x","scopes":["root"]}`, `{"name":"","scopes":["read"]}`, `{"name":"x"}`} {
		if rec := e.req("POST", "/v1/keys", e.admin, body); rec.Code != http.StatusUnprocessableEntity {
			t.Fatalf("%s: %d", body, rec.Code)
		}
	}
}

func keyIDOf(t *testing.T, e *env, key string) string {
	k, err := e.store.APIKeyByHash(context.Background(), HashKey(key))
	if err != nil {
		t.Fatal(err)
	}
	return k.ID
}

func TestAdminKeyEnsuredOnServe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srvErr := make(chan error, 1)
	go func() { srvErr <- e.s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if err := <-srvErr; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	k, err := e.store.APIKeyByHash(context.Background(), HashKey(testAdminKey))
	if err != nil || !reflect.DeepEqual(k.Scopes, []string{"admin"}) || k.ID != e.s.adminKeyID() {
		t.Fatalf("bootstrap key %+v %v", k, err)
	}
	if !strings.Contains(e.must(http.StatusOK, "GET", "/v1/keys", e.admin, "").Body.String(), "bootstrap-admin") {
		t.Fatal("bootstrap key not listed")
	}
}

func TestSpacesAndStudies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(http.StatusOK, "PUT", "/v1/spaces/clip", e.admin, `{"dim":4}`)
	rec := e.must(http.StatusConflict, "PUT", "/v1/spaces/clip", e.admin, `{"dim":8}`)
	if f := apiErr(t, rec).Field; f != "dim" {
		t.Fatalf("conflict field %q", f)
	}
	for body, field := range map[string]string{`{"dim":0}`: "dim", `{}`: "dim", `{"dim":70000}`: "dim"} {
		if rec := e.req("PUT", "/v1/spaces/x", e.admin, body); rec.Code != 422 || apiErr(t, rec).Field != field {
			t.Fatalf("%s: %d %s", body, rec.Code, rec.Body)
		}
	}
	if rec := e.req("PUT", "/v1/spaces/bad%20name", e.admin, `{"dim":3}`); rec.Code != 422 {
		t.Fatalf("bad space name: %d", rec.Code)
	}
	e.must(http.StatusOK, "POST", "/v1/spaces/clip/embeddings", e.admin, `{"items":[{"id":"c1","vector":[1,2,3,4]},{"id":"c2","vector":[0,0,0,1e-3]}]}`)
	var sp spaceBody
	_ = json.Unmarshal(e.must(http.StatusOK, "GET", "/v1/spaces/clip", e.read, "").Body.Bytes(), &sp)
	if sp.Name != "clip" || sp.Dim != 4 || sp.Embeddings == nil || *sp.Embeddings != 2 {
		t.Fatalf("space %+v", sp)
	}
	e.must(http.StatusNotFound, "GET", "/v1/spaces/none", e.read, "")

	e.must(http.StatusOK, "POST", "/v1/studies", e.admin, `{"id":"s1","task":"odd-one-out","space":"clip"}`)
	if rec := e.req("POST", "/v1/studies", e.admin, `{"id":"s1","task":"anchor","space":"clip"}`); rec.Code != 409 || apiErr(t, rec).Field != "id" {
		t.Fatalf("conflicting study: %d %s", rec.Code, rec.Body)
	}
	if rec := e.req("POST", "/v1/studies", e.admin, `{"id":"s2","task":"anchor","space":"nope"}`); rec.Code != 404 || apiErr(t, rec).Field != "space" {
		t.Fatalf("unknown space: %d %s", rec.Code, rec.Body)
	}
	if rec := e.req("POST", "/v1/studies", e.admin, `{"id":"s2","task":"triplet","space":"clip"}`); rec.Code != 422 || apiErr(t, rec).Field != "task" {
		t.Fatalf("bad task: %d %s", rec.Code, rec.Body)
	}
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, okOdd)
	e.store.addJudgments(e.pub.published())
	var st studyBody
	_ = json.Unmarshal(e.must(http.StatusOK, "GET", "/v1/studies/s1", e.read, "").Body.Bytes(), &st)
	if st.ID != "s1" || st.Task != alignet.TaskOddOneOut || st.Items == nil || *st.Items != 6 || st.Judgments == nil || *st.Judgments != 1 {
		t.Fatalf("study %+v", st)
	}
	var list struct{ Studies []studyBody }
	_ = json.Unmarshal(e.must(http.StatusOK, "GET", "/v1/studies", e.read, "").Body.Bytes(), &list)
	if len(list.Studies) != 2 || list.Studies[0].ID != "a1" {
		t.Fatalf("studies %+v", list)
	}
	rec = e.must(http.StatusOK, "POST", "/v1/studies/s1/items", e.admin, `{"items":["c6","c7"]}`)
	if strings.TrimSpace(rec.Body.String()) != `{"added":1,"total":7}` {
		t.Fatalf("add items: %s", rec.Body)
	}
	if rec := e.req("POST", "/v1/studies/s1/items", e.admin, `{"items":["c8","c8"]}`); rec.Code != 422 || apiErr(t, rec).Field != "items[1]" {
		t.Fatalf("duplicate items: %d %s", rec.Code, rec.Body)
	}
	e.must(http.StatusNotFound, "POST", "/v1/studies/zz/items", e.admin, `{"items":["c1"]}`)
	var items struct{ Items []string }
	_ = json.Unmarshal(e.must(http.StatusOK, "GET", "/v1/studies/s1/items", e.read, "").Body.Bytes(), &items)
	if len(items.Items) != 7 {
		t.Fatalf("items %v", items.Items)
	}
	e.must(http.StatusNotFound, "GET", "/v1/studies/zz", e.read, "")
	e.must(http.StatusNotFound, "GET", "/v1/nothing-here", e.read, "")
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(http.StatusOK, "GET", "/readyz", "", "")
	e.store.setDown(fmt.Errorf("pg: %w", alignet.ErrUnavailable))
	rec := e.must(http.StatusServiceUnavailable, "GET", "/readyz", "", "")
	if !strings.Contains(rec.Body.String(), `"postgres":"pg: unavailable"`) || !strings.Contains(rec.Body.String(), `"kafka":"ok"`) {
		t.Fatalf("body %s", rec.Body)
	}
	e.store.setDown(nil)
	e.pub.mu.Lock()
	e.pub.pingErr = errors.New("no brokers")
	e.pub.mu.Unlock()
	rec = e.must(http.StatusServiceUnavailable, "GET", "/readyz", "", "")
	if !strings.Contains(rec.Body.String(), `"kafka":"no brokers"`) || !strings.Contains(rec.Body.String(), `"postgres":"ok"`) {
		t.Fatalf("body %s", rec.Body)
	}
	e.must(http.StatusOK, "GET", "/healthz", "", "")
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, "["+okOdd+","+okOdd+"]")
	e.req("POST", "/v1/studies/s1/judgments", e.collect, `{`)
	e.req("POST", "/v1/studies/s1/judgments", "", okOdd)
	e.req("POST", "/v1/studies/s1/judgments", e.read, okOdd)
	body := e.must(http.StatusOK, "GET", "/metrics", "", "").Body.String()
	for _, want := range []string{
		`alignet_http_request_duration_seconds_bucket{method="POST",route="/v1/studies/:study/judgments",status="202",le="0.001"}`,
		`alignet_judgments_accepted_total{task="odd-one-out"} 2`,
		`alignet_judgments_rejected_total{reason="invalid_json"} 1`,
		`alignet_judgments_rejected_total{reason="unauthorized"} 1`,
		`alignet_judgments_rejected_total{reason="forbidden"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, `route="/v1/studies/s1/judgments"`) {
		t.Error("metrics use raw paths")
	}
	// A second server on the same registerer must fail, not panic.
	if _, err := New(Config{PseudonymKey: []byte(testPseudonymKey), Registerer: e.reg}, e.store.deps(e.pub)); err == nil {
		t.Error("duplicate registration accepted")
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	st, pub := newFakeStore(), &fakePublisher{}
	for _, cfg := range []Config{{}, {PseudonymKey: []byte("short")}, {PseudonymKey: []byte(testPseudonymKey), AdminKey: "short"},
		{PseudonymKey: []byte(testPseudonymKey), AllowOrigins: []string{"https://app.example.com/"}},
		{PseudonymKey: []byte(testPseudonymKey), AllowOrigins: []string{"app.example.com"}}} {
		if _, err := New(cfg, st.deps(pub)); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
	if _, err := New(Config{PseudonymKey: []byte(testPseudonymKey)}, Deps{Spaces: st, Publisher: pub}); err == nil {
		t.Error("incomplete Deps accepted")
	}
	s, err := New(Config{PseudonymKey: []byte(testPseudonymKey), Logger: slog.New(slog.DiscardHandler)}, st.deps(pub))
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Listen != ":8080" || s.cfg.MaxBatch != 1000 || s.cfg.MaxJudgmentBody != 2<<20 || s.cfg.MaxRTMillis != 600000 ||
		s.cfg.KeyCacheTTL != 30*time.Second || s.cfg.PoolCacheTTL != 5*time.Second || s.cfg.MaxEmbeddingBody != 2<<30 ||
		s.cfg.MaxConns != 1024 || s.cfg.MaxExports != 4 || s.cfg.ReadTimeout != 30*time.Second ||
		s.cfg.WriteTimeout != 30*time.Second || s.cfg.RevocationPollInterval != time.Second {
		t.Fatalf("defaults %+v", s.cfg)
	}
	if _, ok := s.cfg.Gatherer.(*prometheus.Registry); !ok {
		t.Fatalf("default gatherer %T", s.cfg.Gatherer)
	}
}

func exportSetup(t *testing.T, mods ...func(*Config)) (*env, []alignet.Judgment) {
	e := newEnv(t, mods...)
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect,
		`[{"id":"j1","worker":"w1","items":["c3","c1","c2"],"odd":"c1","rt_ms":1200},{"id":"j2","worker":"w2","items":["c4","c5","c6"],"odd":"c6"}]`)
	e.must(http.StatusAccepted, "POST", "/v1/studies/a1/judgments", e.collect,
		`{"id":"k1","worker":"w1","head":"c5","close":"c2","far":"c4","rt_ms":700}`)
	js := e.pub.published()
	// A query id with a comma, as stored data may hold, tests CSV quoting.
	js[0].QueryID = "q,1"
	e.store.addJudgments(js)
	return e, js
}

func TestExportCSV(t *testing.T) {
	t.Parallel()
	e, js := exportSetup(t)
	rec := e.must(http.StatusOK, "GET", "/v1/studies/s1/judgments?format=csv", e.read, "")
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Fatalf("Content-Type %q", ct)
	}
	rows, err := csv.NewReader(strings.NewReader(rec.Body.String())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rows[0], ",") != CSVHeader || len(rows) != 3 {
		t.Fatalf("rows %q", rows)
	}
	want := []string{"j1", "s1", "odd-one-out", js[0].Worker, "c3", "c1", "c2", "c1", "", "", "", "1200", "q,1", "",
		js[0].ReceivedAt.Format(time.RFC3339Nano)}
	if !reflect.DeepEqual(rows[1], want) {
		t.Fatalf("row %q\nwant %q", rows[1], want)
	}
	rec = e.must(http.StatusOK, "GET", "/v1/studies/a1/judgments", e.read, "")
	rows, _ = csv.NewReader(strings.NewReader(rec.Body.String())).ReadAll()
	want = []string{"k1", "a1", "anchor", js[2].Worker, "c5", "c2", "c4", "", "c5", "c2", "c4", "700", "", "",
		js[2].ReceivedAt.Format(time.RFC3339Nano)}
	if len(rows) != 2 || !reflect.DeepEqual(rows[1], want) {
		t.Fatalf("anchor rows %q", rows)
	}
	// Time bounds.
	after := js[2].ReceivedAt.Add(time.Second).Format(time.RFC3339)
	rec = e.must(http.StatusOK, "GET", "/v1/studies/s1/judgments?since="+after, e.read, "")
	if strings.TrimSpace(rec.Body.String()) != CSVHeader {
		t.Fatalf("since filter: %q", rec.Body)
	}
	for q, field := range map[string]string{"since=yesterday": "since", "until=2025-13-01": "until", "format=xml": "format"} {
		rec := e.req("GET", "/v1/studies/s1/judgments?"+q, e.read, "")
		if rec.Code != http.StatusBadRequest || apiErr(t, rec).Field != field {
			t.Fatalf("%s: %d %s", q, rec.Code, rec.Body)
		}
	}
	e.must(http.StatusNotFound, "GET", "/v1/studies/zz/judgments", e.read, "")
}

func TestExportJSONL(t *testing.T) {
	t.Parallel()
	e, js := exportSetup(t)
	rec := e.must(http.StatusOK, "GET", "/v1/studies/s1/judgments?format=jsonl", e.read, "")
	if ct := rec.Header().Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(strings.NewReader(rec.Body.String()))
	var got []alignet.Judgment
	for sc.Scan() {
		var j alignet.Judgment
		if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, j)
	}
	if len(got) != 2 {
		t.Fatalf("%d lines", len(got))
	}
	for i := range got {
		if !got[i].ReceivedAt.Equal(js[i].ReceivedAt) {
			t.Fatalf("time %v != %v", got[i].ReceivedAt, js[i].ReceivedAt)
		}
		got[i].ReceivedAt = js[i].ReceivedAt
	}
	if !reflect.DeepEqual(got, js[:2]) {
		t.Fatalf("got %+v\nwant %+v", got, js[:2])
	}
}

func TestExportLarge(t *testing.T) {
	t.Parallel()
	e, js := exportSetup(t)
	var many []alignet.Judgment
	for i := range 1234 {
		j := js[0]
		j.ID = fmt.Sprintf("m%d", i)
		many = append(many, j)
	}
	e.store.addJudgments(many)
	rec := e.must(http.StatusOK, "GET", "/v1/studies/s1/judgments?format=csv", e.read, "")
	if n := strings.Count(rec.Body.String(), "\n"); n != 1+2+1234 {
		t.Fatalf("%d lines", n)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.AllowOrigins = []string{"https://app.prolific.com"} })
	req := newReq("OPTIONS", "/v1/studies/s1/judgments", "")
	req.Header.Set("Origin", "https://app.prolific.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
	rec := e.send(req, "")
	if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Origin") != "https://app.prolific.com" ||
		!strings.Contains(rec.Header().Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", rec.Code, rec.Header())
	}
	h := rec.Header()
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		if !strings.Contains(h.Get("Access-Control-Allow-Methods"), m) {
			t.Errorf("preflight Allow-Methods %q lacks %s", h.Get("Access-Control-Allow-Methods"), m)
		}
	}
	if !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") || h.Get("Access-Control-Max-Age") == "" ||
		!slices.Contains(h.Values("Vary"), "Origin") || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("preflight headers %v", h)
	}
	req = newReq("POST", "/v1/studies/s1/judgments", okOdd)
	req.Header.Set("Origin", "https://evil.example")
	rec = e.send(req, e.collect)
	if rec.Code != http.StatusAccepted || rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("other origin: %d %v", rec.Code, rec.Header())
	}
	// A preflight from another origin gets no CORS headers: the browser refuses.
	req = newReq("OPTIONS", "/v1/studies/s1/judgments", "")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	rec = e.send(req, "")
	for k := range rec.Header() {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Fatalf("preflight from another origin got %s: %v", k, rec.Header())
		}
	}
	// Actual requests from the allowed origin, errors included, are readable,
	// with their Retry-After.
	e.pub.setFail(true)
	req = newReq("POST", "/v1/studies/s1/judgments", okOdd)
	req.Header.Set("Origin", "https://app.prolific.com")
	rec = e.send(req, e.collect)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Access-Control-Allow-Origin") != "https://app.prolific.com" ||
		!strings.Contains(rec.Header().Get("Access-Control-Expose-Headers"), "Retry-After") || !slices.Contains(rec.Header().Values("Vary"), "Origin") {
		t.Fatalf("error for the allowed origin: %d %v", rec.Code, rec.Header())
	}
	// "*" allows any origin.
	wildcard := newEnv(t, func(c *Config) { c.AllowOrigins = []string{"*"} })
	req = newReq("OPTIONS", "/v1/keys/x", "")
	req.Header.Set("Origin", "https://anywhere.example")
	req.Header.Set("Access-Control-Request-Method", "DELETE")
	if rec := wildcard.send(req, ""); rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("preflight with *: %d %v", rec.Code, rec.Header())
	}
}

func TestOmitMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.OmitMetrics = true })
	e.must(http.StatusNotFound, "GET", "/metrics", "", "")
	e.must(http.StatusOK, "GET", "/healthz", "", "")
	// The metrics are still recorded, for the separate listener to serve.
	if n := requestCount(t, e, "GET", "/healthz", http.StatusOK); n != 1 {
		t.Fatalf("healthz observed %d times", n)
	}
}

func TestStudyCreatedElsewhereBecomesVisible(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.PoolCacheTTL = time.Millisecond })
	e.must(http.StatusNotFound, "POST", "/v1/studies/s9/judgments", e.collect, okOdd)
	ctx := context.Background()
	if _, _, err := e.store.CreateStudy(ctx, dbStudy("s9")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.AddStudyItems(ctx, "s9", []string{"c1", "c2", "c3"}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(5 * time.Millisecond)
	e.must(http.StatusAccepted, "POST", "/v1/studies/s9/judgments", e.collect, okOdd)
}

func TestExportFailures(t *testing.T) {
	t.Parallel()
	e, _ := exportSetup(t)
	many := make([]alignet.Judgment, 2000)
	for i := range many {
		many[i] = alignet.Judgment{ID: fmt.Sprintf("m%d", i), Study: "s1", Task: alignet.TaskOddOneOut,
			Items: [3]string{"c1", "c2", "c3"}, Odd: "c1", ReceivedAt: time.Now()}
	}
	e.store.addJudgments(many)
	// Failure before the first row: a normal JSON error.
	e.store.mu.Lock()
	e.store.exportErr = fmt.Errorf("pg: %w", alignet.ErrUnavailable)
	e.store.mu.Unlock()
	rec := e.req("GET", "/v1/studies/s1/judgments?format=csv", e.read, "")
	if rec.Code != http.StatusServiceUnavailable || apiErr(t, rec).Code != CodeUnavailable || rec.Header().Get("Content-Disposition") != "" {
		t.Fatalf("%d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	// Failure mid-stream: the transfer is aborted, not silently truncated.
	e.store.mu.Lock()
	e.store.exportOK = 1500
	e.store.mu.Unlock()
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/v1/studies/s1/judgments?format=jsonl", nil)
	req.Header.Set("Authorization", "Bearer "+e.read)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("aborted export read without error")
	}
}

// readyFunc adapts a function to ReadinessChecker.
type readyFunc func(context.Context) error

func (f readyFunc) Ready(ctx context.Context) error { return f(ctx) }

func TestReadyzReportsComponents(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var persisterErr error
	e := &env{t: t, store: newFakeStore(), pub: &fakePublisher{}, reg: prometheus.NewRegistry(), logs: &syncBuffer{}, clock: newTestClock()}
	e.components = map[string]ReadinessChecker{"persister": readyFunc(func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return persisterErr
	})}
	e.start()
	rec := e.must(http.StatusOK, "GET", "/readyz", "", "")
	if !strings.Contains(rec.Body.String(), `"status":"ok"`) || !strings.Contains(rec.Body.String(), `"persister":"ok"`) {
		t.Fatalf("healthy body %s", rec.Body)
	}
	mu.Lock()
	persisterErr = errors.New("stuck for 2m0s: insert judgments: boom")
	mu.Unlock()
	rec = e.must(http.StatusOK, "GET", "/readyz", "", "")
	if !strings.Contains(rec.Body.String(), `"status":"degraded"`) || !strings.Contains(rec.Body.String(), `"persister":"stuck for 2m0s`) {
		t.Fatalf("stuck persister body %s", rec.Body)
	}
}
