package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/stream"
)

// Run starts the roles cfg names and blocks until ctx is cancelled and every
// component has stopped. Judgments flow one way: the api role validates
// and produces them to Kafka; the persister role consumes and stores them.
//
// Shutdown is ordered: the API stops accepting and drains its in-flight
// requests, then the producer flushes; the persister finishes and commits
// its current batch; the database pool closes last.
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
		return fmt.Errorf("migrate: %w", err)
	}
	if err := ensureTopics(ctx, cfg, log); err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	if cfg.has(RoleAPI) {
		producer, err := stream.NewProducer(stream.ProducerConfig{
			Brokers:    cfg.KafkaBrokers,
			Topic:      cfg.Topic,
			Linger:     cfg.Linger,
			Registerer: reg,
			Logger:     log.With("component", "producer"),
		})
		if err != nil {
			return fmt.Errorf("start producer: %w", err)
		}
		srv, err := api.New(api.Config{
			Listen:       cfg.Listen,
			AdminKey:     cfg.AdminKey,
			PseudonymKey: []byte(cfg.PseudonymKey),
			Registerer:   reg,
			Gatherer:     reg,
			Logger:       log.With("component", "api"),
		}, database, producer)
		if err != nil {
			_ = producer.Close()
			return fmt.Errorf("start api: %w", err)
		}
		g.Go(func() error {
			err := srv.Run(gctx)
			// The producer closes only after the API has drained, so every
			// request that was answered 202 has been flushed.
			return errors.Join(err, producer.Close())
		})
	} else {
		g.Go(func() error { return serveMetrics(gctx, cfg.Listen, reg, log) })
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
			return fmt.Errorf("start persister: %w", err)
		}
		g.Go(func() error { return p.Run(gctx) })
	}
	log.Info("alignet running", "roles", cfg.Roles, "listen", cfg.Listen, "topic", cfg.Topic)
	err = g.Wait()
	log.Info("alignet stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
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
