package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

// PutSpace creates the space name with dimension dim (1 to 1<<20) and
// returns it with created=true. If the space already exists with the same dimension it is
// returned with created=false; with a different dimension the error wraps
// alignet.ErrConflict.
func (d *DB) PutSpace(ctx context.Context, name string, dim int) (alignet.Space, bool, error) {
	if name == "" {
		return alignet.Space{}, false, errors.New("db: put space: empty name")
	}
	if dim <= 0 || dim > 1<<20 {
		return alignet.Space{}, false, fmt.Errorf("db: put space %q: invalid dim %d", name, dim)
	}
	var s alignet.Space
	created := false
	err := d.inTx(ctx, "put_space", func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO spaces (name, dim) VALUES ($1, $2)
			ON CONFLICT (name) DO NOTHING RETURNING name, dim, created_at`, name, dim).
			Scan(&s.Name, &s.Dim, &s.CreatedAt)
		if err == nil {
			created = true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return tx.QueryRow(ctx, `SELECT name, dim, created_at FROM spaces WHERE name = $1`, name).
			Scan(&s.Name, &s.Dim, &s.CreatedAt)
	})
	if err != nil {
		return alignet.Space{}, false, wrapErr(fmt.Sprintf("put space %q", name), err)
	}
	if s.Dim != dim {
		return alignet.Space{}, false, fmt.Errorf("db: put space %q: %w: exists with dim %d, not %d", name, alignet.ErrConflict, s.Dim, dim)
	}
	return s, created, nil
}

// GetSpace returns the space name, or an error wrapping alignet.ErrNotFound.
func (d *DB) GetSpace(ctx context.Context, name string) (alignet.Space, error) {
	defer d.observe("get_space", time.Now())
	s, err := getSpace(ctx, d.pool, name)
	if err != nil {
		return alignet.Space{}, wrapErr(fmt.Sprintf("get space %q", name), err)
	}
	return s, nil
}

// querier is what pgxpool.Pool, pgxpool.Conn and pgx.Tx have in common.
type querier interface {
	QueryRow(context.Context, string, ...any) pgx.Row
	Query(context.Context, string, ...any) (pgx.Rows, error)
}

// getSpace reads one space; a missing space yields pgx.ErrNoRows.
func getSpace(ctx context.Context, q querier, name string) (alignet.Space, error) {
	var s alignet.Space
	err := q.QueryRow(ctx, `SELECT name, dim, created_at FROM spaces WHERE name = $1`, name).
		Scan(&s.Name, &s.Dim, &s.CreatedAt)
	return s, err
}
