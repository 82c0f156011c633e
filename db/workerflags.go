package db

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

// updateWorkerFlags recomputes the counts of the given workers in study
// from their answered queries and stores them with their flag reasons.
//
// Flag times come from the database clock (now()), the clock
// FlagChangesSince answers with.
func updateWorkerFlags(ctx context.Context, tx pgx.Tx, study string, workers []string, flags alignet.FlagSettings) error {
	slices.Sort(workers)
	workers = slices.Compact(workers)
	if len(workers) == 0 {
		return nil
	}
	// LATERAL makes each worker one index lookup (study, worker), whatever
	// the planner estimates for the join.
	rows, err := tx.Query(ctx, `SELECT u.w, c.n, c.fast, c.passed, c.failed
		FROM unnest($2::text[]) AS u(w) CROSS JOIN LATERAL (
			SELECT count(*) AS n, count(*) FILTER (WHERE q.fast) AS fast,
				count(*) FILTER (WHERE q.check_passed) AS passed, count(*) FILTER (WHERE NOT q.check_passed) AS failed
			FROM query_answers q WHERE q.study = $1 AND q.worker = u.w) c
		ORDER BY u.w`, study, workers)
	if err != nil {
		return err
	}
	var counts []alignet.WorkerFlags
	var w alignet.WorkerFlags
	if _, err := pgx.ForEachRow(rows, []any{&w.Worker, &w.Trials, &w.Fast, &w.ChecksPassed, &w.ChecksFailed}, func() error {
		counts = append(counts, w)
		return nil
	}); err != nil {
		return err
	}
	batch := &pgx.Batch{}
	for _, c := range counts {
		reasons := flags.Reasons(c)
		if reasons == nil {
			reasons = []string{}
		}
		batch.Queue(`INSERT INTO worker_flags AS f (study, worker, trials, fast, checks_passed, checks_failed, reasons, flagged_at, flag_changed_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN cardinality($7::text[]) > 0 THEN now() END,
				CASE WHEN cardinality($7::text[]) > 0 THEN now() END, now())
			ON CONFLICT (study, worker) DO UPDATE SET trials = excluded.trials, fast = excluded.fast,
				checks_passed = excluded.checks_passed, checks_failed = excluded.checks_failed, reasons = excluded.reasons,
				flagged_at = CASE WHEN cardinality(excluded.reasons) = 0 THEN NULL ELSE coalesce(f.flagged_at, excluded.updated_at) END,
				flag_changed_at = CASE WHEN (cardinality(f.reasons) > 0) <> (cardinality(excluded.reasons) > 0)
					THEN excluded.updated_at ELSE f.flag_changed_at END,
				updated_at = excluded.updated_at`,
			study, c.Worker, c.Trials, c.Fast, c.ChecksPassed, c.ChecksFailed, reasons)
	}
	return tx.SendBatch(ctx, batch).Close()
}

const flagColumns = `study, worker, trials, fast, checks_passed, checks_failed, reasons, flagged_at, updated_at`

func scanFlags(row pgx.Row, w *alignet.WorkerFlags) error {
	if err := row.Scan(&w.Study, &w.Worker, &w.Trials, &w.Fast, &w.ChecksPassed, &w.ChecksFailed, &w.Reasons, &w.FlaggedAt, &w.UpdatedAt); err != nil {
		return err
	}
	w.Flagged = len(w.Reasons) > 0
	if len(w.Reasons) == 0 {
		w.Reasons = nil
	}
	return nil
}

// WorkerFlags returns the counts and flags of every worker who answered a
// query in study, sorted by worker. A missing study yields an error
// wrapping alignet.ErrNotFound.
func (d *DB) WorkerFlags(ctx context.Context, study string) ([]alignet.WorkerFlags, error) {
	defer d.observe("worker_flags", time.Now())
	var one int
	if err := d.pool.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1`, study).Scan(&one); err != nil {
		return nil, wrapErr(fmt.Sprintf("worker flags of study %q", study), err)
	}
	rows, err := d.pool.Query(ctx, `SELECT `+flagColumns+` FROM worker_flags WHERE study = $1 ORDER BY worker`, study)
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("worker flags of study %q", study), err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.WorkerFlags, error) {
		var w alignet.WorkerFlags
		err := scanFlags(r, &w)
		return w, err
	})
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("worker flags of study %q", study), err)
	}
	if out == nil {
		out = []alignet.WorkerFlags{}
	}
	return out, nil
}

// FlagChangesSince returns, over all studies, the workers whose flag went
// on or off at or after since (Flagged says which), oldest change first,
// and the store's clock when it answered, to pass (less a margin for
// transactions still committing) as since next time. Learners poll it to
// exclude flagged workers' judgments.
func (d *DB) FlagChangesSince(ctx context.Context, since time.Time) ([]alignet.WorkerFlags, time.Time, error) {
	defer d.observe("flag_changes_since", time.Now())
	var now time.Time
	if err := d.pool.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return nil, time.Time{}, wrapErr("flag changes", err)
	}
	rows, err := d.pool.Query(ctx, `SELECT `+flagColumns+` FROM worker_flags WHERE flag_changed_at >= $1
		ORDER BY flag_changed_at, study, worker`, since)
	if err != nil {
		return nil, time.Time{}, wrapErr("flag changes", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.WorkerFlags, error) {
		var w alignet.WorkerFlags
		err := scanFlags(r, &w)
		return w, err
	})
	if err != nil {
		return nil, time.Time{}, wrapErr("flag changes", err)
	}
	if out == nil {
		out = []alignet.WorkerFlags{}
	}
	return out, now, nil
}
