package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/ops"
)

// Defaults of ProducerConfig, applied by NewProducer to zero fields.
const (
	// DefaultLinger is how long a partition waits for concurrent batches.
	DefaultLinger = 2 * time.Millisecond
	// DefaultProduceBatchSize is the most messages in one produce request.
	DefaultProduceBatchSize = 1000
	// DefaultMaxBatchBytes is the largest produce request and encoded
	// judgment batch (1 MiB, Kafka's default message.max.bytes).
	DefaultMaxBatchBytes = 1 << 20
	// DefaultWriteTimeout bounds one Publish call.
	DefaultWriteTimeout = 5 * time.Second
	// DefaultMaxAttempts is how often a produce request is tried.
	DefaultMaxAttempts = 5
)

// ProducerConfig configures a Producer.
type ProducerConfig struct {
	// Brokers are the bootstrap broker addresses (host:port). Required.
	Brokers []string
	// Topic is the judgments topic. Default "alignet.judgments".
	Topic string
	// Linger is how long a partition waits for more concurrent batches
	// before it sends a produce request. Default 2ms.
	Linger time.Duration
	// BatchSize is the maximum number of messages (accepted requests) in one
	// produce request per partition. Default 1000.
	BatchSize int
	// MaxBatchBytes is the maximum size of one produce request per partition,
	// and thus of one encoded judgment batch. Default 1 MiB, the default
	// message.max.bytes of Kafka.
	MaxBatchBytes int64
	// WriteTimeout bounds one Publish call including retries. Default 5s.
	WriteTimeout time.Duration
	// MaxAttempts is how often a produce request is tried before Publish
	// fails. Default 5.
	MaxAttempts int
	// Registerer receives the producer metrics. Nil means unregistered.
	Registerer prometheus.Registerer
	// Logger logs producer errors. Default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns c with every zero field set to its default.
func (c ProducerConfig) withDefaults() ProducerConfig {
	if c.Topic == "" {
		c.Topic = DefaultJudgmentsTopic
	}
	if c.Linger <= 0 {
		c.Linger = DefaultLinger
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultProduceBatchSize
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Producer publishes judgment batches synchronously. It is safe for
// concurrent use; concurrent Publish calls that go to the same partition
// within Linger share one produce request.
type Producer struct {
	cfg      ProducerConfig
	w        *kafka.Writer
	tr       *kafka.Transport
	log      *slog.Logger
	duration prometheus.Histogram
	errors   prometheus.Counter
}

// NewProducer returns a Producer. It does not contact the brokers; use Ping
// to check them.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("new producer: no brokers")
	}
	cfg = cfg.withDefaults()
	p := &Producer{cfg: cfg, tr: newTransport(), log: cfg.Logger.With("topic", cfg.Topic)}
	p.w = &kafka.Writer{
		Addr:            kafka.TCP(cfg.Brokers...),
		Topic:           cfg.Topic,
		Balancer:        &kafka.Hash{},
		MaxAttempts:     cfg.MaxAttempts,
		WriteBackoffMin: 50 * time.Millisecond,
		WriteBackoffMax: time.Second,
		BatchSize:       cfg.BatchSize,
		BatchBytes:      cfg.MaxBatchBytes,
		BatchTimeout:    cfg.Linger,
		ReadTimeout:     cfg.WriteTimeout,
		WriteTimeout:    cfg.WriteTimeout,
		RequiredAcks:    kafka.RequireAll,
		Async:           false,
		Transport:       p.tr,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			p.log.Warn("kafka writer: " + fmt.Sprintf(msg, args...))
		}),
	}
	p.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "alignet_kafka_produce_duration_seconds",
		Help:    "Time until a judgment batch was acknowledged by all in-sync replicas, or failed.",
		Buckets: []float64{.001, .002, .004, .006, .008, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1, 5},
	})
	p.errors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "alignet_kafka_produce_errors_total",
		Help: "Judgment batches that could not be published.",
	})
	var err error
	if p.duration, err = ops.Register(cfg.Registerer, p.duration); err != nil {
		return nil, fmt.Errorf("new producer: %w", err)
	}
	if p.errors, err = ops.Register(cfg.Registerer, p.errors); err != nil {
		return nil, fmt.Errorf("new producer: %w", err)
	}
	return p, nil
}

// Publish encodes the judgments of one study as one message and returns
// after the broker acknowledged it on all in-sync replicas. An invalid batch
// yields an error wrapping ErrInvalidBatch; a batch larger than
// MaxBatchBytes once encoded, or than the broker accepts, yields one
// wrapping alignet.ErrTooLarge: it must be split, not retried (HTTP 413).
// When Kafka cannot be reached within WriteTimeout the error wraps
// alignet.ErrUnavailable; the batch may still have been written, so clients
// retry with the same judgment ids and storage deduplicates them.
func (p *Producer) Publish(ctx context.Context, study string, js []alignet.Judgment) error {
	msg, err := EncodeBatch(study, js)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if n := int64(len(msg.Key) + len(msg.Value) + len(ContentType) + len(HeaderContentType) + 64); n > p.cfg.MaxBatchBytes {
		return fmt.Errorf("publish study %q: %d judgments encode to about %d bytes, limit %d: %w", study, len(js), n, p.cfg.MaxBatchBytes, alignet.ErrTooLarge)
	}
	wctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	start := time.Now()
	err = p.w.WriteMessages(wctx, msg)
	p.duration.Observe(time.Since(start).Seconds())
	if err == nil {
		return nil
	}
	p.errors.Inc()
	if ctx.Err() != nil {
		// The caller gave up, e.g. the client disconnected.
		return fmt.Errorf("publish study %q: %w", study, ctx.Err())
	}
	if tooLarge(err) {
		return fmt.Errorf("publish study %q: %w: %w", study, alignet.ErrTooLarge, err)
	}
	p.log.Warn("publish failed", "study", study, "judgments", len(js), "err", err)
	return unavailable(fmt.Sprintf("publish study %q", study), err)
}

// tooLarge reports whether err, or one of the per-message errors of a
// kafka.WriteErrors (which errors.Is does not see through), says that the
// writer or the broker refused a message for its size.
func tooLarge(err error) bool {
	var mtl kafka.MessageTooLargeError
	if errors.As(err, &mtl) || errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge) {
		return true
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && tooLarge(e) {
				return true
			}
		}
	}
	return false
}

// Ping reports whether a broker is reachable and every partition of the
// topic has a leader, over a fresh connection (not the writer's cached
// metadata). Failures wrap alignet.ErrUnavailable.
func (p *Producer) Ping(ctx context.Context) error {
	return Ping(ctx, p.cfg.Brokers, p.cfg.Topic)
}

// Close flushes pending writes and releases the connections.
func (p *Producer) Close() error {
	err := p.w.Close()
	p.tr.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("close producer: %w", err)
	}
	return nil
}
