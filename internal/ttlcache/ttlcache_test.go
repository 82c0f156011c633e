package ttlcache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// source is a loader whose answers the test controls. While gate is set,
// each load waits for a receive on it after announcing itself on entered.
type source struct {
	mu      sync.Mutex
	vals    map[string]string
	err     error
	calls   int
	gate    chan struct{}
	entered chan string
}

var errDown = errors.New("source down")

func (s *source) load(ctx context.Context, k string) (string, error) {
	s.mu.Lock()
	s.calls++
	gate, entered := s.gate, s.entered
	s.mu.Unlock()
	if entered != nil {
		entered <- k
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return "", s.err
	}
	return s.vals[k], nil
}

func (s *source) set(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vals[k] = v
}

func (s *source) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

func (s *source) setGate(gate chan struct{}, entered chan string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate, s.entered = gate, entered
}

func (s *source) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func newCache(t *testing.T, mod func(*Config[string, string])) (*Cache[string, string], *source, *clock) {
	t.Helper()
	src := &source{vals: map[string]string{"a": "a1", "b": "b1"}}
	clk := newClock()
	cfg := Config[string, string]{Load: src.load, TTL: 10 * time.Second, Now: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, src, clk
}

func get(t *testing.T, c *Cache[string, string], k, want string) {
	t.Helper()
	v, err := c.Get(context.Background(), k)
	if err != nil || v != want {
		t.Fatalf("Get(%q) = %q, %v; want %q", k, v, err, want)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	if _, err := New(Config[string, int]{TTL: time.Second}); err == nil {
		t.Error("nil Load accepted")
	}
	if _, err := New(Config[string, int]{Load: func(context.Context, string) (int, error) { return 0, nil }}); err == nil {
		t.Error("zero TTL accepted")
	}
}

func TestFreshThenExpired(t *testing.T) {
	t.Parallel()
	c, src, clk := newCache(t, nil)
	get(t, c, "a", "a1")
	src.set("a", "a2")
	clk.Advance(9 * time.Second)
	get(t, c, "a", "a1")
	if n := src.count(); n != 1 {
		t.Fatalf("%d loads while fresh, want 1", n)
	}
	clk.Advance(time.Second)
	get(t, c, "a", "a2")
	if n := src.count(); n != 2 {
		t.Fatalf("%d loads after expiry, want 2", n)
	}
}

func TestConcurrentMissesShareOneLoad(t *testing.T) {
	t.Parallel()
	c, src, _ := newCache(t, nil)
	gate, entered := make(chan struct{}), make(chan string, 1)
	src.setGate(gate, entered)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if v, err := c.Get(context.Background(), "a"); err != nil || v != "a1" {
				errs <- fmt.Errorf("Get = %q, %v", v, err)
			}
		})
	}
	<-entered
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := src.count(); n != 1 {
		t.Fatalf("%d loads for 20 concurrent misses, want 1", n)
	}
}

func TestFailureWithoutValueBacksOff(t *testing.T) {
	t.Parallel()
	c, src, clk := newCache(t, nil)
	src.setErr(errDown)
	for range 50 {
		if _, err := c.Get(context.Background(), "a"); !errors.Is(err, errDown) {
			t.Fatalf("Get err = %v, want %v", err, errDown)
		}
	}
	if n := src.count(); n != 1 {
		t.Fatalf("%d loads within the retry interval, want 1", n)
	}
	clk.Advance(DefaultRetryInterval)
	if _, err := c.Get(context.Background(), "a"); !errors.Is(err, errDown) {
		t.Fatalf("Get err = %v", err)
	}
	if n := src.count(); n != 2 {
		t.Fatalf("%d loads after the retry interval, want 2", n)
	}
	src.setErr(nil)
	clk.Advance(DefaultRetryInterval)
	get(t, c, "a", "a1")
}

func TestServeStaleOnError(t *testing.T) {
	t.Parallel()
	c, src, clk := newCache(t, nil)
	get(t, c, "a", "a1")
	src.setErr(errDown)
	clk.Advance(time.Minute)
	for range 50 {
		get(t, c, "a", "a1")
	}
	if n := src.count(); n != 2 {
		t.Fatalf("%d loads, want 2 (one success, one failed refresh)", n)
	}
	clk.Advance(DefaultRetryInterval)
	get(t, c, "a", "a1")
	if n := src.count(); n != 3 {
		t.Fatalf("%d loads after the retry interval, want 3", n)
	}
	src.setErr(nil)
	src.set("a", "a2")
	clk.Advance(DefaultRetryInterval)
	get(t, c, "a", "a2")
	// A key never loaded has nothing stale to serve.
	src.setErr(errDown)
	if _, err := c.Get(context.Background(), "b"); !errors.Is(err, errDown) {
		t.Fatalf("unseen key during outage: err = %v", err)
	}
}

