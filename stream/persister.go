package stream

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/ops"
)

// Dead-letter header names. The original key, value and headers are kept.
const (
	// HeaderError carries the full reason a message was rejected.
	HeaderError = "x-alignet-error"
	// HeaderErrorReason carries the short reason category (the metric label).
	HeaderErrorReason = "x-alignet-error-reason"
	// HeaderSourceTopic carries the topic the message was read from.
	HeaderSourceTopic = "x-alignet-source-topic"
	// HeaderSourcePartition carries the partition the message was read from.
	HeaderSourcePartition = "x-alignet-source-partition"
	// HeaderSourceOffset carries the offset the message was read at.
	HeaderSourceOffset = "x-alignet-source-offset"
	// HeaderValueDropped carries the size in bytes of the original value
	// when the dead-letter topic refused the letter for its size. The
	// letter's value is then empty; the original stays in the source topic
	// at the source offset, until retention removes it.
	HeaderValueDropped = "x-alignet-value-dropped"
)

// Sink stores judgments idempotently: storing a judgment whose (study, id)
// is already stored is a no-op. It returns how many judgments were newly
// stored. The db package implements it.
type Sink interface {
	InsertJudgments(ctx context.Context, js []alignet.Judgment) (int64, error)
}

// Defaults of PersisterConfig, applied by NewPersister to zero fields.
const (
	// DefaultPersisterGroup is the persister's consumer group.
	DefaultPersisterGroup = "alignet-persister"
	// DefaultMaxBatch is the number of judgments that triggers a flush.
	DefaultMaxBatch = 5000
	// DefaultParallelism is the number of concurrent sink calls per flush.
	DefaultParallelism = 2
	// DefaultFlushInterval is the longest a fetched message waits for its flush.
	DefaultFlushInterval = 50 * time.Millisecond
	// DefaultRetryMin and DefaultRetryMax bound the retry backoff.
	DefaultRetryMin, DefaultRetryMax = 100 * time.Millisecond, 10 * time.Second
	// DefaultShutdownTimeout bounds the final flush.
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultLagInterval is how often consumer lag is measured.
	DefaultLagInterval = 5 * time.Second
	// DefaultStuckAfter is how long one batch may take to be committed
	// before the persister reports itself stuck.
	DefaultStuckAfter = time.Minute
)

// PersisterConfig configures a Persister.
type PersisterConfig struct {
	// Brokers are the bootstrap broker addresses (host:port). Required.
	Brokers []string
	// Topic is the judgments topic. Default "alignet.judgments".
	Topic string
	// DeadLetterTopic receives the messages that do not decode or that the
	// sink rejects permanently. Default "alignet.judgments.dlq".
	DeadLetterTopic string
	// GroupID is the consumer group. Default "alignet-persister".
	GroupID string
	// MaxBatch is the number of judgments that triggers a flush. Default 5000.
	MaxBatch int
	// Parallelism is how many sink calls one flush makes at once, each with
	// a disjoint shard of the batch (split by judgment id), so that
	// database work overlaps. Offsets are committed only after every shard
	// succeeded. Default 2.
	Parallelism int
	// FlushInterval is the longest a fetched message waits before its batch
	// is flushed. Default 50ms.
	FlushInterval time.Duration
	// RetryMin is the first delay before a failed sink, dead-letter or
	// commit call is retried; it doubles up to RetryMax. Defaults 100ms, 10s.
	RetryMin, RetryMax time.Duration
	// ShutdownTimeout bounds the final flush after the context of Run is
	// cancelled. Default 10s.
	ShutdownTimeout time.Duration
	// LagInterval is how often the consumer group lag is measured and the
	// stuck metrics are updated. Default 5s.
	LagInterval time.Duration
	// StuckAfter is how long one batch may take from the start of its flush
	// to its commit, retries included, before Ready fails and
	// alignet_persister_stuck is 1. It should exceed a database restart.
	// Default 1m.
	StuckAfter time.Duration
	// Registerer receives the persister metrics. Nil means unregistered.
	Registerer prometheus.Registerer
	// Logger logs progress and errors. Default slog.Default().
	Logger *slog.Logger
}

