// Package server wires alignet's components into running roles: the HTTP
// API that produces judgments to Kafka, the consumer that persists them to
// Postgres, and the learner that keeps each study's teacher. It supervises
// them with ordered, graceful shutdown.
package server

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/monitor"
	"github.com/alignet/alignet/online"
	"github.com/alignet/alignet/stream"
)

// Config configures `alignet serve`. Every field has a flag and an
// environment variable; flags win over the environment.
type Config struct {
	// Listen is the HTTP listen address (ALIGNET_LISTEN, default ":8080").
	Listen string
	// MetricsListen, when set, serves /metrics on its own address instead
	// of the public one (ALIGNET_METRICS_LISTEN, default: on Listen).
	MetricsListen string
	// CORSOrigins are the browser origins allowed to call the API
	// (ALIGNET_CORS_ORIGINS, comma-separated; "*" allows any; default none).
	CORSOrigins []string
	// MaxConns caps open client connections of the API
	// (ALIGNET_MAX_CONNS, default 1024).
	MaxConns int
	// MaxExports caps concurrent judgment exports, each holding one database
	// connection (ALIGNET_MAX_EXPORTS, default 4).
	MaxExports int
	// SessionLimit and AddressLimit rate-limit study-bound collect keys per
	// participant session and per client address (ALIGNET_SESSION_LIMIT and
	// ALIGNET_ADDRESS_LIMIT, as RATE/s:BURST such as "5:60"; defaults
	// api.DefaultSessionLimit and api.DefaultAddressLimit).
	SessionLimit, AddressLimit api.RateLimit
	// TrustForwardedFor takes the client address from X-Forwarded-For set by
	// a reverse proxy on a private address (ALIGNET_TRUST_FORWARDED_FOR,
	// default false).
	TrustForwardedFor bool
	// TeacherPoll is how often the API's teacher cache asks Postgres whether
	// a cached study's teacher, items or embeddings changed
	// (ALIGNET_TEACHER_POLL, default 500ms).
	TeacherPoll time.Duration
	// DriftInterval is how often the drift monitor, which runs with the api
	// role, computes each study's drift snapshot (ALIGNET_DRIFT_INTERVAL,
	// default monitor.DefaultInterval, 30s).
	DriftInterval time.Duration
	// DriftRetention is how long drift snapshots are kept
	// (ALIGNET_DRIFT_RETENTION, default monitor.DefaultRetention, 168h).
	DriftRetention time.Duration
	// DatabaseURL is the Postgres connection string (DATABASE_URL).
	DatabaseURL string
	// KafkaBrokers are the bootstrap brokers (KAFKA_BROKERS, comma-separated).
	KafkaBrokers []string
	// AdminKey is the bootstrap admin API key (ALIGNET_ADMIN_KEY or the file
	// named by ALIGNET_ADMIN_KEY_FILE).
	AdminKey string
	// PseudonymKey keys the hash that pseudonymises worker ids
	// (ALIGNET_PSEUDONYM_KEY or ALIGNET_PSEUDONYM_KEY_FILE, at least 16 bytes).
	PseudonymKey string
	// Roles are the components to run (ALIGNET_ROLES, default
	// "api,persister"; dev runs DevRoles unless ALIGNET_ROLES or --roles
	// is given).
	Roles []string
	// TripletsTopic is the topic the trainer publishes AligNet triplets to
	// (ALIGNET_KAFKA_TRIPLETS_TOPIC, default "alignet.triplets").
	TripletsTopic string
	// Topic is the judgments topic (ALIGNET_KAFKA_TOPIC, default "alignet.judgments").
	Topic string
	// DeadLetterTopic receives undecodable messages (ALIGNET_KAFKA_DLQ_TOPIC,
	// default "alignet.judgments.dlq").
	DeadLetterTopic string
	// Group is the persister's consumer group (ALIGNET_KAFKA_GROUP, default
	// "alignet-persister").
	Group string
	// LearnerGroup is the learner's consumer group (ALIGNET_LEARNER_GROUP,
	// default "alignet-learner"); learners of one group split the studies.
	LearnerGroup string
	// Partitions is the partition count used when creating topics
	// (ALIGNET_KAFKA_PARTITIONS, default 6).
	Partitions int
	// Linger is how long the producer waits to batch concurrent requests
	// (ALIGNET_PRODUCE_LINGER, default 2ms).
	Linger time.Duration
	// PersistBatch is the most judgments the persister writes in one
	// transaction (ALIGNET_PERSIST_BATCH, default 5000).
	PersistBatch int
	// PersistParallelism is how many concurrent transactions one persister
	// flush uses (ALIGNET_PERSIST_PARALLELISM, default 2).
	PersistParallelism int
	// DBMaxConns caps the Postgres pool (ALIGNET_DB_MAX_CONNS, default 16).
	DBMaxConns int
	// LogLevel is debug, info, warn or error (ALIGNET_LOG_LEVEL, default info).
	LogLevel string
	// LogFormat is text or json (ALIGNET_LOG_FORMAT, default text).
	LogFormat string

	fileKeys func() error
	envErrs  []error
	// rolesSet records that ALIGNET_ROLES or --roles was given.
	rolesSet bool
}

