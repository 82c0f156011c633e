// Package db stores alignet's state in Postgres: embedding spaces and their
// vectors, studies and their items, judgments and API keys. It is built on
// pgx v5 and pgxpool, ships its schema as embedded numbered SQL migrations,
// and translates driver errors into the sentinel errors of package alignet
// (ErrNotFound, ErrConflict, ErrUnavailable) at its boundary.
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

// Config configures Open.
type Config struct {
	// URL is the Postgres connection string (URL or key=value form). Required.
	URL string
	// MaxConns is the maximum number of pooled connections. Zero means
	// DefaultMaxConns (16).
	MaxConns int32
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
}

// Open creates a connection pool from cfg and checks that the server answers.
// An unreachable server yields an error wrapping alignet.ErrUnavailable.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if cfg.URL == "" {
		return nil, errors.New("db: open: empty URL")
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("db: parse config: %w", err)
	}
	pc.MaxConns = cfg.MaxConns
	if pc.MaxConns <= 0 {
		pc.MaxConns = DefaultMaxConns
	}
	if cfg.Schema != "" {
		pc.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{cfg.Schema}.Sanitize()
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "alignet"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	d := &DB{log: log}
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
)

// wrapErr prefixes err with "db: " and what, and translates driver errors to
// the sentinel errors of package alignet. It returns nil for a nil err.
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
	case isConnErr(err):
		return fmt.Errorf("db: %s: %w: %w", what, alignet.ErrUnavailable, err)
	}
	return fmt.Errorf("db: %s: %w", what, err)
}

// isConnErr reports whether err means the server could not be reached or the
// connection broke, so the operation may succeed later.
func isConnErr(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08": // connection exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", pgErr.Code == "53300":
			// admin/crash shutdown, cannot connect now, too many connections
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || pgconn.SafeToRetry(err)
}