// Persister is the consumer group that decodes judgment batches and stores
// them in a Sink. Delivery is at least once: offsets are committed only
// after the sink succeeded, and the idempotent sink turns redeliveries into
// exactly-once storage.
//
// A sink error wrapping alignet.ErrInvalid is permanent: the values are to
// blame, so retrying cannot help. The persister then bisects the batch by
// Kafka message (one accepted request each) until it has isolated the
// messages the sink rejects, moves those to the dead-letter topic with
// reason "db_rejected", stores the rest and commits. Every other sink error
// is transient and retried with capped backoff; Ready and the
// alignet_persister_stuck metric report a batch that stays uncommitted
// longer than StuckAfter. A study the sink does not know
// (alignet.ErrNotFound) is transient too: studies are never deleted, so it
// means that the API and the persister use different databases, which
// dead-lettering every judgment would only make worse.
type Persister struct {
	cfg  PersisterConfig
	sink Sink
	log  *slog.Logger

	lag         *prometheus.GaugeVec
	persisted   prometheus.Counter
	batchSize   prometheus.Histogram
	deadLetters *prometheus.CounterVec
	persistLag  prometheus.Histogram
	sinkErrors  prometheus.Counter
	stuck       prometheus.Gauge
	oldest      prometheus.Gauge

	health health

	// added, if set, is called after a message joined the current batch
	// (tests only).
	added func(kafka.Message)
}

// NewPersister returns a Persister that stores judgments in sink.
func NewPersister(cfg PersisterConfig, sink Sink) (*Persister, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("new persister: no brokers")
	}
	if sink == nil {
		return nil, errors.New("new persister: nil sink")
	}
	cfg = cfg.withDefaults()
	p := &Persister{
		cfg:  cfg,
		sink: sink,
		log:  cfg.Logger.With("topic", cfg.Topic, "group", cfg.GroupID),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_consumer_lag",
			Help: "Messages in the topic not yet committed by the persister consumer group.",
		}, []string{"topic"}),
		persisted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alignet_judgments_persisted_total",
			Help: "Judgments newly stored by the persister (duplicates excluded).",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "alignet_consumer_batch_size",
			Help:    "Judgments per persister flush.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_dead_letters_total",
			Help: "Messages moved to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		persistLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "alignet_persist_lag_seconds",
			Help:    "Time from API acceptance of a judgment to the commit of its batch.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		sinkErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alignet_persist_errors_total",
			Help: "Failed sink calls of the persister (transient ones are retried, permanent ones isolate the rejected messages).",
		}),
		stuck: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "alignet_persister_stuck",
			Help: "1 while the persister's current batch has been flushing for longer than its stuck threshold, else 0.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "alignet_persister_oldest_unflushed_seconds",
			Help: "Time since the first message of the persister's current batch was fetched, until the batch is committed; 0 when there is none.",
		}),
	}
	var err error
	reg := cfg.Registerer
	if p.lag, err = ops.Register(reg, p.lag); err != nil {
		return nil, fmt.Errorf("new persister: %w", err)
	}
	if p.persisted, err = ops.Register(reg, p.persisted); err != nil {
		return nil, fmt.Errorf("new persister: %w", err)
	}
	if p.batchSize, err = ops.Register(reg, p.batchSize); err != nil {
		return nil, fmt.Errorf("new persister: %w", err)
	}
	if p.deadLetters, err = ops.Register(reg, p.deadLetters); err != nil {
		return nil, fmt.Errorf("new persister: %w", err)
	}
	if p.persistLag, err = ops.Register(reg, p.persistLag); err != nil {
		return nil, fmt.Errorf("new persister: %w", err)
	}
	if p.sinkErrors, err = ops.Register(reg, p.sinkErrors); err != nil {
		return nil, fmt.Errorf("new persister: %w", err)
	}
	if p.stuck, err = ops.Register(reg, p.stuck); err != nil {
		return nil, fmt.Errorf("new persister: %w", err)
	}
	if p.oldest, err = ops.Register(reg, p.oldest); err != nil {
		return nil, fmt.Errorf("new persister: %w", err)
	}
	return p, nil
}

