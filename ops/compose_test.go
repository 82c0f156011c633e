package ops_test

import (
	"flag"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/alignet/alignet/internal/server"
	"github.com/alignet/alignet/internal/testenv"
)

// allRoles are the roles `alignet serve` runs; the compose file must run
// each of them somewhere.
var allRoles = server.DevRoles()

// composeFile is the part of docker-compose.yml the tests read (yaml v3
// resolves the file's anchors and merge keys as compose does).
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
	} `yaml:"services"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// TestComposeConfig validates docker-compose.yml with Debian's
// docker-compose (it needs no engine; scripts/test.sh installs it).
func TestComposeConfig(t *testing.T) {
	bin := testenv.Tool(t, "docker-compose", "apt-get install --no-install-recommends docker-compose")
	cmd := exec.Command(bin, "-f", "../docker-compose.yml", "config", "-q")
	cmd.Env = append(os.Environ(), "ALIGNET_ADMIN_KEY=alg_admin_compose_check", "ALIGNET_PSEUDONYM_KEY=compose-check-pseudonym")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
}

// TestComposeRunsEveryRole checks that the alignet services of
// docker-compose.yml have configurations `alignet serve` accepts, that
// together they run every role, and that Prometheus scrapes each of them
// on its metrics address.
func TestComposeRunsEveryRole(t *testing.T) {
	c := readCompose(t)
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	raw, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &prom); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.JobName != "alignet" {
			continue
		}
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	ran := map[string]bool{}
	var scraped []string
	for name, svc := range c.Services {
		if svc.Image != "alignet:latest" {
			continue
		}
		if len(svc.Command) == 0 || svc.Command[0] != "serve" {
			t.Errorf("service %s runs %v, want serve", name, svc.Command)
			continue
		}
		env := func(k string) string {
			v := svc.Environment[k]
			if strings.HasPrefix(v, "${") { // a variable the user must set
				return "compose-check-value-" + k
			}
			return v
		}
		var cfg server.Config
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg.Bind(fs, env)
		if err := fs.Parse(svc.Command[1:]); err != nil {
			t.Errorf("service %s: %v", name, err)
			continue
		}
		if err := cfg.Resolve(); err != nil {
			t.Errorf("service %s: alignet serve would refuse its configuration: %v", name, err)
			continue
		}
		for _, r := range cfg.Roles {
			ran[r] = true
		}
		metrics := cfg.MetricsListen
		if metrics == "" {
			if slices.Contains(cfg.Roles, server.RoleAPI) {
				t.Errorf("service %s serves /metrics on its public address: set ALIGNET_METRICS_LISTEN", name)
			}
			metrics = cfg.Listen
		}
		_, port, err := net.SplitHostPort(metrics)
		if err != nil {
			t.Errorf("service %s: metrics address %q: %v", name, metrics, err)
			continue
		}
		target := name + ":" + port
		scraped = append(scraped, target)
		if !slices.Contains(targets, target) {
			t.Errorf("prometheus.yml does not scrape service %s at %s (targets %v)", name, target, targets)
		}
	}
	for _, r := range allRoles {
		if !ran[r] {
			t.Errorf("no service of docker-compose.yml runs the %s role", r)
		}
	}
	for _, tg := range targets {
		if !slices.Contains(scraped, tg) {
			t.Errorf("prometheus.yml scrapes %s, which is no alignet service's metrics address", tg)
		}
	}
}

// TestComposeMountsAssets checks that Prometheus gets the scrape config
// and the alert rules where the config names them, and Grafana the
// provisioning and the dashboards.
func TestComposeMountsAssets(t *testing.T) {
	c := readCompose(t)
	mounts := func(service string) map[string]string { // container path → host path
		out := map[string]string{}
		for _, v := range c.Services[service].Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && strings.HasPrefix(parts[0], "./") {
				out[parts[1]] = parts[0]
			}
		}
		return out
	}
	raw, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var prom struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	if err := yaml.Unmarshal(raw, &prom); err != nil {
		t.Fatal(err)
	}
	pm := mounts("prometheus")
	want := map[string]string{"/etc/prometheus/prometheus.yml": "./ops/prometheus/prometheus.yml"}
	for _, rf := range prom.RuleFiles {
		want[rf] = "./ops/prometheus/" + path.Base(rf)
	}
	for in, host := range want {
		if pm[in] != host {
			t.Errorf("prometheus service mounts %q at %s, want %s", pm[in], in, host)
		}
	}
	gm := mounts("grafana")
	for in, host := range map[string]string{
		"/etc/grafana/provisioning/datasources": "./ops/grafana/provisioning/datasources",
		"/etc/grafana/provisioning/dashboards":  "./ops/grafana/provisioning/dashboards",
		"/etc/grafana/dashboards":               "./ops/grafana/dashboards",
	} {
		if gm[in] != host {
			t.Errorf("grafana service mounts %q at %s, want %s", gm[in], in, host)
		}
	}
}

// TestDockerfileGoVersion checks that the Dockerfile builds with the Go
// release go.mod asks for.
func TestDockerfileGoVersion(t *testing.T) {
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if want := "FROM golang:" + string(m[1]) + "-"; !strings.Contains(string(df), want) {
		t.Errorf("Dockerfile does not build with %s (go.mod: go %s)", want, m[1])
	}
}
