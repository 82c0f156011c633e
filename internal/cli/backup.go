package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/alignet/alignet/internal/backup"
	"github.com/alignet/alignet/internal/cmdline"
)

func runBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("backup", "Take a consistent snapshot of a deployment's Postgres state (every table: judgments, studies, keys, teacher versions, students, artifacts, query logs) with pg_dump. Judgments still only in Kafka are not in it.", stdout)
	url := fs.String("database-url", "", "Postgres `URL` of the deployment")
	out := fs.String("out", "", "write the snapshot to this `FILE` (pg_dump custom format)")
	fs.Env("database-url", getenv, "DATABASE_URL")
	fs.Require("database-url", "out")
	fs.Example("alignet backup --database-url postgres://postgres@127.0.0.1:5432/alignet --out alignet-2026-12-01.backup")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := backup.Dump(ctx, *url, *out, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backed up %d tables to %s (%d bytes)\n", st.Tables, *out, st.Bytes)
	return nil
}

func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("restore", "Rebuild a snapshot taken by alignet backup into an empty database, in one transaction.", stdout)
	url := fs.String("database-url", "", "Postgres `URL` of the empty target database")
	fs.Env("database-url", getenv, "DATABASE_URL")
	fs.Require("database-url")
	fs.Args("FILE")
	fs.Example("createdb -h 127.0.0.1 -U postgres alignet_restored",
		"alignet restore --database-url postgres://postgres@127.0.0.1:5432/alignet_restored alignet-2026-12-01.backup")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := backup.Restore(ctx, *url, fs.Arg(0), stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %d tables from %s\n", st.Tables, fs.Arg(0))
	return nil
}
