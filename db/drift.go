package db

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/alignet/alignet"
)

// RecentJudgments returns the newest limit judgments of a study with the
// time each was stored, oldest first. A study without judgments has none;
// it need not exist.
func (d *DB) RecentJudgments(ctx context.Context, study string, limit int) ([]alignet.StoredJudgment, error) {
	defer d.observe("recent_judgments", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT id, task, worker, item_a, item_b, item_c, coalesce(odd, ''), rt_ms,
		coalesce(query_id, ''), coalesce(query_kind, ''), received_at, stored_at
		FROM judgments WHERE study = $1 ORDER BY received_at DESC, id DESC LIMIT $2`, study, limit)
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("recent judgments of %q", study), err)
	}
	defer rows.Close()
	var out []alignet.StoredJudgment
	for rows.Next() {
		j := alignet.StoredJudgment{Judgment: alignet.Judgment{Study: study}}
		if err := rows.Scan(&j.ID, &j.Task, &j.Worker, &j.Items[0], &j.Items[1], &j.Items[2], &j.Odd, &j.RTMillis,
			&j.QueryID, &j.QueryKind, &j.ReceivedAt, &j.StoredAt); err != nil {
			return nil, wrapErr(fmt.Sprintf("recent judgments of %q: scan", study), err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, wrapErr(fmt.Sprintf("recent judgments of %q", study), err)
	}
	slices.Reverse(out)
	return out, nil
}

// JudgmentsPerMinute counts the judgments of a study accepted in each
// minute from since on, oldest first; minutes without any are left out.
func (d *DB) JudgmentsPerMinute(ctx context.Context, study string, since time.Time) ([]alignet.MinuteCount, error) {
	defer d.observe("judgments_per_minute", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT date_trunc('minute', received_at) AS m, count(*) FROM judgments
		WHERE study = $1 AND received_at >= $2 GROUP BY m ORDER BY m`, study, since)
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("judgments per minute of %q", study), err)
	}
	defer rows.Close()
	var out []alignet.MinuteCount
	for rows.Next() {
		var m alignet.MinuteCount
		if err := rows.Scan(&m.Minute, &m.Count); err != nil {
			return nil, wrapErr(fmt.Sprintf("judgments per minute of %q: scan", study), err)
		}
		out = append(out, m)
	}
	return out, wrapErr(fmt.Sprintf("judgments per minute of %q", study), rows.Err())
}

// driftDetail is the part of a snapshot only the newest row keeps.
type driftDetail struct {
	PerMinute   []alignet.MinuteCount     `json:"per_minute,omitempty"`
	Reliability []alignet.ReliabilityBin  `json:"reliability,omitempty"`
	Workers     []alignet.WorkerAgreement `json:"workers_list,omitempty"`
}

// InsertDriftSnapshot stores s as the newest snapshot of its study unless
// one was stored less than minGap before it (another monitor replica got
// there first: it reports false), clears the detail of the study's older
// snapshots and deletes those taken more than retention before s. A
// study that does not exist is alignet.ErrNotFound.
func (d *DB) InsertDriftSnapshot(ctx context.Context, s alignet.DriftSnapshot, minGap, retention time.Duration) (bool, error) {
	compact, err := json.Marshal(s.Compact())
	if err != nil {
		return false, fmt.Errorf("db: drift snapshot of %q: %w", s.Study, err)
	}
	detail, err := json.Marshal(driftDetail{PerMinute: s.PerMinute, Reliability: s.Reliability, Workers: s.Quality.WorkerList})
	if err != nil {
		return false, fmt.Errorf("db: drift snapshot of %q: %w", s.Study, err)
	}
	var stored bool
	err = d.inTx(ctx, "insert_drift_snapshot", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO drift_snapshots (study, taken_at, snapshot, detail)
			SELECT $1, $2, $3, $4 WHERE NOT EXISTS (
				SELECT 1 FROM drift_snapshots WHERE study = $1 AND taken_at > $2::timestamptz - $5::interval)
			ON CONFLICT DO NOTHING`, s.Study, s.TakenAt, compact, detail, minGap)
		if err != nil {
			return err
		}
		if stored = tag.RowsAffected() == 1; !stored {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE drift_snapshots SET detail = NULL
			WHERE study = $1 AND taken_at < $2 AND detail IS NOT NULL`, s.Study, s.TakenAt); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM drift_snapshots WHERE study = $1 AND taken_at < $2::timestamptz - $3::interval`,
			s.Study, s.TakenAt, retention)
		return err
	})
	return stored, wrapErr(fmt.Sprintf("insert drift snapshot of %q", s.Study), err)
}

// DriftSnapshots returns the newest limit snapshots of a study taken at or
// after since, oldest first, compact (see alignet.DriftSnapshot.Compact)
// but for the newest of the study, which keeps its detail. A study that
// does not exist is alignet.ErrNotFound.
func (d *DB) DriftSnapshots(ctx context.Context, study string, since time.Time, limit int) ([]alignet.DriftSnapshot, error) {
	defer d.observe("drift_snapshots", time.Now())
	what := fmt.Sprintf("drift snapshots of %q", study)
	var one int
	if err := d.pool.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1`, study).Scan(&one); err != nil {
		return nil, wrapErr(what, err)
	}
	rows, err := d.pool.Query(ctx, `SELECT snapshot, detail FROM drift_snapshots
		WHERE study = $1 AND taken_at >= $2 ORDER BY taken_at DESC LIMIT $3`, study, since, limit)
	if err != nil {
		return nil, wrapErr(what, err)
	}
	defer rows.Close()
	var out []alignet.DriftSnapshot
	for rows.Next() {
		var snap, detail []byte
		if err := rows.Scan(&snap, &detail); err != nil {
			return nil, wrapErr(what+": scan", err)
		}
		var s alignet.DriftSnapshot
		if err := json.Unmarshal(snap, &s); err != nil {
			return nil, fmt.Errorf("db: %s: %w", what, err)
		}
		if detail != nil {
			var dt driftDetail
			if err := json.Unmarshal(detail, &dt); err != nil {
				return nil, fmt.Errorf("db: %s: %w", what, err)
			}
			s.PerMinute, s.Reliability, s.Quality.WorkerList = dt.PerMinute, dt.Reliability, dt.Workers
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, wrapErr(what, err)
	}
	slices.Reverse(out)
	return out, nil
}