// Roles that a process can run.
const (
	RoleAPI       = "api"
	RolePersister = "persister"
	// RoleLearner keeps each study's teacher current.
	RoleLearner = "learner"
	// RoleTrainer regenerates AligNet data and trains students.
	RoleTrainer = "trainer"
)

// Bind registers the flags of cfg on fs, with defaults read from the
// environment through getenv.
func (cfg *Config) Bind(fs *flag.FlagSet, getenv func(string) string) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	envInt := func(k string, def int) int {
		v := getenv(k)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			cfg.envErrs = append(cfg.envErrs, fmt.Errorf("%s=%q is not an integer", k, v))
			return def
		}
		return n
	}
	envDuration := func(k string, def time.Duration) time.Duration {
		v := getenv(k)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			cfg.envErrs = append(cfg.envErrs, fmt.Errorf("%s=%q is not a duration such as 250ms or 2s", k, v))
			return def
		}
		return d
	}
	fs.StringVar(&cfg.Listen, "listen", env("ALIGNET_LISTEN", api.DefaultListen), "HTTP listen address (ALIGNET_LISTEN)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", env("ALIGNET_METRICS_LISTEN", ""), "serve /metrics on this address instead of --listen (ALIGNET_METRICS_LISTEN)")
	cfg.CORSOrigins = splitList(env("ALIGNET_CORS_ORIGINS", ""))
	fs.Func("cors-origins", "comma-separated browser origins allowed to call the API, or * (ALIGNET_CORS_ORIGINS)", func(s string) error {
		cfg.CORSOrigins = splitList(s)
		return nil
	})
	fs.IntVar(&cfg.MaxConns, "max-conns", envInt("ALIGNET_MAX_CONNS", api.DefaultMaxConns), "most open API client connections (ALIGNET_MAX_CONNS)")
	fs.IntVar(&cfg.MaxExports, "max-exports", envInt("ALIGNET_MAX_EXPORTS", api.DefaultMaxExports), "most concurrent judgment exports (ALIGNET_MAX_EXPORTS)")
	rateLimit := func(dst *api.RateLimit, flagName, envName string, def api.RateLimit) {
		*dst = def
		if v := getenv(envName); v != "" {
			if err := dst.Set(v); err != nil {
				cfg.envErrs = append(cfg.envErrs, fmt.Errorf("%s=%q: %w", envName, v, err))
			}
		}
		fs.Var(dst, flagName, "rate limit RATE:BURST (requests per second and burst) of study-bound keys ("+envName+")")
	}
	rateLimit(&cfg.SessionLimit, "session-limit", "ALIGNET_SESSION_LIMIT", api.DefaultSessionLimit)
	rateLimit(&cfg.AddressLimit, "address-limit", "ALIGNET_ADDRESS_LIMIT", api.DefaultAddressLimit)
	cfg.TrustForwardedFor = getenv("ALIGNET_TRUST_FORWARDED_FOR") == "true"
	fs.BoolVar(&cfg.TrustForwardedFor, "trust-forwarded-for", cfg.TrustForwardedFor, "take client addresses from X-Forwarded-For of a reverse proxy on a private address (ALIGNET_TRUST_FORWARDED_FOR=true)")
	fs.DurationVar(&cfg.TeacherPoll, "teacher-poll", envDuration("ALIGNET_TEACHER_POLL", api.DefaultTeacherPollInterval), "how often the API's teacher cache polls Postgres for changes (ALIGNET_TEACHER_POLL)")
	fs.DurationVar(&cfg.DriftInterval, "drift-interval", envDuration("ALIGNET_DRIFT_INTERVAL", monitor.DefaultInterval), "how often the drift monitor computes each study's snapshot (ALIGNET_DRIFT_INTERVAL)")
	fs.DurationVar(&cfg.DriftRetention, "drift-retention", envDuration("ALIGNET_DRIFT_RETENTION", monitor.DefaultRetention), "how long drift snapshots are kept (ALIGNET_DRIFT_RETENTION)")
	fs.StringVar(&cfg.DatabaseURL, "database-url", env("DATABASE_URL", ""), "Postgres URL (DATABASE_URL)")
	cfg.KafkaBrokers = splitList(env("KAFKA_BROKERS", ""))
	fs.Func("kafka-brokers", "comma-separated Kafka brokers (KAFKA_BROKERS)", func(s string) error {
		cfg.KafkaBrokers = splitList(s)
		return nil
	})
	cfg.AdminKey = getenv("ALIGNET_ADMIN_KEY")
	adminFile := getenv("ALIGNET_ADMIN_KEY_FILE")
	fs.Func("admin-key-file", "file holding the bootstrap admin key (ALIGNET_ADMIN_KEY_FILE)", func(s string) error {
		adminFile = s
		return nil
	})
	cfg.PseudonymKey = getenv("ALIGNET_PSEUDONYM_KEY")
	pseudoFile := getenv("ALIGNET_PSEUDONYM_KEY_FILE")
	fs.Func("pseudonym-key-file", "file holding the worker pseudonym key (ALIGNET_PSEUDONYM_KEY_FILE)", func(s string) error {
		pseudoFile = s
		return nil
	})
	cfg.Roles = splitList(env("ALIGNET_ROLES", "api,persister"))
	fs.StringVar(&cfg.TripletsTopic, "triplets-topic", env("ALIGNET_KAFKA_TRIPLETS_TOPIC", stream.DefaultTripletsTopic), "topic of the trainer's AligNet triplets (ALIGNET_KAFKA_TRIPLETS_TOPIC)")
	cfg.rolesSet = getenv("ALIGNET_ROLES") != ""
	fs.Func("roles", "comma-separated roles: api, persister, learner, trainer (ALIGNET_ROLES)", func(s string) error {
		cfg.Roles, cfg.rolesSet = splitList(s), true
		return nil
	})
	fs.StringVar(&cfg.Topic, "topic", env("ALIGNET_KAFKA_TOPIC", stream.DefaultJudgmentsTopic), "judgments topic (ALIGNET_KAFKA_TOPIC)")
	fs.StringVar(&cfg.DeadLetterTopic, "dlq-topic", env("ALIGNET_KAFKA_DLQ_TOPIC", stream.DefaultDeadLetterTopic), "dead-letter topic (ALIGNET_KAFKA_DLQ_TOPIC)")
	fs.StringVar(&cfg.Group, "group", env("ALIGNET_KAFKA_GROUP", stream.DefaultPersisterGroup), "persister consumer group (ALIGNET_KAFKA_GROUP)")
	fs.StringVar(&cfg.LearnerGroup, "learner-group", env("ALIGNET_LEARNER_GROUP", online.DefaultGroup), "learner consumer group (ALIGNET_LEARNER_GROUP)")
	fs.IntVar(&cfg.Partitions, "partitions", envInt("ALIGNET_KAFKA_PARTITIONS", stream.DefaultPartitions), "partitions for new topics (ALIGNET_KAFKA_PARTITIONS)")
	fs.DurationVar(&cfg.Linger, "linger", envDuration("ALIGNET_PRODUCE_LINGER", stream.DefaultLinger), "producer linger (ALIGNET_PRODUCE_LINGER)")
	fs.IntVar(&cfg.PersistBatch, "persist-batch", envInt("ALIGNET_PERSIST_BATCH", stream.DefaultMaxBatch), "judgments per persister transaction (ALIGNET_PERSIST_BATCH)")
	fs.IntVar(&cfg.PersistParallelism, "persist-parallelism", envInt("ALIGNET_PERSIST_PARALLELISM", stream.DefaultParallelism), "concurrent transactions per persister flush (ALIGNET_PERSIST_PARALLELISM)")
	fs.IntVar(&cfg.DBMaxConns, "db-max-conns", envInt("ALIGNET_DB_MAX_CONNS", int(db.DefaultMaxConns)), "Postgres pool size (ALIGNET_DB_MAX_CONNS)")
	fs.StringVar(&cfg.LogLevel, "log-level", env("ALIGNET_LOG_LEVEL", "info"), "log level (ALIGNET_LOG_LEVEL)")
	fs.StringVar(&cfg.LogFormat, "log-format", env("ALIGNET_LOG_FORMAT", "text"), "log format text|json (ALIGNET_LOG_FORMAT)")
	cfg.fileKeys = func() error {
		if cfg.AdminKey == "" && adminFile != "" {
			b, err := os.ReadFile(adminFile)
			if err != nil {
				return fmt.Errorf("read admin key file: %w", err)
			}
			cfg.AdminKey = strings.TrimSpace(string(b))
		}
		if cfg.PseudonymKey == "" && pseudoFile != "" {
			b, err := os.ReadFile(pseudoFile)
			if err != nil {
				return fmt.Errorf("read pseudonym key file: %w", err)
			}
			cfg.PseudonymKey = strings.TrimSpace(string(b))
		}
		return nil
	}
}

