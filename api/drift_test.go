package api

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
)

// fakeDrift holds snapshots as db.DB.DriftSnapshots serves them.
type fakeDrift struct {
	mu    sync.Mutex
	snaps []alignet.DriftSnapshot // oldest first
	since time.Time
	limit int
}

func (f *fakeDrift) DriftSnapshots(_ context.Context, study string, since time.Time, limit int) ([]alignet.DriftSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.since, f.limit = since, limit
	var out []alignet.DriftSnapshot
	for i, s := range f.snaps {
		if s.Study == study && !s.TakenAt.Before(since) {
			if i < len(f.snaps)-1 {
				s = s.Compact()
			}
			out = append(out, s)
		}
	}
	return out[max(0, len(out)-limit):], nil
}

func TestDrift(t *testing.T) {
	t.Parallel()
	e := &env{t: t, store: newFakeStore(), pub: &fakePublisher{}, clock: newTestClock(), reg: prometheus.NewRegistry(), logs: &syncBuffer{},
		drift: &fakeDrift{}}
	e.start()
	var b driftBody
	decode := func(path string) {
		t.Helper()
		b = driftBody{}
		if err := json.Unmarshal(e.must(http.StatusOK, "GET", path, e.read, "").Body.Bytes(), &b); err != nil {
			t.Fatal(err)
		}
	}
	decode("/v1/studies/s1/drift")
	if b.Study != "s1" || b.Current != nil || b.History == nil || len(b.History) != 0 || e.drift.limit != DefaultDriftHistory {
		t.Fatalf("no snapshots: %+v (limit %d)", b, e.drift.limit)
	}
	t0 := time.Date(2025, 1, 2, 3, 4, 0, 0, time.UTC)
	acc := 0.6
	for i := range 3 {
		e.drift.snaps = append(e.drift.snaps, alignet.DriftSnapshot{Study: "s1", TakenAt: t0.Add(time.Duration(i) * time.Minute),
			Signals:   []alignet.DriftSignal{{Name: alignet.SignalTeacherAccuracy, Value: &acc, N: 150, Change: i == 2}},
			Changes:   []string{},
			PerMinute: []alignet.MinuteCount{{Minute: t0, Count: int64(i)}}, Reliability: []alignet.ReliabilityBin{{Count: 1}}})
	}
	decode("/v1/studies/s1/drift?limit=2&since=" + t0.Format(time.RFC3339))
	if b.Current == nil || !b.Current.TakenAt.Equal(t0.Add(2*time.Minute)) || len(b.Current.PerMinute) != 1 || len(b.Current.Reliability) != 1 ||
		!b.Current.Signals[0].Change {
		t.Fatalf("current %+v", b.Current)
	}
	if len(b.History) != 2 || !b.History[0].TakenAt.Equal(t0.Add(time.Minute)) || b.History[1].PerMinute != nil || e.drift.limit != 2 || !e.drift.since.Equal(t0) {
		t.Fatalf("history %+v", b.History)
	}
	for _, c := range []struct{ query, field string }{
		{"limit=0", "limit"}, {"limit=x", "limit"}, {"limit=20161", "limit"}, {"since=yesterday", "since"},
	} {
		rec := e.must(http.StatusBadRequest, "GET", "/v1/studies/s1/drift?"+c.query, e.read, "")
		if got := apiErr(t, rec); got.Field != c.field {
			t.Errorf("%s: field %q, want %q (%s)", c.query, got.Field, c.field, rec.Body)
		}
	}
	e.must(http.StatusNotFound, "GET", "/v1/studies/nope/drift", e.read, "")
	e.must(http.StatusForbidden, "GET", "/v1/studies/s1/drift", e.collect, "")
	e.must(http.StatusUnauthorized, "GET", "/v1/studies/s1/drift", "", "")
}

func TestDashboardPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, path := range []string{"/dashboard", "/dashboard/s1", "/dashboard/any-study"} {
		rec := e.req("GET", path, "", "")
		h := rec.Header()
		if rec.Code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || h.Get("Referrer-Policy") != "no-referrer" ||
			!strings.Contains(h.Get("Content-Security-Policy"), "connect-src 'self'") || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Fatalf("GET %s: %d %v", path, rec.Code, h)
		}
	}
	html := e.req("GET", "/dashboard/s1", "", "").Body.String()
	links := regexp.MustCompile(`assets/([A-Za-z.]+\.(?:js|css))\?v=([0-9a-f]+)"`).FindAllStringSubmatch(html, -1)
	if len(links) != 4 {
		t.Fatalf("the page links %v", links)
	}
	for _, l := range links {
		rec := e.req("GET", "/dashboard/assets/"+l[1]+"?v="+l[2], "", "")
		if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "public, max-age=31536000, immutable" || rec.Body.Len() < 500 {
			t.Fatalf("GET asset %s: %d %v", l[1], rec.Code, rec.Header())
		}
	}
	if rec := e.req("GET", "/dashboard/assets/VERSION", "", ""); rec.Code != http.StatusNotFound {
		t.Errorf("unlisted file: %d", rec.Code)
	}
	if rec := e.req("GET", "/dashboard/not%20a%20study", "", ""); rec.Code != http.StatusNotFound {
		t.Errorf("invalid study name: %d", rec.Code)
	}
}
