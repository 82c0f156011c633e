package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browserStudy is the study the browser tests run, with its stimuli.
type browserStudy struct {
	dev   *devServer
	study string
	items []string
	key   string // bound to study
}

// seedBrowserStudy creates an odd-one-out study over shoe pictures (the
// Zappos images of the shared data when present, drawn squares otherwise)
// with labels, consent and instructions, and a key bound to it.
func seedBrowserStudy(t *testing.T, d *devServer, study string) *browserStudy {
	t.Helper()
	d.call(t, "PUT", "/v1/spaces/shoes", d.adminKey, map[string]int{"dim": 4}, http.StatusCreated, nil)
	d.call(t, "POST", "/v1/studies", d.adminKey, map[string]string{"id": study, "task": "odd-one-out", "space": "shoes"}, http.StatusCreated, nil)
	d.setPageSettings(t, study, map[string]string{
		"title":        "Which shoe is the odd one out?",
		"consent":      "This is a test study.\n\nBy clicking I agree you consent to take part.",
		"instructions": "Tap the shoe that fits least with the other two.",
	})
	bs := &browserStudy{dev: d, study: study}
	var labels []map[string]string
	zappos := filepath.Join("..", "..", "shared", "data", "zappos", "images")
	for i := range 12 {
		id := fmt.Sprintf("zappos-%d", i)
		bs.items = append(bs.items, id)
		pic, err := os.ReadFile(filepath.Join(zappos, fmt.Sprintf("%d.jpg", i)))
		if err != nil {
			pic = squarePNG(t, color.RGBA{uint8(20 * i), 90, 160, 255})
		}
		d.call(t, "PUT", "/v1/items/"+id+"/image", d.adminKey, pic, http.StatusOK, nil)
		labels = append(labels, map[string]string{"id": id, "label": fmt.Sprintf("Shoe %d", i+1)})
	}
	d.call(t, "POST", "/v1/items", d.adminKey, map[string]any{"items": labels}, http.StatusOK, nil)
	d.call(t, "POST", "/v1/studies/"+study+"/items", d.adminKey, map[string]any{"items": bs.items}, http.StatusOK, nil)
	bs.key = d.boundKey(t, study)
	return bs
}

func squarePNG(t *testing.T, c color.Color) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 96, 96))
	for x := range 96 {
		for y := range 96 {
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// displayOf reads the display data dev gives each item.
func (bs *browserStudy) displayOf(t *testing.T) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, it := range bs.items {
		var b struct {
			Display map[string]any `json:"display"`
		}
		bs.dev.call(t, "GET", "/v1/items/"+it, bs.dev.adminKey, nil, http.StatusOK, &b)
		out[it] = b.Display
	}
	return out
}

// doneServer stands for the platform's completion page.
type doneServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits []string
}

func newDoneServer(t *testing.T) *doneServer {
	d := &doneServer{}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.hits = append(d.hits, r.URL.RequestURI())
		d.mu.Unlock()
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<!doctype html><title>done</title><p>Submitted.</p>"))
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *doneServer) hit(uri string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Contains(d.hits, uri)
}

// pageState is what the participant page shows now.
type pageState struct {
	State   string `json:"state"`
	Query   string `json:"query"`
	Stimuli int    `json:"stimuli"`
	Primary string `json:"primary"`
	Href    string `json:"href"`
	Error   string `json:"error"`
}

const pageStateJS = `(() => {
	const q = document.querySelector('[data-query]');
	const enabled = [...document.querySelectorAll('button.stim, button.alignet-stim')].filter(b => !b.disabled);
	const primary = [...document.querySelectorAll('button.primary, button.jspsych-btn')].find(b => !b.disabled);
	const err = document.querySelector('.error');
	return {state: document.body.dataset.state || '', query: q ? q.dataset.query : '',
		stimuli: enabled.length, primary: primary ? primary.textContent : '', href: location.href,
		error: err ? err.textContent : ''};
})()`

// stimuliCheck reports whether the three stimuli of the trial on screen
// are inside the viewport, large enough to tap, loaded, and on top (a
// click at their centre reaches them).
const stimuliCheckJS = `(() => {
	const els = [...document.querySelectorAll('.stim, .alignet-stim')];
	const vw = window.innerWidth, vh = window.innerHeight;
	const out = els.map(el => {
		const r = el.getBoundingClientRect();
		const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
		const img = el.querySelector('img');
		return {w: r.width, h: r.height, inside: r.left >= 0 && r.top >= 0 && r.right <= vw && r.bottom <= vh,
			onTop: !!hit && el.contains(hit), loaded: !img || (img.complete && img.naturalWidth > 0)};
	});
	return JSON.stringify({vw, vh, stimuli: out});
})()`