// withDefaults returns c with every zero field set to its default.
func (c PersisterConfig) withDefaults() PersisterConfig {
	if c.Topic == "" {
		c.Topic = DefaultJudgmentsTopic
	}
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = DefaultDeadLetterTopic
	}
	if c.GroupID == "" {
		c.GroupID = DefaultPersisterGroup
	}
	if c.Parallelism <= 0 {
		c.Parallelism = DefaultParallelism
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax <= 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.LagInterval <= 0 {
		c.LagInterval = DefaultLagInterval
	}
	if c.StuckAfter <= 0 {
		c.StuckAfter = DefaultStuckAfter
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// batch is the set of fetched messages not yet committed.
type batch struct {
	msgs      []kafka.Message
	judgments []alignet.Judgment
	// decoded are the messages that decoded, each with its judgments.
	decoded []span
	dead    []deadLetter
	// stored and deadSent record finished steps, so that a flush resumed
	// after an interruption does not repeat them.
	stored   bool
	deadSent bool
	newRows  int64
}

// span is a decoded message and the range of its judgments in
// batch.judgments.
type span struct {
	msg      kafka.Message
	from, to int
}

// deadLetter is a message bound for the dead-letter topic.
type deadLetter struct {
	msg    kafka.Message
	reason string // the short category: the metric label and HeaderErrorReason
	err    error
}

// reasonDBRejected is the dead-letter reason of a message whose judgments
// the sink rejected permanently.
const reasonDBRejected = "db_rejected"

func (b *batch) empty() bool { return len(b.msgs) == 0 }

// Run consumes the topic until ctx is cancelled, then finishes and commits
// the current batch within ShutdownTimeout, leaves the group and returns
// nil. It returns an error only if the reader fails.
func (p *Persister) Run(ctx context.Context) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           p.cfg.Brokers,
		GroupID:           p.cfg.GroupID,
		Topic:             p.cfg.Topic,
		MinBytes:          1,
		MaxBytes:          16 << 20,
		MaxWait:           250 * time.Millisecond,
		CommitInterval:    0,
		StartOffset:       kafka.FirstOffset,
		HeartbeatInterval: time.Second,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  10 * time.Second,
		JoinGroupBackoff:  time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			p.log.Warn("kafka reader: " + fmt.Sprintf(msg, args...))
		}),
	})
	dlqTransport := newTransport()
	dlq := &kafka.Writer{
		Addr:         kafka.TCP(p.cfg.Brokers...),
		Topic:        p.cfg.DeadLetterTopic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
		MaxAttempts:  3,
		WriteTimeout: 5 * time.Second,
		Transport:    dlqTransport,
	}
	defer func() {
		if err := dlq.Close(); err != nil {
			p.log.Warn("close dead-letter writer", "err", err)
		}
		dlqTransport.CloseIdleConnections()
	}()

	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	// Fetching and decoding run ahead of the batching loop, so they overlap
	// with a flush.
	msgs := make(chan fetched, 256)
	fetchDone := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		fetchDone <- fetch(fetchCtx, r, msgs, p.log)
	}()
	go func() {
		defer wg.Done()
		p.monitor(fetchCtx)
	}()

	p.log.Info("persister started")
	defer p.health.reset()
	b := &batch{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-fetchDone:
			// fetch returns nil only once ctx is cancelled.
			if err != nil {
				runErr = fmt.Errorf("persister: fetch: %w", err)
			}
			break loop
		case f := <-msgs:
			if b.empty() {
				timer.Reset(p.cfg.FlushInterval)
				p.health.batchStarted(time.Now())
			}
			b.add(f)
			if p.added != nil {
				p.added(f.msg)
			}
			if len(b.judgments) >= p.cfg.MaxBatch {
				timer.Stop()
				if err := p.flush(ctx, r, dlq, b); err != nil {
					break loop
				}
				b = &batch{}
			}
		case <-timer.C:
			if err := p.flush(ctx, r, dlq, b); err != nil {
				break loop
			}
			b = &batch{}
		}
	}
	timer.Stop()
	stopFetch()

	if !b.empty() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownTimeout)
		if err := p.flush(fctx, r, dlq, b); err != nil {
			p.log.Error("final flush failed; the batch will be redelivered", "messages", len(b.msgs), "err", err)
		}
		cancel()
	}
	wg.Wait()
	if err := r.Close(); err != nil {
		p.log.Warn("close reader", "err", err)
	}
	p.log.Info("persister stopped")
	return runErr
}

// fetched is a message with the result of decoding it.
type fetched struct {
	msg       kafka.Message
	judgments []alignet.Judgment
	err       error
}

