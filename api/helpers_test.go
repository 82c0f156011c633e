package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	testAdminKey     = "test-admin-key-0123456789abcdef"
	testPseudonymKey = "pseudonym-key-0123456789"
)

// env is a Server wired to fakes, with a space "clip" (dim 4), an
// odd-one-out study "s1" and an anchor study "a1", both over items c1..c6,
// and keys for every scope.
type env struct {
	t     testing.TB
	s     *Server
	h     http.Handler
	store *fakeStore
	pub   *fakePublisher
	clock *testClock
	// components become Deps.Components of the servers the env builds.
	components map[string]ReadinessChecker
	// teachers and students become Deps.QueryTeachers and Deps.Students.
	teachers QueryTeachers
	students StudentSource
	reg      *prometheus.Registry
	logs     *syncBuffer
	admin    string
	collect  string
	read     string
	// drift, when set before the server is made, serves the drift route.
	drift *fakeDrift
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testClock is a manual clock for the caches, starting at the real time.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newEnv(t testing.TB, mods ...func(*Config)) *env {
	t.Helper()
	e := &env{t: t, store: newFakeStore(), pub: &fakePublisher{}, clock: newTestClock(),
		reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	return e.start(mods...)
}

// newEnvOn is newEnv on an existing store, as a second server would be;
// the study and key setup is not repeated.
func newEnvOn(t testing.TB, store *fakeStore, mods ...func(*Config)) *env {
	t.Helper()
	e := &env{t: t, store: store, pub: &fakePublisher{}, clock: newTestClock(),
		reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	e.s = e.newServer(mods...)
	e.h, e.admin = e.s.Handler(), testAdminKey
	return e
}

func (e *env) newServer(mods ...func(*Config)) *Server {
	e.t.Helper()
	cfg := Config{
		AdminKey:        testAdminKey,
		PseudonymKey:    []byte(testPseudonymKey),
		MaxJudgmentBody: 256 << 10,
		Registerer:      e.reg,
		Logger:          slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:             e.clock.Now,
	}
	for _, m := range mods {
		m(&cfg)
	}
	deps := e.store.deps(e.pub)
	deps.Components = e.components
	deps.QueryTeachers, deps.Students = e.teachers, e.students
	if e.drift != nil {
		deps.Drift = e.drift
	}
	s, err := New(cfg, deps)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.t.Cleanup(s.close)
	return s
}

func (e *env) start(mods ...func(*Config)) *env {
	e.t.Helper()
	s := e.newServer(mods...)
	e.s, e.h, e.admin = s, s.Handler(), testAdminKey
	e.must(http.StatusCreated, "PUT", "/v1/spaces/clip", e.admin, `{"dim":4}`)
	e.must(http.StatusCreated, "POST", "/v1/studies", e.admin, `{"id":"s1","task":"odd-one-out","space":"clip"}`)
	e.must(http.StatusCreated, "POST", "/v1/studies", e.admin, `{"id":"a1","task":"anchor","space":"clip"}`)
	items := `{"items":["c1","c2","c3","c4","c5","c6"]}`
	e.must(http.StatusOK, "POST", "/v1/studies/s1/items", e.admin, items)
	e.must(http.StatusOK, "POST", "/v1/studies/a1/items", e.admin, items)
	e.collect = e.newKey("collect")
	e.read = e.newKey("read")
	return e
}

// serve runs the server on a loopback listener until the test ends and
// returns its base URL.
func (e *env) serve() string {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.s.Serve(ctx, ln) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func (e *env) newKey(scopes ...string) string {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"name": "test-" + strings.Join(scopes, "-"), "scopes": scopes})
	rec := e.must(http.StatusCreated, "POST", "/v1/keys", e.admin, string(b))
	var k keyBody
	if err := json.Unmarshal(rec.Body.Bytes(), &k); err != nil || k.Key == "" {
		e.t.Fatalf("create key: %v %s", err, rec.Body)
	}
	return k.Key
}

// req sends a request with a JSON body (or none when body is "").
func (e *env) req(method, path, key, body string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return e.send(req, key)
}

func (e *env) send(req *http.Request, key string) *httptest.ResponseRecorder {
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

func (e *env) must(status int, method, path, key, body string) *httptest.ResponseRecorder {
	e.t.Helper()
	rec := e.req(method, path, key, body)
	if rec.Code != status {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, rec.Code, status, rec.Body)
	}
	return rec
}

// apiErr decodes an error body, failing the test if it is not one.
func apiErr(t testing.TB, rec *httptest.ResponseRecorder) Error {
	t.Helper()
	var b struct {
		Error *Error `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || b.Error == nil || b.Error.Code == "" || b.Error.Message == "" {
		t.Fatalf("not an error body (%v): %s", err, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type %q", ct)
	}
	return *b.Error
}
