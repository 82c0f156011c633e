package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/internal/localpg"
)

// Defaults of DevConfig.
const (
	// DefaultDataDir is the data directory of `alignet dev`, relative to
	// the working directory.
	DefaultDataDir = "alignet-data"
	// DefaultPGPort is the port of the Postgres that dev starts.
	DefaultPGPort = localpg.DefaultPort
	// DefaultKafkaPort is the port of dev's in-process broker.
	DefaultKafkaPort = 19095
	// DefaultDevListen is dev's listen address when Serve.Listen is the
	// all-interfaces default of serve: dev serves this machine only.
	DefaultDevListen = "127.0.0.1:8080"
)

// DevRoles returns the roles `alignet dev` runs unless told otherwise.
func DevRoles() []string { return []string{RoleAPI, RolePersister, RoleLearner, RoleTrainer} }

// DevConfig configures `alignet dev`, which runs everything in one process.
type DevConfig struct {
	// DataDir keeps Postgres data (unless the postgres user cannot reach
	// it; see localpg), the in-process broker's log and the generated keys.
	// Default DefaultDataDir.
	DataDir string
	// PGPort is the port of the Postgres that dev starts. Default
	// DefaultPGPort.
	PGPort int
	// KafkaPort is the port of the in-process broker. Default
	// DefaultKafkaPort.
	KafkaPort int
	// Serve is the rest of the configuration; DatabaseURL and KafkaBrokers
	// are filled in when empty, and serve's default listen address becomes
	// DefaultDevListen.
	Serve Config
}

func (dc DevConfig) withDefaults() DevConfig {
	if dc.DataDir == "" {
		dc.DataDir = DefaultDataDir
	}
	if dc.PGPort == 0 {
		dc.PGPort = DefaultPGPort
	}
	if dc.KafkaPort == 0 {
		dc.KafkaPort = DefaultKafkaPort
	}
	if dc.Serve.Listen == "" || dc.Serve.Listen == api.DefaultListen {
		dc.Serve.Listen = DefaultDevListen
	}
	dc.Serve = withDevRoles(dc.Serve)
	return dc
}

// withDevRoles gives dev every role, DevRoles, in one process unless
// ALIGNET_ROLES or --roles says otherwise.
func withDevRoles(cfg Config) Config {
	if !cfg.rolesSet {
		cfg.Roles = DevRoles()
	}
	return cfg
}

// devSecret is a key dev uses: given, read from its file in the data dir,
// or generated and written to that file once the server runs.
type devSecret struct {
	value string
	path  string // file in the data dir; "" when the key was given
	write bool   // generated: write it to path once running
}

// loadSecret returns the key stored in path, or a new random one (with
// prefix) that is written only once the server runs, so a start that
// fails leaves no key behind that a later start would not use.
func loadSecret(path, prefix string) (devSecret, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return devSecret{value: s, path: path}, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return devSecret{}, fmt.Errorf("read key: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return devSecret{}, fmt.Errorf("generate key: %w", err)
	}
	return devSecret{value: prefix + base64.RawURLEncoding.EncodeToString(raw), path: path, write: true}, nil
}

