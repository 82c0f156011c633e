package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alignet/alignet"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// CreateStudy creates s and returns it with created=true. An empty s.ID gets
// a random UUID. Creating a study that exists with the same task and space
// returns the stored one with created=false; with a different definition the
// error wraps alignet.ErrConflict. A missing space yields an error wrapping
// alignet.ErrNotFound that names the space.
func (d *DB) CreateStudy(ctx context.Context, s alignet.Study) (alignet.Study, bool, error) {
	if s.ID == "" {
		s.ID = uuid.NewString()
	}
	if !s.Task.Valid() {
		return alignet.Study{}, false, fmt.Errorf("db: create study %q: invalid task %q", s.ID, s.Task)
	}
	if s.Space == "" {
		return alignet.Study{}, false, fmt.Errorf("db: create study %q: empty space", s.ID)
	}
	var got alignet.Study
	created := false
	err := d.inTx(ctx, "create_study", func(tx pgx.Tx) error {
		// Check the space first so a missing one is reported by name.
		if _, err := getSpace(ctx, tx, s.Space); err != nil {
			return fmt.Errorf("space %q: %w", s.Space, err)
		}
		err := scanStudy(tx.QueryRow(ctx, `INSERT INTO studies (id, task, space) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO NOTHING RETURNING id, task, space, created_at`, s.ID, string(s.Task), s.Space), &got)
		if err == nil {
			created = true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return scanStudy(tx.QueryRow(ctx, `SELECT id, task, space, created_at FROM studies WHERE id = $1`, s.ID), &got)
	})
	if err != nil {
		return alignet.Study{}, false, wrapErr(fmt.Sprintf("create study %q", s.ID), err)
	}
	if got.Task != s.Task || got.Space != s.Space {
		return alignet.Study{}, false, fmt.Errorf("db: create study %q: %w: exists with task %q and space %q",
			s.ID, alignet.ErrConflict, got.Task, got.Space)
	}
	return got, created, nil
}

// GetStudy returns the study id, or an error wrapping alignet.ErrNotFound.
func (d *DB) GetStudy(ctx context.Context, id string) (alignet.Study, error) {
	defer d.observe("get_study", time.Now())
	var s alignet.Study
	err := scanStudy(d.pool.QueryRow(ctx, `SELECT id, task, space, created_at FROM studies WHERE id = $1`, id), &s)
	if err != nil {
		return alignet.Study{}, wrapErr(fmt.Sprintf("get study %q", id), err)
	}
	return s, nil
}

// ListStudies returns all studies sorted by id.
func (d *DB) ListStudies(ctx context.Context) ([]alignet.Study, error) {
	defer d.observe("list_studies", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT id, task, space, created_at FROM studies ORDER BY id`)
	if err != nil {
		return nil, wrapErr("list studies", err)
	}
	studies := []alignet.Study{}
	var s alignet.Study
	_, err = pgx.ForEachRow(rows, []any{&s.ID, &s.Task, &s.Space, &s.CreatedAt}, func() error {
		studies = append(studies, s)
		return nil
	})
	if err != nil {
		return nil, wrapErr("list studies", err)
	}
	return studies, nil
}

func scanStudy(row pgx.Row, s *alignet.Study) error {
	return row.Scan(&s.ID, &s.Task, &s.Space, &s.CreatedAt)
}