type stimuliReport struct {
	VW, VH  float64
	Stimuli []struct {
		W, H                  float64
		Inside, OnTop, Loaded bool
	}
}

// checkTrialOnScreen asserts that the trial shows three visible, clickable
// stimuli and saves a screenshot as name in the test's artifact dir.
func checkTrialOnScreen(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](stimuliCheckJS))
	if err != nil {
		t.Fatal(err)
	}
	var rep stimuliReport
	if err := jsonUnmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Stimuli) != 3 {
		t.Fatalf("%s: %d stimuli on screen, want 3: %s", name, len(rep.Stimuli), raw)
	}
	for i, s := range rep.Stimuli {
		if !s.Inside || !s.OnTop || !s.Loaded || s.W < 60 || s.H < 60 {
			t.Fatalf("%s: stimulus %d is not fully visible, loaded and clickable in a %gx%g viewport: %s", name, i, rep.VW, rep.VH, raw)
		}
	}
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%gx%g viewport)", path, rep.VW, rep.VH)
}

// participant clicks through a session in one tab.
type participant struct {
	t       *testing.T
	ctx     context.Context
	doneURL string // where the page must land
	// before and after run around the answer of trial n (from 1).
	before, after func(n int)
}

// run loads pageURL, agrees, starts, answers every trial (choosing the
// stimulus n%3 on trial n) and returns the number of trials answered once
// the page has landed on doneURL.
func (p *participant) run(pageURL string) int {
	t := p.t
	var mu sync.Mutex
	var console []string
	if err := chromedp.Listen(p.ctx, func(ev any) {
		var line string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			for _, a := range ev.Args {
				line += " " + string(a.Value) + a.Description
			}
			line = string(ev.Type) + ":" + line
		case *runtime.EventExceptionThrown:
			line = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				line += " " + ev.ExceptionDetails.Exception.Description
			}
		default:
			return
		}
		mu.Lock()
		console = append(console, line)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("browser console:\n%s", strings.Join(console, "\n"))
			mu.Unlock()
		}
	}()
	if err := chromedp.Do(p.ctx, chromedp.Navigate(pageURL)); err != nil {
		t.Fatal(err)
	}
	trials, last := 0, ""
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		st, err := chromedp.Run(p.ctx, chromedp.Evaluate[pageState](pageStateJS))
		if err != nil {
			// A navigation (reload, completion) can end an evaluation.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		switch {
		case st.Href == p.doneURL:
			return trials
		case st.Error != "":
			t.Fatalf("the page shows an error after %d trials: %s", trials, st.Error)
		case st.Primary != "":
			if err := chromedp.Do(p.ctx, chromedp.Click(chromedp.CSS("button.primary:not(:disabled), button.jspsych-btn:not(:disabled)"))); err != nil {
				t.Fatalf("click %q: %v", st.Primary, err)
			}
		case st.Stimuli > 0 && st.Query != last:
			trials++
			last = st.Query
			if p.before != nil {
				p.before(trials)
			}
			sel := fmt.Sprintf("(() => [...document.querySelectorAll('button.stim, button.alignet-stim')][%d])()", trials%st.Stimuli)
			if err := chromedp.Do(p.ctx, chromedp.Click(chromedp.JSPath(sel))); err != nil {
				t.Fatalf("trial %d: click: %v", trials, err)
			}
			if p.after != nil {
				p.after(trials)
			}
			continue
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, _ := chromedp.Run(p.ctx, chromedp.Evaluate[pageState](pageStateJS))
	body, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`typeof AlignetJsPsych + " " + typeof initJsPsych + " " + document.scripts.length + " " + document.body.innerHTML.slice(0, 2000)`))
	t.Fatalf("the page did not reach %s after %d trials; it shows %+v:\n%s", p.doneURL, trials, st, body)
	return 0
}