// save writes a generated key to its file, readable only by the owner.
func (s devSecret) save() error {
	if !s.write {
		return nil
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s.value+"\n"), 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

// RunDev starts a local Postgres unless a database URL is given, an
// in-process Kafka-protocol broker (franz-go kfake) unless brokers are given,
// and then every role (api, persister and learner unless --roles is given).
// Once the API answers with the admin key it writes
// the generated keys to the data dir (admin.key, pseudonym.key) and prints
// the URLs and the admin key to out.
func RunDev(ctx context.Context, dc DevConfig, out io.Writer, log *slog.Logger, reg *prometheus.Registry) error {
	dc = dc.withDefaults()
	dir, err := filepath.Abs(dc.DataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	cfg := dc.Serve
	if cfg.fileKeys != nil {
		if err := cfg.fileKeys(); err != nil {
			return err
		}
	}
	admin, pseudo := devSecret{value: cfg.AdminKey}, devSecret{value: cfg.PseudonymKey}
	if cfg.AdminKey == "" {
		if admin, err = loadSecret(filepath.Join(dir, "admin.key"), "alg_"); err != nil {
			return err
		}
	}
	if cfg.PseudonymKey == "" {
		if pseudo, err = loadSecret(filepath.Join(dir, "pseudonym.key"), ""); err != nil {
			return err
		}
	}
	cfg.AdminKey, cfg.PseudonymKey = admin.value, pseudo.value
	// Fail before starting anything when the API could not listen.
	if ln, err := net.Listen("tcp", cfg.Listen); err != nil {
		return fmt.Errorf("listen address %s is not free (is another alignet dev running? give --listen): %w", cfg.Listen, err)
	} else {
		ln.Close()
	}

	pgInfo := redactURL(cfg.DatabaseURL)
	if cfg.DatabaseURL == "" {
		pg, err := localpg.Start(ctx, localpg.Config{DataDir: filepath.Join(dir, "postgres"), Port: dc.PGPort, Logger: log.With("component", "postgres")})
		if err != nil {
			return fmt.Errorf("start local postgres: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := pg.Stop(sctx); err != nil {
				log.Warn("stop postgres", "err", err)
			}
		}()
		cfg.DatabaseURL = pg.URL()
		pgInfo = fmt.Sprintf("%s (data in %s)", pg.URL(), pg.Dir())
	}
	kafkaInfo := strings.Join(cfg.KafkaBrokers, ",")
	if len(cfg.KafkaBrokers) == 0 {
		kdir := filepath.Join(dir, "kafka")
		cluster, err := kfake.NewCluster(
			kfake.NumBrokers(1),
			kfake.Ports(dc.KafkaPort),
			kfake.DataDir(kdir),
			kfake.SeedTopics(int32(max(cfg.Partitions, 1)), cfg.Topic, cfg.DeadLetterTopic),
		)
		if err != nil {
			return fmt.Errorf("start in-process kafka on port %d: %w", dc.KafkaPort, err)
		}
		defer cluster.Close()
		cfg.KafkaBrokers = cluster.ListenAddrs()
		kafkaInfo = fmt.Sprintf("%s (log in %s)", strings.Join(cfg.KafkaBrokers, ","), kdir)
	}
	if err := cfg.Resolve(); err != nil {
		return err
	}
	base := "http://" + displayAddr(cfg.Listen)
	fmt.Fprintf(out, "alignet dev is starting (data dir %s)\n", dir)

	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	announced := make(chan struct{})
	go func() {
		defer close(announced)
		if err := waitReady(runCtx, base, admin.value); err != nil {
			return // Run failed or was stopped first.
		}
		for _, s := range []devSecret{admin, pseudo} {
			if err := s.save(); err != nil {
				stop(err)
				return
			}
		}
		keyInfo := "(from ALIGNET_ADMIN_KEY or its file)"
		if admin.path != "" {
			keyInfo = "(in " + admin.path + ")"
		}
		fmt.Fprintf(out, `
alignet dev is running
  API         %[1]s/v1
  OpenAPI     %[1]s/v1/openapi.json
  Metrics     %[1]s/metrics
  Readiness   %[1]s/readyz
  Postgres    %[2]s
  Kafka       %[3]s
  Data dir    %[4]s
  Admin key   %[5]s %[6]s

Try:
  curl -s -H "Authorization: Bearer %[5]s" -X PUT %[1]s/v1/spaces/clip -d '{"dim":3}' -H 'Content-Type: application/json'

`, base, pgInfo, kafkaInfo, dir, admin.value, keyInfo)
	}()
	err = Run(runCtx, cfg, log, reg)
	stop(nil)
	<-announced
	if cause := context.Cause(runCtx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	return err
}

// waitReady polls the API at base until /readyz answers 200 and the admin
// key is accepted, which proves that this process (not another one on the
// port) serves, with its database and broker reachable.
func waitReady(ctx context.Context, base, adminKey string) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	ok := func(path, key string) bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return false
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	for {
		if ok("/readyz", "") && ok("/v1/studies", adminKey) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func displayAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func redactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.Index(u[i+3:], "@"); j >= 0 {
			cred := u[i+3 : i+3+j]
			if k := strings.Index(cred, ":"); k >= 0 {
				return u[:i+3] + cred[:k] + ":***" + u[i+3+j:]
			}
		}
	}
	return u
}
