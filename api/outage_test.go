package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet"
)

// TestPostgresOutage starts with cold caches, looks up a key and a study
// once, then takes the store down past every cache TTL: the known key and
// study keep collecting, a key or study never seen gets 503, and the store
// is asked at most once per second per key and per study.
func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	unseen := e.newKey("collect")
	e.s.studies.Invalidate("s1")
	e.s.studies.Invalidate("a1")
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, okOdd)

	e.store.setDown(fmt.Errorf("pg: %w", alignet.ErrUnavailable))
	e.clock.Advance(time.Hour)
	keys, studies := e.store.callCount("APIKeyByHash"), e.store.callCount("GetStudy")
	for range 50 {
		e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, okOdd)
	}
	for range 50 {
		rec := e.req("POST", "/v1/studies/s1/judgments", unseen, okOdd)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || apiErr(t, rec).Code != CodeUnavailable {
			t.Fatalf("key never seen during the outage: %d %s", rec.Code, rec.Body)
		}
		rec = e.req("POST", "/v1/studies/a1/judgments", e.collect, okAnchor)
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("study never seen during the outage: %d %s", rec.Code, rec.Body)
		}
	}
	// One attempt for the known key, one for the unseen key; one for the
	// known study (in the background), one for the unseen one.
	waitFor(t, "the background refresh of s1", func() bool { return e.store.callCount("GetStudy")-studies >= 2 })
	if k, s := e.store.callCount("APIKeyByHash")-keys, e.store.callCount("GetStudy")-studies; k != 2 || s != 2 {
		t.Fatalf("%d key and %d study lookups in one second of outage, want 2 and 2", k, s)
	}
	e.clock.Advance(reloadInterval)
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, okOdd)
	if k := e.store.callCount("APIKeyByHash") - keys; k != 3 {
		t.Fatalf("%d key lookups after the retry interval, want 3", k)
	}

	// The process still collects, so it stays ready, degraded.
	rec := e.must(http.StatusOK, "GET", "/readyz", "", "")
	var ready struct {
		Status string
		Checks map[string]string
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &ready); err != nil || ready.Status != "degraded" ||
		ready.Checks["kafka"] != "ok" || !strings.Contains(ready.Checks["postgres"], "unavailable") {
		t.Fatalf("readyz during the outage: %s", rec.Body)
	}

	e.store.setDown(nil)
	e.clock.Advance(reloadInterval)
	e.must(http.StatusAccepted, "POST", "/v1/studies/a1/judgments", unseen, okAnchor)
	e.must(http.StatusOK, "GET", "/readyz", "", "")
	if n := len(e.pub.published()); n != 1+50+1+1 {
		t.Fatalf("%d judgments published, want %d", n, 1+50+1+1)
	}
}

// TestReadyzColdOutage: a process that never reached Postgres cannot
// authenticate collectors, so it is not ready.
func TestReadyzColdOutage(t *testing.T) {
	t.Parallel()
	store := newFakeStore()
	e := newEnvOn(t, store)
	store.setDown(fmt.Errorf("pg: %w", alignet.ErrUnavailable))
	rec := e.must(http.StatusServiceUnavailable, "GET", "/readyz", "", "")
	if !strings.Contains(rec.Body.String(), `"status":"unavailable"`) || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("readyz: %s", rec.Body)
	}
}

// TestRevocationReachesOtherServers revokes a key through one server and
// waits for a second server on the same store to refuse it. The second
// server's clock never moves, so its key cache never expires: only the
// revocation poll can tell it.
func TestRevocationReachesOtherServers(t *testing.T) {
	t.Parallel()
	a := newEnv(t)
	b := newEnvOn(t, a.store, func(c *Config) { c.RevocationPollInterval = 10 * time.Millisecond })
	b.serve()
	k := a.newKey("collect")
	other := a.newKey("collect")
	b.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", k, okOdd)
	b.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", other, okOdd)
	a.must(http.StatusNoContent, "DELETE", "/v1/keys/"+keyIDOf(t, a, k), a.admin, "")
	a.must(http.StatusUnauthorized, "POST", "/v1/studies/s1/judgments", k, okOdd)
	waitFor(t, "the revocation to reach the second server", func() bool {
		return b.req("POST", "/v1/studies/s1/judgments", k, okOdd).Code == http.StatusUnauthorized
	})
	b.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", other, okOdd)
}

// TestSyncRevocations drives one poll by hand.
func TestSyncRevocations(t *testing.T) {
	t.Parallel()
	a := newEnv(t)
	b := newEnvOn(t, a.store)
	b.must(http.StatusOK, "GET", "/v1/studies", a.read, "")
	since, err := b.s.syncRevocations(t.Context(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	a.must(http.StatusNoContent, "DELETE", "/v1/keys/"+keyIDOf(t, a, a.read), a.admin, "")
	b.must(http.StatusOK, "GET", "/v1/studies", a.read, "") // cached
	if _, err := b.s.syncRevocations(t.Context(), since); err != nil {
		t.Fatal(err)
	}
	b.must(http.StatusUnauthorized, "GET", "/v1/studies", a.read, "")
	a.store.setDown(fmt.Errorf("pg: %w", alignet.ErrUnavailable))
	if next, err := b.s.syncRevocations(t.Context(), since); err == nil || !next.Equal(since) {
		t.Fatalf("poll during an outage = %v, %v; want an error and since unchanged", next, err)
	}
}
