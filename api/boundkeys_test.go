package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// newBoundKey creates a collect key bound to study.
func (e *env) newBoundKey(study string) string {
	e.t.Helper()
	rec := e.must(http.StatusCreated, "POST", "/v1/keys", e.admin, `{"name":"page","scopes":["collect"],"study":"`+study+`"}`)
	var k keyBody
	if err := json.Unmarshal(rec.Body.Bytes(), &k); err != nil || k.Key == "" || k.Study != study {
		e.t.Fatalf("create bound key: %v %s", err, rec.Body)
	}
	return k.Key
}

func TestBindingKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.newBoundKey("s1")
	for _, c := range []struct {
		body   string
		status int
		field  string
	}{
		{`{"name":"p","scopes":["collect","read"],"study":"s1"}`, http.StatusUnprocessableEntity, "scopes"},
		{`{"name":"p","scopes":["admin"],"study":"s1"}`, http.StatusUnprocessableEntity, "scopes"},
		{`{"name":"p","scopes":["read"],"study":"s1"}`, http.StatusUnprocessableEntity, "scopes"},
		{`{"name":"p","scopes":["collect"],"study":"no such/study"}`, http.StatusUnprocessableEntity, "study"},
		{`{"name":"p","scopes":["collect"],"study":"nope"}`, http.StatusNotFound, "study"},
	} {
		rec := e.req("POST", "/v1/keys", e.admin, c.body)
		if rec.Code != c.status || apiErr(t, rec).Field != c.field {
			t.Errorf("POST /v1/keys %s: %d %s; want %d naming %s", c.body, rec.Code, rec.Body, c.status, c.field)
		}
	}
	rec := e.must(http.StatusOK, "GET", "/v1/keys", e.admin, "")
	if n := strings.Count(rec.Body.String(), `"study":"s1"`); n != 1 {
		t.Fatalf("key list shows %d bound keys, want 1: %s", n, rec.Body)
	}
}

// routeParams fills the parameters of a route path.
func routeParams(path, study string) string {
	r := strings.NewReplacer(":study", study, ":space", "clip", ":id", "x", ":item", "c1", ":file", "run.js", ":session", "sess-1")
	return r.Replace(path)
}

// TestBoundKeyOnlyCollectsInItsStudy holds every route to the rule: a
// study-bound key is refused (403) on every route of another study, on
// every route without a study, and on every route of its own study that
// an unbound collect key may not use either (every read and admin route).
func TestBoundKeyOnlyCollectsInItsStudy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bound := e.newBoundKey("s1")
	send := func(method, path, key string) *httptest.ResponseRecorder {
		body := ""
		if method == "POST" || method == "PUT" || method == "PATCH" {
			body = okOdd
		}
		return e.req(method, path, key, body)
	}
	allowed := 0
	for _, r := range e.s.e.Routes() {
		if r.Method == "OPTIONS" || strings.HasPrefix(r.Method, "echo_route") {
			continue
		}
		if rec := send(r.Method, routeParams(r.Path, "s1"), ""); rec.Code != http.StatusUnauthorized {
			continue // public
		}
		other := routeParams(r.Path, "a1")
		if rec := send(r.Method, other, bound); rec.Code != http.StatusForbidden {
			t.Errorf("%s %s with a key bound to s1: %d, want 403", r.Method, other, rec.Code)
		}
		own := routeParams(r.Path, "s1")
		rec := send(r.Method, own, bound)
		plain := send(r.Method, own, e.collect)
		switch {
		case !strings.Contains(r.Path, ":study") || plain.Code == http.StatusForbidden:
			if rec.Code != http.StatusForbidden {
				t.Errorf("%s %s with a key bound to s1: %d, want 403", r.Method, own, rec.Code)
			}
		case rec.Code == http.StatusForbidden:
			t.Errorf("%s %s: a key bound to s1 is refused where a collect key is not (%d): %s", r.Method, own, plain.Code, rec.Body)
		default:
			allowed++
		}
	}
	if allowed < 2 {
		t.Fatalf("a bound key may use only %d routes; want at least judgments and page", allowed)
	}
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", bound, okOdd)
}

func TestBoundKeyRateLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.SessionLimit = RateLimit{Rate: 1, Burst: 2}
		c.AddressLimit = RateLimit{Rate: 1, Burst: 5}
	})
	bound := e.newBoundKey("s1")
	post := func(worker, addr, xff string) *httptest.ResponseRecorder {
		req := newReq("POST", "/v1/studies/s1/judgments", strings.Replace(okOdd, `"w1"`, `"`+worker+`"`, 1))
		req.RemoteAddr = addr + ":40000"
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		return e.send(req, bound)
	}
	limited := func(rec *httptest.ResponseRecorder, limit string) {
		t.Helper()
		if rec.Code != http.StatusTooManyRequests {
			t.Fatalf("status %d, want 429: %s", rec.Code, rec.Body)
		}
		ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
		if err != nil || ra < 1 {
			t.Fatalf("Retry-After %q", rec.Header().Get("Retry-After"))
		}
		if ae := apiErr(t, rec); ae.Code != CodeRateLimited || ae.Limit != limit || !strings.Contains(ae.Message, "retry after") {
			t.Fatalf("429 body %s, want limit %q", rec.Body, limit)
		}
	}
	published := len(e.pub.published())
	// One session: its burst, then 429 naming the session limit.
	for i := range 2 {
		if rec := post("w1", "192.0.2.1", ""); rec.Code != http.StatusAccepted {
			t.Fatalf("post %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	limited(post("w1", "192.0.2.1", ""), limitSession)
	// Other sessions from the same address, until the address's burst is
	// spent (the refused request took an address token too).
	for _, w := range []string{"w2", "w3"} {
		if rec := post(w, "192.0.2.1", ""); rec.Code != http.StatusAccepted {
			t.Fatalf("worker %s: %d %s", w, rec.Code, rec.Body)
		}
	}
	limited(post("w4", "192.0.2.1", ""), limitAddress)
	// A forged X-Forwarded-For does not make a new address.
	limited(post("w5", "192.0.2.1", "203.0.113.9"), limitAddress)
	// Another address has its own bucket; so does the first after a second.
	if rec := post("w6", "192.0.2.2", ""); rec.Code != http.StatusAccepted {
		t.Fatalf("another address: %d %s", rec.Code, rec.Body)
	}
	e.clock.Advance(time.Second)
	if rec := post("w7", "192.0.2.1", ""); rec.Code != http.StatusAccepted {
		t.Fatalf("after a second: %d %s", rec.Code, rec.Body)
	}
	if got := len(e.pub.published()) - published; got != 6 {
		t.Fatalf("%d judgments published, want the 6 accepted", got)
	}
	// Unbound keys are not limited.
	for i := range 20 {
		req := newReq("POST", "/v1/studies/s1/judgments", okOdd)
		req.RemoteAddr = "192.0.2.1:40000"
		if rec := e.send(req, e.collect); rec.Code != http.StatusAccepted {
			t.Fatalf("unbound post %d: %d", i, rec.Code)
		}
	}
}

func TestBoundKeySessionsLimitedPerParticipant(t *testing.T) {
	t.Parallel()
	e := queryEnv(t, 12, nil, func(c *Config) { c.SessionLimit = RateLimit{Rate: 1, Burst: 3} })
	bound := e.newBoundKey("qs")
	open := func(key, worker string) *httptest.ResponseRecorder {
		return e.req("POST", "/v1/studies/qs/sessions", key, `{"worker":"`+worker+`"}`)
	}
	if rec := open(bound, "alice"); rec.Code != http.StatusCreated {
		t.Fatalf("open: %d %s", rec.Code, rec.Body)
	}
	for i := range 2 {
		if rec := open(bound, "alice"); rec.Code != http.StatusOK {
			t.Fatalf("reopen %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	// The participant's burst is spent: reopening, and posting as them,
	// are refused; other participants and unbound keys are not.
	rec := open(bound, "alice")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || apiErr(t, rec).Limit != limitSession {
		t.Fatalf("reopen past the burst: %d %s (Retry-After %q)", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	judgment := `{"worker":"alice","items":["i0","i1","i2"],"odd":"i2","rt_ms":900}`
	if rec := e.req("POST", "/v1/studies/qs/judgments", bound, judgment); rec.Code != http.StatusTooManyRequests || apiErr(t, rec).Limit != limitSession {
		t.Fatalf("judgment of a limited participant: %d %s", rec.Code, rec.Body)
	}
	if rec := open(bound, "bob"); rec.Code != http.StatusCreated {
		t.Fatalf("another participant: %d %s", rec.Code, rec.Body)
	}
	if rec := open(e.collect, "alice"); rec.Code != http.StatusOK {
		t.Fatalf("unbound key: %d %s", rec.Code, rec.Body)
	}
	e.clock.Advance(time.Second)
	if rec := open(bound, "alice"); rec.Code != http.StatusOK {
		t.Fatalf("after a second: %d %s", rec.Code, rec.Body)
	}
}

func TestBoundKeyBehindAProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.AddressLimit = RateLimit{Rate: 1, Burst: 1}
		c.TrustForwardedFor = true
	})
	bound := e.newBoundKey("s1")
	post := func(xff string) int {
		req := newReq("GET", "/v1/studies/s1/page", "")
		req.RemoteAddr = "10.0.0.5:40000" // the proxy
		req.Header.Set("X-Forwarded-For", xff)
		return e.send(req, bound).Code
	}
	if a, b, c := post("198.51.100.1"), post("198.51.100.2"), post("198.51.100.1"); a != 200 || b != 200 || c != http.StatusTooManyRequests {
		t.Fatalf("behind a trusted proxy: %d %d %d, want 200 200 429", a, b, c)
	}
}

func TestNewRejectsBadRateLimits(t *testing.T) {
	t.Parallel()
	for _, l := range []RateLimit{{Rate: -1, Burst: 5}, {Rate: 1, Burst: 0}} {
		cfg := Config{PseudonymKey: []byte(testPseudonymKey), SessionLimit: l}
		if _, err := New(cfg, newFakeStore().deps(nopPublisher{})); err == nil {
			t.Errorf("New with session limit %+v succeeded", l)
		}
	}
}
