package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/internal/cmdline"
	"github.com/alignet/alignet/internal/server"
	"github.com/alignet/alignet/ops"
)

// bindServer registers the flags of cfg on fs with placeholders for the
// help, and keeps the database URL (it may hold a password) out of it.
func bindServer(fs *cmdline.FlagSet, cfg *server.Config) {
	cfg.Bind(fs.FlagSet, getenv)
	for name, word := range map[string]string{
		"listen": "ADDR", "database-url": "URL", "kafka-brokers": "LIST", "admin-key-file": "FILE",
		"pseudonym-key-file": "FILE", "roles": "LIST", "topic": "NAME", "dlq-topic": "NAME", "group": "NAME",
		"linger": "DURATION", "log-level": "LEVEL", "log-format": "FORMAT",
	} {
		if fs.Lookup(name) != nil {
			fs.Placeholder(name, word)
		}
	}
	fs.HideDefault("database-url")
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("serve", "Run the API and/or the persister against an external Postgres and Kafka; every flag also has an environment variable.", stdout)
	var cfg server.Config
	bindServer(fs, &cfg)
	fs.Example("DATABASE_URL=postgres://alignet@db:5432/alignet KAFKA_BROKERS=kafka:9092 \\",
		"  ALIGNET_PSEUDONYM_KEY_FILE=/run/secrets/pseudonym alignet serve --roles api,persister")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Resolve(); err != nil {
		return err
	}
	return server.Run(ctx, cfg, cfg.Logger(os.Stderr), ops.NewRegistry())
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("dev", "Run everything in one process: a local Postgres (started from the installed server binaries), an in-process Kafka-protocol broker, the API, the persister, the learner and the trainer.", stdout)
	var dc server.DevConfig
	bindServer(fs, &dc.Serve)
	if l := fs.Lookup("listen"); l.DefValue == api.DefaultListen {
		l.DefValue = server.DefaultDevListen // what withDefaults makes of it
	}
	fs.StringVar(&dc.DataDir, "data-dir", server.DefaultDataDir, "`DIR` for the Postgres data, the broker log and the generated keys")
	fs.IntVar(&dc.PGPort, "pg-port", server.DefaultPGPort, "`PORT` of the local Postgres that dev starts")
	fs.IntVar(&dc.KafkaPort, "kafka-port", server.DefaultKafkaPort, "`PORT` of the in-process Kafka-protocol broker")
	fs.Example("alignet dev", "alignet dev --data-dir /srv/alignet --listen 127.0.0.1:9090")
	fs.Note("Give --database-url or --kafka-brokers to use an external Postgres or Kafka instead. The admin key is printed once the server runs and kept in DIR/admin.key.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return server.RunDev(ctx, dc, stdout, dc.Serve.Logger(os.Stderr), ops.NewRegistry())
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("migrate", "Apply the embedded database migrations and exit (serve and dev also apply them at start, under an advisory lock).", stdout)
	url := fs.String("database-url", "", "Postgres `URL`")
	fs.Env("database-url", getenv, "DATABASE_URL")
	fs.Require("database-url")
	fs.Example("alignet migrate --database-url postgres://postgres@127.0.0.1:5432/alignet")
	if err := fs.Parse(args); err != nil {
		return err
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
