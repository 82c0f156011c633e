package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

const sessionColumns = `study, id, worker, platform, coalesce(external, ''), params, trials, created_at, completed_at`

func scanSession(row pgx.Row, s *alignet.Session) error {
	var params []byte
	if err := row.Scan(&s.Study, &s.ID, &s.Worker, &s.Platform, &s.External, &params, &s.Trials, &s.CreatedAt, &s.CompletedAt); err != nil {
		return err
	}
	s.Params = nil
	if err := json.Unmarshal(params, &s.Params); err != nil {
		return fmt.Errorf("session %q: params: %w", s.ID, err)
	}
	if len(s.Params) == 0 {
		s.Params = nil
	}
	return nil
}

// OpenSession returns the worker's session in s.Study, creating s when
// there is none. A session with the same non-empty External (the
// platform's id of the visit, even a completed one) is returned first,
// then the worker's open session; otherwise s is stored and returned with
// created=true. s needs Study, ID, Worker, a valid Platform, positive
// Trials and CreatedAt. A missing study yields an error wrapping
// alignet.ErrNotFound.
func (d *DB) OpenSession(ctx context.Context, s alignet.Session) (alignet.Session, bool, error) {
	if s.Study == "" || s.ID == "" || s.Worker == "" || !s.Platform.Valid() || s.Trials < 1 || s.CreatedAt.IsZero() {
		return alignet.Session{}, false, fmt.Errorf("db: open session: %w: incomplete session %+v", alignet.ErrInvalid, s)
	}
	params, err := json.Marshal(s.Params)
	if err != nil {
		return alignet.Session{}, false, fmt.Errorf("db: open session: encode params: %w", err)
	}
	if s.Params == nil {
		params = []byte("{}")
	}
	var got alignet.Session
	created := false
	err = d.inTx(ctx, "open_session", func(tx pgx.Tx) error {
		if s.External != "" {
			err := scanSession(tx.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions
				WHERE study = $1 AND worker = $2 AND external = $3 ORDER BY created_at DESC LIMIT 1`,
				s.Study, s.Worker, s.External), &got)
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		openQ := `SELECT ` + sessionColumns + ` FROM sessions WHERE study = $1 AND worker = $2 AND completed_at IS NULL`
		err := scanSession(tx.QueryRow(ctx, openQ, s.Study, s.Worker), &got)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		err = scanSession(tx.QueryRow(ctx, `INSERT INTO sessions (study, id, worker, platform, external, params, trials, created_at)
			VALUES ($1, $2, $3, $4, NULLIF($5, ''), $6, $7, $8)
			ON CONFLICT (study, worker) WHERE completed_at IS NULL DO NOTHING
			RETURNING `+sessionColumns, s.Study, s.ID, s.Worker, string(s.Platform), s.External, params, s.Trials, s.CreatedAt), &got)
		if err == nil {
			created = true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// A concurrent open won the race: return its session.
		return scanSession(tx.QueryRow(ctx, openQ, s.Study, s.Worker), &got)
	})
	if err != nil {
		return alignet.Session{}, false, wrapErr(fmt.Sprintf("open session in study %q", s.Study), err)
	}
	return got, created, nil
}

// GetSession returns session id of study, or an error wrapping
// alignet.ErrNotFound.
func (d *DB) GetSession(ctx context.Context, study, id string) (alignet.Session, error) {
	defer d.observe("get_session", time.Now())
	var s alignet.Session
	err := scanSession(d.pool.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE study = $1 AND id = $2`, study, id), &s)
	if err != nil {
		return alignet.Session{}, wrapErr(fmt.Sprintf("get session %q of study %q", id, study), err)
	}
	return s, nil
}

// CompleteSession records that session id of study completed at at; a
// completed session keeps its first completion time. A missing session
// yields an error wrapping alignet.ErrNotFound.
func (d *DB) CompleteSession(ctx context.Context, study, id string, at time.Time) error {
	defer d.observe("complete_session", time.Now())
	tag, err := d.pool.Exec(ctx, `UPDATE sessions SET completed_at = coalesce(completed_at, $3) WHERE study = $1 AND id = $2`, study, id, at)
	if err != nil {
		return wrapErr(fmt.Sprintf("complete session %q of study %q", id, study), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("db: complete session %q of study %q: %w", id, study, alignet.ErrNotFound)
	}
	return nil
}
