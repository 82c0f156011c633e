package online

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/ops"
)

// metrics are the learner's Prometheus metrics, labelled by study.
type metrics struct {
	applied     *prometheus.CounterVec
	skipped     *prometheus.CounterVec
	undecodable prometheus.Counter
	preqAcc     *prometheus.GaugeVec
	preqLoss    *prometheus.GaugeVec
	heldAcc     *prometheus.GaugeVec
	heldNLL     *prometheus.GaugeVec
	heldECE     *prometheus.GaugeVec
	freshness   *prometheus.GaugeVec
	lag         *prometheus.GaugeVec
	refitTime   *prometheus.HistogramVec
	refits      *prometheus.CounterVec
	versions    *prometheus.CounterVec
	step        *prometheus.HistogramVec
	flushTime   prometheus.Histogram
	flushErrors prometheus.Counter
	studies     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_learner_judgments_applied_total",
			Help: "Distinct judgment ids the learner applied (each counted once in judgments_seen).",
		}, []string{"study"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_learner_judgments_skipped_total",
			Help: "Judgments the online path did not train on, by reason (held_out, no_embedding, online_disabled, task_mismatch, duplicate, unknown_study).",
		}, []string{"study", "reason"}),
		undecodable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alignet_learner_undecodable_messages_total",
			Help: "Messages the learner could not decode and skipped (the persister dead-letters them).",
		}),
		preqAcc: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_learner_prequential_accuracy",
			Help: "Accuracy of the current teacher on the last N arriving judgments, each scored before it was trained on.",
		}, []string{"study", "window"}),
		preqLoss: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_learner_prequential_log_loss",
			Help: "Log-loss of the current teacher on the last N arriving judgments, each scored before it was trained on.",
		}, []string{"study", "window"}),
		heldAcc: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_teacher_heldout_accuracy",
			Help: "Held-out accuracy of the newest teacher version (model=teacher) and of the raw embeddings (model=raw).",
		}, []string{"study", "model"}),
		heldNLL: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_teacher_heldout_nll",
			Help: "Held-out negative log-likelihood of the newest teacher version and of the raw embeddings.",
		}, []string{"study", "model"}),
		heldECE: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_teacher_heldout_ece",
			Help: "Held-out expected calibration error of the newest teacher version and of the raw embeddings.",
		}, []string{"study", "model"}),
		freshness: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_learner_freshness_seconds",
			Help: "At each stored teacher state: now minus the API accept time of the newest judgment it reflects.",
		}, []string{"study"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "alignet_learner_consumer_lag",
			Help: "Messages in a partition of the judgments topic after the learner's position.",
		}, []string{"partition"}),
		refitTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "alignet_teacher_refit_duration_seconds",
			Help:    "Wall time of refits, from reading the judgments to the fitted teacher.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 14),
		}, []string{"study"}),
		refits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_teacher_refits_total",
			Help: "Refits, by result (ok: swapped in; kept: the current teacher predicted held-out judgments better; error).",
		}, []string{"study", "result"}),
		versions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_teacher_versions_total",
			Help: "Teacher versions stored, by kind (refit, online).",
		}, []string{"study", "kind"}),
		step: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "alignet_learner_step_duration_seconds",
			Help:    "Wall time of an online step, by kind (fresh: scoring and training on arrived judgments; idle: replay only; on_top: replay after a refit).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"study", "kind"}),
		flushTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "alignet_learner_flush_duration_seconds",
			Help:    "Wall time of storing a partition's progress (states, applied ids, offsets) in one transaction.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alignet_learner_flush_errors_total",
			Help: "Failed progress flushes (each is retried at the next flush).",
		}),
		studies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "alignet_learner_studies",
			Help: "Studies whose partitions this learner process owns and has loaded.",
		}),
	}
	var err error
	reg1 := func(c prometheus.Collector) prometheus.Collector {
		if err != nil {
			return c
		}
		var got prometheus.Collector
		got, err = ops.Register(reg, c)
		return got
	}
	m.applied = reg1(m.applied).(*prometheus.CounterVec)
	m.skipped = reg1(m.skipped).(*prometheus.CounterVec)
	m.undecodable = reg1(m.undecodable).(prometheus.Counter)
	m.preqAcc = reg1(m.preqAcc).(*prometheus.GaugeVec)
	m.preqLoss = reg1(m.preqLoss).(*prometheus.GaugeVec)
	m.heldAcc = reg1(m.heldAcc).(*prometheus.GaugeVec)
	m.heldNLL = reg1(m.heldNLL).(*prometheus.GaugeVec)
	m.heldECE = reg1(m.heldECE).(*prometheus.GaugeVec)
	m.freshness = reg1(m.freshness).(*prometheus.GaugeVec)
	m.lag = reg1(m.lag).(*prometheus.GaugeVec)
	m.refitTime = reg1(m.refitTime).(*prometheus.HistogramVec)
	m.refits = reg1(m.refits).(*prometheus.CounterVec)
	m.versions = reg1(m.versions).(*prometheus.CounterVec)
	m.step = reg1(m.step).(*prometheus.HistogramVec)
	m.flushTime = reg1(m.flushTime).(prometheus.Histogram)
	m.flushErrors = reg1(m.flushErrors).(prometheus.Counter)
	m.studies = reg1(m.studies).(prometheus.Gauge)
	if err != nil {
		return nil, fmt.Errorf("learner metrics: %w", err)
	}
	return m, nil
}

// observeEval publishes a version's held-out evaluation.
func (m *metrics) observeEval(study string, e alignet.TeacherEval) {
	for _, r := range []struct {
		model string
		m     alignet.TeacherMetrics
	}{{"teacher", e.Teacher}, {"raw", e.Raw}} {
		if r.m.N == 0 {
			continue
		}
		m.heldAcc.WithLabelValues(study, r.model).Set(r.m.Accuracy)
		m.heldNLL.WithLabelValues(study, r.model).Set(r.m.NLL)
		m.heldECE.WithLabelValues(study, r.model).Set(r.m.ECE)
	}
}

// forget removes the gauges of a study the process no longer owns.
func (m *metrics) forget(study string) {
	for _, g := range []*prometheus.GaugeVec{m.preqAcc, m.preqLoss, m.heldAcc, m.heldNLL, m.heldECE, m.freshness} {
		g.DeletePartialMatch(prometheus.Labels{"study": study})
	}
}

func windowLabel(n int) string { return strconv.Itoa(n) }
