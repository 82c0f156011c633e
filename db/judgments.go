package db

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

// insertMethod selects how InsertJudgments sends a batch.
type insertMethod int

const (
	// insertUnnest sends one INSERT ... SELECT FROM unnest(arrays).
	insertUnnest insertMethod = iota
	// insertCopy COPYs into a temporary table, then INSERT ... SELECT.
	insertCopy
)

// InsertJudgments stores js in one transaction and returns how many were
// newly inserted. It is idempotent on (study, id): judgments already stored,
// or repeated within js, are skipped (the first occurrence wins). Every
// judgment needs a non-empty Study and ID; a study that does not exist
// yields an error wrapping alignet.ErrNotFound that names it, and nothing is
// stored. Values Postgres rejects, such as a NUL byte in a text field, yield
// an error wrapping alignet.ErrInvalid (see the package's error translation),
// and nothing is stored. An empty Odd, QueryID or QueryKind is stored as
// NULL. Batches are sorted by
// (study, id) before insertion, so concurrent overlapping batches cannot
// deadlock.
func (d *DB) InsertJudgments(ctx context.Context, js []alignet.Judgment) (int64, error) {
	return d.insertJudgments(ctx, js, insertUnnest)
}

func (d *DB) insertJudgments(ctx context.Context, js []alignet.Judgment, method insertMethod) (int64, error) {
	for i := range js {
		if js[i].Study == "" || js[i].ID == "" {
			return 0, fmt.Errorf("db: insert judgments: judgment %d: %w: empty study or id", i, alignet.ErrInvalid)
		}
	}
	if len(js) == 0 {
		return 0, nil
	}
	// Sort by (study, id) so concurrent batches take row locks in the same
	// order (no deadlocks), and drop repeats; the stable sort keeps the
	// first occurrence of each key.
	order := make([]int, len(js))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(strings.Compare(js[a].Study, js[b].Study), strings.Compare(js[a].ID, js[b].ID))
	})
	uniq := order[:1]
	for _, i := range order[1:] {
		last := uniq[len(uniq)-1]
		if js[i].Study != js[last].Study || js[i].ID != js[last].ID {
			uniq = append(uniq, i)
		}
	}
	var n int64
	var studies []string // distinct, sorted
	for _, i := range uniq {
		if len(studies) == 0 || studies[len(studies)-1] != js[i].Study {
			studies = append(studies, js[i].Study)
		}
	}
	err := d.inTx(ctx, "insert_judgments", func(tx pgx.Tx) error {
		if err := lockStudies(ctx, tx, studies); err != nil {
			return err
		}
		var err error
		if method == insertCopy {
			n, err = insertJudgmentsCopy(ctx, tx, js, uniq)
		} else {
			n, err = insertJudgmentsUnnest(ctx, tx, js, uniq)
		}
		return err
	})
	if err != nil {
		return 0, wrapErr(fmt.Sprintf("insert %d judgments", len(js)), err)
	}
	return n, nil
}

