package api

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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