// fetch fetches and decodes messages into out until ctx is cancelled or the
// reader fails, so that the flush timer fires even while no message arrives.
//
// Group-coordination errors (a new broker without its offsets topic yet, a
// coordinator moving) are transient: the reader rejoins by itself, so fetch
// logs them and retries with capped backoff instead of stopping the
// persister. Only a closed reader ends fetching with an error.
func fetch(ctx context.Context, r *kafka.Reader, out chan<- fetched, log *slog.Logger) error {
	backoff := 100 * time.Millisecond
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
				return err
			}
			log.Warn("fetch failed; retrying", "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		js, err := DecodeBatch(m)
		select {
		case out <- fetched{msg: m, judgments: js, err: err}:
		case <-ctx.Done():
			return nil
		}
	}
}

// add appends a fetched message to the batch, marking it for the
// dead-letter topic if it did not decode.
func (b *batch) add(f fetched) {
	b.msgs = append(b.msgs, f.msg)
	if f.err != nil {
		b.dead = append(b.dead, deadLetter{msg: f.msg, reason: rejectReason(f.err), err: f.err})
		return
	}
	from := len(b.judgments)
	b.judgments = append(b.judgments, f.judgments...)
	b.decoded = append(b.decoded, span{msg: f.msg, from: from, to: len(b.judgments)})
}

// judgmentsOf returns the judgments of the decoded messages ms.
func (b *batch) judgmentsOf(ms []span) []alignet.Judgment {
	if len(ms) == len(b.decoded) {
		return b.judgments
	}
	n := 0
	for _, m := range ms {
		n += m.to - m.from
	}
	js := make([]alignet.Judgment, 0, n)
	for _, m := range ms {
		js = append(js, b.judgments[m.from:m.to]...)
	}
	return js
}