// checkStored waits for the persister and asserts that every query of
// session was answered by exactly one stored judgment, matching what was
// served, and that nothing else of the session was stored.
func checkStored(t *testing.T, bs *browserStudy, p *proxy, session string, trials int) {
	t.Helper()
	var mine []storedJudgment
	deadline := time.Now().Add(30 * time.Second)
	for {
		mine = mine[:0]
		for _, j := range bs.dev.judgmentsOf(t, bs.study) {
			p.mu.Lock()
			sq, ok := p.served[j.QueryID]
			p.mu.Unlock()
			if ok && sq.Session == session {
				mine = append(mine, j)
			}
		}
		if len(mine) >= trials || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	ids, queries := map[string]bool{}, map[string]bool{}
	for _, j := range mine {
		p.mu.Lock()
		sq := p.served[j.QueryID]
		p.mu.Unlock()
		if ids[j.ID] || queries[j.QueryID] {
			t.Errorf("session %s: judgment %s (query %s) stored twice", session, j.ID, j.QueryID)
		}
		ids[j.ID], queries[j.QueryID] = true, true
		if j.Items != sq.Items || !slices.Contains(sq.Items[:], j.Odd) || j.RTMillis <= 0 {
			t.Errorf("session %s: stored %+v for query %s served as %v", session, j, j.QueryID, sq.Items)
		}
	}
	if len(mine) != trials || len(queries) != trials {
		t.Fatalf("session %s: %d judgments stored for %d queries, want %d answered once each", session, len(mine), len(queries), trials)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// TestParticipantPagesInBrowser runs the built-in page in headless
// Chromium: a desktop participant on a clean network, then a phone
// participant whose posts are dropped, whose answers' 202s are lost, who
// goes offline, and who reloads the page with answers still unsent; then a
// jsPsych experiment with the plugin, hosted on another origin (CORS), on
// a phone with a reload. Every answer is stored exactly once with its query
// id, and each lands on the completion URL. Finally a page of an origin
// that is not allowed cannot call the API.
func TestParticipantPagesInBrowser(t *testing.T) {
	e := setup(t)
	browser := newBrowser(t)
	lab := newLabSite(t)
	other := newLabSite(t)
	dev := startDev(t, e, lab.srv.URL)
	bs := seedBrowserStudy(t, dev, "shoes")
	done := newDoneServer(t)
	const trials = 20
	fake := &fakeSessions{Items: bs.items, Trials: trials, Completes: func(platform string, params map[string]string, session string) string {
		if platform == "mturk" {
			return params["turkSubmitTo"] + "/mturk/externalSubmit?assignmentId=" + url.QueryEscape(params["assignmentId"])
		}
		return done.srv.URL + "/generic?cc=FAKE-" + session
	}}
	fake.Origin = lab.srv.URL
	px := newProxy(t, dev.base, fake)
	px.display = bs.displayOf(t)
	t.Logf("screenshots go to %s (keep them with go test -artifacts -outputdir DIR)", t.ArtifactDir())

	t.Run("desktop", func(t *testing.T) {
		ctx, cancel := chromedp.NewContext(browser)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
			t.Fatal(err)
		}
		q := url.Values{"k": {bs.key}, "worker": {"desk-1"}}
		p := &participant{t: t, ctx: ctx, doneURL: done.srv.URL + "/generic?cc=FAKE-sess-1"}
		p.before = func(n int) {
			if n == 1 {
				checkTrialOnScreen(t, ctx, "desktop-trial.png")
			}
		}
		if n := p.run(px.url() + "/run/" + bs.study + "?" + q.Encode()); n != trials {
			t.Fatalf("answered %d trials, want %d", n, trials)
		}
		checkStored(t, bs, px, "sess-1", trials)
		if !done.hit("/generic?cc=FAKE-sess-1") {
			t.Fatal("the completion page was never requested")
		}
	})

	t.Run("phone flaky reload", func(t *testing.T) {
		ctx, cancel := chromedp.NewContext(browser)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateTouch)); err != nil {
			t.Fatal(err)
		}
		px.mu.Lock()
		base := px.posts
		px.mu.Unlock()
		px.setFaults(func(n int) fault {
			switch n - base {
			case 2, 9:
				return faultDrop
			case 4, 6:
				return faultLoseAnswer
			}
			return faultNone
		})
		defer px.setFaults(nil)
		var release func()
		p := &participant{t: t, ctx: ctx}
		p.before = func(n int) {
			switch n {
			case 1:
				checkTrialOnScreen(t, ctx, "phone-trial.png")
			case 11:
				px.setOffline(true)
			case 16:
				release = px.holdPosts()
			}
		}
		p.after = func(n int) {
			switch n {
			case 11:
				time.AfterFunc(1500*time.Millisecond, func() { px.setOffline(false) })
			case 17:
				// Two answers are unsent; the page is reloaded.
				if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
					t.Fatalf("reload: %v", err)
				}
				release()
			}
		}
		q := url.Values{"k": {bs.key}, "workerId": {"W-PHONE"}, "assignmentId": {"A-1"}, "hitId": {"H-1"}, "turkSubmitTo": {done.srv.URL}}
		p.doneURL = done.srv.URL + "/mturk/externalSubmit?assignmentId=A-1"
		n := p.run(px.url() + "/run/" + bs.study + "?" + q.Encode())
		if n < trials {
			t.Fatalf("answered %d trials, want at least %d", n, trials)
		}
		checkStored(t, bs, px, "sess-2", trials)
		px.mu.Lock()
		posts := px.posts - base
		px.mu.Unlock()
		if posts < trials+4 {
			t.Fatalf("%d judgment posts for %d answers: the four faulted posts were not retried", posts, trials)
		}
		t.Logf("%d judgment posts for %d answers (4 faulted, an offline spell, a reload with 2 unsent)", posts, trials)
		// Nothing of the first participant was stored twice meanwhile.
		checkStored(t, bs, px, "sess-1", trials)
		if got := len(bs.dev.judgmentsOf(t, bs.study)); got != 2*trials {
			t.Fatalf("%d judgments stored in all, want %d", got, 2*trials)
		}
	})

	t.Run("jspsych plugin cross-origin", func(t *testing.T) {
		ctx, cancel := chromedp.NewContext(browser)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateTouch)); err != nil {
			t.Fatal(err)
		}
		px.mu.Lock()
		base := px.posts
		px.mu.Unlock()
		px.setFaults(func(n int) fault {
			switch n - base {
			case 3:
				return faultDrop
			case 5:
				return faultLoseAnswer
			}
			return faultNone
		})
		defer px.setFaults(nil)
		var release func()
		p := &participant{t: t, ctx: ctx, doneURL: done.srv.URL + "/mturk/externalSubmit?assignmentId=A-2"}
		p.before = func(n int) {
			switch n {
			case 1:
				checkTrialOnScreen(t, ctx, "jspsych-phone-trial.png")
			case 9:
				release = px.holdPosts()
			}
		}
		p.after = func(n int) {
			if n == 10 {
				if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
					t.Fatalf("reload: %v", err)
				}
				release()
			}
		}
		q := url.Values{"server": {px.url()}, "k": {bs.key}, "study": {bs.study},
			"workerId": {"W-JSPSYCH"}, "assignmentId": {"A-2"}, "hitId": {"H-1"}, "turkSubmitTo": {done.srv.URL}}
		if n := p.run(lab.srv.URL + "/experiment.html?" + q.Encode()); n < trials {
			t.Fatalf("answered %d trials, want at least %d", n, trials)
		}
		checkStored(t, bs, px, "sess-3", trials)
		if got := len(bs.dev.judgmentsOf(t, bs.study)); got != 3*trials {
			t.Fatalf("%d judgments stored in all, want %d", got, 3*trials)
		}
	})

	t.Run("cors", func(t *testing.T) {
		ctx, cancel := chromedp.NewContext(browser)
		defer cancel()
		api := dev.base + "/v1/studies/" + bs.study + "/page"
		for _, c := range []struct {
			origin, want string
		}{{lab.srv.URL, "status 200"}, {other.srv.URL, "blocked: TypeError"}} {
			if err := chromedp.Do(ctx, chromedp.Navigate(c.origin+"/blank.html")); err != nil {
				t.Fatal(err)
			}
			got, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(corsFetchJS, api, bs.key), chromedp.EvalAwaitPromise))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("fetch from %s: %s, want %s", c.origin, got, c.want)
			}
		}
	})
}

