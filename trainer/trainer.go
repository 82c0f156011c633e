// Package trainer is alignet's trainer role. For every study with a
// generation pool it regenerates AligNet data whenever the study's teacher
// has changed enough (every refit at least) and at most once per
// configured interval: it transforms the pool with the teacher, clusters
// the teacher representations with k-means, samples the study's strategy
// mix, labels each triplet with the teacher's similarities, stores the
// dataset as a versioned artifact in the official AligNet layout,
// publishes it to a Kafka topic for external trainers, and then
// fine-tunes every registered student head, warm-started from its current
// version and decaying toward its initial weights θ₀. Each student
// version is scored on the study's held-out human judgments and promoted
// only when it is not worse than the current one.
//
// Regenerations of one study are serialised across processes by a
// Postgres advisory lock. A regeneration that dies midway leaves no
// visible dataset (its artifact is completed in the transaction that
// inserts the dataset) and the next pass redoes it; students whose newest
// version predates the newest dataset are trained on it on the next pass.
package trainer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/stream"
)

// Defaults of Config.
const (
	// DefaultPollInterval is how often the trainer looks for studies due.
	DefaultPollInterval = 5 * time.Second
	// DefaultPublishChunk is the number of triplets per Kafka message.
	DefaultPublishChunk = 10000
	// DefaultMiniBatchAbove is the pool size above which k-means runs in
	// mini-batches.
	DefaultMiniBatchAbove = 100_000
	// DefaultOrphanGrace is how old an incomplete artifact must be before
	// it is deleted as the left-over of a crashed writer.
	DefaultOrphanGrace = time.Hour
)

