package ops

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/alignet/alignet/internal/testenv"
)

// metricKind is how a metric may be referenced in PromQL.
type metricKind int

const (
	counterOrGauge metricKind = iota
	histogram
)

// registered lists the metric names the alignet code registers. Dashboards
// and alerts may only use these (histograms through their _bucket, _count
// and _sum series); TestRegisteredListsEveryMetric keeps it complete.
var registered = map[string]metricKind{
	"alignet_http_request_duration_seconds":  histogram,
	"alignet_judgments_accepted_total":       counterOrGauge,
	"alignet_judgments_rejected_total":       counterOrGauge,
	"alignet_kafka_produce_duration_seconds": histogram,
	"alignet_kafka_produce_errors_total":     counterOrGauge,
	"alignet_db_tx_duration_seconds":         histogram,
	// The persister.
	"alignet_consumer_lag":                       counterOrGauge,
	"alignet_judgments_persisted_total":          counterOrGauge,
	"alignet_consumer_batch_size":                histogram,
	"alignet_dead_letters_total":                 counterOrGauge,
	"alignet_persist_lag_seconds":                histogram,
	"alignet_persist_errors_total":               counterOrGauge,
	"alignet_persister_stuck":                    counterOrGauge,
	"alignet_persister_oldest_unflushed_seconds": counterOrGauge,
	// The API's teacher serving.
	"alignet_predict_triplets_total":               counterOrGauge,
	"alignet_teacher_cache_age_seconds":            counterOrGauge,
	"alignet_teacher_cache_builds_total":           counterOrGauge,
	"alignet_teacher_cache_build_duration_seconds": histogram,
	// Query selection and participant sessions (the API).
	"alignet_queries_served_total":         counterOrGauge,
	"alignet_query_answers_total":          counterOrGauge,
	"alignet_query_rescore_seconds":        histogram,
	"alignet_query_log_pending":            counterOrGauge,
	"alignet_query_log_dropped_total":      counterOrGauge,
	"alignet_query_log_flush_seconds":      histogram,
	"alignet_query_scorer_fallbacks_total": counterOrGauge,
	"alignet_attention_checks_total":       counterOrGauge,
	"alignet_sessions_opened_total":        counterOrGauge,
	// The learner.
	"alignet_learner_judgments_applied_total":    counterOrGauge,
	"alignet_learner_judgments_skipped_total":    counterOrGauge,
	"alignet_learner_undecodable_messages_total": counterOrGauge,
	"alignet_learner_prequential_accuracy":       counterOrGauge,
	"alignet_learner_prequential_log_loss":       counterOrGauge,
	"alignet_teacher_heldout_accuracy":           counterOrGauge,
	"alignet_teacher_heldout_nll":                counterOrGauge,
	"alignet_teacher_heldout_ece":                counterOrGauge,
	"alignet_learner_freshness_seconds":          counterOrGauge,
	"alignet_learner_consumer_lag":               counterOrGauge,
	"alignet_teacher_refit_duration_seconds":     histogram,
	"alignet_teacher_refits_total":               counterOrGauge,
	"alignet_teacher_versions_total":             counterOrGauge,
	"alignet_learner_step_duration_seconds":      histogram,
	"alignet_learner_flush_duration_seconds":     histogram,
	"alignet_learner_flush_errors_total":         counterOrGauge,
	"alignet_learner_studies":                    counterOrGauge,
	// The trainer and its students.
	"alignet_trainer_regenerations_total":           counterOrGauge,
	"alignet_trainer_regeneration_duration_seconds": histogram,
	"alignet_trainer_stage_duration_seconds":        histogram,
	"alignet_trainer_dataset_triplets":              counterOrGauge,
	"alignet_trainer_dataset_bytes":                 counterOrGauge,
	"alignet_trainer_published_triplets_total":      counterOrGauge,
	"alignet_student_versions_total":                counterOrGauge,
	"alignet_student_train_errors_total":            counterOrGauge,
	"alignet_student_accuracy":                      counterOrGauge,
	"alignet_student_teacher_agreement":             counterOrGauge,
	"alignet_student_refresh_seconds":               counterOrGauge,
	"alignet_student_train_triplets_per_second":     counterOrGauge,
	// The drift monitor.
	"alignet_drift_teacher_accuracy":           counterOrGauge,
	"alignet_drift_teacher_reference_accuracy": counterOrGauge,
	"alignet_drift_teacher_log_loss":           counterOrGauge,
	"alignet_drift_prequential_accuracy":       counterOrGauge,
	"alignet_drift_student_accuracy":           counterOrGauge,
	"alignet_drift_student_reference_accuracy": counterOrGauge,
	"alignet_drift_student_teacher_agreement":  counterOrGauge,
	"alignet_drift_z":                          counterOrGauge,
	"alignet_drift_cusum":                      counterOrGauge,
	"alignet_drift_change":                     counterOrGauge,
	"alignet_drift_attention_failure_ratio":    counterOrGauge,
	"alignet_drift_flagged_worker_ratio":       counterOrGauge,
	"alignet_drift_low_agreement_workers":      counterOrGauge,
	"alignet_drift_response_time_seconds":      counterOrGauge,
	"alignet_drift_snapshot_timestamp_seconds": counterOrGauge,
	"alignet_drift_errors_total":               counterOrGauge,
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

// registrationRE finds the metric names the code registers: the Name of
// prometheus Opts and the first argument of prometheus.NewDesc.
var registrationRE = regexp.MustCompile(`(?:\bName:\s*|NewDesc\(\s*)"(alignet_[a-z0-9_]+)"`)

// TestRegisteredListsEveryMetric checks that every metric the non-test
// code of the module registers is in registered, so a new metric cannot
// be left out of the dashboard.
func TestRegisteredListsEveryMetric(t *testing.T) {
	found := map[string]string{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range registrationRE.FindAllStringSubmatch(string(src), -1) {
			found[m[1]] = path
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, path := range found {
		if _, ok := registered[name]; !ok {
			t.Errorf("%s registers %s, which ops/assets_test.go does not list (add it, and a panel that shows it)", path, name)
		}
	}
	for name := range registered {
		if _, ok := found[name]; !ok {
			t.Errorf("registered lists %s, which no code registers", name)
		}
	}
}

// panel is a Grafana panel; rows may hold their panels (when collapsed).
type panel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

// dashboardFiles returns the provisioned dashboards.
func dashboardFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("grafana/dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in grafana/dashboards (%v)", err)
	}
	return files
}

func TestDashboardUsesRegisteredMetrics(t *testing.T) {
	used := map[string]bool{}
	uids := map[string]string{}
	for _, file := range dashboardFiles(t) {
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
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s have the same uid %q", other, file, d.UID)
		}
		uids[d.UID] = file
		graphs := 0
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				if p.Type == "row" {
					walk(p.Panels)
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
		}
		walk(d.Panels)
		if graphs == 0 {
			t.Errorf("%s: no panels", file)
		}
	}
	var missing []string
	for m := range registered {
		if !used[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no dashboard panel shows %v", missing)
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
		"alignet_judgments_rejected_total",
		"alignet_kafka_produce_errors_total",
		"alignet_consumer_lag",
		"alignet_dead_letters_total",
		"alignet_judgments_accepted_total",
		"alignet_judgments_persisted_total",
		"alignet_persister_stuck",
		"alignet_learner_freshness_seconds",
		"alignet_learner_consumer_lag",
		"alignet_trainer_regenerations_total",
		"alignet_student_train_errors_total",
		// Alignment and student drift: the drift monitor's change points.
		"alignet_drift_change",
		"alignet_attention_checks_total",
	} {
		if !used[m] {
			t.Errorf("%s: no alert uses %s", file, m)
		}
	}
}

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string            `yaml:"alert"`
			Record string            `yaml:"record"`
			Expr   string            `yaml:"expr"`
			Labels map[string]string `yaml:"labels"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleTestFile is the part of a promtool test file the tests read.
type ruleTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// TestAlertRulesHaveTests checks that every alert has a promtool test case
// that fires it and one that keeps it quiet, that the tests name only
// alerts that exist (promtool passes a quiet case of a missing alert), and
// that every alert has a severity.
func TestAlertRulesHaveTests(t *testing.T) {
	var rules ruleFile
	readYAML(t, "prometheus/alerts.yml", &rules)
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if alerts[r.Alert] {
				t.Errorf("alert %s is defined twice", r.Alert)
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "page" && s != "warn" {
				t.Errorf("alert %s: severity %q, want page or warn", r.Alert, s)
			}
		}
	}
	files, err := filepath.Glob("prometheus/tests/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool tests in prometheus/tests (%v)", err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, f := range files {
		var tf ruleTestFile
		readYAML(t, f, &tf)
		if !slices.Equal(tf.RuleFiles, []string{"../alerts.yml"}) {
			t.Errorf("%s: rule_files %v, want [../alerts.yml]", f, tf.RuleFiles)
		}
		for _, tc := range tf.Tests {
			for _, a := range tc.AlertRuleTest {
				if !alerts[a.Alertname] {
					t.Errorf("%s tests alert %q, which alerts.yml does not define", f, a.Alertname)
				}
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
		}
	}
	for a := range alerts {
		if !fires[a] {
			t.Errorf("alert %s has no promtool test case that fires it", a)
		}
		if !quiet[a] {
			t.Errorf("alert %s has no promtool test case that keeps it quiet", a)
		}
	}
}

// TestPromtool validates the Prometheus config and rules and runs the
// rules' unit tests (prometheus/tests) with promtool, from Debian's
// prometheus package (scripts/test.sh installs it).
func TestPromtool(t *testing.T) {
	promtool := testenv.Tool(t, "promtool", "apt-get install prometheus")
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
	tests, err := filepath.Glob("prometheus/tests/*.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"check", "rules", filepath.Join(dir, "alerts.yml")},
		{"check", "config", filepath.Join(dir, "prometheus.yml")},
		append([]string{"test", "rules"}, tests...),
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
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