// labSite serves a lab's own experiment page: web/example/index.html with
// jsPsych and the plugin's browser bundle, as a lab would host it.
type labSite struct {
	srv *httptest.Server
}

func newLabSite(t *testing.T) *labSite {
	t.Helper()
	web := filepath.Join("..", "web")
	files := map[string]string{
		"/experiment.html":                    filepath.Join(web, "example", "index.html"),
		"/jspsych/index.browser.min.js":       filepath.Join(web, "node_modules", "jspsych", "dist", "index.browser.min.js"),
		"/jspsych/jspsych.css":                filepath.Join(web, "node_modules", "jspsych", "css", "jspsych.css"),
		"/alignet/alignet-jspsych.browser.js": filepath.Join(web, "dist", "alignet-jspsych.browser.js"),
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			msg := fmt.Sprintf("%s is missing: run (cd web && npm ci && npm run build)", f)
			if os.Getenv("CI") == "true" {
				t.Fatal("CI=true: " + msg)
			}
			t.Skip(msg)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/blank.html" {
			_, _ = w.Write([]byte("<!doctype html><title>blank</title>"))
			return
		}
		f, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		b, err := os.ReadFile(f)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		http.ServeContent(w, r, filepath.Base(f), time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(srv.Close)
	return &labSite{srv: srv}
}

const corsFetchJS = `fetch(%q, {headers: {Authorization: "Bearer " + %q}}).then(r => "status " + r.status, e => "blocked: " + e.name)`
