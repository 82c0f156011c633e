package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/online"
	"github.com/alignet/alignet/stream"
)

// Run constructs every component of the roles cfg names, then runs them as
// one group until ctx is cancelled or one of them fails. Judgments flow one
// way: the api role validates and produces them to Kafka; the persister
// role consumes and stores them; the learner role consumes them with its
// own group and keeps each study's teacher.
//
// Nothing runs until everything is constructed, so a role that cannot be
// built leaves nothing half-started. Shutdown is ordered by stage: the API
// stops accepting and drains its in-flight requests (each was acknowledged
// by Kafka before it was answered); then the consumers finish and commit
// their current batches; the producer and the database pool close last.
func Run(ctx context.Context, cfg Config, log *slog.Logger, reg *prometheus.Registry) error {
	database, err := db.Open(ctx, db.Config{
		URL:        cfg.DatabaseURL,
		MaxConns:   int32(cfg.DBMaxConns),
		Registerer: reg,
		Logger:     log.With("component", "db"),
	})
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer database.Close()
	if err := database.Migrate(ctx); err != nil {
		return err
	}
	if err := ensureTopics(ctx, cfg, log); err != nil {
		return err
	}

	g := &group{log: log}
	var closers []func() error // run in reverse order once everything stopped
	defer func() {
		for _, c := range slices.Backward(closers) {
			if err := c(); err != nil {
				log.Warn("close", "err", err)
			}
		}
	}()
	if cfg.has(RoleAPI) {
		producer, err := stream.NewProducer(stream.ProducerConfig{
			Brokers:    cfg.KafkaBrokers,
			Topic:      cfg.Topic,
			Linger:     cfg.Linger,
			Registerer: reg,
			Logger:     log.With("component", "producer"),
		})
		if err != nil {
			return fmt.Errorf("new producer: %w", err)
		}
		closers = append(closers, producer.Close)
		srv, err := api.New(api.Config{
			Listen:       cfg.Listen,
			AdminKey:     cfg.AdminKey,
			PseudonymKey: []byte(cfg.PseudonymKey),
			Registerer:   reg,
			Gatherer:     reg,
			Logger:       log.With("component", "api"),
		}, database, producer)
		if err != nil {
			return fmt.Errorf("new api: %w", err)
		}
		g.add(RoleAPI, StageIngress, srv)
	} else {
		g.add("metrics", StageIngress, ComponentFunc(func(ctx context.Context) error {
			return serveMetrics(ctx, cfg.Listen, reg, log.With("component", "metrics"))
		}))
	}
	if cfg.has(RolePersister) {
		p, err := stream.NewPersister(stream.PersisterConfig{
			Brokers:         cfg.KafkaBrokers,
			Topic:           cfg.Topic,
			DeadLetterTopic: cfg.DeadLetterTopic,
			GroupID:         cfg.Group,
			MaxBatch:        cfg.PersistBatch,
			Parallelism:     cfg.PersistParallelism,
			Registerer:      reg,
			Logger:          log.With("component", "persister"),
		}, database)
		if err != nil {
			return fmt.Errorf("new persister: %w", err)
		}
		g.add(RolePersister, StageConsumers, p)
	}
	if cfg.has(RoleLearner) {
		l, err := online.New(online.Config{
			Brokers:    cfg.KafkaBrokers,
			Topic:      cfg.Topic,
			Group:      cfg.LearnerGroup,
			Registerer: reg,
			Logger:     log.With("component", "learner"),
		}, database)
		if err != nil {
			return fmt.Errorf("new learner: %w", err)
		}
		g.add(RoleLearner, StageConsumers, l)
	}
	log.Info("alignet running", "roles", cfg.Roles, "listen", cfg.Listen, "topic", cfg.Topic)
	err = g.run(ctx)
	log.Info("alignet stopped")
	return err
}

// ensureTopics creates the topics, retrying while the brokers are not yet
// reachable (as when Kafka starts after alignet under compose).
func ensureTopics(ctx context.Context, cfg Config, log *slog.Logger) error {
	tc := stream.TopicConfig{Judgments: cfg.Topic, DeadLetters: cfg.DeadLetterTopic, Partitions: cfg.Partitions, ReplicationFactor: 1}
	backoff := 250 * time.Millisecond
	for {
		err := stream.EnsureTopics(ctx, cfg.KafkaBrokers, tc)
		if err == nil {
			return nil
		}
		log.Warn("kafka not ready; retrying", "brokers", cfg.KafkaBrokers, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("ensure topics: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// serveMetrics exposes /metrics and /healthz for processes without the api
// role, so every process can be scraped.
func serveMetrics(ctx context.Context, listen string, reg *prometheus.Registry, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("metrics listening", "addr", listen)
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}
