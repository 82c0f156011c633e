package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.yaml.in/yaml/v3"

	"github.com/alignet/alignet/client"
	"github.com/alignet/alignet/internal/testenv"
)

// TestDashboardsAndAlertsOnRealPrometheus runs a stack with every role
// (api, persister, learner, trainer) in its own process, scraped every
// second by a real Prometheus (Debian's package) that loads
// ops/prometheus/alerts.yml. It drives it with `alignet loadgen` on a
// study with embeddings (so the learner trains, refits and stores
// versions), gives the study a generation pool and a student (so the
// trainer regenerates and distils), runs participant sessions that answer
// attention checks (query selection, with a scorer that falls back),
// provokes the events some panels and alerts count (a rejected request, a
// dead letter, a 503), and then checks, through Prometheus's
// HTTP API, every panel expression of ops/grafana/dashboards/*.json and
// every alert expression. The rule, so that a misspelt metric or label
// fails:
//
//   - the expression returns at least one series; for an alert, each side
//     of its top-level comparisons, within each operand of its top-level
//     and/or/unless, does (alertSides: the thresholds are dropped);
//   - every vector selector in it, with all its matchers, returns at least
//     one series on its own (so `x or vector(0)` cannot hide a misspelt x);
//   - every label of a by, without, on, ignoring or group_left/right
//     clause is carried by at least one of its selectors (a misspelt
//     grouping label would otherwise just aggregate everything).
//
// Template variables are replaced by real values: $__rate_interval and
// its kin by one minute, query variables by a value Prometheus has for
// them (the load's study when there is a choice).
//
// It also checks that with ALIGNET_METRICS_LISTEN set, /metrics is served
// on that address and not on the public one.
func TestDashboardsAndAlertsOnRealPrometheus(t *testing.T) {
	e := setup(t)
	promBin := testenv.Tool(t, "prometheus", "apt-get install prometheus")
	s := newStack(t, e, e.brokers)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	topics := []string{"ALIGNET_LEARNER_GROUP=" + s.topic + ".learner", "ALIGNET_KAFKA_TRIPLETS_TOPIC=" + s.topic + ".triplets"}
	persister := s.start("persister", topics...)
	learner := s.start("learner", topics...)
	trainer := s.start("trainer", topics...)
	api := s.start("api", append(topics, "ALIGNET_METRICS_LISTEN="+metricsAddr, "ALIGNET_MAX_EXPORTS=1", "ALIGNET_DRIFT_INTERVAL=1s")...)
	checkMetricsExposure(t, api.url(), "http://"+metricsAddr)
	prom := startPrometheus(t, promBin, map[string]string{"api": metricsAddr, "persister": persister.addr,
		"learner": learner.addr, "trainer": trainer.addr})
	waitReady(t, api.url())

	const study, student = "promstudy", "s1"
	// Random 16-dimensional embeddings (space loadgen-16); loadgen waits
	// until the learner has counted every judgment.
	rep := runLoadgen(t, e.bin, api.url(), s.adminKey, study, "--freshness", "--dim", "16")
	ctx := context.Background()
	c := client.New(api.url(), s.adminKey, nil)
	// The disagreement scorer with a student that is never registered
	// falls back to entropy at every rescoring.
	var checks []map[string]any
	for i := range 5 {
		items := []string{fmt.Sprintf("item-%d", 3*i), fmt.Sprintf("item-%d", 3*i+1), fmt.Sprintf("item-%d", 3*i+2)}
		checks = append(checks, map[string]any{"items": items, "answer": items[2]})
	}
	if err := c.PatchStudySettings(ctx, study, map[string]any{
		"trainer": map[string]any{"triplets": 20000, "min_interval": "1s"},
		"queries": map[string]any{"scorer": "disagreement", "student": "absent",
			"mix": map[string]any{"active": 0.6, "random": 0.1, "repeat": 0.1, "check": 0.2}},
		"checks": checks,
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.PutPool(ctx, study, "loadgen-16", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateStudent(ctx, study, student, "loadgen-16"); err != nil {
		t.Fatal(err)
	}
	answered := runSessions(t, c, study, 12)
	provokeEvents(t, s, api.url(), study)
	s.waitStudent(api.url(), study, student, 1, 2*time.Minute)
	// Judgments after the promotion: the drift monitor scores the student
	// on the held-out ones received after its current version, so the
	// trainer makes no newer one meanwhile.
	if err := c.PatchStudySettings(ctx, study, map[string]any{"trainer": map[string]any{"min_interval": "1h"}}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for b := range 30 {
		js := make([]client.Judgment, 100)
		for i := range js {
			p := rng.Perm(300)[:3]
			items := []string{fmt.Sprintf("item-%d", p[0]), fmt.Sprintf("item-%d", p[1]), fmt.Sprintf("item-%d", p[2])}
			js[i] = client.Judgment{Worker: fmt.Sprintf("late-%d", b%5), Items: items, Odd: items[rng.IntN(3)], RTMs: 900}
		}
		if _, err := c.PostJudgments(ctx, study, js); err != nil {
			t.Fatal(err)
		}
		rep.Accepted += int64(len(js))
	}
	// Everything must have reached Prometheus before the checks, the
	// provoked events and what only the sessions and the trainer make in
	// enough samples for rate().
	prom.waitFor(t, fmt.Sprintf("sum(alignet_judgments_persisted_total) >= %d", rep.Accepted+answered))
	prom.waitFor(t, fmt.Sprintf("sum(alignet_learner_judgments_applied_total) + sum(alignet_learner_judgments_skipped_total) >= %d", rep.Accepted+answered))
	for _, event := range []string{
		`alignet_judgments_rejected_total`,
		`alignet_dead_letters_total`,
		`alignet_learner_undecodable_messages_total > 0`,
		`alignet_http_request_duration_seconds_count{status="503"}`,
		`alignet_attention_checks_total{result="failed"}`,
		`alignet_attention_checks_total{result="passed"}`,
		`alignet_query_scorer_fallbacks_total`,
		`alignet_trainer_regenerations_total{result="ok"} > 0`,
		`alignet_student_teacher_agreement`,
		`alignet_student_accuracy`,
		`alignet_drift_teacher_accuracy`,
		`alignet_drift_student_accuracy`,
		`alignet_drift_student_teacher_agreement`,
	} {
		prom.waitFor(t, "count_over_time(("+event+")[1m:1s]) >= 3")
	}

	ch := &checker{t: t, prom: prom}
	vars := dashboardVars(t, prom, study)
	panels := 0
	for _, file := range dashboardFiles(t) {
		for _, q := range dashboardQueries(t, file) {
			expr, err := substitute(q.expr, vars[file])
			if err != nil {
				t.Errorf("%s: panel %q: %v", file, q.panel, err)
				continue
			}
			ch.check(fmt.Sprintf("%s: panel %q", filepath.Base(file), q.panel), expr, []string{expr})
			panels++
		}
	}
	alerts := 0
	for _, r := range prom.alertRules(t) {
		where := "alert " + r.Name
		if r.Health == "err" || r.LastError != "" {
			t.Errorf("%s: Prometheus cannot evaluate it: %s", where, r.LastError)
		}
		sides, err := alertSides(r.Query)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		ch.check(where, r.Query, sides)
		alerts++
	}
	if want := alertCount(t); alerts != want {
		t.Errorf("Prometheus loaded %d alert rules, alerts.yml has %d", alerts, want)
	}
	t.Logf("loadgen: %d judgments accepted at %.0f/s, %d answers in sessions; checked %d panel and %d alert expressions with %d distinct queries",
		rep.Accepted, rep.JudgmentsPerSec, answered, panels, alerts, len(ch.cache))
}

// runSessions runs n participant sessions of study to completion, each
// answering its queries at random (so about a third of the attention
// checks pass), and returns the number of judgments accepted.
func runSessions(t *testing.T, c *client.Client, study string, n int) int64 {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	var accepted int64
	for p := range n {
		worker := fmt.Sprintf("prom-worker-%d", p)
		sess, err := c.OpenSession(ctx, study, worker, "generic", nil)
		if err != nil {
			t.Fatal(err)
		}
		for {
			nx, err := c.Next(ctx, study, sess.ID, 10)
			if err != nil {
				t.Fatal(err)
			}
			if nx.Complete || len(nx.Queries) == 0 {
				break
			}
			js := make([]client.Judgment, len(nx.Queries))
			for i, q := range nx.Queries {
				js[i] = client.Judgment{Worker: worker, Items: q.Items[:], Odd: q.Items[rng.IntN(3)], RTMs: 800 + rng.IntN(2000), QueryID: q.QueryID}
			}
			if _, err := c.PostJudgments(ctx, study, js); err != nil {
				t.Fatal(err)
			}
			accepted += int64(len(js))
		}
	}
	return accepted
}

// checkMetricsExposure checks that /metrics is on the metrics address, not
// on the public one.
func checkMetricsExposure(t *testing.T, public, metrics string) {
	t.Helper()
	get := func(u string) (int, string) {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(public + "/metrics"); code != http.StatusNotFound {
		t.Errorf("GET %s/metrics with ALIGNET_METRICS_LISTEN set: %d, want 404", public, code)
	}
	code, body := get(metrics + "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "alignet_http_request_duration_seconds") {
		t.Errorf("GET %s/metrics: %d without the API's metrics", metrics, code)
	}
}

// loadReport is the part of `alignet loadgen --json` the test reads.
type loadReport struct {
	Accepted        int64   `json:"judgments_accepted"`
	JudgmentsPerSec float64 `json:"judgments_per_second"`
	Verified        bool    `json:"verified"`
}

// runLoadgen drives the API with `alignet loadgen` on study until it is
// done and every accepted judgment is stored.
func runLoadgen(t *testing.T, bin, server, key, study string, extra ...string) loadReport {
	t.Helper()
	args := append([]string{"loadgen", "--server", server, "--key", key, "--study", study,
		"--workers", "8", "--batch", "10", "--judgments", "10000", "--rate", "2000", "--items", "300", "--json"}, extra...)
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("alignet loadgen: %v\n%s\n%s", err, out, tail(stderr.String(), 2000))
	}
	var rep loadReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("loadgen report: %v\n%s", err, out)
	}
	if !rep.Verified || rep.Accepted == 0 {
		t.Fatalf("loadgen did not verify: %s", out)
	}
	return rep
}

// provokeEvents makes the stack count what a healthy load does not: a
// rejected judgment, an undecodable message (dead-lettered), a predict
// call, and a 503 (an export while the only export slot is taken).
func provokeEvents(t *testing.T, s *stack, base, study string) {
	t.Helper()
	ctx := context.Background()
	c := client.New(base, s.adminKey, nil)
	if _, err := c.PostJudgment(ctx, study, client.Judgment{ID: "bad-1", Worker: "w", Items: []string{"item-0", "item-1", "item-1"}, Odd: "item-0"}); err == nil {
		t.Fatal("an invalid judgment was accepted")
	}
	w := &kafka.Writer{Addr: kafka.TCP(strings.Split(s.brokers, ",")...), Topic: s.topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(study), Value: []byte("not a judgment batch")}); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	resp, err := authed(http.MethodPost, base+"/v1/studies/"+study+"/predict", s.adminKey,
		`{"triplets":[["item-0","item-1","item-2"]]}`)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	// The export slot is held by an export waiting for a lock on the
	// judgments table; a second export is refused with 503.
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "LOCK TABLE judgments IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() {
		resp, err := authed(http.MethodGet, base+"/v1/studies/"+study+"/judgments", s.adminKey, "")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		first <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for waiting := 0; waiting == 0; {
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'judgments'::regclass`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the first export never waited for the judgments table")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err = authed(http.MethodGet, base+"/v1/studies/"+study+"/judgments", s.adminKey, "")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second export while the only slot is taken: %d, want 503", resp.StatusCode)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first export: %v", err)
	}
}

// authed sends one request with the API key.
func authed(method, u, key, body string) (*http.Response, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return http.DefaultClient.Do(req)
}

// promServer is a running Prometheus.
type promServer struct {
	url string
}

// startPrometheus starts Prometheus on a free port, scraping every second
// the alignet processes at targets (role → address) as job alignet, as
// ops/prometheus/prometheus.yml does, and loading ops/prometheus/alerts.yml.
func startPrometheus(t *testing.T, bin string, targets map[string]string) *promServer {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs("../ops/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var static strings.Builder
	names := make([]string, 0, len(targets))
	for name := range targets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(&static, "      - targets: [%q]\n", targets[name])
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: alignet
    static_configs:
%s`, rules, static.String())
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log (tail):\n%s", tail(string(b), 3000))
		}
	})
	p := &promServer{url: "http://" + addr}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case err := <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("prometheus exited: %v\n%s", err, tail(string(b), 3000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus did not become ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// get calls Prometheus's HTTP API and decodes its data into out.
func (p *promServer) get(path string, params url.Values, out any) error {
	resp, err := http.Get(p.url + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %d: %w", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s", body.Error)
	}
	return json.Unmarshal(body.Data, out)
}

// series evaluates expr now and returns the number of series (or 1 for a
// scalar or string).
func (p *promServer) series(expr string) (int, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return 0, err
	}
	if data.ResultType == "scalar" || data.ResultType == "string" {
		return 1, nil
	}
	var rs []json.RawMessage
	if err := json.Unmarshal(data.Result, &rs); err != nil {
		return 0, err
	}
	return len(rs), nil
}

