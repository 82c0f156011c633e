package online

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// Learner is the learner role: a consumer group over the judgments topic
// whose members split the partitions, and with them the studies, since the
// topic is keyed by study. See the package documentation.
type Learner struct {
	cfg   Config
	store Store
	log   *slog.Logger
	m     *metrics
	// refits limits the refits running at once in this process.
	refits chan struct{}
	hooks  hooks
}

// hooks let tests observe the learner's internals.
type hooks struct {
	// batch, if set, is called with every training batch before the step.
	batch func(study string, batch []sample)
}

// New returns a Learner that reads and writes through store.
func New(cfg Config, store Store) (*Learner, error) {
	if store == nil {
		return nil, errors.New("new learner: nil store")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new learner: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new learner: %w", err)
	}
	return &Learner{
		cfg: cfg, store: store, m: m,
		log:    cfg.Logger.With("topic", cfg.Topic, "group", cfg.Group),
		refits: make(chan struct{}, cfg.ConcurrentRefits),
	}, nil
}

// Run joins the consumer group and learns from the partitions it is
// assigned until ctx is cancelled. Each assigned partition is read from the
// offset stored in Postgres, not from the group's committed offset, and
// is released (its progress flushed) when the group rebalances. Run
// returns nil once every partition has stored its final progress; it
// returns an error only if the consumer group cannot be created.
func (l *Learner) Run(ctx context.Context) error {
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                    l.cfg.Group,
		Brokers:               l.cfg.Brokers,
		Topics:                []string{l.cfg.Topic},
		HeartbeatInterval:     time.Second,
		SessionTimeout:        10 * time.Second,
		RebalanceTimeout:      10 * time.Second,
		JoinGroupBackoff:      time.Second,
		WatchPartitionChanges: true,
		StartOffset:           kafka.FirstOffset,
		Timeout:               10 * time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			l.log.Debug("kafka consumer group: " + fmt.Sprintf(msg, args...))
		}),
	})
	if err != nil {
		return fmt.Errorf("learner: consumer group: %w", err)
	}
	l.log.Info("learner started")
	defer func() {
		// Closing ends the current generation: its partitions flush and
		// return before Close does.
		if err := cg.Close(); err != nil {
			l.log.Warn("close consumer group", "err", err)
		}
		l.log.Info("learner stopped")
	}()
	backoff := 250 * time.Millisecond
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return nil
			}
			l.log.Warn("join consumer group; retrying", "err", err, "backoff", backoff)
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 250 * time.Millisecond
		var parts []int
		for _, a := range gen.Assignments[l.cfg.Topic] {
			parts = append(parts, a.ID)
			part := int32(a.ID)
			gen.Start(func(gctx context.Context) {
				l.runPartition(gctx, gen, part)
			})
		}
		l.log.Info("partitions assigned", "generation", gen.ID, "partitions", parts)
	}
}

// runPartition learns from one partition until ctx ends; an error ends
// the generation after a pause, so that the group assigns the partition
// again.
func (l *Learner) runPartition(ctx context.Context, gen committer, part int32) {
	p := newPartition(l, part, gen)
	if err := p.run(ctx); err != nil {
		l.log.Error("partition stopped", "partition", part, "err", err)
		sleep(ctx, time.Second)
	}
}

// sleep waits for d or until ctx ends and reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
