// Package db stores alignet's state in Postgres: embedding spaces and their
// vectors, studies and their items, judgments and API keys. It is built on
// pgx v5 and pgxpool, ships its schema as embedded numbered SQL migrations,
// and translates driver errors into the sentinel errors of package alignet
// (ErrNotFound, ErrConflict, ErrInvalid, ErrUnavailable) at its boundary.
package db

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/ops"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxConns is the pool size used when Config.MaxConns is zero.
const DefaultMaxConns int32 = 16

// DefaultExportShare is the divisor of MaxConns that gives the default
// Config.MaxExportConns: exports hold at most a quarter of the pool.
const DefaultExportShare = 4

// Config configures Open.
type Config struct {
	// URL is the Postgres connection string (URL or key=value form). Required.
	URL string
	// MaxConns is the maximum number of pooled connections. Zero means
	// DefaultMaxConns (16).
	MaxConns int32
	// MaxExportConns bounds how many connections ExportJudgments holds at
	// once; further exports wait for one of them. An export holds its
	// connection as long as its reader takes, so without the bound slow
	// readers could take the whole pool from the persister and the API.
	// Default MaxConns/DefaultExportShare, at least 1; at most MaxConns.
	MaxExportConns int32
	// Registerer receives the package's metrics. Nil means no metrics.
	Registerer prometheus.Registerer
	// Logger receives migration and operational logs. Nil means slog.Default().
	Logger *slog.Logger
	// Schema, if set, becomes the search_path of every pooled connection, so
	// all tables live in that (already existing) schema. Empty means the
	// server's default search_path. Tests use it for isolation.
	Schema string
}

// DB is a pool of Postgres connections plus the package's metrics. It is safe
// for concurrent use.
type DB struct {
	pool  *pgxpool.Pool
	log   *slog.Logger
	txDur *prometheus.HistogramVec // nil when metrics are disabled
	// exports holds one token per running export (MaxExportConns).
	exports chan struct{}
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxExportConns <= 0 {
		c.MaxExportConns = max(1, c.MaxConns/DefaultExportShare)
	}
	c.MaxExportConns = min(c.MaxExportConns, c.MaxConns)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Open creates a connection pool from cfg and checks that the server answers.
// An unreachable server yields an error wrapping alignet.ErrUnavailable.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if cfg.URL == "" {
		return nil, errors.New("db: open: empty URL")
	}
	cfg = cfg.withDefaults()
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("db: parse config: %w", err)
	}
	pc.MaxConns = cfg.MaxConns
	if cfg.Schema != "" {
		pc.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{cfg.Schema}.Sanitize()
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "alignet"
	}
	d := &DB{log: cfg.Logger, exports: make(chan struct{}, cfg.MaxExportConns)}
	if cfg.Registerer != nil {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "alignet_db_tx_duration_seconds",
			Help:    "Duration of database operations (one transaction or query each), by operation.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"op"})
		h, err := ops.Register(cfg.Registerer, h)
		if err != nil {
			return nil, fmt.Errorf("db: %w", err)
		}
		d.txDur = h
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, wrapErr("open pool", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, wrapErr("ping", err)
	}
	d.pool = pool
	return d, nil
}

// Close closes all connections. It waits for acquired connections to be
// released.
func (d *DB) Close() { d.pool.Close() }

// Pool returns the underlying pgx pool, for callers that need raw access.
func (d *DB) Pool() *pgxpool.Pool { return d.pool }

// observe records the duration of operation op started at start.
func (d *DB) observe(op string, start time.Time) {
	if d.txDur != nil {
		d.txDur.WithLabelValues(op).Observe(time.Since(start).Seconds())
	}
}

// inTx runs fn in a transaction, committing when it returns nil. The
// duration is recorded under op.
func (d *DB) inTx(ctx context.Context, op string, fn func(pgx.Tx) error) error {
	defer d.observe(op, time.Now())
	return pgx.BeginFunc(ctx, d.pool, fn)
}

// Postgres SQLSTATE codes used for translation.
const (
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
	codeUndefinedTable      = "42P01"
	codeLockNotAvailable    = "55P03"
)

// wrapErr prefixes err with "db: " and what, and translates driver errors to
// the sentinel errors of package alignet. It returns nil for a nil err.
//
// SQLSTATE classes decide whether retrying can help. Connection exceptions
// (08), transaction rollbacks such as serialization failures and deadlocks
// (40), insufficient resources such as a full disk or too many connections
// (53), operator intervention such as an admin shutdown or a statement
// timeout (57), system errors (58), a lock timeout and network errors wrap
// alignet.ErrUnavailable: the same call may succeed later. Data exceptions
// such as a NUL byte in a text value (22), integrity constraint violations
// (23) and exceeded program limits such as an oversized index row (54) wrap
// alignet.ErrInvalid: the values are to blame and retrying the same call
// fails again. A unique violation is alignet.ErrConflict and a foreign key
// violation alignet.ErrNotFound instead. Everything else, syntax or access
// rule violations (42) such as a missing table or privilege included, is
// left untranslated: those follow from the schema or the configuration,
// not from the values, so no caller may treat them as a verdict on the
// data (the persister would dead-letter every judgment after a missing
// migration).
func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// Keep context added inside a transaction, e.g. `space "x": `.
		inner, _ := strings.CutSuffix(err.Error(), pgx.ErrNoRows.Error())
		return fmt.Errorf("db: %s: %s%w", what, inner, alignet.ErrNotFound)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("db: %s: %w", what, err)
	case errors.As(err, &pgErr) && pgErr.Code == codeUniqueViolation:
		return fmt.Errorf("db: %s: %w: %w", what, alignet.ErrConflict, err)
	case errors.As(err, &pgErr) && pgErr.Code == codeForeignKeyViolation:
		return fmt.Errorf("db: %s: %w: %s: %w", what, alignet.ErrNotFound, pgErr.Detail, err)
	case errors.As(err, &pgErr) && isDataErr(pgErr.Code):
		return fmt.Errorf("db: %s: %w: %w", what, alignet.ErrInvalid, err)
	case isConnErr(err):
		return fmt.Errorf("db: %s: %w: %w", what, alignet.ErrUnavailable, err)
	}
	return fmt.Errorf("db: %s: %w", what, err)
}

// isDataErr reports whether the SQLSTATE code blames the values of the
// statement: a data exception, an integrity constraint violation or an
// exceeded program limit.
func isDataErr(code string) bool {
	switch sqlstateClass(code) {
	case "22", "23", "54":
		return true
	}
	return false
}

// sqlstateClass returns the class, the first two characters, of a SQLSTATE
// code.
func sqlstateClass(code string) string {
	if len(code) != 5 {
		return ""
	}
	return code[:2]
}

// isConnErr reports whether err means the server could not be reached, the
// connection broke or the server could not run the statement now, so the
// operation may succeed later.
func isConnErr(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch sqlstateClass(pgErr.Code) {
		case "08", "40", "53", "57", "58":
			return true
		}
		return pgErr.Code == codeLockNotAvailable
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || pgconn.SafeToRetry(err)
}