// Resolve reads key files named by flags or environment and validates cfg.
func (cfg *Config) Resolve() error {
	if cfg.fileKeys != nil {
		if err := cfg.fileKeys(); err != nil {
			return err
		}
	}
	errs := append([]error(nil), cfg.envErrs...)
	if cfg.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL (or --database-url) is required"))
	}
	if len(cfg.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("KAFKA_BROKERS (or --kafka-brokers) is required"))
	}
	if cfg.has(RoleAPI) && len(cfg.PseudonymKey) < 16 {
		errs = append(errs, errors.New("ALIGNET_PSEUDONYM_KEY (or _FILE) of at least 16 characters is required by the api role"))
	}
	for _, r := range cfg.Roles {
		if r != RoleAPI && r != RolePersister && r != RoleLearner && r != RoleTrainer {
			errs = append(errs, fmt.Errorf("unknown role %q (want api, persister, learner, trainer)", r))
		}
	}
	if len(cfg.Roles) == 0 {
		errs = append(errs, errors.New("no roles to run"))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("log level %q (ALIGNET_LOG_LEVEL) must be debug, info, warn or error", cfg.LogLevel))
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log format %q (ALIGNET_LOG_FORMAT) must be text or json", cfg.LogFormat))
	}
	return errors.Join(errs...)
}

func (cfg *Config) has(role string) bool {
	for _, r := range cfg.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// Logger builds the slog logger cfg asks for, writing to w.
func (cfg *Config) Logger(w *os.File) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
