package ops

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// metricKind is how a metric may be referenced in PromQL.
type metricKind int

const (
	counterOrGauge metricKind = iota
	histogram
)

// registered lists the metric names the alignet code registers. Dashboards
// and alerts may only use these (histograms through their _bucket, _count
// and _sum series).
var registered = map[string]metricKind{
	"alignet_http_request_duration_seconds":  histogram,
	"alignet_judgments_accepted_total":       counterOrGauge,
	"alignet_judgments_rejected_total":       counterOrGauge,
	"alignet_kafka_produce_duration_seconds": histogram,
	"alignet_kafka_produce_errors_total":     counterOrGauge,
	"alignet_consumer_lag":                   counterOrGauge,
	"alignet_judgments_persisted_total":      counterOrGauge,
	"alignet_consumer_batch_size":            histogram,
	"alignet_dead_letters_total":             counterOrGauge,
	"alignet_persist_lag_seconds":            histogram,
	"alignet_db_tx_duration_seconds":         histogram,
	// The API's teacher serving.
	"alignet_predict_triplets_total":               counterOrGauge,
	"alignet_teacher_cache_age_seconds":            counterOrGauge,
	"alignet_teacher_cache_builds_total":           counterOrGauge,
	"alignet_teacher_cache_build_duration_seconds": histogram,
}

var metricRE = regexp.MustCompile(`\balignet_[a-z0-9_]+`)

// checkNames reports every alignet_ series in text that is not a registered
// metric, and returns the registered metrics it references.
func checkNames(t *testing.T, file, text string) map[string]bool {
	t.Helper()
	used := map[string]bool{}
	for _, name := range metricRE.FindAllString(text, -1) {
		if kind, ok := registered[name]; ok && kind == counterOrGauge {
			used[name] = true
			continue
		}
		found := false
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			base, ok := strings.CutSuffix(name, suffix)
			if kind, known := registered[base]; ok && known && kind == histogram {
				used[base] = true
				found = true
			}
		}
		if !found {
			t.Errorf("%s uses %s, which is not a registered metric series", file, name)
		}
	}
	return used
}

type dashboard struct {
	UID    string `json:"uid"`
	Title  string `json:"title"`
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func TestDashboardUsesRegisteredMetrics(t *testing.T) {
	const file = "grafana/dashboards/alignet.json"
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("%s: dashboard needs a uid and a title", file)
	}
	used := map[string]bool{}
	graphs := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		graphs++
		if len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", file, p.Title)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("%s: panel %q has an empty query", file, p.Title)
			}
			if strings.Count(q.Expr, "(") != strings.Count(q.Expr, ")") {
				t.Errorf("%s: panel %q: unbalanced parentheses in %q", file, p.Title, q.Expr)
			}
			for m := range checkNames(t, file, q.Expr) {
				used[m] = true
			}
		}
	}
	if graphs == 0 {
		t.Fatalf("%s: no panels", file)
	}
	var missing []string
	for m := range registered {
		if !used[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s: no panel shows %v", file, missing)
	}
}

func TestAlertsUseRegisteredMetrics(t *testing.T) {
	const file = "prometheus/alerts.yml"
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	used := checkNames(t, file, string(raw))
	// The alerts the operators rely on.
	for _, m := range []string{
		"alignet_http_request_duration_seconds",
		"alignet_kafka_produce_errors_total",
		"alignet_consumer_lag",
		"alignet_dead_letters_total",
		"alignet_judgments_accepted_total",
		"alignet_judgments_persisted_total",
	} {
		if !used[m] {
			t.Errorf("%s: no alert uses %s", file, m)
		}
	}
}

// TestPromtool validates the Prometheus config and rules with promtool when
// it is installed (apt-get install prometheus).
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed")
	}
	dir := t.TempDir()
	for _, f := range []string{"prometheus.yml", "alerts.yml"} {
		raw, err := os.ReadFile(filepath.Join("prometheus", f))
		if err != nil {
			t.Fatal(err)
		}
		// The config names the rules by their path inside the container.
		text := strings.ReplaceAll(string(raw), "/etc/prometheus/", dir+"/")
		if err := os.WriteFile(filepath.Join(dir, f), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"check", "rules", filepath.Join(dir, "alerts.yml")},
		{"check", "config", filepath.Join(dir, "prometheus.yml")},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestComposeAssetsExist checks that every ./ops path docker-compose.yml
// mounts exists.
func TestComposeAssetsExist(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	paths := regexp.MustCompile(`\./ops/[A-Za-z0-9_./-]+`).FindAllString(string(raw), -1)
	if len(paths) == 0 {
		t.Fatal("docker-compose.yml mounts nothing from ./ops")
	}
	for _, p := range paths {
		if _, err := os.Stat(filepath.Join("..", p)); err != nil {
			t.Errorf("docker-compose.yml mounts %s: %v", p, err)
		}
	}
	if _, err := os.Stat("../Dockerfile"); err != nil {
		t.Errorf("docker-compose.yml builds from a missing Dockerfile: %v", err)
	}
}

func TestNewRegistry(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "alignet_test_total", Help: "test"})
	if err := reg.Register(c); err != nil {
		t.Fatalf("register on a fresh registry: %v", err)
	}
	c.Inc()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		seen[f.GetName()] = true
	}
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total", "alignet_test_total"} {
		if !seen[want] {
			t.Errorf("registry does not expose %s", want)
		}
	}
	// Each call gives an independent registry.
	if err := NewRegistry().Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "alignet_test_total", Help: "test"})); err != nil {
		t.Errorf("second registry shares state with the first: %v", err)
	}
}