// flush stores the judgments, sends the dead letters and commits the
// offsets, in that order, retrying each step until it succeeds or ctx is
// done. It returns an error only when ctx ended first; b keeps its progress.
func (p *Persister) flush(ctx context.Context, r *kafka.Reader, dlq *kafka.Writer, b *batch) error {
	p.health.flushStarted(time.Now(), len(b.msgs))
	if !b.stored && len(b.judgments) > 0 {
		if err := p.store(ctx, b); err != nil {
			return err
		}
	}
	b.stored = true
	if !b.deadSent && len(b.dead) > 0 {
		letters := make([]kafka.Message, len(b.dead))
		for i, d := range b.dead {
			letters[i] = deadLetterMessage(d)
		}
		if err := p.retry(ctx, "write dead letters", func(ctx context.Context) error {
			return writeDeadLetters(ctx, dlq, letters)
		}); err != nil {
			return err
		}
		for _, d := range b.dead {
			p.deadLetters.WithLabelValues(d.reason).Inc()
			p.log.Warn("message moved to dead-letter topic", "partition", d.msg.Partition, "offset", d.msg.Offset, "reason", d.reason, "err", d.err)
		}
	}
	b.deadSent = true
	// A commit that keeps failing outside of cancellation (for example
	// after a rebalance took the partitions away) is given up: the data is
	// stored, and a redelivery is deduplicated by the sink.
	attempts := 0
	err := p.retry(ctx, "commit offsets", func(ctx context.Context) error {
		attempts++
		err := r.CommitMessages(ctx, b.msgs...)
		if err != nil && attempts >= 5 && ctx.Err() == nil {
			p.log.Error("giving up commit; messages will be redelivered and deduplicated", "messages", len(b.msgs), "err", err)
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	now := time.Now()
	p.health.committed()
	p.updateHealthMetrics(now)
	p.persisted.Add(float64(b.newRows))
	p.batchSize.Observe(float64(len(b.judgments)))
	for i := range b.judgments {
		p.persistLag.Observe(now.Sub(b.judgments[i].ReceivedAt).Seconds())
	}
	p.log.Debug("batch committed", "messages", len(b.msgs), "judgments", len(b.judgments), "new", b.newRows, "dead", len(b.dead))
	return nil
}

// store inserts the judgments of b in Parallelism concurrent sink calls.
// When a call fails permanently, the messages with judgments in its shard
// are bisected until the ones the sink rejects are isolated; those join
// b.dead and the rest are stored. It returns an error only when ctx ended
// first.
func (p *Persister) store(ctx context.Context, b *batch) error {
	shards := shardJudgments(b.judgments, p.cfg.Parallelism)
	newRows := make([]int64, len(shards))
	rejected := make([]error, len(shards))
	g, gctx := errgroup.WithContext(ctx)
	for i, shard := range shards {
		g.Go(func() error {
			n, err := p.insert(gctx, shard)
			if permanent(err) {
				rejected[i] = err
				return nil
			}
			newRows[i] = n
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var total int64
	for _, n := range newRows {
		total += n
	}
	b.newRows = total
	if !slices.ContainsFunc(rejected, func(err error) bool { return err != nil }) {
		return nil
	}
	// Bisect the messages with judgments in a rejected shard. With one
	// shard that is every message, and the sink's error is known for all.
	suspects, known := b.decoded, rejected[0]
	if len(shards) > 1 {
		bad := make(map[int]bool)
		for i, err := range rejected {
			if err != nil {
				bad[shardOf(shards[i][0], p.cfg.Parallelism)] = true
			}
		}
		suspects, known = nil, nil
		for _, m := range b.decoded {
			if slices.ContainsFunc(b.judgments[m.from:m.to], func(j alignet.Judgment) bool { return bad[shardOf(j, p.cfg.Parallelism)] }) {
				suspects = append(suspects, m)
			}
		}
	}
	p.log.Warn("sink rejected judgments; isolating the messages to blame", "messages", len(suspects), "err", errors.Join(rejected...))
	dead, n, err := p.isolate(ctx, b, suspects, known)
	if err != nil {
		return err
	}
	b.newRows += n
	b.dead = append(b.dead, dead...)
	return nil
}

// isolate stores the judgments of the messages ms, bisecting ms until every
// message the sink rejects permanently stands alone. It returns those
// messages as dead letters and the number of newly stored judgments. known,
// if not nil, is the permanent error the sink already gave for all of ms.
// It returns an error only when ctx ended first.
func (p *Persister) isolate(ctx context.Context, b *batch, ms []span, known error) ([]deadLetter, int64, error) {
	if known == nil {
		n, err := p.insert(ctx, b.judgmentsOf(ms))
		if !permanent(err) {
			return nil, n, err
		}
		known = err
	}
	if len(ms) == 1 {
		return []deadLetter{{msg: ms[0].msg, reason: reasonDBRejected, err: known}}, 0, nil
	}
	mid := len(ms) / 2
	left, nl, err := p.isolate(ctx, b, ms[:mid], nil)
	if err != nil {
		return nil, 0, err
	}
	right, nr, err := p.isolate(ctx, b, ms[mid:], nil)
	if err != nil {
		return nil, 0, err
	}
	return append(left, right...), nl + nr, nil
}

// insert stores js in the sink, retrying transient errors. A permanent
// error is returned at once; any other error means ctx ended first.
func (p *Persister) insert(ctx context.Context, js []alignet.Judgment) (int64, error) {
	var n int64
	err := p.retry(ctx, "insert judgments", func(ctx context.Context) error {
		var err error
		n, err = p.sink.InsertJudgments(ctx, js)
		if err != nil {
			p.sinkErrors.Inc()
			if permanent(err) {
				return stopRetry{err}
			}
		}
		return err
	})
	return n, err
}

// permanent reports whether a sink error blames the judgments, so that
// retrying the same call cannot succeed.
func permanent(err error) bool { return errors.Is(err, alignet.ErrInvalid) }

// stopRetry makes retry return the wrapped error at once.
type stopRetry struct{ err error }

func (e stopRetry) Error() string { return e.err.Error() }

// shardJudgments splits js into at most n non-empty shards by shardOf, so
// that no judgment id appears in two concurrent transactions and they never
// wait on each other's row locks.
func shardJudgments(js []alignet.Judgment, n int) [][]alignet.Judgment {
	if n <= 1 || len(js) < 2*n {
		return [][]alignet.Judgment{js}
	}
	shards := make([][]alignet.Judgment, n)
	for _, j := range js {
		k := shardOf(j, n)
		shards[k] = append(shards[k], j)
	}
	out := shards[:0]
	for _, s := range shards {
		if len(s) > 0 {
			out = append(out, s)
		}
	}
	return out
}

// shardOf returns the shard, in [0, n), of j: a hash of (study, id).
func shardOf(j alignet.Judgment, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(j.Study))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(j.ID))
	return int(h.Sum32() % uint32(n))
}

// retry calls fn until it succeeds, waiting with capped exponential
// backoff between attempts. It returns an error only when ctx is done, or
// the error wrapped in a stopRetry that fn returned.
func (p *Persister) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	delay := p.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		var stop stopRetry
		if errors.As(err, &stop) {
			return stop.err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		p.health.failed(fmt.Errorf("%s: %w", what, err))
		p.log.Warn(what+" failed; retrying", "attempt", attempt, "delay", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (last: %w)", what, ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, p.cfg.RetryMax)
	}
}

// writeDeadLetters writes the letters. When the topic refuses one for its
// size, which a letter near the size limit can reach through the added
// headers, it writes them one by one and those too large without their
// value, so that no letter can stall the partition it came from. Letters
// written before a failure may be written again.
func writeDeadLetters(ctx context.Context, dlq *kafka.Writer, letters []kafka.Message) error {
	err := dlq.WriteMessages(ctx, letters...)
	if !tooLarge(err) {
		return err
	}
	for _, m := range letters {
		err := dlq.WriteMessages(ctx, m)
		if tooLarge(err) {
			m.Headers = append(slices.Clip(m.Headers), kafka.Header{Key: HeaderValueDropped, Value: []byte(strconv.Itoa(len(m.Value)))})
			m.Value = nil
			err = dlq.WriteMessages(ctx, m)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// deadLetterMessage keeps the original key, value and headers and adds the
// reason and the source position.
func deadLetterMessage(d deadLetter) kafka.Message {
	h := make([]kafka.Header, 0, len(d.msg.Headers)+5)
	h = append(h, d.msg.Headers...)
	h = append(h,
		kafka.Header{Key: HeaderError, Value: []byte(d.err.Error())},
		kafka.Header{Key: HeaderErrorReason, Value: []byte(d.reason)},
		kafka.Header{Key: HeaderSourceTopic, Value: []byte(d.msg.Topic)},
		kafka.Header{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(d.msg.Partition))},
		kafka.Header{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(d.msg.Offset, 10))},
	)
	return kafka.Message{Key: d.msg.Key, Value: d.msg.Value, Headers: h}
}

// monitor updates the stuck metrics and the lag gauge every LagInterval
// until ctx is cancelled. The lag is measured from the committed offsets of
// the group, so it keeps growing while the persister is stuck.
func (p *Persister) monitor(ctx context.Context) {
	tr := newTransport()
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(p.cfg.Brokers...), Transport: tr, Timeout: 5 * time.Second}
	t := time.NewTicker(p.cfg.LagInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.updateHealthMetrics(now)
		}
		lag, err := groupLag(ctx, client, p.cfg.GroupID, p.cfg.Topic)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Debug("measure consumer lag", "err", err)
			}
			continue
		}
		p.lag.WithLabelValues(p.cfg.Topic).Set(float64(lag))
	}
}

// groupLag returns the number of messages of topic after the offsets
// committed by group, summed over partitions.
func groupLag(ctx context.Context, client *kafka.Client, group, topic string) (int64, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("metadata: %w", err)
	}
	var ids []int
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return 0, fmt.Errorf("metadata of %q: %w", topic, t.Error)
		}
		for _, pt := range t.Partitions {
			ids = append(ids, pt.ID)
		}
	}
	if len(ids) == 0 {
		return 0, fmt.Errorf("metadata of %q: no partitions", topic)
	}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ids}})
	if err != nil {
		return 0, fmt.Errorf("offset fetch: %w", err)
	}
	if committed.Error != nil {
		return 0, fmt.Errorf("offset fetch: %w", committed.Error)
	}
	reqs := make([]kafka.OffsetRequest, 0, 2*len(ids))
	for _, id := range ids {
		reqs = append(reqs, kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, fmt.Errorf("list offsets: %w", err)
	}
	done := make(map[int]int64)
	for _, c := range committed.Topics[topic] {
		if c.Error == nil {
			done[c.Partition] = c.CommittedOffset
		}
	}
	var lag int64
	for _, o := range offs.Topics[topic] {
		if o.Error != nil {
			return 0, fmt.Errorf("list offsets of partition %d: %w", o.Partition, o.Error)
		}
		from, ok := done[o.Partition]
		if !ok || from < o.FirstOffset {
			from = o.FirstOffset
		}
		if o.LastOffset > from {
			lag += o.LastOffset - from
		}
	}
	return lag, nil
}