// Config configures a Trainer. Zero fields take the documented defaults.
type Config struct {
	// PollInterval is how often Run checks every study. Default 5s.
	PollInterval time.Duration
	// PublishChunk is the number of triplets per message. Default 10000.
	PublishChunk int
	// MiniBatchAbove is the pool size above which k-means runs in
	// mini-batches. Default 100000.
	MiniBatchAbove int
	// OrphanGrace is the age at which incomplete artifacts are deleted.
	// Default 1h.
	OrphanGrace time.Duration
	// Registerer receives the trainer's metrics. Nil means none.
	Registerer prometheus.Registerer
	// Logger receives the trainer's logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.PublishChunk <= 0 {
		c.PublishChunk = DefaultPublishChunk
	}
	if c.MiniBatchAbove <= 0 {
		c.MiniBatchAbove = DefaultMiniBatchAbove
	}
	if c.OrphanGrace <= 0 {
		c.OrphanGrace = DefaultOrphanGrace
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Store is what the trainer reads and writes in Postgres; *db.DB
// implements it.
type Store interface {
	ListPools(ctx context.Context) ([]alignet.Pool, error)
	GetPool(ctx context.Context, study string) (alignet.Pool, error)
	GetStudy(ctx context.Context, id string) (alignet.Study, error)
	GetSpace(ctx context.Context, name string) (alignet.Space, error)
	TeacherVersion(ctx context.Context, study string, n int64) (alignet.TeacherVersion, error)
	TeacherVersions(ctx context.Context, study string) ([]alignet.TeacherVersion, error)
	PoolEmbeddings(ctx context.Context, space string, parts int) ([]string, []float32, error)
	LoadEmbeddings(ctx context.Context, space string, ids []string) ([]float32, []bool, error)
	ItemLabels(ctx context.Context, space string) (map[string][]string, error)
	ExportJudgments(ctx context.Context, f alignet.JudgmentFilter, fn func(alignet.Judgment) error) error
	GetDataset(ctx context.Context, study string, version int64) (alignet.Dataset, error)
	InsertDataset(ctx context.Context, ds alignet.Dataset, keep int) (alignet.Dataset, error)
	ListStudents(ctx context.Context, study string) ([]alignet.Student, error)
	SetStudentInit(ctx context.Context, study, id string, a alignet.Artifact) (int64, error)
	InsertStudentVersion(ctx context.Context, v alignet.StudentVersion, a alignet.Artifact, keep int) (alignet.StudentVersion, error)
	StudentVersion(ctx context.Context, study, id string, n int64) (alignet.StudentVersion, error)
	StudentVersions(ctx context.Context, study, id string) ([]alignet.StudentVersion, error)
	TryTrainerLock(ctx context.Context, study string) (unlock func(), ok bool, err error)
	WorkerFlags(ctx context.Context, study string) ([]alignet.WorkerFlags, error)
}

// ArtifactWriter writes one artifact; it is invisible until the row that
// refers to it is inserted.
type ArtifactWriter interface {
	io.Writer
	// Close finishes the artifact and describes it.
	Close() (alignet.Artifact, error)
	// Abort deletes the unfinished artifact.
	Abort(ctx context.Context) error
}

// Artifacts stores the trainer's blobs. The Postgres implementation is
// *db.DB (through ArtifactsFunc); an object store could replace it.
type Artifacts interface {
	// CreateArtifact starts an artifact of a kind ("dataset", "student").
	CreateArtifact(ctx context.Context, kind string) (ArtifactWriter, error)
	// ReadArtifact writes bytes [off, off+n) of a complete artifact to w.
	ReadArtifact(ctx context.Context, id, off, n int64, w io.Writer) error
	// GetArtifact describes a complete artifact.
	GetArtifact(ctx context.Context, id int64) (alignet.Artifact, error)
	// DeleteOrphanArtifacts deletes unreferenced artifacts and incomplete
	// ones older than grace.
	DeleteOrphanArtifacts(ctx context.Context, grace time.Duration) (int64, error)
}

// Publisher publishes triplet chunks; *stream.TripletWriter implements it.
type Publisher interface {
	Publish(ctx context.Context, chunks []stream.TripletChunk) error
	Ping(ctx context.Context) error
}

// Trainer is the trainer role. Create it with New.
type Trainer struct {
	cfg       Config
	store     Store
	artifacts Artifacts
	pub       Publisher
	log       *slog.Logger
	m         *metrics
	// lastErr is the error of the last pass's study listing (nil: none).
	lastErr atomic.Pointer[error]
}

// New returns a Trainer over its dependencies, all required.
func New(cfg Config, store Store, artifacts Artifacts, pub Publisher) (*Trainer, error) {
	if store == nil || artifacts == nil || pub == nil {
		return nil, errors.New("trainer: store, artifacts and publisher are required")
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	return &Trainer{cfg: cfg, store: store, artifacts: artifacts, pub: pub, log: cfg.Logger, m: m}, nil
}

// Run checks every study each PollInterval and regenerates those due,
// until ctx is cancelled. Failures of one study are logged and retried on
// the next pass; they do not stop the role.
func (t *Trainer) Run(ctx context.Context) error {
	t.log.Info("trainer running", "poll", t.cfg.PollInterval, "workers", runtime.GOMAXPROCS(0))
	tick := time.NewTicker(t.cfg.PollInterval)
	defer tick.Stop()
	for {
		if _, err := t.Pass(ctx); err != nil && ctx.Err() == nil {
			t.log.Warn("trainer pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			t.log.Info("trainer stopped")
			return nil
		case <-tick.C:
		}
	}
}

// Ready reports whether the last pass could read the studies and the
// triplets topic is reachable.
func (t *Trainer) Ready(ctx context.Context) error {
	if err := t.pub.Ping(ctx); err != nil {
		return err
	}
	if p := t.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Pass checks every study with a generation pool once: it regenerates
// those due and trains students that lag behind the newest dataset. It
// returns the number of datasets it stored; the error joins the failures
// of single studies.
func (t *Trainer) Pass(ctx context.Context) (int, error) {
	pools, err := t.store.ListPools(ctx)
	if err != nil {
		t.lastErr.Store(&err)
		return 0, err
	}
	t.lastErr.Store(nil)
	var errs []error
	made := 0
	for _, p := range pools {
		if ctx.Err() != nil {
			return made, ctx.Err()
		}
		ok, err := t.Study(ctx, p.Study, false)
		if err != nil {
			errs = append(errs, fmt.Errorf("study %q: %w", p.Study, err))
			t.log.Warn("trainer: study failed", "study", p.Study, "err", err)
		}
		if ok {
			made++
		}
	}
	if _, err := t.artifacts.DeleteOrphanArtifacts(ctx, t.cfg.OrphanGrace); err != nil {
		errs = append(errs, err)
	}
	return made, errors.Join(errs...)
}

// Study regenerates the study's data if it is due (or force is set and it
// has a teacher version) under the study's trainer lock, then trains every
// student whose newest version predates the newest dataset. It reports
// whether a dataset was stored. Another process holding the lock is not
// an error: the study is left to it.
func (t *Trainer) Study(ctx context.Context, study string, force bool) (bool, error) {
	unlock, ok, err := t.store.TryTrainerLock(ctx, study)
	if err != nil {
		return false, err
	}
	if !ok {
		t.m.regenerations.WithLabelValues("locked").Inc()
		return false, nil
	}
	defer unlock()
	st, err := t.store.GetStudy(ctx, study)
	if err != nil {
		return false, err
	}
	if !st.Settings.Trainer.Enabled && !force {
		return false, nil
	}
	// Metadata only: a pass that finds nothing due reads no parameters.
	versions, err := t.store.TeacherVersions(ctx, study)
	if err != nil {
		return false, err
	}
	if len(versions) == 0 {
		return false, nil // no teacher version yet
	}
	newest := versions[0].Version
	last, err := t.store.GetDataset(ctx, study, 0)
	hasLast := err == nil
	if err != nil && !errors.Is(err, alignet.ErrNotFound) {
		return false, err
	}
	due, why, err := t.due(ctx, st, versions, last, hasLast)
	if err != nil {
		return false, err
	}
	var run *regeneration
	if due || force && (!hasLast || last.TeacherVersion != newest) {
		if why == "" {
			why = "forced"
		}
		tv, err := t.store.TeacherVersion(ctx, study, newest)
		if err != nil {
			return false, err
		}
		start := t.cfg.Now()
		run, err = t.regenerate(ctx, st, tv, why)
		if err != nil {
			t.m.regenerations.WithLabelValues("error").Inc()
			return false, fmt.Errorf("regenerate: %w", err)
		}
		t.m.regenerations.WithLabelValues("ok").Inc()
		t.m.regenDuration.Observe(t.cfg.Now().Sub(start).Seconds())
		last, hasLast = run.ds, true
	}
	if !hasLast {
		return false, nil
	}
	if err := t.trainStudents(ctx, st, last, run); err != nil {
		return run != nil, fmt.Errorf("students: %w", err)
	}
	return run != nil, nil
}

// due decides whether study needs new data for the newest of its teacher
// versions (metadata, newest first), given its last dataset (if hasLast),
// and says why.
func (t *Trainer) due(ctx context.Context, st alignet.Study, versions []alignet.TeacherVersion, last alignet.Dataset, hasLast bool) (bool, string, error) {
	ts := st.Settings.Trainer
	if !hasLast {
		return true, "first dataset", nil
	}
	if last.TeacherVersion >= versions[0].Version {
		return false, "", nil
	}
	if t.cfg.Now().Sub(last.CreatedAt) < time.Duration(ts.MinInterval) {
		return false, "", nil
	}
	for _, v := range versions {
		if v.Version > last.TeacherVersion && v.Kind == alignet.VersionRefit {
			return true, fmt.Sprintf("refit (teacher version %d)", v.Version), nil
		}
	}
	prev, err := t.store.TeacherVersion(ctx, st.ID, last.TeacherVersion)
	if errors.Is(err, alignet.ErrNotFound) {
		return true, "the last dataset's teacher version is gone", nil
	}
	if err != nil {
		return false, "", err
	}
	tv, err := t.store.TeacherVersion(ctx, st.ID, versions[0].Version)
	if err != nil {
		return false, "", err
	}
	change := paramChange(prev.Params, tv.Params)
	if change >= ts.MinTeacherChange {
		return true, fmt.Sprintf("teacher changed by %.4g since version %d", change, prev.Version), nil
	}
	return false, "", nil
}

// paramChange returns ‖θ − θ₀‖/‖θ₀‖ over the teacher's W and b, or +Inf
// when the shapes differ.
func paramChange(a, b alignet.TeacherParams) float64 {
	if a.P != b.P || a.D != b.D || len(a.W) != len(b.W) || len(a.B) != len(b.B) {
		return math.Inf(1)
	}
	var num, den float64
	add := func(x, y []float32) {
		for i := range x {
			d := float64(y[i]) - float64(x[i])
			num += d * d
			den += float64(x[i]) * float64(x[i])
		}
	}
	add(a.W, b.W)
	add(a.B, b.B)
	if den == 0 {
		if num == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return math.Sqrt(num / den)
}

// ArtifactBackend is an artifact store whose CreateArtifact returns its
// own writer type W, such as *db.DB with *db.ArtifactWriter.
type ArtifactBackend[W ArtifactWriter] interface {
	CreateArtifact(ctx context.Context, kind string) (W, error)
	ReadArtifact(ctx context.Context, id, off, n int64, w io.Writer) error
	GetArtifact(ctx context.Context, id int64) (alignet.Artifact, error)
	DeleteOrphanArtifacts(ctx context.Context, grace time.Duration) (int64, error)
}

// AdaptArtifacts returns b as Artifacts:
// trainer.AdaptArtifacts[*db.ArtifactWriter](database).
func AdaptArtifacts[W ArtifactWriter](b ArtifactBackend[W]) Artifacts { return adapted[W]{b} }

type adapted[W ArtifactWriter] struct{ ArtifactBackend[W] }

func (a adapted[W]) CreateArtifact(ctx context.Context, kind string) (ArtifactWriter, error) {
	w, err := a.ArtifactBackend.CreateArtifact(ctx, kind)
	if err != nil {
		return nil, err
	}
	return w, nil
}