// waitFor waits until expr returns a series.
func (p *promServer) waitFor(t *testing.T, expr string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		n, err := p.series(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus has no series for %s after a minute", expr)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// alertRule is an alerting rule as Prometheus loaded it.
type alertRule struct {
	Name      string `json:"name"`
	Query     string `json:"query"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// alertRules returns the alerting rules Prometheus loaded, once it has
// evaluated every one of them.
func (p *promServer) alertRules(t *testing.T) []alertRule {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var data struct {
			Groups []struct {
				Rules []alertRule `json:"rules"`
			} `json:"groups"`
		}
		if err := p.get("/api/v1/rules", url.Values{"type": {"alert"}}, &data); err != nil {
			t.Fatal(err)
		}
		var out []alertRule
		pending := false
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				out = append(out, r)
				pending = pending || r.Health == "unknown"
			}
		}
		if !pending || time.Now().After(deadline) {
			return out
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// alertCount returns the number of alerts ops/prometheus/alerts.yml defines.
func alertCount(t *testing.T) int {
	t.Helper()
	raw, err := os.ReadFile("../ops/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				n++
			}
		}
	}
	return n
}

// checker applies the test's rule to expressions, asking Prometheus each
// distinct query once.
type checker struct {
	t     *testing.T
	prom  *promServer
	cache map[string]int
}

func (c *checker) series(expr string) (int, error) {
	if n, ok := c.cache[expr]; ok {
		return n, nil
	}
	n, err := c.prom.series(expr)
	if err != nil {
		return 0, err
	}
	if c.cache == nil {
		c.cache = map[string]int{}
	}
	c.cache[expr] = n
	return n, nil
}

// check applies the rule to expr, whose wholes must each return series.
func (c *checker) check(where, expr string, wholes []string) {
	t := c.t
	t.Helper()
	for _, w := range wholes {
		if n, err := c.series(w); err != nil {
			t.Errorf("%s: %s: %v", where, w, err)
		} else if n == 0 {
			t.Errorf("%s: %s returns no series", where, w)
		}
	}
	parts, err := analysePromQL(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	if len(parts.selectors) == 0 {
		t.Errorf("%s: %s selects no metric", where, expr)
	}
	for _, s := range parts.selectors {
		if n, err := c.series(s.String()); err != nil {
			t.Errorf("%s: %s: %v", where, s, err)
		} else if n == 0 {
			t.Errorf("%s: %s selects no series (misspelt metric, label or value?)", where, s)
		}
	}
	for _, l := range parts.labels {
		found := false
		for _, s := range parts.selectors {
			if n, err := c.series("count(" + s.with(l, "!=", `""`).String() + ")"); err == nil && n > 0 {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s: no selector of %s has the label %q it groups or matches by", where, expr, l)
		}
	}
}

// panelQuery is one query of a dashboard panel.
type panelQuery struct {
	panel, expr string
}

// grafanaPanel is a panel of a dashboard; rows may hold their panels.
type grafanaPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

// grafanaDashboard is the part of a dashboard the test reads.
type grafanaDashboard struct {
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name    string `json:"name"`
			Type    string `json:"type"`
			Query   any    `json:"query"`
			Current struct {
				Value any `json:"value"`
			} `json:"current"`
			Options []struct {
				Value any `json:"value"`
			} `json:"options"`
		} `json:"list"`
	} `json:"templating"`
}

func dashboardFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../ops/grafana/dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in ops/grafana/dashboards (%v)", err)
	}
	return files
}

func readDashboard(t *testing.T, file string) grafanaDashboard {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return d
}

// dashboardQueries returns every query of every panel of file.
func dashboardQueries(t *testing.T, file string) []panelQuery {
	t.Helper()
	var out []panelQuery
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, q := range p.Targets {
				out = append(out, panelQuery{p.Title, q.Expr})
			}
		}
	}
	walk(readDashboard(t, file).Panels)
	return out
}

// builtinVars are Grafana's own variables.
var builtinVars = map[string]string{
	"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300", "__range_ms": "300000",
}

// labelValuesRE reads label_values(selector, label) and label_values(label).
var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(?:(.+?)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// dashboardVars resolves the template variables of every dashboard to a
// value: query variables to a value Prometheus has (prefer, when it is one
// of them), others to their current or first option.
func dashboardVars(t *testing.T, prom *promServer, prefer string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for _, file := range dashboardFiles(t) {
		vars := map[string]string{}
		for _, v := range readDashboard(t, file).Templating.List {
			query := ""
			switch q := v.Query.(type) {
			case string:
				query = q
			case map[string]any:
				query, _ = q["query"].(string)
			}
			var val string
			switch v.Type {
			case "query":
				q, err := substitute(query, vars)
				if err != nil {
					t.Fatalf("%s: variable %s: %v", file, v.Name, err)
				}
				m := labelValuesRE.FindStringSubmatch(q)
				if m == nil {
					t.Fatalf("%s: variable %s: cannot evaluate %q (want label_values(...))", file, v.Name, q)
				}
				params := url.Values{}
				if m[1] != "" {
					params.Set("match[]", m[1])
				}
				var values []string
				if err := prom.get("/api/v1/label/"+m[2]+"/values", params, &values); err != nil {
					t.Fatalf("%s: variable %s: %v", file, v.Name, err)
				}
				if len(values) == 0 {
					t.Errorf("%s: variable %s: Prometheus has no values for %s", file, v.Name, q)
					continue
				}
				val = values[0]
				if slices.Contains(values, prefer) {
					val = prefer
				}
			case "datasource":
				val = "prometheus"
			case "constant", "textbox":
				val = query
			default: // custom, interval
				val = fmt.Sprint(v.Current.Value)
				if (v.Current.Value == nil || val == "") && len(v.Options) > 0 {
					val = fmt.Sprint(v.Options[0].Value)
				}
			}
			if val == "$__all" || val == "All" {
				val = ".*"
			}
			vars[v.Name] = val
		}
		out[file] = vars
	}
	return out
}

// varRE finds Grafana variable references: $name, ${name}, ${name:format}
// and [[name]].
var varRE = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

// substitute replaces the variables of expr by their values in vars or
// builtinVars; an unknown variable is an error.
func substitute(expr string, vars map[string]string) (string, error) {
	var unknown []string
	out := varRE.ReplaceAllStringFunc(expr, func(ref string) string {
		m := varRE.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		if v, ok := vars[name]; ok {
			return v
		}
		if v, ok := builtinVars[name]; ok {
			return v
		}
		unknown = append(unknown, name)
		return ref
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown template variables %v in %q", unknown, expr)
	}
	return out, nil
}

func TestSubstitute(t *testing.T) {
	got, err := substitute(`rate(x{study=~"$study", w="${worker:regex}", k="[[kind]]"}[$__rate_interval])`,
		map[string]string{"study": "s1", "worker": "w1", "kind": "k"})
	if want := `rate(x{study=~"s1", w="w1", k="k"}[1m])`; err != nil || got != want {
		t.Errorf("substitute = %q, %v; want %q", got, err, want)
	}
	if _, err := substitute(`x{a="$nope"}`, nil); err == nil {
		t.Error("unknown variable accepted")
	}
}
