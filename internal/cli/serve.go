package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/internal/server"
	"github.com/alignet/alignet/ops"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	var cfg server.Config
	cfg.Bind(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Resolve(); err != nil {
		return err
	}
	return server.Run(ctx, cfg, cfg.Logger(os.Stderr), ops.NewRegistry())
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", stderr)
	var dc server.DevConfig
	dc.Serve.Bind(fs, getenv)
	fs.StringVar(&dc.DataDir, "data-dir", "alignet-data", "directory for Postgres data, the broker log and generated keys")
	fs.IntVar(&dc.PGPort, "pg-port", 55433, "port of the local Postgres that dev starts")
	fs.IntVar(&dc.KafkaPort, "kafka-port", 19095, "port of the in-process Kafka-protocol broker")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return server.RunDev(ctx, dc, stdout, dc.Serve.Logger(os.Stderr), ops.NewRegistry())
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", stderr)
	url := fs.String("database-url", getenv("DATABASE_URL"), "Postgres URL (DATABASE_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" {
		return fmt.Errorf("DATABASE_URL (or --database-url) is required")
	}
	d, err := db.Open(ctx, db.Config{URL: *url})
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Migrate(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrations applied (%d known)\n", db.MigrationCount())
	return nil
}
