package online

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/stream"
)

// Defaults of Config, applied by New to zero fields.
const (
	// DefaultGroup is the learner's consumer group.
	DefaultGroup = "alignet-learner"
	// DefaultFlushInterval is the longest applied judgments wait before the
	// partition's progress is stored.
	DefaultFlushInterval = 500 * time.Millisecond
	// DefaultStepDelay is how long a step waits for more fresh judgments
	// when the partition is quiet.
	DefaultStepDelay = 5 * time.Millisecond
	// DefaultMaxFresh is the most fresh judgments one online step takes.
	DefaultMaxFresh = 4096
	// DefaultReplayBatch is the number of replayed judgments per step.
	DefaultReplayBatch = 1024
	// DefaultReplayCap bounds the replay buffer of a study.
	DefaultReplayCap = 200_000
	// DefaultHeldOutCap bounds the held-out buffer of a study.
	DefaultHeldOutCap = 20_000
	// DefaultAveraging is the decay of the parameter average served as
	// the online teacher.
	DefaultAveraging = 0.98
	// DefaultIdleShare is the share of a partition's time idle replay steps
	// may use.
	DefaultIdleShare = 0.5
	// DefaultIdleEpochs bounds the idle replay steps after the last fresh
	// judgment, in passes over the replay buffer.
	DefaultIdleEpochs = 5
	// DefaultRefitWorkers is the number of goroutines of one refit.
	DefaultRefitWorkers = 1
	// DefaultConcurrentRefits is how many refits a process runs at once.
	DefaultConcurrentRefits = 1
	// DefaultPollInterval is how often refit requests are polled.
	DefaultPollInterval = time.Second
	// DefaultSettingsInterval is how often study settings are re-read.
	DefaultSettingsInterval = 5 * time.Second
	// DefaultEmbeddingsInterval is how often missing embeddings are looked
	// for again, and DefaultEmbeddingsRetry the least time between two
	// look-ups caused by a judgment.
	DefaultEmbeddingsInterval, DefaultEmbeddingsRetry = time.Minute, 3 * time.Second
	// DefaultRefitWait bounds how long a refit waits for the persister.
	DefaultRefitWait = 30 * time.Second
	// DefaultShutdownTimeout bounds the final flush of a partition.
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultSeed seeds refit splits, the human model and batch sampling.
	DefaultSeed = 1
)

