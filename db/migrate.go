package db

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLockKey is the pg_advisory_lock key that serialises Migrate
// across processes ("alignet" in ASCII).
const migrationLockKey int64 = 0x616c69676e6574

// migration is one embedded SQL file named NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations parses the embedded migrations, sorted by version.
func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("db: read migrations: %w", err)
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		file := e.Name()
		base, ok := strings.CutSuffix(file, ".sql")
		num, name, ok2 := strings.Cut(base, "_")
		if !ok || !ok2 || name == "" {
			return nil, fmt.Errorf("db: migration %q: want NNNN_name.sql", file)
		}
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("db: migration %q: bad version", file)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("db: migrations %q and %q share version %d", prev, file, v)
		}
		seen[v] = file
		b, err := migrationFS.ReadFile(path.Join("migrations", file))
		if err != nil {
			return nil, fmt.Errorf("db: read migration %q: %w", file, err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// MigrationCount returns the number of embedded migrations.
func MigrationCount() int {
	ms, err := loadMigrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// Migrate applies all pending embedded migrations in version order, each in
// its own transaction, and records them in schema_migrations. It holds a
// Postgres advisory lock on one dedicated connection for the whole run, so
// concurrent callers (in one or many processes) apply each migration once.
func (d *DB) Migrate(ctx context.Context) error {
	defer d.observe("migrate", time.Now())
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return wrapErr("migrate: acquire connection", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
		return wrapErr("migrate: lock", err)
	}
	defer func() {
		// Unlock even if ctx is done; if that fails, drop the connection,
		// which releases the session lock.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrationLockKey); uerr != nil {
			_ = conn.Conn().Close(uctx)
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return wrapErr("migrate: create schema_migrations", err)
	}
	applied, err := appliedVersions(ctx, conn.Conn())
	if err != nil {
		return err
	}
	for _, m := range ms {
		if _, ok := applied[m.version]; ok {
			continue
		}
		start := time.Now()
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// No arguments: the simple protocol runs multi-statement files.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return wrapErr(fmt.Sprintf("migrate: apply %04d_%s", m.version, m.name), err)
		}
		d.log.Info("db: applied migration", "version", m.version, "name", m.name, "duration", time.Since(start))
	}
	return nil
}

// appliedVersions returns the versions recorded in schema_migrations.
func appliedVersions(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[int]string, error) {
	rows, err := q.Query(ctx, "SELECT version, name FROM schema_migrations")
	if err != nil {
		return nil, wrapErr("read schema_migrations", err)
	}
	applied := map[int]string{}
	var v int
	var name string
	_, err = pgx.ForEachRow(rows, []any{&v, &name}, func() error {
		applied[v] = name
		return nil
	})
	if err != nil {
		return nil, wrapErr("read schema_migrations", err)
	}
	return applied, nil
}

// Ready reports whether the database answers and every embedded migration has
// been applied. Both failures wrap alignet.ErrUnavailable, so a caller can
// answer 503 and retry later.
func (d *DB) Ready(ctx context.Context) error {
	if err := d.pool.Ping(ctx); err != nil {
		return wrapErr("ready: ping", err)
	}
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	applied, err := appliedVersions(ctx, d.pool)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == codeUndefinedTable {
		return fmt.Errorf("db: ready: %w: schema not migrated (0 of %d migrations applied)", alignet.ErrUnavailable, len(ms))
	}
	if err != nil {
		return fmt.Errorf("db: ready: %w", err)
	}
	var pending []string
	for _, m := range ms {
		if _, ok := applied[m.version]; !ok {
			pending = append(pending, fmt.Sprintf("%04d_%s", m.version, m.name))
		}
	}
	if len(pending) > 0 {
		return fmt.Errorf("db: ready: %w: %d of %d migrations pending: %s",
			alignet.ErrUnavailable, len(pending), len(ms), strings.Join(pending, ", "))
	}
	return nil
}
