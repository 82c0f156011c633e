package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser tests run Debian's Chromium headless (ALIGNET_CHROMIUM names
// another binary) against a real `alignet dev` built by the test, on the
// test Postgres with dev's in-process broker. A proxy in front of dev
// injects network failures into judgment posts and records the sessions
// and queries dev hands to each page.

// chromiumPath returns the browser binary, or skips (fails under CI=true).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("ALIGNET_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := "no Chromium found (apt-get install chromium, or set ALIGNET_CHROMIUM)"
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: " + msg)
	}
	t.Skip(msg)
	return ""
}

// newBrowser starts a headless Chromium for the test and returns a context
// for its first tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-proxy-server", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// devServer is a running `alignet dev` on a schema of its own.
type devServer struct {
	*stack
	base     string
	adminKey string
}

// startDev runs `alignet dev` with the given CORS origins and waits until
// it reports running.
func startDev(t *testing.T, e env, corsOrigins ...string) *devServer {
	t.Helper()
	s := newStack(t, e, "")
	dataDir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"dev", "--data-dir", dataDir, "--database-url", s.dbURL, "--listen", listen,
		"--kafka-port", strconv.Itoa(freePort(t)), "--partitions", "2", "--log-level", "info"}
	if len(corsOrigins) > 0 {
		args = append(args, "--cors-origins", strings.Join(corsOrigins, ","))
	}
	cmd := exec.Command(e.bin, args...)
	var out bytes.Buffer
	var mu sync.Mutex
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	running := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "alignet dev is running") {
				once.Do(func() { close(running) })
			}
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	logs := func() string { mu.Lock(); defer mu.Unlock(); return tail(out.String(), 6000) }
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("alignet dev log (tail):\n%s", logs())
		}
	})
	select {
	case <-running:
	case err := <-done:
		t.Fatalf("alignet dev exited: %v\n%s", err, logs())
	case <-time.After(2 * time.Minute):
		t.Fatalf("alignet dev did not report running\n%s", logs())
	}
	key, err := os.ReadFile(filepath.Join(dataDir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &devServer{stack: s, base: "http://" + listen, adminKey: strings.TrimSpace(string(key))}
}

// call sends a JSON request to dev with key and decodes a JSON answer
// into out (when not nil), failing unless the status is want.
func (d *devServer) call(t *testing.T, method, path, key string, body any, want int, out any) {
	t.Helper()
	var r io.Reader
	ct := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		r, ct = bytes.NewReader(b), "application/octet-stream"
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, d.base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, raw, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
}

// boundKey creates a collect key bound to study.
func (d *devServer) boundKey(t *testing.T, study string) string {
	t.Helper()
	var k struct{ Key, Study string }
	d.call(t, "POST", "/v1/keys", d.adminKey, map[string]any{"name": "page", "scopes": []string{"collect"}, "study": study}, http.StatusCreated, &k)
	if k.Key == "" || k.Study != study {
		t.Fatalf("bound key %+v", k)
	}
	return k.Key
}

// patchSettings merge-patches the settings of study.
func (d *devServer) patchSettings(t *testing.T, study string, settings map[string]any) {
	t.Helper()
	d.call(t, "PATCH", "/v1/studies/"+study, d.adminKey, map[string]any{"settings": settings}, http.StatusOK, nil)
}

// completionOf returns the completion code of a completed session and
// where dev sends its participant.
func (d *devServer) completionOf(t *testing.T, study, session string) (code, redirect string) {
	t.Helper()
	var b struct {
		Complete   bool
		Completion struct{ Code, Redirect string }
	}
	d.call(t, "GET", "/v1/studies/"+study+"/sessions/"+session, d.adminKey, nil, http.StatusOK, &b)
	if !b.Complete || b.Completion.Code == "" || b.Completion.Redirect == "" {
		t.Fatalf("session %s: %+v, want complete with a code and a redirect", session, b)
	}
	return b.Completion.Code, b.Completion.Redirect
}

// storedJudgment is a stored row as the browser tests check it.
type storedJudgment struct {
	ID, Worker, QueryID, QueryKind string
	Items                          [3]string
	Odd                            string
	RTMillis                       int
}

// judgmentsOf returns the stored judgments of study.
func (d *devServer) judgmentsOf(t *testing.T, study string) []storedJudgment {
	t.Helper()
	rows, err := d.pool.Query(context.Background(), `SELECT id, worker, coalesce(query_id, ''), coalesce(query_kind, ''),
		item_a, item_b, item_c, coalesce(odd, ''), rt_ms
		FROM judgments WHERE study = $1 ORDER BY received_at, id`, study)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []storedJudgment
	for rows.Next() {
		var j storedJudgment
		if err := rows.Scan(&j.ID, &j.Worker, &j.QueryID, &j.QueryKind, &j.Items[0], &j.Items[1], &j.Items[2], &j.Odd, &j.RTMillis); err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// loggedQuery is a query of dev's query log.
type loggedQuery struct {
	Session, Kind string
	Items         [3]string
}

// queryLog returns the logged queries of study by id.
func (d *devServer) queryLog(t *testing.T, study string) map[string]loggedQuery {
	t.Helper()
	rows, err := d.pool.Query(context.Background(), `SELECT id, session, kind, item_a, item_b, item_c FROM queries WHERE study = $1`, study)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]loggedQuery{}
	for rows.Next() {
		var id string
		var q loggedQuery
		if err := rows.Scan(&id, &q.Session, &q.Kind, &q.Items[0], &q.Items[1], &q.Items[2]); err != nil {
			t.Fatal(err)
		}
		out[id] = q
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// fault is what the proxy does to one judgment POST.
type fault int

const (
	faultNone fault = iota
	// faultDrop closes the connection before the request reaches dev.
	faultDrop
	// faultLoseAnswer forwards the request, then closes the connection
	// instead of passing on dev's 202: the answer is stored, the browser
	// never learns it.
	faultLoseAnswer
)

// servedQuery is a query handed to a session, as the page saw it.
type servedQuery struct {
	Session string
	Items   [3]string
	Display [3]map[string]any
}

// proxy stands between the browser and dev.
type proxy struct {
	t        *testing.T
	srv      *httptest.Server
	upstream *url.URL
	rp       *httputil.ReverseProxy

	mu       sync.Mutex
	posts    int                    // judgment POSTs seen
	faults   func(n int) fault      // fault of the nth judgment POST (from 1)
	offline  bool                   // every request fails at the connection
	hold     chan struct{}          // when set, judgment POSTs wait for it to close
	served   map[string]servedQuery // by query id
	sessions map[string][]string    // session ids dev answered each worker's POST .../sessions with
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, upstream: u, rp: httputil.NewSingleHostReverseProxy(u),
		served: map[string]servedQuery{}, sessions: map[string][]string{}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *proxy) url() string { return p.srv.URL }

func (p *proxy) setOffline(off bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offline = off
}

func (p *proxy) setFaults(f func(n int) fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = f
}

// holdPosts makes judgment POSTs wait until the returned func is called.
func (p *proxy) holdPosts() (release func()) {
	ch := make(chan struct{})
	p.mu.Lock()
	p.hold = ch
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			p.hold = nil
			p.mu.Unlock()
			close(ch)
		})
	}
}

// cut closes the client connection without an answer.
func cut(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

var (
	judgmentsPath = regexp.MustCompile(`^/v1/studies/[^/]+/judgments$`)
	sessionsPath  = regexp.MustCompile(`^/v1/studies/([^/]+)/sessions$`)
	nextPath      = regexp.MustCompile(`^/v1/studies/([^/]+)/sessions/([^/]+)/next$`)
)

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	offline := p.offline
	p.mu.Unlock()
	if offline {
		cut(w)
		return
	}
	switch {
	case r.Method == http.MethodPost && judgmentsPath.MatchString(r.URL.Path):
		p.judgment(w, r)
	case r.Method == http.MethodPost && sessionsPath.MatchString(r.URL.Path):
		p.forwardRecorded(w, r, p.recordSession)
	case r.Method == http.MethodGet && nextPath.MatchString(r.URL.Path):
		p.forwardRecorded(w, r, p.recordNext)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// forwardRecorded passes a request to dev and its request and answer
// bodies to note.
func (p *proxy) forwardRecorded(w http.ResponseWriter, r *http.Request, note func(r *http.Request, req, resp []byte)) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		cut(w)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	p.rp.ServeHTTP(rec, r)
	if rec.Code < 300 {
		note(r, body, rec.Body.Bytes())
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// recordSession notes the session dev opened or returned for a worker.
func (p *proxy) recordSession(_ *http.Request, req, resp []byte) {
	var in struct{ Worker string }
	var out struct{ ID string }
	if json.Unmarshal(req, &in) != nil || json.Unmarshal(resp, &out) != nil || out.ID == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sessions[in.Worker] = append(p.sessions[in.Worker], out.ID)
}

// sessionOf returns the one session dev gave worker, failing if it gave
// none or several.
func (p *proxy) sessionOf(t *testing.T, worker string) string {
	t.Helper()
	p.mu.Lock()
	ids := slices.Clone(p.sessions[worker])
	p.mu.Unlock()
	if len(ids) == 0 || slices.ContainsFunc(ids, func(id string) bool { return id != ids[0] }) {
		t.Fatalf("worker %s was given sessions %v, want one", worker, ids)
	}
	return ids[0]
}

// recordNext notes the queries of a next answer.
func (p *proxy) recordNext(r *http.Request, _, resp []byte) {
	var b struct {
		Queries []struct {
			QueryID string           `json:"query_id"`
			Items   [3]string        `json:"items"`
			Display []map[string]any `json:"display"`
		} `json:"queries"`
	}
	if json.Unmarshal(resp, &b) != nil {
		return
	}
	session := nextPath.FindStringSubmatch(r.URL.Path)[2]
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range b.Queries {
		sq := servedQuery{Session: session, Items: q.Items}
		copy(sq.Display[:], q.Display)
		p.served[q.QueryID] = sq
	}
}

// judgment forwards a judgment POST, with the fault the test asked for.
func (p *proxy) judgment(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		cut(w)
		return
	}
	p.mu.Lock()
	p.posts++
	f := faultNone
	if p.faults != nil {
		f = p.faults(p.posts)
	}
	hold := p.hold
	p.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	if f == faultDrop {
		cut(w)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream.String()+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		cut(w)
		return
	}
	for _, h := range []string{"Authorization", "Content-Type", "Origin"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cut(w)
		return
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if f == faultLoseAnswer {
		cut(w)
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}
