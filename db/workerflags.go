package db

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

// countDelta is one answer's contribution to its worker's counts.
type countDelta struct {
	worker string
	fast   bool
	passed *bool
}

// addWorkerCounts adds the answers (sign +1) or takes them back (−1) in
// the counts of their workers in study, in one statement, and stores the
// flag reasons of the workers whose reasons changed. Each binding is
// counted once: AnswerQueries adds only the answers it bound and
// UnanswerQueries takes back only the bindings it deleted, both in the
// transaction that changes the binding.
//
// Flag times come from the database clock (now()), the clock
// FlagChangesSince answers with.
func addWorkerCounts(ctx context.Context, tx pgx.Tx, study string, ds []countDelta, sign int, flags alignet.FlagSettings) error {
	if len(ds) == 0 {
		return nil
	}
	workers, fast, passed := make([]string, len(ds)), make([]bool, len(ds)), make([]*bool, len(ds))
	for i, d := range ds {
		workers[i], fast[i], passed[i] = d.worker, d.fast, d.passed
	}
	rows, err := tx.Query(ctx, `INSERT INTO worker_flags AS f (study, worker, trials, fast, checks_passed, checks_failed, updated_at)
		SELECT $1, w, $5 * count(*), $5 * count(*) FILTER (WHERE fa), $5 * count(*) FILTER (WHERE pa), $5 * count(*) FILTER (WHERE NOT pa), now()
		FROM unnest($2::text[], $3::bool[], $4::bool[]) AS u(w, fa, pa) GROUP BY w ORDER BY w
		ON CONFLICT (study, worker) DO UPDATE SET trials = f.trials + excluded.trials, fast = f.fast + excluded.fast,
			checks_passed = f.checks_passed + excluded.checks_passed, checks_failed = f.checks_failed + excluded.checks_failed,
			updated_at = excluded.updated_at
		RETURNING worker, trials, fast, checks_passed, checks_failed, reasons`, study, workers, fast, passed, sign)
	if err != nil {
		return err
	}
	var changed []alignet.WorkerFlags
	var w alignet.WorkerFlags
	var stored []string
	if _, err := pgx.ForEachRow(rows, []any{&w.Worker, &w.Trials, &w.Fast, &w.ChecksPassed, &w.ChecksFailed, &stored}, func() error {
		w.Reasons = flags.Reasons(w)
		if !slices.Equal(w.Reasons, stored) {
			changed = append(changed, w)
		}
		return nil
	}); err != nil {
		return err
	}
	if len(changed) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	for _, c := range changed {
		reasons := c.Reasons
		if reasons == nil {
			reasons = []string{}
		}
		batch.Queue(`UPDATE worker_flags SET reasons = $3,
				flagged_at = CASE WHEN cardinality($3::text[]) = 0 THEN NULL ELSE coalesce(flagged_at, now()) END,
				flag_changed_at = CASE WHEN (cardinality(reasons) > 0) <> (cardinality($3::text[]) > 0) THEN now() ELSE flag_changed_at END
			WHERE study = $1 AND worker = $2`, study, c.Worker, reasons)
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
