package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/alignet/alignet/client"
)

func TestFreshnessProbeObserve(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ptr := func(t time.Time) *time.Time { return &t }
	p := newFreshnessProbe(nil, "s", 20*time.Millisecond, nil)
	p.seen0 = 100
	p.add(at(10), at(0))
	p.add(at(30), at(20))
	// Before the learner stored anything: nothing resolves.
	p.observe(at(35), client.TeacherInfo{Status: "empty", JudgmentsSeen: 0}, 2)
	if r := p.report(); r.Resolved != 0 || r.FinalLag != 102 {
		t.Fatalf("after an empty state: %+v", r)
	}
	p.observe(at(50), client.TeacherInfo{UpdatedAt: ptr(at(40)), NewestAcceptedAt: ptr(at(5)), JudgmentsSeen: 101}, 2)
	if r := p.report(); r.Resolved != 1 || r.P50Millis != 40 || r.ServerP50Millis != 40 || r.FinalLag != 1 || p.done() {
		t.Fatalf("after the first state: %+v", r)
	}
	p.stopPosting()
	p.observe(at(80), client.TeacherInfo{UpdatedAt: ptr(at(70)), NewestAcceptedAt: ptr(at(20)), JudgmentsSeen: 102}, 2)
	r := p.report()
	if r.Samples != 2 || r.Resolved != 2 || r.MaxMillis != 50 || r.P99Millis != 40 || r.FinalLag != 0 || !p.done() || r.Polls != 3 {
		t.Fatalf("after the second state: %+v", r)
	}
	// Lag percentiles cover the posting phase only.
	if r.LagMax != 102 || r.LagP50 != 1 {
		t.Fatalf("lags: %+v", r)
	}
}

// fakeLearnerServer emulates the routes loadgen uses, with a learner that
// reflects each judgment once it is delay old: GET .../teacher answers a
// state updated now, holding every judgment accepted at least delay ago.
type fakeLearnerServer struct {
	delay time.Duration
	mu    sync.Mutex
	recv  []time.Time // accept times, in order
}

func (f *fakeLearnerServer) handler() http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("PUT /v1/spaces/{space}", func(w http.ResponseWriter, r *http.Request) { ok(w, 201, map[string]any{}) })
	mux.HandleFunc("POST /v1/spaces/{space}/embeddings", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		ok(w, 200, map[string]int{"upserted": 10})
	})
	mux.HandleFunc("POST /v1/studies", func(w http.ResponseWriter, r *http.Request) { ok(w, 201, map[string]any{}) })
	mux.HandleFunc("POST /v1/studies/{id}/items", func(w http.ResponseWriter, r *http.Request) { ok(w, 200, map[string]int{"added": 10}) })
	mux.HandleFunc("GET /v1/studies/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		ok(w, 200, map[string]any{"id": r.PathValue("id"), "judgments": len(f.recv)})
	})
	mux.HandleFunc("POST /v1/studies/{id}/judgments", func(w http.ResponseWriter, r *http.Request) {
		var j client.Judgment
		if err := json.NewDecoder(r.Body).Decode(&j); err != nil {
			ok(w, 400, map[string]any{"error": map[string]string{"code": "invalid_json", "message": err.Error()}})
			return
		}
		f.mu.Lock()
		now := time.Now().UTC().Truncate(time.Microsecond)
		f.recv = append(f.recv, now)
		f.mu.Unlock()
		ok(w, 202, map[string]any{"accepted": 1, "ids": []string{j.ID}, "received_at": now})
	})
	mux.HandleFunc("GET /v1/studies/{id}/teacher", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		now := time.Now().UTC()
		var newest *time.Time
		seen := 0
		for _, t := range f.recv {
			if now.Sub(t) >= f.delay {
				seen++
				newest = &t
			}
		}
		if newest == nil {
			ok(w, 200, map[string]any{"status": "empty", "judgments_seen": 0})
			return
		}
		ok(w, 200, map[string]any{"status": "online", "judgments_seen": seen, "updated_at": now, "newest_accepted_at": newest})
	})
	return mux
}

// TestLoadgenFreshnessAgainstFakeServer runs loadgen --freshness against
// a server whose learner takes 30ms: every sample resolves, the freshness
// on the server's clock is at least those 30ms, and the lag drains to 0.
func TestLoadgenFreshnessAgainstFakeServer(t *testing.T) {
	const delay = 30 * time.Millisecond
	f := &fakeLearnerServer{delay: delay}
	srv := httptest.NewServer(f.handler())
	defer srv.Close()
	var out bytes.Buffer
	err := runLoadgen(context.Background(), []string{"--server", srv.URL, "--key", "k", "--judgments", "400", "--workers", "8",
		"--rate", "2000", "--items", "10", "--freshness", "--poll", "5ms", "--sample", "4", "--json"}, &out, io.Discard)
	if err != nil {
		t.Fatalf("loadgen: %v\n%s", err, out.String())
	}
	var rep loadReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	fr := rep.Freshness
	if fr == nil || !rep.Verified || rep.Accepted != 400 || fr.Samples != 100 || fr.Resolved != fr.Samples || fr.FinalLag != 0 || fr.Polls == 0 {
		t.Fatalf("report %s", out.String())
	}
	if fr.ServerP50Millis < ms(delay) || fr.MaxMillis <= 0 {
		t.Fatalf("freshness %+v: server freshness below the learner's %v", fr, delay)
	}
}
