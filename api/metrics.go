package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the API's Prometheus collectors.
type metrics struct {
	duration *prometheus.HistogramVec
	accepted *prometheus.CounterVec
	rejected *prometheus.CounterVec
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
	}
	for _, c := range []prometheus.Collector{m.duration, m.accepted, m.rejected} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register api metrics: %w", err)
		}
	}
	return m, nil
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
