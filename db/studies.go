package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/alignet/alignet"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

const studyColumns = `id, task, space, created_at, settings`

// CreateStudy creates s with its settings and returns it with created=true.
// An empty s.ID gets a random UUID; zero settings mean the defaults.
// Creating a study that exists with the same task and space returns the
// stored one, settings unchanged, with created=false (use
// UpdateStudySettings to change them); with a different task or space the
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
	settings, err := encodeSettings(s.Settings)
	if err != nil {
		return alignet.Study{}, false, fmt.Errorf("db: create study %q: %w", s.ID, err)
	}
	var got alignet.Study
	created := false
	err = d.inTx(ctx, "create_study", func(tx pgx.Tx) error {
		// Check the space first so a missing one is reported by name.
		if _, err := getSpace(ctx, tx, s.Space); err != nil {
			return fmt.Errorf("space %q: %w", s.Space, err)
		}
		err := scanStudy(tx.QueryRow(ctx, `INSERT INTO studies (id, task, space, settings) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO NOTHING RETURNING `+studyColumns, s.ID, string(s.Task), s.Space, settings), &got)
		if err == nil {
			created = true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return scanStudy(tx.QueryRow(ctx, `SELECT `+studyColumns+` FROM studies WHERE id = $1`, s.ID), &got)
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
	err := scanStudy(d.pool.QueryRow(ctx, `SELECT `+studyColumns+` FROM studies WHERE id = $1`, id), &s)
	if err != nil {
		return alignet.Study{}, wrapErr(fmt.Sprintf("get study %q", id), err)
	}
	return s, nil
}

// ListStudies returns all studies sorted by id.
func (d *DB) ListStudies(ctx context.Context) ([]alignet.Study, error) {
	defer d.observe("list_studies", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT `+studyColumns+` FROM studies ORDER BY id`)
	if err != nil {
		return nil, wrapErr("list studies", err)
	}
	studies, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.Study, error) {
		var s alignet.Study
		err := scanStudy(r, &s)
		return s, err
	})
	if err != nil {
		return nil, wrapErr("list studies", err)
	}
	if studies == nil {
		studies = []alignet.Study{}
	}
	return studies, nil
}

// UpdateStudySettings replaces the settings of study id with what update
// returns for the current ones, atomically (the row is locked while update
// runs), and returns the updated study. An error from update is returned
// unchanged and nothing is written. A missing study yields an error
// wrapping alignet.ErrNotFound.
func (d *DB) UpdateStudySettings(ctx context.Context, id string, update func(alignet.StudySettings) (alignet.StudySettings, error)) (alignet.Study, error) {
	var s alignet.Study
	var userErr error
	err := d.inTx(ctx, "update_study_settings", func(tx pgx.Tx) error {
		if err := scanStudy(tx.QueryRow(ctx, `SELECT `+studyColumns+` FROM studies WHERE id = $1 FOR UPDATE`, id), &s); err != nil {
			return err
		}
		next, err := update(s.Settings)
		if err != nil {
			userErr = err
			return err
		}
		raw, err := encodeSettings(next)
		if err != nil {
			return err
		}
		return scanStudy(tx.QueryRow(ctx, `UPDATE studies SET settings = $2 WHERE id = $1 RETURNING `+studyColumns, id, raw), &s)
	})
	if userErr != nil {
		return alignet.Study{}, userErr
	}
	if err != nil {
		return alignet.Study{}, wrapErr(fmt.Sprintf("update settings of study %q", id), err)
	}
	return s, nil
}

// encodeSettings returns the JSON stored for settings; zero settings are
// stored as the defaults.
func encodeSettings(s alignet.StudySettings) ([]byte, error) {
	if reflect.DeepEqual(s, alignet.StudySettings{}) {
		s = alignet.DefaultStudySettings()
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode settings: %w", err)
	}
	return raw, nil
}

func scanStudy(row pgx.Row, s *alignet.Study) error {
	var raw []byte
	if err := row.Scan(&s.ID, &s.Task, &s.Space, &s.CreatedAt, &raw); err != nil {
		return err
	}
	settings, err := alignet.DecodeStudySettings(raw)
	if err != nil {
		return fmt.Errorf("study %q: stored settings: %w", s.ID, err)
	}
	s.Settings = settings
	return nil
}
