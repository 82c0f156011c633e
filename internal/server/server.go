package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/monitor"
	"github.com/alignet/alignet/online"
	"github.com/alignet/alignet/stream"
	"github.com/alignet/alignet/trainer"
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
		URL:      cfg.DatabaseURL,
		MaxConns: int32(cfg.DBMaxConns),
		// Exports are capped in the API and, with the same number, in the
		// pool, so readers can never hold the persister's connections.
		MaxExportConns: int32(cfg.MaxExports),
		Registerer:     reg,
		Logger:         log.With("component", "db"),
	})
	if err != nil {
		return err
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
	// components are the roles whose health /readyz reports besides
	// Postgres and Kafka.
	components := map[string]api.ReadinessChecker{}
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
		components[RolePersister] = p
	}
	if cfg.has(RoleTrainer) {
		tw, err := stream.NewTripletWriter(stream.TripletWriterConfig{Brokers: cfg.KafkaBrokers, Topic: cfg.TripletsTopic,
			Partitions: cfg.Partitions, Logger: log.With("component", "triplets")})
		if err != nil {
			return fmt.Errorf("new triplet writer: %w", err)
		}
		closers = append(closers, tw.Close)
		if err := tw.EnsureTopic(ctx); err != nil {
			return err
		}
		tr, err := trainer.New(trainer.Config{Registerer: reg, Logger: log.With("component", RoleTrainer)},
			database, trainer.AdaptArtifacts[*db.ArtifactWriter](database), tw)
		if err != nil {
			return err
		}
		g.add(RoleTrainer, StageConsumers, tr)
		components[RoleTrainer] = tr
	}
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
		deps := api.StoreDeps(database, producer)
		deps.Components = components
		deps.Students = api.NewStoredStudents(database)
		deps.Drift = database
		srv, err := api.New(api.Config{
			Listen:              cfg.Listen,
			AdminKey:            cfg.AdminKey,
			PseudonymKey:        []byte(cfg.PseudonymKey),
			AllowOrigins:        cfg.CORSOrigins,
			MaxConns:            cfg.MaxConns,
			MaxExports:          cfg.MaxExports,
			TeacherPollInterval: cfg.TeacherPoll,
			OmitMetrics:         cfg.MetricsListen != "",
			Registerer:          reg,
			Gatherer:            reg,
			Logger:              log.With("component", "api"),
		}, deps)
		if err != nil {
			return fmt.Errorf("new api: %w", err)
		}
		g.add(RoleAPI, StageIngress, srv)
		// The drift monitor runs with the API, whose dashboard shows it;
		// replicas share its snapshots (one per interval is stored).
		mon, err := monitor.New(monitor.Config{Interval: cfg.DriftInterval, Retention: cfg.DriftRetention,
			Registerer: reg, Logger: log.With("component", "monitor")}, database)
		if err != nil {
			return fmt.Errorf("new drift monitor: %w", err)
		}
		g.add("monitor", StageConsumers, mon)
	}
	// Every process can be scraped: on its own address when one is set, or
	// on the public one when the api role does not serve it there.
	if metricsAddr := cfg.MetricsListen; metricsAddr != "" || !cfg.has(RoleAPI) {
		if metricsAddr == "" {
			metricsAddr = cfg.Listen
		}
		g.add("metrics", StageIngress, ComponentFunc(func(ctx context.Context) error {
			return serveMetrics(ctx, metricsAddr, reg, components, log.With("component", "metrics"))
		}))
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

// serveMetrics exposes /metrics, /healthz and /readyz on listen, so every
// process can be scraped and probed, with or without the api role. Its
// /readyz answers 503 while one of the components is not ready.
func serveMetrics(ctx context.Context, listen string, reg *prometheus.Registry, components map[string]api.ReadinessChecker, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		checks := map[string]string{}
		status, code := "ok", http.StatusOK
		for name, c := range components {
			checks[name] = "ok"
			if err := c.Ready(rctx); err != nil {
				checks[name], status, code = err.Error(), "unavailable", http.StatusServiceUnavailable
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "checks": checks})
	})
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("metrics listening", "addr", listen)
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}
