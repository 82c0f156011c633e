package ops

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterReusesIdenticalCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	newCounter := func() prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"})
	}
	a, err := Register(reg, newCounter())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Register(reg, newCounter())
	if err != nil {
		t.Fatal(err)
	}
	a.Inc()
	b.Inc()
	if a != b {
		t.Fatal("second registration did not return the registered collector")
	}
	// A different collector under the same name is a conflict.
	if _, err := Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "x_total", Help: "other"})); err == nil {
		t.Fatal("conflicting collector registered without error")
	}
	if c, err := Register(nil, newCounter()); err != nil || c == nil {
		t.Fatalf("nil registerer: %v %v", c, err)
	}
}
