package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/alignet/alignet"
)

// metrics are the API's Prometheus collectors.
type metrics struct {
	duration *prometheus.HistogramVec
	accepted *prometheus.CounterVec
	rejected *prometheus.CounterVec

	served       *prometheus.CounterVec
	answers      *prometheus.CounterVec
	rescore      prometheus.Histogram
	logPending   prometheus.Gauge
	logDropped   prometheus.Counter
	logFlush     prometheus.Histogram
	scorerFallen *prometheus.CounterVec
	predicted    prometheus.Counter
	checks       *prometheus.CounterVec
	sessions     *prometheus.CounterVec
}

// Rejection reasons used as the "reason" label of
// alignet_judgments_rejected_total.
const (
	reasonInvalidJSON  = "invalid_json"
	reasonInvalidField = "invalid_field"
	reasonUnknownItem  = "unknown_item"
	reasonUnknownStudy = "unknown_study"
	reasonTooLarge     = "too_large"
	reasonTimeout      = "timeout"
	reasonUnavailable  = "unavailable"
	reasonUnauthorized = "unauthorized"
	reasonForbidden    = "forbidden"
	reasonConflict     = "conflict"
	reasonExpired      = "expired"
	reasonInternal     = "internal"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "alignet_http_request_duration_seconds",
			Help: "Duration of HTTP requests by route template, method and status.",
			Buckets: []float64{.001, .002, .003, .005, .0075, .01, .015, .02, .03, .04, .05,
				.075, .1, .15, .2, .3, .5, .75, 1},
		}, []string{"route", "method", "status"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_judgments_accepted_total",
			Help: "Judgments accepted and acknowledged by the stream, by task.",
		}, []string{"task"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_judgments_rejected_total",
			Help: "Judgment requests rejected, by reason (one per request, whatever the batch size).",
		}, []string{"reason"}),
		predicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alignet_predict_triplets_total",
			Help: "Triplets answered by POST /v1/studies/{study}/predict.",
		}),

		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_queries_served_total",
			Help: "Queries handed to participant sessions for the first time, by kind.",
		}, []string{"kind"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_query_answers_total",
			Help: "Judgments linked to queries, by outcome (bound, repeated, taken, expired, foreign, unknown, mismatch).",
		}, []string{"outcome"}),
		rescore: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "alignet_query_rescore_seconds",
			Help:    "Time to rescore a study's candidate pool under a new teacher.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		logPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "alignet_query_log_pending",
			Help: "Served queries waiting to be written to the query log.",
		}),
		logDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alignet_query_log_dropped_total",
			Help: "Served queries dropped from the query log because its buffer was full (Postgres unavailable for long).",
		}),
		logFlush: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "alignet_query_log_flush_seconds",
			Help:    "Duration of query log writes.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		scorerFallen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_query_scorer_fallbacks_total",
			Help: "Rescorings that used entropy because the study's scorer was not available, by the study's scorer.",
		}, []string{"scorer"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_attention_checks_total",
			Help: "Attention checks answered, by study and result (passed, failed); each check counts once, when its answer is accepted.",
		}, []string{"study", "result"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_sessions_opened_total",
			Help: "Participant session requests answered with a session, by platform and outcome (new, resumed: the worker's open session).",
		}, []string{"platform", "outcome"}),
	}
	for _, c := range []prometheus.Collector{m.duration, m.accepted, m.rejected, m.predicted, m.served, m.answers, m.rescore,
		m.logPending, m.logDropped, m.logFlush, m.scorerFallen, m.checks, m.sessions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register api metrics: %w", err)
		}
	}
	return m, nil
}

// countChecks counts the attention checks among answers whose outcome
// (outcomes[k] of answers[k]) bound them now; repeats were counted when
// they were bound.
func (m *metrics) countChecks(study string, answers []alignet.Answer, outcomes []alignet.AnswerOutcome) {
	for k, a := range answers {
		if a.CheckPassed == nil || outcomes[k] != alignet.AnswerBound {
			continue
		}
		result := "failed"
		if *a.CheckPassed {
			result = "passed"
		}
		m.checks.WithLabelValues(study, result).Inc()
	}
}

func (m *metrics) observe(route, method string, status int, d time.Duration) {
	m.duration.WithLabelValues(route, method, strconv.Itoa(status)).Observe(d.Seconds())
}

// rejectReason maps an API error to a short rejection category.
func rejectReason(e *Error) string {
	switch e.Status {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return reasonInvalidJSON
	case http.StatusRequestEntityTooLarge:
		return reasonTooLarge
	case http.StatusRequestTimeout:
		return reasonTimeout
	case http.StatusUnprocessableEntity:
		if e.Code == CodeUnknownItem {
			return reasonUnknownItem
		}
		return reasonInvalidField
	case http.StatusNotFound:
		return reasonUnknownStudy
	case http.StatusUnauthorized:
		return reasonUnauthorized
	case http.StatusForbidden:
		return reasonForbidden
	case http.StatusServiceUnavailable:
		return reasonUnavailable
	case http.StatusConflict:
		return reasonConflict
	case http.StatusGone:
		return reasonExpired
	}
	return reasonInternal
}

// countRejected counts failed judgment requests, including auth failures.
func (s *Server) countRejected(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		if err != nil {
			s.metrics.rejected.WithLabelValues(rejectReason(toAPIError(err))).Inc()
		}
		return err
	}
}

func (s *Server) metricsHandler() echo.HandlerFunc {
	h := promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{})
	return echo.WrapHandler(h)
}

// teacherCacheMetrics are the teacher cache's collectors.
type teacherCacheMetrics struct {
	builds   *prometheus.CounterVec
	buildDur prometheus.Histogram
	age      *prometheus.Desc
	cache    *TeacherCache
}

func newTeacherCacheMetrics(reg prometheus.Registerer, c *TeacherCache) (*teacherCacheMetrics, error) {
	m := &teacherCacheMetrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alignet_teacher_cache_builds_total",
			Help: "Snapshots of study teachers the API's teacher cache built, by result (ok or error).",
		}, []string{"result"}),
		buildDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "alignet_teacher_cache_build_duration_seconds",
			Help:    "Time to build one teacher snapshot: load what changed and transform every item of the study.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		age: prometheus.NewDesc("alignet_teacher_cache_age_seconds",
			"Seconds since the API's cached teacher of the study was last found current in Postgres; it grows while the cache cannot poll.",
			[]string{"study"}, nil),
		cache: c,
	}
	m.builds.WithLabelValues("ok")
	m.builds.WithLabelValues("error")
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.builds, m.buildDur, m} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register teacher cache metrics: %w", err)
		}
	}
	return m, nil
}

func (m *teacherCacheMetrics) build(err error, d time.Duration) {
	if err != nil {
		m.builds.WithLabelValues("error").Inc()
		return
	}
	m.builds.WithLabelValues("ok").Inc()
	m.buildDur.Observe(d.Seconds())
}

// Describe implements prometheus.Collector for the age gauge.
func (m *teacherCacheMetrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.age }

// Collect implements prometheus.Collector for the age gauge.
func (m *teacherCacheMetrics) Collect(ch chan<- prometheus.Metric) {
	for study, age := range m.cache.ages() {
		ch <- prometheus.MustNewConstMetric(m.age, prometheus.GaugeValue, age.Seconds(), study)
	}
}
