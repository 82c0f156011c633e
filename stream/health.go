package stream

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/alignet/alignet"
)

// health is the progress of the persister's current batch, read by Ready
// and the stuck metrics while the batching loop flushes.
type health struct {
	mu sync.Mutex
	// batchStart is when the oldest uncommitted message joined its batch;
	// zero when there is none.
	batchStart time.Time
	// flushStart is when the flush of the current batch began; zero when no
	// flush runs. A flush resumed after an interruption keeps its start.
	flushStart time.Time
	messages   int
	// lastErr is the last error retried during the current flush.
	lastErr error
}

// batchStarted records that the first message joined an empty batch.
func (h *health) batchStarted(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.batchStart = now
}

// flushStarted records that the flush of a batch of n messages began,
// unless the flush of the same batch is being resumed.
func (h *health) flushStarted(now time.Time, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.flushStart.IsZero() {
		h.flushStart = now
	}
	h.messages = n
}

// failed records an error that the current flush retries.
func (h *health) failed(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr = err
}

// committed records that the current batch was committed.
func (h *health) committed() { h.reset() }

// reset forgets the current batch.
func (h *health) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.batchStart, h.flushStart, h.messages, h.lastErr = time.Time{}, time.Time{}, 0, nil
}

// status returns how long the current flush and the oldest uncommitted
// message have been waiting at now (zero when none), the size of the batch
// and the last retried error.
func (h *health) status(now time.Time) (flushing, oldest time.Duration, messages int, lastErr error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.flushStart.IsZero() {
		flushing = now.Sub(h.flushStart)
	}
	if !h.batchStart.IsZero() {
		oldest = now.Sub(h.batchStart)
	}
	return flushing, oldest, h.messages, h.lastErr
}

// Ready returns an error wrapping alignet.ErrUnavailable while the current
// batch has been flushing for longer than PersisterConfig.StuckAfter: its
// sink calls, dead letters or offset commit keep failing or hang, and
// nothing fetched after it is stored until it succeeds. The error names
// the batch size and the last error. Ready returns nil while batches are
// committed in time and when Run is not running. It does not block.
func (p *Persister) Ready(context.Context) error {
	flushing, _, messages, lastErr := p.health.status(time.Now())
	if flushing <= p.cfg.StuckAfter {
		return nil
	}
	last := "no error: the sink or Kafka has not answered"
	if lastErr != nil {
		last = "last error: " + lastErr.Error()
	}
	return fmt.Errorf("persister: %w: current batch (%d Kafka messages) uncommitted for %s, stuck after %s; %s",
		alignet.ErrUnavailable, messages, flushing.Round(time.Millisecond), p.cfg.StuckAfter, last)
}

// updateHealthMetrics sets the stuck gauges as of now.
func (p *Persister) updateHealthMetrics(now time.Time) {
	flushing, oldest, _, _ := p.health.status(now)
	stuck := 0.0
	if flushing > p.cfg.StuckAfter {
		stuck = 1
	}
	p.stuck.Set(stuck)
	p.oldest.Set(oldest.Seconds())
}
