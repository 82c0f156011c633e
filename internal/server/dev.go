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
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/alignet/alignet/internal/localpg"
)

// DevConfig configures `alignet dev`, which runs everything in one process.
type DevConfig struct {
	// DataDir keeps Postgres data, the in-process broker's log and the
	// generated keys (default "./alignet-data").
	DataDir string
	// PGPort is the port of the Postgres that dev starts (default 55433).
	PGPort int
	// KafkaPort is the port of the in-process broker (default 19095).
	KafkaPort int
	// Serve is the rest of the configuration; DatabaseURL and KafkaBrokers
	// are filled in when empty.
	Serve Config
}

// RunDev starts a local Postgres unless a database URL is given, an
// in-process Kafka-protocol broker (franz-go kfake) unless brokers are given,
// and then every role (api, persister and learner unless --roles is given). It prints the URLs and the admin key to out.
func RunDev(ctx context.Context, dc DevConfig, out io.Writer, log *slog.Logger, reg *prometheus.Registry) error {
	if dc.DataDir == "" {
		dc.DataDir = "alignet-data"
	}
	if dc.PGPort == 0 {
		dc.PGPort = 55433
	}
	if dc.KafkaPort == 0 {
		dc.KafkaPort = 19095
	}
	dir, err := filepath.Abs(dc.DataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	cfg := withDevRoles(dc.Serve)
	if cfg.fileKeys != nil {
		if err := cfg.fileKeys(); err != nil {
			return err
		}
	}
	if cfg.AdminKey == "" {
		if cfg.AdminKey, err = loadOrCreateSecret(filepath.Join(dir, "admin.key"), "alg_"); err != nil {
			return err
		}
	}
	if cfg.PseudonymKey == "" {
		if cfg.PseudonymKey, err = loadOrCreateSecret(filepath.Join(dir, "pseudonym.key"), ""); err != nil {
			return err
		}
	}
	if cfg.Listen == ":8080" {
		cfg.Listen = "127.0.0.1:8080"
	}

	if cfg.DatabaseURL == "" {
		pg, err := localpg.Start(ctx, localpg.Config{DataDir: filepath.Join(dir, "postgres"), Port: dc.PGPort, Logger: log.With("component", "postgres")})
		if err != nil {
			return fmt.Errorf("start local postgres: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 15e9)
			defer cancel()
			if err := pg.Stop(sctx); err != nil {
				log.Warn("stop postgres", "err", err)
			}
		}()
		cfg.DatabaseURL = pg.URL()
	}
	if len(cfg.KafkaBrokers) == 0 {
		cluster, err := kfake.NewCluster(
			kfake.NumBrokers(1),
			kfake.Ports(dc.KafkaPort),
			kfake.DataDir(filepath.Join(dir, "kafka")),
			kfake.SeedTopics(int32(max(cfg.Partitions, 1)), cfg.Topic, cfg.DeadLetterTopic),
		)
		if err != nil {
			return fmt.Errorf("start in-process kafka on port %d: %w", dc.KafkaPort, err)
		}
		defer cluster.Close()
		cfg.KafkaBrokers = cluster.ListenAddrs()
	}
	if err := cfg.Resolve(); err != nil {
		return err
	}
	base := "http://" + displayAddr(cfg.Listen)
	fmt.Fprintf(out, `
alignet dev is starting
  API         %[1]s/v1
  OpenAPI     %[1]s/v1/openapi.json
  Metrics     %[1]s/metrics
  Readiness   %[1]s/readyz
  Postgres    %[2]s
  Kafka       %[3]s
  Data dir    %[4]s
  Admin key   %[5]s

Try:
  curl -s -H "Authorization: Bearer %[5]s" -X PUT %[1]s/v1/spaces/clip -d '{"dim":3}' -H 'Content-Type: application/json'

`, base, redactURL(cfg.DatabaseURL), strings.Join(cfg.KafkaBrokers, ","), dir, cfg.AdminKey)
	return Run(ctx, cfg, log, reg)
}

// withDevRoles adds the learner to the default roles: dev runs everything
// in one process unless ALIGNET_ROLES or --roles says otherwise.
func withDevRoles(cfg Config) Config {
	if !cfg.rolesSet && !cfg.has(RoleLearner) {
		cfg.Roles = append(slices.Clone(cfg.Roles), RoleLearner)
	}
	return cfg
}

// loadOrCreateSecret returns the secret stored in path, creating a random
// one (readable only by the owner) if the file does not exist.
func loadOrCreateSecret(path, prefix string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	s := prefix + base64.RawURLEncoding.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return s, nil
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
