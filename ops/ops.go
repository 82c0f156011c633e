// Package ops holds alignet's operational assets: the metrics registry the
// binary serves on /metrics, and, as files beside this package, the Prometheus
// scrape config and alert rules (ops/prometheus/), the Grafana provisioning and
// dashboard (ops/grafana/) used by the repository's docker-compose.yml.
//
// Every metric name used by the dashboard and the alerts is one the code
// registers; assets_test.go checks this so that renaming a metric breaks the
// build rather than a dashboard.
package ops

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a fresh registry with the Go runtime and process
// collectors registered. Components register their own metrics on it; the
// global default registry is never used.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Register registers c on r and returns it, or returns the identical
// collector already registered there (for example by a second component of
// the same kind on one registry). A nil r registers nothing.
func Register[C prometheus.Collector](r prometheus.Registerer, c C) (C, error) {
	if r == nil {
		return c, nil
	}
	if err := r.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metric: %w", err)
	}
	return c, nil
}
