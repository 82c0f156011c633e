package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
// injects network failures and, until the query-selection routes exist,
// serves sessions and next queries from a small in-test fake of their
// contract.

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

// setPageSettings stores the page texts of a study (before its first use,
// so the API's caches load them).
func (d *devServer) setPageSettings(t *testing.T, study string, page map[string]string) {
	t.Helper()
	raw, _ := json.Marshal(page)
	if _, err := d.pool.Exec(context.Background(), `UPDATE studies SET settings = jsonb_set(settings, '{page}', $2::jsonb) WHERE id = $1`, study, raw); err != nil {
		t.Fatal(err)
	}
}

// storedJudgment is a stored row as the browser tests check it.
type storedJudgment struct {
	ID, Worker, QueryID string
	Items               [3]string
	Odd                 string
	RTMillis            int
}

// judgmentsOf returns the stored judgments of study.
func (d *devServer) judgmentsOf(t *testing.T, study string) []storedJudgment {
	t.Helper()
	rows, err := d.pool.Query(context.Background(), `SELECT id, worker, coalesce(query_id, ''), item_a, item_b, item_c, coalesce(odd, ''), rt_ms
		FROM judgments WHERE study = $1 ORDER BY received_at, id`, study)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []storedJudgment
	for rows.Next() {
		var j storedJudgment
		if err := rows.Scan(&j.ID, &j.Worker, &j.QueryID, &j.Items[0], &j.Items[1], &j.Items[2], &j.Odd, &j.RTMillis); err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
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
}

// proxy stands between the browser and dev.
type proxy struct {
	t        *testing.T
	srv      *httptest.Server
	upstream *url.URL
	rp       *httputil.ReverseProxy

	mu      sync.Mutex
	posts   int                    // judgment POSTs seen
	faults  func(n int) fault      // fault of the nth judgment POST (from 1)
	offline bool                   // every request fails at the connection
	hold    chan struct{}          // when set, judgment POSTs wait for it to close
	served  map[string]servedQuery // by query id
	acked   map[string]string      // query id -> judgment id dev accepted

	fake    *fakeSessions  // nil once the real routes exist
	display map[string]any // display data the fake adds to queries, by item
}

func newProxy(t *testing.T, upstream string, fake *fakeSessions) *proxy {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, upstream: u, rp: httputil.NewSingleHostReverseProxy(u), fake: fake,
		served: map[string]servedQuery{}, acked: map[string]string{}}
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
	case p.fake != nil && r.Method == http.MethodPost && sessionsPath.MatchString(r.URL.Path):
		p.fake.open(w, r, p)
	case r.Method == http.MethodGet && nextPath.MatchString(r.URL.Path):
		if p.fake != nil {
			p.fake.next(w, r, p)
			return
		}
		p.recordNext(w, r)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// recordNext passes a next-query request to dev and records what it served.
func (p *proxy) recordNext(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	p.rp.ServeHTTP(rec, r)
	m := nextPath.FindStringSubmatch(r.URL.Path)
	p.record(m[2], rec.Body.Bytes())
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// record notes the queries of a next answer.
func (p *proxy) record(session string, body []byte) {
	var b struct {
		Queries []struct {
			QueryID string   `json:"query_id"`
			Items   []string `json:"items"`
		} `json:"queries"`
	}
	if json.Unmarshal(body, &b) != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range b.Queries {
		var it [3]string
		copy(it[:], q.Items)
		p.served[q.QueryID] = servedQuery{Session: session, Items: it}
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
	if resp.StatusCode == http.StatusAccepted {
		var j struct {
			ID      string `json:"id"`
			QueryID string `json:"query_id"`
		}
		if json.Unmarshal(body, &j) == nil && j.QueryID != "" {
			p.mu.Lock()
			if _, dup := p.acked[j.QueryID]; !dup {
				p.acked[j.QueryID] = j.ID
			}
			p.mu.Unlock()
		}
	}
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

// answeredBy returns how many queries of session dev acknowledged.
func (p *proxy) answeredBy(session string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for q := range p.acked {
		if p.served[q].Session == session {
			n++
		}
	}
	return n
}

// fakeSessions serves POST .../sessions and GET .../next by the contract
// of the query-selection API, with uniform random triplets: it validates
// the key against dev, gives a returning worker their open session, hands
// out queries not yet answered first, and completes a session once dev
// acknowledged Trials of its queries.
type fakeSessions struct {
	Items     []string
	Trials    int
	Completes func(platform string, params map[string]string, session string) string // redirect URL
	Origin    string                                                                 // CORS origin allowed

	mu       sync.Mutex
	rng      *rand.Rand
	sessions map[string]*fakeSession // by platform:worker
	byID     map[string]*fakeSession
	nextID   int
}

type fakeSession struct {
	id       string
	platform string
	params   map[string]string
	queries  []string // served, in order
}

func (f *fakeSessions) cors(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); o != "" && o == f.Origin {
		w.Header().Set("Access-Control-Allow-Origin", o)
	}
}

func (f *fakeSessions) open(w http.ResponseWriter, r *http.Request, p *proxy) {
	f.cors(w, r)
	study := sessionsPath.FindStringSubmatch(r.URL.Path)[1]
	// The key must be one dev takes for this study.
	check, _ := http.NewRequest("GET", p.upstream.String()+"/v1/studies/"+study+"/page", nil)
	check.Header.Set("Authorization", r.Header.Get("Authorization"))
	resp, err := http.DefaultClient.Do(check)
	if err != nil {
		cut(w)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		w.WriteHeader(resp.StatusCode)
		return
	}
	var in struct {
		Worker   string            `json:"worker"`
		Platform string            `json:"platform"`
		Params   map[string]string `json:"params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Worker == "" {
		http.Error(w, `{"error":{"code":"invalid_json","message":"bad session body"}}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sessions == nil {
		f.sessions, f.byID, f.rng = map[string]*fakeSession{}, map[string]*fakeSession{}, rand.New(rand.NewPCG(1, 2))
	}
	status := http.StatusOK
	s, ok := f.sessions[in.Platform+":"+in.Worker]
	if !ok {
		f.nextID++
		s = &fakeSession{id: fmt.Sprintf("sess-%d", f.nextID), platform: in.Platform, params: in.Params}
		f.sessions[in.Platform+":"+in.Worker], f.byID[s.id] = s, s
		status = http.StatusCreated
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"id": s.id, "trials": f.Trials})
}

func (f *fakeSessions) next(w http.ResponseWriter, r *http.Request, p *proxy) {
	f.cors(w, r)
	m := nextPath.FindStringSubmatch(r.URL.Path)
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	n = max(1, min(n, 10))
	f.mu.Lock()
	s, ok := f.byID[m[2]]
	if !ok {
		f.mu.Unlock()
		http.Error(w, `{"error":{"code":"not_found","message":"no such session"}}`, http.StatusNotFound)
		return
	}
	answered := p.answeredBy(s.id)
	var out []map[string]any
	body := map[string]any{"complete": false, "progress": map[string]int{"answered": answered, "trials": f.Trials}}
	if answered >= f.Trials {
		body["complete"] = true
		body["completion"] = map[string]string{"code": "FAKE-" + s.id, "redirect": f.Completes(s.platform, s.params, s.id)}
	} else {
		// Outstanding queries first (a reloaded page lost its buffer).
		p.mu.Lock()
		var open []string
		for _, q := range s.queries {
			if _, done := p.acked[q]; !done {
				open = append(open, q)
			}
		}
		p.mu.Unlock()
		for len(open) < min(n, f.Trials-answered) {
			perm := f.rng.Perm(len(f.Items))
			id := fmt.Sprintf("q-%s-%d", s.id, len(s.queries)+1)
			s.queries = append(s.queries, id)
			p.mu.Lock()
			p.served[id] = servedQuery{Session: s.id, Items: [3]string{f.Items[perm[0]], f.Items[perm[1]], f.Items[perm[2]]}}
			p.mu.Unlock()
			open = append(open, id)
		}
		p.mu.Lock()
		for _, q := range open[:min(n, len(open))] {
			sq := p.served[q]
			out = append(out, map[string]any{"query_id": q, "items": sq.Items[:]})
		}
		p.mu.Unlock()
	}
	f.mu.Unlock()
	if out == nil {
		out = []map[string]any{}
	}
	body["queries"] = out
	raw, _ := json.Marshal(body)
	// The page needs display data: take it from dev, as the real route will.
	raw = p.withDisplay(r, raw)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(raw)
}

// withDisplay adds each item's display data, read from dev's item routes
// with the admin key of the test, to a next answer.
func (p *proxy) withDisplay(_ *http.Request, raw []byte) []byte {
	if p.display == nil {
		return raw
	}
	var b map[string]any
	if json.Unmarshal(raw, &b) != nil {
		return raw
	}
	qs, _ := b["queries"].([]any)
	for _, q := range qs {
		qm := q.(map[string]any)
		disp := map[string]any{}
		for _, it := range qm["items"].([]any) {
			if d, ok := p.display[it.(string)]; ok {
				disp[it.(string)] = d
			}
		}
		qm["display"] = disp
	}
	out, _ := json.Marshal(b)
	return out
}
