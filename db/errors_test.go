package db_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
)

// sentinels are the errors wrapErr translates into.
var sentinels = []error{alignet.ErrUnavailable, alignet.ErrInvalid, alignet.ErrNotFound, alignet.ErrConflict}

// checkOnly fails unless err wraps want and no other sentinel (want nil:
// none).
func checkOnly(t *testing.T, what string, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	for _, s := range sentinels {
		if got := errors.Is(err, s); got != (s == want) {
			t.Errorf("%s: errors.Is(%v, %v) = %v, want %v", what, err, s, got, s == want)
		}
	}
}

// TestErrorClasses: the SQLSTATE class decides between retryable
// (ErrUnavailable) and permanent (ErrInvalid) errors; schema and privilege
// errors are neither.
func TestErrorClasses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		code string
		want error
	}{
		{"08006", alignet.ErrUnavailable}, // connection failure
		{"08000", alignet.ErrUnavailable}, // connection exception
		{"40001", alignet.ErrUnavailable}, // serialization failure
		{"40P01", alignet.ErrUnavailable}, // deadlock detected
		{"53100", alignet.ErrUnavailable}, // disk full
		{"53200", alignet.ErrUnavailable}, // out of memory
		{"53300", alignet.ErrUnavailable}, // too many connections
		{"57P01", alignet.ErrUnavailable}, // admin shutdown
		{"57P03", alignet.ErrUnavailable}, // cannot connect now
		{"57014", alignet.ErrUnavailable}, // query canceled (statement timeout)
		{"58030", alignet.ErrUnavailable}, // I/O error
		{"55P03", alignet.ErrUnavailable}, // lock not available
		{"22021", alignet.ErrInvalid},     // character not in repertoire (NUL)
		{"22001", alignet.ErrInvalid},     // string data right truncation
		{"22P02", alignet.ErrInvalid},     // invalid text representation
		{"22008", alignet.ErrInvalid},     // datetime field overflow
		{"23502", alignet.ErrInvalid},     // not null violation
		{"23514", alignet.ErrInvalid},     // check violation
		{"54000", alignet.ErrInvalid},     // program limit exceeded (index row too big)
		{"23505", alignet.ErrConflict},    // unique violation
		{"23503", alignet.ErrNotFound},    // foreign key violation
		{"42P01", nil},                    // undefined table: a missing migration
		{"42501", nil},                    // insufficient privilege
		{"42601", nil},                    // syntax error
		{"XX000", nil},                    // internal error
	} {
		pgErr := &pgconn.PgError{Severity: "ERROR", Code: c.code, Message: "m"}
		err := db.WrapErr("op", fmt.Errorf("in tx: %w", pgErr))
		checkOnly(t, c.code, err, c.want)
		if !strings.HasPrefix(err.Error(), "db: op: ") || !errors.Is(err, pgErr) {
			t.Errorf("%s: %q lost its context or the driver error", c.code, err)
		}
	}
	checkOnly(t, "EOF", db.WrapErr("op", io.ErrUnexpectedEOF), alignet.ErrUnavailable)
	checkOnly(t, "no rows", db.WrapErr("op", pgx.ErrNoRows), alignet.ErrNotFound)
	if err := db.WrapErr("op", context.Canceled); !errors.Is(err, context.Canceled) || errors.Is(err, alignet.ErrUnavailable) {
		t.Errorf("cancelled: %v, want context.Canceled only", err)
	}
}

// TestDataErrorIsInvalid: values Postgres rejects (a NUL byte, a violated
// constraint) are ErrInvalid and not ErrUnavailable, so the persister
// dead-letters them instead of retrying forever, and nothing of the batch
// is stored.
func TestDataErrorIsInvalid(t *testing.T) {
	t.Parallel()
	for _, in := range inserters {
		t.Run(in.name, func(t *testing.T) {
			t.Parallel()
			d := dbtest.New(t)
			ctx := context.Background()
			mustStudy(t, d, "s", 2)
			nul := judgment("s", "nul", "w", 1)
			nul.QueryID = "q\x00"
			_, err := in.insert(d, ctx, append(batch("s", 0, 5), nul))
			checkOnly(t, "NUL in query_id", err, alignet.ErrInvalid)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "22021" {
				t.Errorf("NUL in query_id: %v, want SQLSTATE 22021 from Postgres", err)
			}

			if _, err := d.Pool().Exec(ctx, `ALTER TABLE judgments ADD CONSTRAINT test_no_poison CHECK (worker <> 'poison')`); err != nil {
				t.Fatal(err)
			}
			_, err = in.insert(d, ctx, append(batch("s", 10, 15), judgment("s", "p", "poison", 2)))
			checkOnly(t, "check violation", err, alignet.ErrInvalid)

			if n, err := d.CountJudgments(ctx, "s"); err != nil || n != 0 {
				t.Errorf("rejected batches stored %d judgments (%v), want 0", n, err)
			}
			if n, err := in.insert(d, ctx, batch("s", 0, 5)); err != nil || n != 5 {
				t.Errorf("valid batch after the rejections: %d, %v", n, err)
			}
		})
	}
}

// TestConnectionLossIsUnavailable: a connection the server terminated (an
// admin shutdown, as in a Postgres restart) is ErrUnavailable.
func TestConnectionLossIsUnavailable(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := d.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var pid uint32
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	var killed bool
	if err := d.Pool().QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&killed); err != nil || !killed {
		t.Fatalf("terminate backend %d: %v, %v", pid, killed, err)
	}
	var one int
	err = conn.QueryRow(ctx, `SELECT 1`).Scan(&one)
	checkOnly(t, "terminated connection", db.WrapErr("select", err), alignet.ErrUnavailable)
}