// Config configures a Learner.
type Config struct {
	// Brokers are the bootstrap broker addresses (host:port). Required.
	Brokers []string
	// Topic is the judgments topic. Default "alignet.judgments".
	Topic string
	// Group is the consumer group; learners of one group split the
	// partitions, hence the studies. Default "alignet-learner".
	Group string
	// FlushInterval is how often, at least, a partition stores the states of
	// its changed studies, the applied ids and its offset while judgments
	// arrive. Default 500ms.
	FlushInterval time.Duration
	// StepDelay is how long an online step waits for more fresh judgments
	// when no more are queued. Under load a step takes every queued judgment
	// (up to MaxFresh) without waiting. Default 5ms.
	StepDelay time.Duration
	// MaxFresh is the most fresh judgments one online step takes. Default
	// 4096.
	MaxFresh int
	// ReplayBatch is the most judgments, drawn uniformly from the replay
	// buffer, that join the fresh ones in a step (four per fresh judgment,
	// at least 256); idle steps replay this many. Default 1024.
	ReplayBatch int
	// ReplayCap bounds the replay buffer of a study: a uniform (reservoir)
	// sample of the judgments it trained on. Default 200,000 (about 8 MB).
	ReplayCap int
	// HeldOutCap bounds the held-out buffer of a study: its newest held-out
	// judgments, which score online versions. Default 20,000.
	HeldOutCap int
	// Averaging is the decay β of the exponential moving average of the Adam
	// iterates that is served, stored and scored as the online teacher
	// (Polyak averaging); 0 serves the iterate itself. Default 0.98.
	Averaging float64
	// IdleShare is the share of a partition's time that idle replay steps
	// may use; they run only while no fresh judgment is queued. Default 0.5.
	IdleShare float64
	// IdleEpochs bounds the idle replay steps of a study after its last
	// fresh judgment to this many passes over its replay buffer. Default 5.
	IdleEpochs float64
	// RefitWorkers is the number of goroutines one refit uses, so that
	// ingestion keeps a core. Default 1.
	RefitWorkers int
	// ConcurrentRefits is how many refits the process runs at once; more
	// wait. Default 1.
	ConcurrentRefits int
	// PollInterval is how often the refit requests of owned studies are
	// taken. Default 1s.
	PollInterval time.Duration
	// SettingsInterval is how often the settings of owned studies are read
	// again, so that a PATCH takes effect without a restart. Default 5s.
	SettingsInterval time.Duration
	// EmbeddingsInterval is how often a study with items lacking embeddings
	// looks for them again. Default 1m.
	EmbeddingsInterval time.Duration
	// EmbeddingsRetry is the least time between two look-ups caused by a
	// judgment whose items lack embeddings. Default 3s.
	EmbeddingsRetry time.Duration
	// RefitWait is how long a refit waits for Postgres to hold at least as
	// many of the study's judgments as the learner has seen (the persister
	// may lag behind), so that it fits on the complete record. Default 30s.
	RefitWait time.Duration
	// ShutdownTimeout bounds the final flush when a partition is released.
	// Default 10s.
	ShutdownTimeout time.Duration
	// Seed seeds the refits' validation splits and human models and the
	// online batch sampling. Default 1.
	Seed uint64
	// Registerer receives the learner metrics. Nil means unregistered.
	Registerer prometheus.Registerer
	// Logger logs progress and errors. Default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Topic == "" {
		c.Topic = stream.DefaultJudgmentsTopic
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.StepDelay <= 0 {
		c.StepDelay = DefaultStepDelay
	}
	if c.MaxFresh <= 0 {
		c.MaxFresh = DefaultMaxFresh
	}
	if c.ReplayBatch <= 0 {
		c.ReplayBatch = DefaultReplayBatch
	}
	if c.ReplayCap <= 0 {
		c.ReplayCap = DefaultReplayCap
	}
	if c.HeldOutCap <= 0 {
		c.HeldOutCap = DefaultHeldOutCap
	}
	if c.Averaging == 0 {
		c.Averaging = DefaultAveraging
	} else if c.Averaging < 0 {
		c.Averaging = 0
	}
	if c.IdleShare <= 0 {
		c.IdleShare = DefaultIdleShare
	}
	c.IdleShare = min(c.IdleShare, 1)
	if c.IdleEpochs == 0 {
		c.IdleEpochs = DefaultIdleEpochs
	} else if c.IdleEpochs < 0 {
		c.IdleEpochs = 0
	}
	if c.RefitWorkers <= 0 {
		c.RefitWorkers = DefaultRefitWorkers
	}
	if c.ConcurrentRefits <= 0 {
		c.ConcurrentRefits = DefaultConcurrentRefits
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.SettingsInterval <= 0 {
		c.SettingsInterval = DefaultSettingsInterval
	}
	if c.EmbeddingsInterval <= 0 {
		c.EmbeddingsInterval = DefaultEmbeddingsInterval
	}
	if c.EmbeddingsRetry <= 0 {
		c.EmbeddingsRetry = DefaultEmbeddingsRetry
	}
	if c.RefitWait <= 0 {
		c.RefitWait = DefaultRefitWait
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Seed == 0 {
		c.Seed = DefaultSeed
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("no brokers")
	case c.Averaging >= 1:
		return errors.New("averaging must be below 1")
	}
	return nil
}

// Store is what the learner reads from and writes to Postgres. The db
// package implements it.
type Store interface {
	// GetStudy returns a study with its settings.
	GetStudy(ctx context.Context, id string) (alignet.Study, error)
	// GetSpace returns an embedding space.
	GetSpace(ctx context.Context, name string) (alignet.Space, error)
	// StudyItems returns the items of a study.
	StudyItems(ctx context.Context, study string) ([]string, error)
	// LoadEmbeddings returns the vectors of ids and whether each was found.
	LoadEmbeddings(ctx context.Context, space string, ids []string) ([]float32, []bool, error)
	// CountJudgments returns the number of stored judgments of a study.
	CountJudgments(ctx context.Context, study string) (int64, error)
	// ExportJudgments streams the stored judgments matching f.
	ExportJudgments(ctx context.Context, f alignet.JudgmentFilter, fn func(alignet.Judgment) error) error
	// TeacherState returns a study's current teacher (alignet.ErrNotFound
	// before the first flush).
	TeacherState(ctx context.Context, study string) (alignet.TeacherState, error)
	// LearnerSeen returns the hashes of the ids applied to a study.
	LearnerSeen(ctx context.Context, study string) ([]uint64, error)
	// LearnerOffsets returns the stored next offset of each partition.
	LearnerOffsets(ctx context.Context, group, topic string) (map[int32]int64, error)
	// SaveLearnerProgress stores states, applied ids and offsets in one
	// transaction.
	SaveLearnerProgress(ctx context.Context, p alignet.LearnerProgress) error
	// TakeRefitRequests removes and returns the pending refit requests of
	// studies.
	TakeRefitRequests(ctx context.Context, studies []string) ([]string, error)
	// RequestRefit records a refit request again (for requests a released
	// partition took but did not carry out).
	RequestRefit(ctx context.Context, study string) error
	// WorkerFlags returns the answer counts and flags of a study's workers.
	WorkerFlags(ctx context.Context, study string) ([]alignet.WorkerFlags, error)
	// FlagChangesSince returns, over all studies, the workers whose flag
	// went on or off at or after since, and the store's clock when it
	// answered.
	FlagChangesSince(ctx context.Context, since time.Time) ([]alignet.WorkerFlags, time.Time, error)
	// InsertTeacherVersion stores the next version of a study.
	InsertTeacherVersion(ctx context.Context, v alignet.TeacherVersion, keep int) (alignet.TeacherVersion, error)
}
