package db_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
	"github.com/prometheus/client_golang/prometheus"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestMigrationCount(t *testing.T) {
	t.Parallel()
	if db.MigrationCount() < 1 {
		t.Fatalf("MigrationCount() = %d, want >= 1", db.MigrationCount())
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := db.Open(ctx, db.Config{URL: "postgres://nobody@127.0.0.1:1/none?connect_timeout=2", Logger: quiet()})
	if err == nil {
		d.Close()
		t.Fatal("Open on a closed port succeeded")
	}
	if !errors.Is(err, alignet.ErrUnavailable) {
		t.Fatalf("Open error %v does not wrap ErrUnavailable", err)
	}
}

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	t.Parallel()
	url, schema := dbtest.Schema(t)
	ctx := context.Background()
	d, err := db.Open(ctx, db.Config{URL: url, Schema: schema, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	err = d.Ready(ctx)
	if !errors.Is(err, alignet.ErrUnavailable) || !strings.Contains(err.Error(), "migrat") {
		t.Fatalf("Ready before Migrate = %v, want an ErrUnavailable about migrations", err)
	}

	// A second pool on the same schema, as a second process would have.
	d2, err := db.Open(ctx, db.Config{URL: url, Schema: schema, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				errs[i] = d.Migrate(ctx)
			} else {
				errs[i] = d2.Migrate(ctx)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate %d: %v", i, err)
		}
	}
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("repeated Migrate: %v", err)
	}
	var n int
	if err := d.Pool().QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != db.MigrationCount() {
		t.Fatalf("schema_migrations has %d rows, want %d", n, db.MigrationCount())
	}
	var where string
	if err := d.Pool().QueryRow(ctx, `SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = 'judgments'::regclass`).Scan(&where); err != nil {
		t.Fatal(err)
	}
	if where != schema {
		t.Fatalf("judgments created in schema %q, want %q", where, schema)
	}
	if err := d.Ready(ctx); err != nil {
		t.Fatalf("Ready after Migrate: %v", err)
	}

	// Ready notices a missing migration.
	if _, err := d.Pool().Exec(ctx, "DELETE FROM schema_migrations WHERE version = 1"); err != nil {
		t.Fatal(err)
	}
	if err := d.Ready(ctx); !errors.Is(err, alignet.ErrUnavailable) || !strings.Contains(err.Error(), "0001_init") {
		t.Fatalf("Ready with 0001 unrecorded = %v, want it named as pending", err)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	d := dbtest.Open(t, db.Config{Registerer: reg})
	// A second DB on the same registry reuses the histogram.
	dbtest.Open(t, db.Config{Registerer: reg})
	if _, _, err := d.PutSpace(context.Background(), "s", 2); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "alignet_db_tx_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" {
					ops[l.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	if ops["put_space"] != 1 || ops["migrate"] != 2 {
		t.Fatalf("histogram samples by op = %v, want put_space:1 migrate:2", ops)
	}
}