func TestBackgroundRefresh(t *testing.T) {
	t.Parallel()
	c, src, clk := newCache(t, func(cfg *Config[string, string]) {
		cfg.Background = func(v string) bool { return v != "" }
	})
	get(t, c, "a", "a1")
	src.set("a", "a2")
	gate, entered := make(chan struct{}), make(chan string, 1)
	src.setGate(gate, entered)
	clk.Advance(time.Minute)
	get(t, c, "a", "a1") // stale at once; the refresh waits on gate
	<-entered
	get(t, c, "a", "a1") // still refreshing: no second load
	close(gate)
	// Until the refresh is stored, Get keeps answering the stale value
	// without starting another load.
	for {
		v, err := c.Get(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		if v == "a2" {
			break
		}
		runtime.Gosched()
	}
	if n := src.count(); n != 2 {
		t.Fatalf("%d loads, want 2", n)
	}
	// Values Background rejects are refreshed before they are returned.
	src.setGate(nil, nil)
	src.set("b", "")
	get(t, c, "b", "")
	src.set("b", "b2")
	clk.Advance(time.Minute)
	get(t, c, "b", "b2")
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	c, src, clk := newCache(t, nil)
	get(t, c, "a", "a1")
	src.set("a", "a2")
	if v, ok := c.Refresh(context.Background(), "a", time.Second); !ok || v != "a1" || src.count() != 1 {
		t.Fatalf("Refresh within minAge = %q, %v after %d loads; want the cached a1 without a load", v, ok, src.count())
	}
	clk.Advance(time.Second)
	if v, ok := c.Refresh(context.Background(), "a", time.Second); !ok || v != "a2" {
		t.Fatalf("Refresh = %q, %v", v, ok)
	}
	get(t, c, "a", "a2")
	src.setErr(errDown)
	clk.Advance(time.Second)
	if _, ok := c.Refresh(context.Background(), "a", time.Second); ok {
		t.Fatal("failed Refresh reported a value")
	}
	if _, ok := c.Refresh(context.Background(), "a", 0); ok || src.count() != 3 {
		t.Fatalf("Refresh right after a failure: ok=%v, %d loads, want 3", ok, src.count())
	}
	get(t, c, "a", "a2")
	if _, ok := c.Refresh(context.Background(), "b", time.Second); ok {
		t.Fatal("Refresh of an unloadable key reported a value")
	}
}

func TestInvalidate(t *testing.T) {
	t.Parallel()
	c, src, _ := newCache(t, nil)
	get(t, c, "a", "a1")
	get(t, c, "b", "b1")
	src.set("a", "a2")
	src.set("b", "b2")
	c.Invalidate("a")
	get(t, c, "a", "a2")
	c.InvalidateFunc(func(k, v string) bool { return v == "b1" })
	get(t, c, "b", "b2")

	// An invalidation during a load keeps the load's result from the cache.
	c.Invalidate("a")
	gate, entered := make(chan struct{}), make(chan string, 1)
	src.setGate(gate, entered)
	done := make(chan string)
	go func() { v, _ := c.Get(context.Background(), "a"); done <- v }()
	<-entered
	c.Invalidate("a")
	close(gate)
	if v := <-done; v != "a2" {
		t.Fatalf("waiter got %q", v)
	}
	src.setGate(nil, nil)
	src.set("a", "a3")
	get(t, c, "a", "a3")
}

func TestEviction(t *testing.T) {
	t.Parallel()
	c, src, _ := newCache(t, func(cfg *Config[string, string]) {
		cfg.MaxEntries = 8
		cfg.Evictable = func(v string) bool { return v == "" }
	})
	for i := range 4 {
		src.set(fmt.Sprint("keep", i), "v")
		get(t, c, fmt.Sprint("keep", i), "v")
	}
	for i := range 100 {
		get(t, c, fmt.Sprint("miss", i), "")
		c.mu.Lock()
		n := len(c.m)
		c.mu.Unlock()
		if n > 8 {
			t.Fatalf("%d entries, max 8", n)
		}
	}
	before := src.count()
	for i := range 4 {
		get(t, c, fmt.Sprint("keep", i), "v")
	}
	if src.count() != before {
		t.Fatal("valid entries were evicted before cached misses")
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	c, src, clk := newCache(t, nil)
	get(t, c, "a", "a1")
	gate, entered := make(chan struct{}), make(chan string, 1)
	src.setGate(gate, entered)
	done := make(chan error)
	go func() { _, err := c.Get(context.Background(), "b"); done <- err }()
	<-entered
	c.Close() // cancels the load waiting on gate
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("load running at Close: err = %v", err)
	}
	clk.Advance(time.Hour)
	get(t, c, "a", "a1")
	if _, err := c.Get(context.Background(), "c"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: err = %v, want ErrClosed", err)
	}
}

func TestGetCallerContext(t *testing.T) {
	t.Parallel()
	c, src, _ := newCache(t, nil)
	gate, entered := make(chan struct{}), make(chan string, 1)
	src.setGate(gate, entered)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := c.Get(ctx, "a"); done <- err }()
	<-entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	// The shared load goes on for other callers.
	close(gate)
	get(t, c, "a", "a1")
	if n := src.count(); n != 1 {
		t.Fatalf("%d loads, want 1", n)
	}
}
