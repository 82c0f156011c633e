package api

import (
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alignet/alignet"
	dto "github.com/prometheus/client_model/go"
)

// eventually waits until cond holds, failing the test after a generous
// deadline; it asserts that something happens, not how fast.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rowNear reports whether the snapshot's row of item is the reference
// representation under p, to tol.
func rowNear(s *TeacherSnapshot, p *alignet.TeacherParams, item string, x []float32, tol float64) bool {
	z, ok := s.Row(item)
	if !ok {
		return false
	}
	want := refZ(p, x)
	for i := range want {
		if math.Abs(float64(z[i])-want[i]) > tol {
			return false
		}
	}
	return true
}

func TestTeacherCacheFollowsChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.TeacherPollInterval = 5 * time.Millisecond })
	e.embed()
	e.serve()
	cache := e.s.Teachers()
	var mu sync.Mutex
	var seen []*TeacherSnapshot
	cancel := cache.Subscribe(func(s *TeacherSnapshot) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, s)
	})
	defer cancel()
	current := func() *TeacherSnapshot {
		s, ok := cache.Snapshot("s1")
		if !ok {
			t.Fatal("s1 is not cached")
		}
		return s
	}
	raw := e.predict("s1", predictTriplets)
	checkPredictions(t, alignet.TaskOddOneOut, nil, predictTriplets, raw.Predictions, 1e-12)
	if s := current(); !s.Raw() || s.Missing != 1 || len(s.Items) != 6 || s.P != 4 {
		t.Fatalf("raw snapshot = %+v", s)
	}

	// The learner stores a state: predictions follow it.
	st := e.testState("s1", alignet.TaskOddOneOut)
	e.store.setState(st)
	eventually(t, "the snapshot holds the teacher", func() bool { return current().UpdatedAt.Equal(st.UpdatedAt) })
	if s := current(); s.Raw() || s.Status != alignet.TeacherFitted || s.P != 3 || s.Tau != 0.7 || s.JudgmentsSeen != 1200 {
		t.Fatalf("teacher snapshot = %+v", s)
	}
	checkPredictions(t, alignet.TaskOddOneOut, &st.Params, predictTriplets, e.predict("s1", predictTriplets).Predictions, 1e-5)

	// An embedding is replaced: the snapshot transforms the new one.
	e.must(http.StatusOK, "POST", "/v1/spaces/clip/embeddings", e.admin, `{"items":[{"id":"c1","vector":[0,0,0,1]}]}`)
	eventually(t, "the new embedding is used", func() bool { return rowNear(current(), &st.Params, "c1", []float32{0, 0, 0, 1}, 1e-5) })

	// An item and its embedding appear.
	e.must(http.StatusOK, "POST", "/v1/spaces/clip/embeddings", e.admin, `{"items":[{"id":"c6","vector":[1,1,0,0]}]}`)
	e.must(http.StatusOK, "POST", "/v1/studies/s1/items", e.admin, `{"items":["c8"]}`)
	eventually(t, "c6 is embedded and c8 known", func() bool {
		s := current()
		_, known := s.Index["c8"]
		return rowNear(s, &st.Params, "c6", []float32{1, 1, 0, 0}, 1e-5) && known && s.Missing == 1
	})

	// A new state, then a manual version that only moves the version.
	st.UpdatedAt = st.UpdatedAt.Add(time.Second)
	st.Params.Tau = 1.25
	e.store.setState(st)
	eventually(t, "the newer state is used", func() bool { return current().Tau == 1.25 })
	e.must(http.StatusCreated, "POST", "/v1/studies/s1/teacher/versions", e.admin, "")
	eventually(t, "the version is seen", func() bool { return current().Version == 1 })

	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(seen); i++ {
		if seen[i].Study == "s1" && seen[i-1].Study == "s1" && seen[i].BuiltAt.Before(seen[i-1].BuiltAt) {
			t.Fatalf("snapshots published out of order")
		}
	}
	if n := len(seen); n < 5 || seen[n-1] != current() {
		t.Fatalf("subscriber saw %d snapshots, the last %p, current %p", n, seen[n-1], current())
	}
}

func gauge(t *testing.T, e *env, name, study string) (float64, bool) {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelOf(m, "study") == study {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestTeacherCacheServesThroughOutage: with Postgres down, predictions
// come from memory and the age metric grows; it falls again once polls
// succeed.
func TestTeacherCacheServesThroughOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.TeacherPollInterval = 5 * time.Millisecond })
	e.embed()
	e.serve()
	e.predict("s1", predictTriplets)
	eventually(t, "the age is reported", func() bool { _, ok := gauge(t, e, "alignet_teacher_cache_age_seconds", "s1"); return ok })
	e.store.setDown(errors.New("fake: connection refused: " + alignet.ErrUnavailable.Error()))
	e.clock.Advance(time.Minute)
	checkPredictions(t, alignet.TaskOddOneOut, nil, predictTriplets, e.predict("s1", predictTriplets).Predictions, 1e-12)
	if age, _ := gauge(t, e, "alignet_teacher_cache_age_seconds", "s1"); age < 60 {
		t.Fatalf("age during the outage = %v, want at least 60", age)
	}
	// The poller runs every 5ms: wait for a poll that fails before the
	// store comes back, or the outage may end unseen.
	eventually(t, "the failed poll is logged", func() bool {
		return strings.Contains(e.logs.String(), "teacher cache: poll failed")
	})
	e.store.setDown(nil)
	eventually(t, "the age falls", func() bool { age, _ := gauge(t, e, "alignet_teacher_cache_age_seconds", "s1"); return age < 60 })
}

// TestTeacherCacheSharesFirstLoad: concurrent first requests load the
// study once; Snapshot does not wait for the load.
func TestTeacherCacheSharesFirstLoad(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.embed()
	before := e.store.callCount("LoadEmbeddings")
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := e.s.Teachers().Get(t.Context(), "a1"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := e.store.callCount("LoadEmbeddings") - before; n != 1 {
		t.Fatalf("20 concurrent first requests loaded the embeddings %d times", n)
	}
	if _, err := e.s.Teachers().Get(t.Context(), "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("Get(ghost) = %v, want ErrNotFound", err)
	}
	if _, ok := e.s.Teachers().Snapshot("s1"); ok {
		t.Fatal("Snapshot of a study never asked for is present")
	}
	eventually(t, "Snapshot loads in the background", func() bool { _, ok := e.s.Teachers().Snapshot("s1"); return ok })
}
