package api

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/alignet/alignet"
)

// queryLog writes served queries to the store in the background, so that
// GET .../next is served from memory. Queries are written in batches every
// Config.QueryLogInterval (or as soon as Config.QueryLogBatch are
// pending); while the store fails, they are kept (up to
// Config.QueryLogMaxPending, beyond which new ones are dropped and
// counted) and retried. The durability window is therefore one interval:
// a crash loses at most the queries served in the last interval (plus any
// kept through a store outage); a graceful stop writes everything. An
// answer stores its query with its binding (AnswerQueries), so no
// answered query depends on the log, and the log and the answers never
// write the same rows.
type queryLog struct {
	store    SessionStore
	log      *slog.Logger
	m        *metrics
	interval time.Duration
	batch    int
	max      int
	kick     chan struct{}

	mu      sync.Mutex
	pending []alignet.Query
	dropped int64
}

func newQueryLog(store SessionStore, log *slog.Logger, m *metrics, interval time.Duration, batch, max int) *queryLog {
	return &queryLog{store: store, log: log, m: m, interval: interval, batch: batch, max: max, kick: make(chan struct{}, 1)}
}

// add queues served queries; it never blocks.
func (l *queryLog) add(qs []alignet.Query) {
	if len(qs) == 0 {
		return
	}
	l.mu.Lock()
	if len(l.pending)+len(qs) > l.max {
		l.dropped += int64(len(qs))
		l.m.logDropped.Add(float64(len(qs)))
		if l.dropped == int64(len(qs)) || l.dropped%10000 < int64(len(qs)) {
			l.log.Error("query log full: dropping served queries", "dropped", l.dropped, "pending", len(l.pending))
		}
		l.mu.Unlock()
		return
	}
	l.pending = append(l.pending, qs...)
	n := len(l.pending)
	l.mu.Unlock()
	l.m.logPending.Set(float64(n))
	if n >= l.batch {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// run flushes until ctx ends, then writes what is left (for at most 10s).
func (l *queryLog) run(ctx context.Context) {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			for l.flush(fctx) {
			}
			cancel()
			return
		case <-t.C:
		case <-l.kick:
		}
		for l.flush(ctx) {
		}
	}
}

// flush writes one batch and reports whether it wrote a full one (so more
// may be waiting). A failed batch goes back to the front of the queue.
func (l *queryLog) flush(ctx context.Context) bool {
	l.mu.Lock()
	n := min(len(l.pending), l.batch)
	if n == 0 {
		l.mu.Unlock()
		return false
	}
	batch := l.pending[:n:n]
	l.pending = l.pending[n:]
	l.mu.Unlock()
	start := time.Now()
	_, err := l.store.LogQueries(ctx, batch)
	l.m.logFlush.Observe(time.Since(start).Seconds())
	// Retrying cannot help a batch the store refuses for its content (a
	// study deleted meanwhile): it is dropped.
	permanent := errors.Is(err, alignet.ErrNotFound) || errors.Is(err, alignet.ErrInvalid)
	l.mu.Lock()
	if err != nil && !permanent {
		l.pending = append(batch, l.pending...)
	}
	left := len(l.pending)
	l.mu.Unlock()
	l.m.logPending.Set(float64(left))
	switch {
	case permanent:
		l.m.logDropped.Add(float64(len(batch)))
		l.log.Error("query log batch refused; dropped", "queries", len(batch), "err", err)
		return true
	case err != nil:
		if ctx.Err() == nil {
			l.log.Warn("query log write failed; retrying", "queries", len(batch), "err", err)
		}
		return false
	}
	return n == l.batch
}

// pendingCount returns the number of queued queries.
func (l *queryLog) pendingCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}
