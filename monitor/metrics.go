package monitor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/ops"
)

// metrics are the alignet_drift_* gauges, labelled by study and, for
// students, student (never by worker: cardinality stays bounded by the
// studies and their students).
type metrics struct {
	teacherAcc, teacherRef, teacherLoss, preqAcc *prometheus.GaugeVec
	studentAcc, studentRef, studentAgree         *prometheus.GaugeVec
	z, cusum, change                             *prometheus.GaugeVec
	attention, flagged, lowWorkers               *prometheus.GaugeVec
	rt                                           *prometheus.GaugeVec
	taken                                        *prometheus.GaugeVec
	errors                                       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	gauge := func(opts prometheus.GaugeOpts, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(opts, append([]string{"study"}, labels...))
	}
	m := &metrics{
		teacherAcc: gauge(prometheus.GaugeOpts{Name: "alignet_drift_teacher_accuracy",
			Help: "Accuracy of the current teacher on the recent held-out judgments."}),
		teacherRef: gauge(prometheus.GaugeOpts{Name: "alignet_drift_teacher_reference_accuracy",
			Help: "Held-out accuracy recorded when the current teacher version was stored."}),
		teacherLoss: gauge(prometheus.GaugeOpts{Name: "alignet_drift_teacher_log_loss",
			Help: "Mean log-loss of the current teacher on the recent held-out judgments."}),
		preqAcc: gauge(prometheus.GaugeOpts{Name: "alignet_drift_prequential_accuracy",
			Help: "The learner's prequential accuracy over its smallest window."}),
		studentAcc: gauge(prometheus.GaugeOpts{Name: "alignet_drift_student_accuracy",
			Help: "Accuracy of the current student version on held-out judgments received since it was stored."}, "student"),
		studentRef: gauge(prometheus.GaugeOpts{Name: "alignet_drift_student_reference_accuracy",
			Help: "Held-out accuracy of the current student version at promotion."}, "student"),
		studentAgree: gauge(prometheus.GaugeOpts{Name: "alignet_drift_student_teacher_agreement",
			Help: "Share of fresh held-out judgments on which the student's and the current teacher's predicted odd one agree."}, "student"),
		z: gauge(prometheus.GaugeOpts{Name: "alignet_drift_z",
			Help: "Change-point test statistic of a drift signal (two-proportion z of a rate, one-sample z of a loss)."}, "signal", "student"),
		cusum: gauge(prometheus.GaugeOpts{Name: "alignet_drift_cusum",
			Help: "Bernoulli CUSUM statistic of a rate signal; a change is flagged once it reaches h = ln(ARL0)."}, "signal", "student"),
		change: gauge(prometheus.GaugeOpts{Name: "alignet_drift_change",
			Help: "1 while a drift signal flags a change point, else 0."}, "signal", "student"),
		attention: gauge(prometheus.GaugeOpts{Name: "alignet_drift_attention_failure_ratio",
			Help: "Share of the study's answered attention checks that failed."}),
		flagged: gauge(prometheus.GaugeOpts{Name: "alignet_drift_flagged_worker_ratio",
			Help: "Share of the study's workers with a quality flag."}),
		lowWorkers: gauge(prometheus.GaugeOpts{Name: "alignet_drift_low_agreement_workers",
			Help: "Workers whose agreement with the teacher is far below the others' (Bonferroni binomial test)."}),
		rt: gauge(prometheus.GaugeOpts{Name: "alignet_drift_response_time_seconds",
			Help: "Response-time quantiles of the study's recent judgments."}, "quantile"),
		taken: gauge(prometheus.GaugeOpts{Name: "alignet_drift_snapshot_timestamp_seconds",
			Help: "When the monitor last computed the study's drift snapshot (Unix seconds)."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "alignet_drift_errors_total",
			Help: "Drift snapshots of a study that could not be computed or stored."}, []string{"study"}),
	}
	for _, p := range []**prometheus.GaugeVec{&m.teacherAcc, &m.teacherRef, &m.teacherLoss, &m.preqAcc, &m.studentAcc, &m.studentRef,
		&m.studentAgree, &m.z, &m.cusum, &m.change, &m.attention, &m.flagged, &m.lowWorkers, &m.rt, &m.taken} {
		g, err := ops.Register(reg, *p)
		if err != nil {
			return nil, err
		}
		*p = g
	}
	var err error
	if m.errors, err = ops.Register(reg, m.errors); err != nil {
		return nil, err
	}
	return m, nil
}

// set sets the gauge of labels to v, or deletes it when v is nil.
func set(g *prometheus.GaugeVec, v *float64, labels ...string) {
	if v == nil {
		g.DeleteLabelValues(labels...)
		return
	}
	g.WithLabelValues(labels...).Set(*v)
}

// observe exports snapshot s, replacing the study's previous series.
func (m *metrics) observe(s alignet.DriftSnapshot) {
	m.forget(s.Study)
	id := s.Study
	for _, sig := range s.Signals {
		switch sig.Name {
		case alignet.SignalTeacherAccuracy:
			set(m.teacherAcc, sig.Value, id)
			set(m.teacherRef, sig.Reference, id)
		case alignet.SignalTeacherLogLoss:
			set(m.teacherLoss, sig.Value, id)
		case alignet.SignalPrequentialAccuracy:
			set(m.preqAcc, sig.Value, id)
		case alignet.SignalStudentAccuracy:
			set(m.studentAcc, sig.Value, id, sig.Student)
			set(m.studentRef, sig.Reference, id, sig.Student)
		case alignet.SignalStudentAgreement:
			set(m.studentAgree, sig.Value, id, sig.Student)
		}
		set(m.z, sig.Z, id, sig.Name, sig.Student)
		set(m.cusum, sig.CUSUM, id, sig.Name, sig.Student)
		flag := 0.0
		if sig.Change {
			flag = 1
		}
		set(m.change, &flag, id, sig.Name, sig.Student)
	}
	q := s.Quality
	set(m.attention, q.FailureRate, id)
	set(m.flagged, q.FlaggedShare, id)
	low := float64(q.LowAgreement)
	set(m.lowWorkers, &low, id)
	if q.RTMillis != nil {
		for _, v := range []struct {
			q  string
			ms float64
		}{{"0.1", q.RTMillis.P10}, {"0.5", q.RTMillis.P50}, {"0.9", q.RTMillis.P90}, {"0.99", q.RTMillis.P99}} {
			sec := v.ms / 1000
			set(m.rt, &sec, id, v.q)
		}
	}
	at := float64(s.TakenAt.UnixMilli()) / 1000
	set(m.taken, &at, id)
}

// forget deletes every series of a study.
func (m *metrics) forget(study string) {
	l := prometheus.Labels{"study": study}
	for _, g := range []*prometheus.GaugeVec{m.teacherAcc, m.teacherRef, m.teacherLoss, m.preqAcc, m.studentAcc, m.studentRef,
		m.studentAgree, m.z, m.cusum, m.change, m.attention, m.flagged, m.lowWorkers, m.rt, m.taken} {
		g.DeletePartialMatch(l)
	}
}