// lockStudies checks that the sorted, distinct studies exist and locks them
// against deletion until the transaction ends (what a foreign key would do).
func lockStudies(ctx context.Context, tx pgx.Tx, studies []string) error {
	rows, err := tx.Query(ctx, `SELECT id FROM studies WHERE id = ANY($1::text[]) ORDER BY id FOR KEY SHARE`, studies)
	if err != nil {
		return err
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, s := range studies {
		if _, ok := slices.BinarySearch(found, s); !ok {
			return fmt.Errorf("study %q: %w", s, pgx.ErrNoRows)
		}
	}
	return nil
}

func insertJudgmentsUnnest(ctx context.Context, tx pgx.Tx, js []alignet.Judgment, order []int) (int64, error) {
	n := len(order)
	study, id, task, worker := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	a, b, c, odd, qid := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	kind := make([]string, n)
	rt := make([]int32, n)
	recv := make([]time.Time, n)
	for k, i := range order {
		j := &js[i]
		study[k], id[k], task[k], worker[k] = j.Study, j.ID, string(j.Task), j.Worker
		a[k], b[k], c[k], odd[k], qid[k] = j.Items[0], j.Items[1], j.Items[2], j.Odd, j.QueryID
		kind[k], rt[k], recv[k] = string(j.QueryKind), j.RTMillis, j.ReceivedAt
	}
	tag, err := tx.Exec(ctx, `INSERT INTO judgments
		(study, id, task, worker, item_a, item_b, item_c, odd, rt_ms, query_id, query_kind, received_at)
		SELECT s, i, t, w, a, b, c, NULLIF(o, ''), rt, NULLIF(q, ''), NULLIF(k, ''), r
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
			$8::text[], $9::int4[], $10::text[], $11::text[], $12::timestamptz[]) AS u(s, i, t, w, a, b, c, o, rt, q, k, r)
		ON CONFLICT (study, id) DO NOTHING`,
		study, id, task, worker, a, b, c, odd, rt, qid, kind, recv)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func insertJudgmentsCopy(ctx context.Context, tx pgx.Tx, js []alignet.Judgment, order []int) (int64, error) {
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE alignet_judgments_in (
		study text COLLATE "C", id text COLLATE "C", task text, worker text COLLATE "C",
		item_a text COLLATE "C", item_b text COLLATE "C", item_c text COLLATE "C", odd text COLLATE "C",
		rt_ms integer, query_id text COLLATE "C", query_kind text, received_at timestamptz) ON COMMIT DROP`); err != nil {
		return 0, fmt.Errorf("create temp table: %w", err)
	}
	cols := []string{"study", "id", "task", "worker", "item_a", "item_b", "item_c", "odd", "rt_ms", "query_id", "query_kind", "received_at"}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"pg_temp", "alignet_judgments_in"}, cols,
		pgx.CopyFromSlice(len(order), func(k int) ([]any, error) {
			j := &js[order[k]]
			return []any{j.Study, j.ID, string(j.Task), j.Worker, j.Items[0], j.Items[1], j.Items[2],
				nullIfEmpty(j.Odd), j.RTMillis, nullIfEmpty(j.QueryID), nullIfEmpty(string(j.QueryKind)), j.ReceivedAt}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO judgments
		(study, id, task, worker, item_a, item_b, item_c, odd, rt_ms, query_id, query_kind, received_at)
		SELECT study, id, task, worker, item_a, item_b, item_c, odd, rt_ms, query_id, query_kind, received_at
		FROM pg_temp.alignet_judgments_in
		ON CONFLICT (study, id) DO NOTHING`)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// nullIfEmpty maps "" to SQL NULL.
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ExportJudgments calls fn for every judgment matching f, in (received_at,
// id) order, streaming rows from one query without holding them in memory.
// It stops at and returns the first error from fn. A non-empty f.Study that
// does not exist yields an error wrapping alignet.ErrNotFound. At most
// Config.MaxExportConns exports run at once; a further one waits for a
// running one to end, or fails when ctx ends first.
func (d *DB) ExportJudgments(ctx context.Context, f alignet.JudgmentFilter, fn func(alignet.Judgment) error) error {
	return d.export(ctx, f, false, func(j alignet.Judgment, _ *alignet.Query) error { return fn(j) })
}

// ExportJudgmentQueries is ExportJudgments joined to the queries the
// judgments answer (their bindings, which every linked judgment has): fn
// also gets the query each judgment answers, or nil for judgments without
// one.
func (d *DB) ExportJudgmentQueries(ctx context.Context, f alignet.JudgmentFilter, fn func(alignet.Judgment, *alignet.Query) error) error {
	return d.export(ctx, f, true, fn)
}

func (d *DB) export(ctx context.Context, f alignet.JudgmentFilter, join bool, fn func(alignet.Judgment, *alignet.Query) error) error {
	select {
	case d.exports <- struct{}{}:
	case <-ctx.Done():
		return wrapErr("export judgments: wait for a free export connection", ctx.Err())
	}
	defer func() { <-d.exports }()
	defer d.observe("export", time.Now())
	if f.Study != "" {
		var one int
		if err := d.pool.QueryRow(ctx, `SELECT 1 FROM studies WHERE id = $1`, f.Study).Scan(&one); err != nil {
			return wrapErr(fmt.Sprintf("export judgments: study %q", f.Study), err)
		}
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Study != "" {
		add("j.study = $%d", f.Study)
	}
	if !f.Since.IsZero() {
		add("j.received_at >= $%d", f.Since)
	}
	if !f.Until.IsZero() {
		add("j.received_at < $%d", f.Until)
	}
	if f.Worker != "" {
		add("j.worker = $%d", f.Worker)
	}
	q := `SELECT j.study, j.id, j.task, j.worker, j.item_a, j.item_b, j.item_c, coalesce(j.odd, ''), j.rt_ms,
		coalesce(j.query_id, ''), coalesce(j.query_kind, ''), j.received_at`
	if join {
		q += `, q.query_id IS NOT NULL, coalesce(q.session, ''), coalesce(q.worker, ''), coalesce(q.kind, ''),
			coalesce(q.item_a, ''), coalesce(q.item_b, ''), coalesce(q.item_c, ''), coalesce(q.expected, ''),
			coalesce(q.score, 0), coalesce(q.teacher_version, 0), q.served_at, q.expires_at,
			coalesce(q.judgment_id, ''), q.answered_at
		FROM judgments j LEFT JOIN query_answers q ON q.study = j.study AND q.query_id = j.query_id`
	} else {
		q += ` FROM judgments j`
	}
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY j.received_at, j.id, j.study"
	rows, err := d.pool.Query(ctx, q, args...)
	if err != nil {
		return wrapErr("export judgments", err)
	}
	defer rows.Close()
	var j alignet.Judgment
	var qr alignet.Query
	var found bool
	var served, expires, answered *time.Time
	dest := []any{&j.Study, &j.ID, &j.Task, &j.Worker, &j.Items[0], &j.Items[1], &j.Items[2], &j.Odd, &j.RTMillis, &j.QueryID, &j.QueryKind, &j.ReceivedAt}
	if join {
		dest = append(dest, &found, &qr.Session, &qr.Worker, &qr.Kind, &qr.Items[0], &qr.Items[1], &qr.Items[2], &qr.Expected,
			&qr.Score, &qr.TeacherVersion, &served, &expires, &qr.AnsweredBy, &answered)
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return wrapErr("export judgments: scan", err)
		}
		var qp *alignet.Query
		if found {
			qr.ID, qr.Study = j.QueryID, j.Study
			qr.ServedAt, qr.ExpiresAt, qr.AnsweredAt = deref(served), deref(expires), nil
			if answered != nil {
				at := *answered
				qr.AnsweredAt = &at
			}
			c := qr
			qp = &c
		}
		if err := fn(j, qp); err != nil {
			return fmt.Errorf("db: export judgments: %w", err)
		}
	}
	return wrapErr("export judgments", rows.Err())
}

// deref returns *t, or the zero time for nil.
func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// CountJudgments returns the number of judgments stored for study. A missing
// study yields an error wrapping alignet.ErrNotFound.
func (d *DB) CountJudgments(ctx context.Context, study string) (int64, error) {
	defer d.observe("count_judgments", time.Now())
	var n int64
	err := d.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM judgments j WHERE j.study = s.id)
		FROM studies s WHERE s.id = $1`, study).Scan(&n)
	if err != nil {
		return 0, wrapErr(fmt.Sprintf("count judgments of study %q", study), err)
	}
	return n, nil
}

// WorkerSummary returns, per study sorted by id, the judgments stored for
// the worker pseudonym. A worker without judgments gets an empty slice.
func (d *DB) WorkerSummary(ctx context.Context, worker string) ([]alignet.WorkerStudy, error) {
	defer d.observe("worker_summary", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT study, count(*), min(received_at), max(received_at)
		FROM judgments WHERE worker = $1 GROUP BY study ORDER BY study`, worker)
	if err != nil {
		return nil, wrapErr("worker summary", err)
	}
	out := []alignet.WorkerStudy{}
	var w alignet.WorkerStudy
	_, err = pgx.ForEachRow(rows, []any{&w.Study, &w.Judgments, &w.First, &w.Last}, func() error {
		out = append(out, w)
		return nil
	})
	if err != nil {
		return nil, wrapErr("worker summary", err)
	}
	return out, nil
}
