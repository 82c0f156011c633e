// Package monitor is the drift monitor: every Config.Interval it computes,
// for every study, the drift signals of package drift from Postgres (the
// newest judgments, the teacher state, the students and the worker flags),
// stores them as an alignet.DriftSnapshot so that signals can be drawn over
// time, prunes snapshots older than Config.Retention, and exports them as
// alignet_drift_* gauges.
//
// Signals (README "Drift" defines them for users):
//
//   - Alignment drift: the current teacher's accuracy and log-loss on the
//     held-out judgments (alignet.TrainingRole) among the newest
//     Config.Window judgments, against the held-out accuracy and log-loss
//     recorded with its version (TeacherState.Eval); and the learner's
//     prequential accuracy (its smallest window) against the same
//     reference.
//   - Student drift: each promoted student's accuracy on the held-out
//     judgments received since its version was stored, against its
//     held-out accuracy at promotion, and its agreement with the current
//     teacher's predicted odd one against its agreement at promotion.
//   - Data quality: response-time quantiles of the window, the attention
//     check failure rate and the share of flagged workers (worker flags),
//     and each worker's agreement with the teacher, with the workers far
//     below the others (drift.LowAgreement).
//
// Change points come from drift.Compare (rates) and drift.MeanShiftZ
// (log-loss). Several monitors may run against one database: a snapshot
// is stored only if none was stored in the last half interval.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/drift"
	"github.com/alignet/alignet/modelfile"
)

// Defaults applied to zero Config fields.
const (
	// DefaultInterval is how often the monitor computes snapshots.
	DefaultInterval = 30 * time.Second
	// DefaultRetention is how long snapshots are kept.
	DefaultRetention = 7 * 24 * time.Hour
	// DefaultWindow is how many of a study's newest judgments are read.
	DefaultWindow = 20000
	// DefaultMinWorkerJudgments is the fewest judgments a worker needs in
	// the window to be tested for low agreement.
	DefaultMinWorkerJudgments = 20
	// DefaultWorkerAlpha is the family-wise error rate of the low
	// agreement test.
	DefaultWorkerAlpha = 0.01
	// DefaultBins is the number of reliability diagram bins.
	DefaultBins = 10
)

// Config configures a Monitor.
type Config struct {
	// Interval is how often snapshots are computed. Default 30s.
	Interval time.Duration
	// Retention is how long snapshots are kept. Default 7 days.
	Retention time.Duration
	// Window is how many of a study's newest judgments each snapshot
	// reads. Default 20,000.
	Window int
	// Detector sets the change-point tests (drift.Config defaults).
	Detector drift.Config
	// MinWorkerJudgments is the fewest judgments in the window a worker
	// needs to be tested for low agreement. Default 20.
	MinWorkerJudgments int
	// WorkerAlpha is the family-wise error rate of the low agreement
	// test. Default 0.01.
	WorkerAlpha float64
	// Registerer receives the alignet_drift_* metrics. Default: none.
	Registerer prometheus.Registerer
	// Logger receives errors. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.MinWorkerJudgments <= 0 {
		c.MinWorkerJudgments = DefaultMinWorkerJudgments
	}
	if !(c.WorkerAlpha > 0 && c.WorkerAlpha < 1) {
		c.WorkerAlpha = DefaultWorkerAlpha
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Store is what the monitor reads and writes; *db.DB implements it.
type Store interface {
	ListStudies(ctx context.Context) ([]alignet.Study, error)
	CountJudgments(ctx context.Context, study string) (int64, error)
	RecentJudgments(ctx context.Context, study string, limit int) ([]alignet.StoredJudgment, error)
	JudgmentsPerMinute(ctx context.Context, study string, since time.Time) ([]alignet.MinuteCount, error)
	TeacherState(ctx context.Context, study string) (alignet.TeacherState, error)
	WorkerFlags(ctx context.Context, study string) ([]alignet.WorkerFlags, error)
	LoadEmbeddings(ctx context.Context, space string, ids []string) ([]float32, []bool, error)
	ListStudents(ctx context.Context, study string) ([]alignet.Student, error)
	StudentVersions(ctx context.Context, study, id string) ([]alignet.StudentVersion, error)
	Datasets(ctx context.Context, study string) ([]alignet.Dataset, error)
	modelfile.Artifacts // student head artifacts
	InsertDriftSnapshot(ctx context.Context, s alignet.DriftSnapshot, minGap, retention time.Duration) (bool, error)
}

// Monitor computes and stores drift snapshots. Create it with New.
type Monitor struct {
	cfg     Config
	store   Store
	log     *slog.Logger
	metrics *metrics
	heads   *headCache
	// studies are those with series, to delete the series of deleted ones.
	studies map[string]bool
}

// New returns a monitor of the studies in store.
func New(cfg Config, store Store) (*Monitor, error) {
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Monitor{cfg: cfg, store: store, log: cfg.Logger, metrics: m, heads: newHeadCache(store), studies: map[string]bool{}}, nil
}

// Run computes snapshots at once and then every Config.Interval until ctx
// is cancelled. A failing study is logged and counted; it does not stop
// the others or the monitor.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := m.Pass(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("drift pass", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Pass computes and stores one snapshot of every study and returns how
// many it stored. It returns the first error, after trying every study.
func (m *Monitor) Pass(ctx context.Context) (int, error) {
	studies, err := m.store.ListStudies(ctx)
	if err != nil {
		return 0, fmt.Errorf("list studies: %w", err)
	}
	seen := map[string]bool{}
	stored := 0
	var first error
	for _, st := range studies {
		seen[st.ID] = true
		m.metrics.errors.WithLabelValues(st.ID) // exported from 0
		s, err := m.Snapshot(ctx, st)
		if err == nil {
			var ok bool
			ok, err = m.store.InsertDriftSnapshot(ctx, s, m.cfg.Interval/2, m.cfg.Retention)
			if ok {
				stored++
			}
		}
		if err != nil {
			if errors.Is(err, alignet.ErrNotFound) {
				continue // deleted meanwhile
			}
			m.metrics.errors.WithLabelValues(st.ID).Inc()
			m.log.Warn("drift snapshot", "study", st.ID, "err", err)
			if first == nil {
				first = fmt.Errorf("study %q: %w", st.ID, err)
			}
			continue
		}
		m.metrics.observe(s)
	}
	for id := range m.studies {
		if !seen[id] {
			m.metrics.forget(id)
			m.metrics.errors.DeleteLabelValues(id)
		}
	}
	m.studies = seen
	m.heads.keep()
	return stored, first
}
