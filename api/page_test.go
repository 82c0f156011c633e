package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/alignet/alignet"
)

func TestPageSettingsRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.store.mu.Lock()
	st := e.store.studies["s1"]
	st.Settings.Page = alignet.PageSettings{Title: "Shoes", Consent: "You agree.\n\nReally.", Instructions: "Pick one."}
	e.store.studies["s1"] = st
	e.store.mu.Unlock()
	e.s.studies.Invalidate("s1")
	rec := e.must(http.StatusOK, "GET", "/v1/studies/s1/page", e.newBoundKey("s1"), "")
	var p pageBody
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	want := pageBody{Study: "s1", Task: alignet.TaskOddOneOut, Title: "Shoes", Consent: "You agree.\n\nReally.", Instructions: "Pick one."}
	if p != want {
		t.Fatalf("page = %+v, want %+v", p, want)
	}
	if rec := e.must(http.StatusOK, "GET", "/v1/studies/a1/page", e.collect, ""); !strings.Contains(rec.Body.String(), `"task":"anchor"`) {
		t.Fatalf("anchor page: %s", rec.Body)
	}
	e.must(http.StatusNotFound, "GET", "/v1/studies/nope/page", e.collect, "")
}

func TestRunPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := e.req("GET", "/run/s1?k=alg_x&PROLIFIC_PID=p1", "", "")
	h := rec.Header()
	if rec.Code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") ||
		h.Get("Referrer-Policy") != "no-referrer" || !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") ||
		h.Get("Cache-Control") != "no-cache" {
		t.Fatalf("GET /run/s1: %d %v", rec.Code, h)
	}
	html := rec.Body.String()
	links := regexp.MustCompile(`assets/(run\.(?:js|css))\?v=([0-9a-f]+)"`).FindAllStringSubmatch(html, -1)
	if len(links) != 2 || !strings.Contains(html, `name="viewport"`) {
		t.Fatalf("the page links %v:\n%s", links, html)
	}
	for _, l := range links {
		rec := e.req("GET", "/run/assets/"+l[1]+"?v="+l[2], "", "")
		if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "public, max-age=31536000, immutable" || rec.Body.Len() < 500 {
			t.Fatalf("GET asset %s: %d %v", l[1], rec.Code, rec.Header())
		}
		req := httptest.NewRequest("GET", "/run/assets/"+l[1], nil)
		req.Header.Set("If-None-Match", `"`+l[2]+`"`)
		if rec := e.send(req, ""); rec.Code != http.StatusNotModified {
			t.Fatalf("conditional GET of %s: %d", l[1], rec.Code)
		}
	}
	if rec := e.req("GET", "/run/assets/secret.go", "", ""); rec.Code != http.StatusNotFound {
		t.Fatalf("GET an unknown asset: %d", rec.Code)
	}
	if rec := e.req("GET", "/run/not%20a%20study", "", ""); rec.Code != http.StatusNotFound {
		t.Fatalf("GET /run/ with an invalid study name: %d", rec.Code)
	}
}
