package api

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
)

// BenchmarkPostJudgment posts single judgments through the full handler
// (auth, metrics, validation, pseudonymisation) with a no-op publisher.
func BenchmarkPostJudgment(b *testing.B) {
	e := newEnv(b)
	s, err := New(Config{PseudonymKey: []byte(testPseudonymKey), AdminKey: testAdminKey,
		Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)}, e.store.deps(nopPublisher{}))
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	run := func() {
		req := httptest.NewRequest("POST", "/v1/studies/s1/judgments", strings.NewReader(okOdd))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+e.collect)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	run()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			run()
		}
	})
}

// BenchmarkNextQueries measures GET .../next?n=1 through the full handler
// (auth, study cache, engine) on a THINGS-sized study (1,854 items, 64-d
// raw teacher, 100k candidates), each call followed by its answer posted
// as a linked judgment (fake store and publisher), over 1,000 sessions in
// turn. It reports the next call's p50 and p99 besides the time of the
// pair:
//
//	go test ./api -run '^$' -bench NextQueries -benchtime 20000x
func BenchmarkNextQueries(b *testing.B) {
	e := newEnv(b)
	e.queryStudy("qs", 1854, func(s *alignet.StudySettings) {
		s.Queries.PoolSize = 100000
		s.Queries.Trials = alignet.MaxTrials
	})
	const sessions = 1000
	ids := make([]string, sessions)
	for i := range ids {
		ids[i] = e.openSession("qs", `{"worker":"w`+strconv.Itoa(i)+`"}`, http.StatusCreated).ID
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		w := i % sessions
		t0 := time.Now()
		rec := e.req("GET", "/v1/studies/qs/sessions/"+ids[w]+"/next?n=1", e.collect, "")
		lat = append(lat, time.Since(t0))
		if rec.Code != http.StatusOK {
			b.Fatalf("next: %d %s", rec.Code, rec.Body)
		}
		var nb nextBody
		if err := json.Unmarshal(rec.Body.Bytes(), &nb); err != nil || len(nb.Queries) != 1 {
			b.Fatalf("next: %s", rec.Body)
		}
		if rec := e.req("POST", "/v1/studies/qs/judgments", e.collect, answerBody("", "w"+strconv.Itoa(w), nb.Queries[0], nb.Queries[0].Items[0], 900)); rec.Code != http.StatusAccepted {
			b.Fatalf("answer: %d %s", rec.Code, rec.Body)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "next-p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "next-p99-µs")
}
