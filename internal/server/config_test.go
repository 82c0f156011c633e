package server

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet/api"
)

func bind(t *testing.T, env map[string]string, args ...string) (*Config, error) {
	t.Helper()
	var cfg Config
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.Bind(fs, func(k string) string { return env[k] })
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &cfg, cfg.Resolve()
}

func TestConfigFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(keyFile, []byte("alg_from_file_0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := bind(t, map[string]string{
		"ALIGNET_LISTEN":         "127.0.0.1:9999",
		"DATABASE_URL":           "postgres://x/y",
		"KAFKA_BROKERS":          "a:1, b:2",
		"ALIGNET_ADMIN_KEY_FILE": keyFile,
		"ALIGNET_PSEUDONYM_KEY":  "0123456789abcdef",
		"ALIGNET_PRODUCE_LINGER": "5ms",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9999" || !reflect.DeepEqual(cfg.KafkaBrokers, []string{"a:1", "b:2"}) {
		t.Fatalf("listen/brokers = %q %v", cfg.Listen, cfg.KafkaBrokers)
	}
	if cfg.AdminKey != "alg_from_file_0123456789" {
		t.Fatalf("admin key from file = %q", cfg.AdminKey)
	}
	if cfg.Linger != 5*time.Millisecond || cfg.Partitions != 6 || !reflect.DeepEqual(cfg.Roles, []string{"api", "persister"}) {
		t.Fatalf("defaults wrong: %+v", cfg)
	}
}

func TestFlagsOverrideEnvironment(t *testing.T) {
	cfg, err := bind(t, map[string]string{
		"DATABASE_URL": "postgres://env", "KAFKA_BROKERS": "env:1", "ALIGNET_ROLES": "api",
	}, "--database-url", "postgres://flag", "--kafka-brokers", "flag:1", "--roles", "persister")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DatabaseURL != "postgres://flag" || cfg.KafkaBrokers[0] != "flag:1" || cfg.Roles[0] != "persister" {
		t.Fatalf("flags did not win: %+v", cfg)
	}
}

func TestResolveNamesEveryProblem(t *testing.T) {
	_, err := bind(t, map[string]string{"ALIGNET_ROLES": "api,learner,teacher", "ALIGNET_PSEUDONYM_KEY": "short"})
	if err == nil {
		t.Fatal("expected errors")
	}
	for _, want := range []string{"DATABASE_URL", "KAFKA_BROKERS", "ALIGNET_PSEUDONYM_KEY", `unknown role "teacher"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestLearnerRole(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://x", "KAFKA_BROKERS": "a:1", "ALIGNET_PSEUDONYM_KEY": "0123456789abcdef"}
	cfg, err := bind(t, base)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LearnerGroup != "alignet-learner" || cfg.has(RoleLearner) {
		t.Fatalf("serve defaults: group %q, roles %v", cfg.LearnerGroup, cfg.Roles)
	}
	if got := withDevRoles(*cfg).Roles; !reflect.DeepEqual(got, []string{"api", "persister", "learner", "trainer"}) {
		t.Fatalf("dev roles %v, want api, persister, learner, trainer", got)
	}
	env := map[string]string{"ALIGNET_ROLES": "learner", "ALIGNET_LEARNER_GROUP": "g2"}
	for k, v := range base {
		env[k] = v
	}
	cfg, err = bind(t, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LearnerGroup != "g2" || !reflect.DeepEqual(withDevRoles(*cfg).Roles, []string{"learner"}) {
		t.Fatalf("explicit roles: group %q, dev roles %v", cfg.LearnerGroup, withDevRoles(*cfg).Roles)
	}
	cfg, err = bind(t, base, "--roles", "api,persister")
	if err != nil {
		t.Fatal(err)
	}
	if got := withDevRoles(*cfg).Roles; !reflect.DeepEqual(got, []string{"api", "persister"}) {
		t.Fatalf("dev with --roles api,persister runs %v", got)
	}
}

func TestRedactURL(t *testing.T) {
	if got := redactURL("postgres://u:secret@h:5432/db"); strings.Contains(got, "secret") {
		t.Fatalf("password not redacted: %s", got)
	}
}

func TestMalformedEnvironmentIsAnError(t *testing.T) {
	_, err := bind(t, map[string]string{
		"DATABASE_URL": "postgres://x/y", "KAFKA_BROKERS": "a:1", "ALIGNET_PSEUDONYM_KEY": "0123456789abcdef",
		"ALIGNET_PERSIST_BATCH": "5k", "ALIGNET_PRODUCE_LINGER": "2", "ALIGNET_LOG_LEVEL": "verbose",
		"ALIGNET_ADDRESS_LIMIT": "fast",
	})
	if err == nil {
		t.Fatal("malformed settings were accepted")
	}
	for _, want := range []string{`ALIGNET_PERSIST_BATCH="5k"`, `ALIGNET_PRODUCE_LINGER="2"`, "ALIGNET_LOG_LEVEL", `ALIGNET_ADDRESS_LIMIT="fast"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestCORSAndMetricsListenFromEnvironment(t *testing.T) {
	cfg, err := bind(t, map[string]string{
		"DATABASE_URL": "postgres://x/y", "KAFKA_BROKERS": "a:1", "ALIGNET_PSEUDONYM_KEY": "0123456789abcdef",
		"ALIGNET_CORS_ORIGINS": "https://a.example, https://b.example", "ALIGNET_METRICS_LISTEN": "127.0.0.1:9100",
		"ALIGNET_MAX_EXPORTS": "2", "ALIGNET_SESSION_LIMIT": "2.5:10",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.CORSOrigins, []string{"https://a.example", "https://b.example"}) ||
		cfg.MetricsListen != "127.0.0.1:9100" || cfg.MaxExports != 2 ||
		cfg.SessionLimit != (api.RateLimit{Rate: 2.5, Burst: 10}) || cfg.AddressLimit != api.DefaultAddressLimit {
		t.Fatalf("config = %+v", cfg)
	}
}
