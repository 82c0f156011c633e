// Package ttlcache is a generic in-memory cache of values loaded from a
// slower source of truth, such as a database.
//
// A loaded value is fresh for a time to live. Concurrent callers that miss
// share one load. A failed load is retried at most once per retry interval,
// and a value that cannot be refreshed keeps being served, stale, until a
// load succeeds: an outage of the source turns into stale answers for the
// keys seen before it, not into errors, and not into one load per request.
package ttlcache

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultRetryInterval is the least time between load attempts of one
	// key after a failure.
	DefaultRetryInterval = time.Second
	// DefaultLoadTimeout bounds one load.
	DefaultLoadTimeout = 30 * time.Second
	// DefaultMaxEntries bounds the number of keys held.
	DefaultMaxEntries = 10000
)

// ErrClosed is returned for keys without a value once the cache is closed.
var ErrClosed = errors.New("cache closed")

// Config configures a Cache.
type Config[K comparable, V any] struct {
	// Load reads the value of a key. Required. It runs on the cache's own
	// context (cancelled by Close) bounded by LoadTimeout, not on a caller's,
	// because its result is shared. It should report an entity that does
	// not exist as a value (a cached miss), and return errors only for
	// failures that may pass, such as an unreachable database.
	Load func(ctx context.Context, key K) (V, error)
	// TTL is how long a loaded value is fresh. Required.
	TTL time.Duration
	// RetryInterval is the least time between two load attempts of one key
	// after a failed one. Default DefaultRetryInterval (1s).
	RetryInterval time.Duration
	// LoadTimeout bounds one load. Default DefaultLoadTimeout (30s).
	LoadTimeout time.Duration
	// MaxEntries bounds the number of keys held. Default DefaultMaxEntries
	// (10000).
	MaxEntries int
	// Background reports whether a stale value may be returned at once
	// while it is refreshed behind the caller. When nil or false, a stale
	// value is refreshed before Get returns (and still returned if the
	// refresh fails).
	Background func(V) bool
	// Evictable marks values that are evicted first when the cache is full,
	// such as cached misses. Nil marks none.
	Evictable func(V) bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Cache is a TTL cache. It is safe for concurrent use. Create it with New.
type Cache[K comparable, V any] struct {
	cfg    Config[K, V]
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	m      map[K]*entry[V]
	closed bool
}

// entry is the state of one key. A load writes its result into the entry it
// was started for, even if that entry has since been removed from the map,
// so that the callers waiting for it get its result while an invalidation
// still discards it.
type entry[V any] struct {
	val      V
	has      bool      // val holds a loaded value
	gen      uint64    // successful loads so far
	loadedAt time.Time // when the load of val started
	failedAt time.Time // when the last load failed; zero after a success
	err      error     // the last load's error, nil after a success
	loading  chan struct{}
}

// New returns a cache. Load and TTL are required.
func New[K comparable, V any](cfg Config[K, V]) (*Cache[K, V], error) {
	if cfg.Load == nil {
		return nil, errors.New("ttlcache: Load is required")
	}
	if cfg.TTL <= 0 {
		return nil, errors.New("ttlcache: TTL must be positive")
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.LoadTimeout <= 0 {
		cfg.LoadTimeout = DefaultLoadTimeout
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Cache[K, V]{cfg: cfg, m: make(map[K]*entry[V])}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Get returns the value of key. A fresh value is returned as it is.
// Otherwise Get loads the value, sharing one load with concurrent callers,
// and waits for it; Background may let it return a stale value at once
// instead. When the load fails, or failed less than RetryInterval ago, a
// stale value is returned without error; without any value, the load's
// error is returned, and again without a new attempt until RetryInterval
// has passed. Only ctx's end stops the wait.
func (c *Cache[K, V]) Get(ctx context.Context, key K) (V, error) {
	now := c.cfg.Now()
	c.mu.Lock()
	e := c.entryLocked(key, now)
	if e.has && now.Sub(e.loadedAt) < c.cfg.TTL {
		v := e.val
		c.mu.Unlock()
		return v, nil
	}
	ch := e.loading
	if ch == nil && !c.backingOffLocked(e, now) {
		ch = c.startLoadLocked(key, e, now)
	}
	if e.has && (ch == nil || c.cfg.Background != nil && c.cfg.Background(e.val)) {
		v := e.val
		c.mu.Unlock()
		return v, nil
	}
	if ch == nil {
		err := e.err
		c.mu.Unlock()
		var zero V
		return zero, err
	}
	c.mu.Unlock()
	return c.wait(ctx, e, ch)
}

// Refresh returns a value of key loaded less than minAge ago: the cached
// one if it is that recent, otherwise a new one, loaded now (or by a load
// already running) unless a load failed less than RetryInterval ago. It
// reports false when there is no such value. Callers that found a cached
// value wanting use it to bound how often that makes them reload.
func (c *Cache[K, V]) Refresh(ctx context.Context, key K, minAge time.Duration) (V, bool) {
	var zero V
	now := c.cfg.Now()
	c.mu.Lock()
	e := c.entryLocked(key, now)
	if e.has && now.Sub(e.loadedAt) < minAge {
		v := e.val
		c.mu.Unlock()
		return v, true
	}
	gen := e.gen
	ch := e.loading
	if ch == nil {
		if c.backingOffLocked(e, now) {
			c.mu.Unlock()
			return zero, false
		}
		ch = c.startLoadLocked(key, e, now)
		if ch == nil {
			c.mu.Unlock()
			return zero, false
		}
	}
	c.mu.Unlock()
	v, err := c.wait(ctx, e, ch)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil || e.gen == gen {
		return zero, false
	}
	return v, true
}

// Invalidate drops key, so the next Get loads it afresh. A load running
// for it completes for its waiters but is not kept.
func (c *Cache[K, V]) Invalidate(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// InvalidateFunc drops every key whose value makes match true.
func (c *Cache[K, V]) InvalidateFunc(match func(K, V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if e.has && match(k, e.val) {
			delete(c.m, k)
		}
	}
}

// Close cancels running loads, waits for them, and stops new ones: keys
// with a value keep returning it, keys without one return ErrClosed.
func (c *Cache[K, V]) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// entryLocked returns the entry of key, creating it (and making room for
// it) when there is none.
func (c *Cache[K, V]) entryLocked(key K, now time.Time) *entry[V] {
	if e := c.m[key]; e != nil {
		return e
	}
	if len(c.m) >= c.cfg.MaxEntries {
		c.evictLocked(now)
	}
	e := &entry[V]{}
	c.m[key] = e
	return e
}

// evictLocked shrinks the map to three quarters of MaxEntries, so that the
// cost of a scan is shared by many inserts. It drops, in this order, keys
// without a value or with an evictable one, expired keys, and any keys; it
// never drops a key being loaded.
func (c *Cache[K, V]) evictLocked(now time.Time) {
	target := c.cfg.MaxEntries * 3 / 4
	passes := []func(*entry[V]) bool{
		func(e *entry[V]) bool { return !e.has || c.cfg.Evictable != nil && c.cfg.Evictable(e.val) },
		func(e *entry[V]) bool { return now.Sub(e.loadedAt) >= c.cfg.TTL },
		func(*entry[V]) bool { return true },
	}
	for _, drop := range passes {
		for k, e := range c.m {
			if len(c.m) <= target {
				return
			}
			if e.loading == nil && drop(e) {
				delete(c.m, k)
			}
		}
	}
}

// backingOffLocked reports whether e's last load failed less than
// RetryInterval ago.
func (c *Cache[K, V]) backingOffLocked(e *entry[V], now time.Time) bool {
	return !e.failedAt.IsZero() && now.Sub(e.failedAt) < c.cfg.RetryInterval
}

// startLoadLocked starts loading key into e and returns the channel closed
// when the load is done, or nil when the cache is closed (recording
// ErrClosed as e's failure).
func (c *Cache[K, V]) startLoadLocked(key K, e *entry[V], now time.Time) chan struct{} {
	if c.closed {
		e.failedAt, e.err = now, ErrClosed
		return nil
	}
	ch := make(chan struct{})
	e.loading = ch
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.LoadTimeout)
		v, err := c.cfg.Load(ctx, key)
		cancel()
		c.mu.Lock()
		if err != nil {
			e.failedAt, e.err = c.cfg.Now(), err
		} else {
			e.val, e.has, e.loadedAt, e.failedAt, e.err = v, true, now, time.Time{}, nil
			e.gen++
		}
		e.loading = nil
		c.mu.Unlock()
		close(ch)
	}()
	return ch
}

// wait waits for the load that closes ch and returns e's value, stale if
// that load failed, or the load's error when e has no value.
func (c *Cache[K, V]) wait(ctx context.Context, e *entry[V], ch chan struct{}) (V, error) {
	var zero V
	select {
	case <-ch:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.has {
		return e.val, nil
	}
	return zero, e.err
}
