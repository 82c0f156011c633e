// Package dbtest gives integration tests an isolated, migrated Postgres
// database: each test gets its own schema with a random name, dropped when
// the test ends (the approach of riverqueue/river).
//
// Tests read ALIGNET_TEST_DATABASE_URL through internal/testenv: when it is
// unset they are skipped, except under CI=true, where they fail.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// Schema creates an empty schema with a random name, drops it (with
// everything in it) in tb.Cleanup, and returns the database URL and the
// schema name.
func Schema(tb testing.TB) (url, schema string) {
	tb.Helper()
	url = testenv.DatabaseURL(tb)
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("dbtest: random schema name: %v", err)
	}
	schema = "test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := execAdmin(ctx, url, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		tb.Fatalf("dbtest: create schema: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := execAdmin(ctx, url, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			tb.Errorf("dbtest: drop schema %s: %v", schema, err)
		}
	})
	return url, schema
}

// New returns a DB on a fresh, migrated schema, closed and dropped when tb
// ends.
func New(tb testing.TB) *db.DB {
	tb.Helper()
	return Open(tb, db.Config{})
}

// Open is New with cfg as the starting configuration: its URL and Schema
// are replaced, and a nil Logger discards logs.
func Open(tb testing.TB, cfg db.Config) *db.DB {
	tb.Helper()
	cfg.URL, cfg.Schema = Schema(tb)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := db.Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("dbtest: open: %v", err)
	}
	tb.Cleanup(d.Close)
	if err := d.Migrate(ctx); err != nil {
		tb.Fatalf("dbtest: migrate: %v", err)
	}
	return d
}

func execAdmin(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}
