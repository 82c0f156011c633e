package db

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/alignet/alignet"
	"github.com/jackc/pgx/v5"
)

const queryColumns = `study, id, session, worker, kind, item_a, item_b, item_c, coalesce(expected, ''), score,
	teacher_version, served_at, expires_at, coalesce(answered_by, ''), answered_at`

func scanQuery(row pgx.Row, q *alignet.Query) error {
	return row.Scan(&q.Study, &q.ID, &q.Session, &q.Worker, &q.Kind, &q.Items[0], &q.Items[1], &q.Items[2], &q.Expected,
		&q.Score, &q.TeacherVersion, &q.ServedAt, &q.ExpiresAt, &q.AnsweredBy, &q.AnsweredAt)
}

// checkQuery reports a query that cannot be stored.
func checkQuery(q *alignet.Query) error {
	if q.Study == "" || q.ID == "" || q.Session == "" || q.Worker == "" || !q.Kind.Valid() ||
		q.Items[0] == "" || q.Items[1] == "" || q.Items[2] == "" || q.ServedAt.IsZero() || q.ExpiresAt.IsZero() {
		return fmt.Errorf("%w: incomplete query %+v", alignet.ErrInvalid, *q)
	}
	return nil
}

// insertQueries inserts qs (all of one transaction's studies already
// checked), skipping those stored already, and returns how many it added.
func insertQueries(ctx context.Context, tx pgx.Tx, qs []alignet.Query) (int64, error) {
	n := len(qs)
	study, id, sess, worker, kind := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	a, b, c, exp := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	score := make([]float64, n)
	version := make([]int64, n)
	served, expires := make([]time.Time, n), make([]time.Time, n)
	for i := range qs {
		q := &qs[i]
		study[i], id[i], sess[i], worker[i], kind[i] = q.Study, q.ID, q.Session, q.Worker, string(q.Kind)
		a[i], b[i], c[i], exp[i] = q.Items[0], q.Items[1], q.Items[2], q.Expected
		score[i], version[i], served[i], expires[i] = q.Score, q.TeacherVersion, q.ServedAt, q.ExpiresAt
	}
	tag, err := tx.Exec(ctx, `INSERT INTO queries
		(study, id, session, worker, kind, item_a, item_b, item_c, expected, score, teacher_version, served_at, expires_at)
		SELECT s, i, se, w, k, a, b, c, NULLIF(e, ''), sc, v, sa, ea
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
			$9::text[], $10::float8[], $11::int8[], $12::timestamptz[], $13::timestamptz[])
			AS u(s, i, se, w, k, a, b, c, e, sc, v, sa, ea)
		ORDER BY s, i
		ON CONFLICT (study, id) DO NOTHING`,
		study, id, sess, worker, kind, a, b, c, exp, score, version, served, expires)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// LogQueries stores served queries in one transaction and returns how many
// were new; queries stored already (by an earlier batch, or by the answer
// that beat the batch) are skipped unchanged. A study that does not exist
// yields an error wrapping alignet.ErrNotFound, and nothing is stored.
func (d *DB) LogQueries(ctx context.Context, qs []alignet.Query) (int64, error) {
	if len(qs) == 0 {
		return 0, nil
	}
	var studies []string
	for i := range qs {
		if err := checkQuery(&qs[i]); err != nil {
			return 0, fmt.Errorf("db: log queries: %w", err)
		}
		studies = append(studies, qs[i].Study)
	}
	slices.Sort(studies)
	studies = slices.Compact(studies)
	var n int64
	err := d.inTx(ctx, "log_queries", func(tx pgx.Tx) error {
		if err := lockStudies(ctx, tx, studies); err != nil {
			return err
		}
		var err error
		n, err = insertQueries(ctx, tx, qs)
		return err
	})
	if err != nil {
		return 0, wrapErr(fmt.Sprintf("log %d queries", len(qs)), err)
	}
	return n, nil
}

// GetQuery returns query id of study, or an error wrapping
// alignet.ErrNotFound.
func (d *DB) GetQuery(ctx context.Context, study, id string) (alignet.Query, error) {
	defer d.observe("get_query", time.Now())
	var q alignet.Query
	err := scanQuery(d.pool.QueryRow(ctx, `SELECT `+queryColumns+` FROM queries WHERE study = $1 AND id = $2`, study, id), &q)
	if err != nil {
		return alignet.Query{}, wrapErr(fmt.Sprintf("get query %q of study %q", id, study), err)
	}
	return q, nil
}

// WorkerQueries returns every stored query served to the worker in study,
// from all their sessions, oldest first.
func (d *DB) WorkerQueries(ctx context.Context, study, worker string) ([]alignet.Query, error) {
	defer d.observe("worker_queries", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT `+queryColumns+` FROM queries WHERE study = $1 AND worker = $2 ORDER BY served_at, id`, study, worker)
	if err != nil {
		return nil, wrapErr("worker queries", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.Query, error) {
		var q alignet.Query
		err := scanQuery(r, &q)
		return q, err
	})
	if err != nil {
		return nil, wrapErr("worker queries", err)
	}
	if out == nil {
		out = []alignet.Query{}
	}
	return out, nil
}

// AnswerQueries binds judgments to the queries they answer, all or
// nothing, and returns the outcome of each answer in order. A query not
// stored yet is stored first from Answer.Query. A query is bound once: to
// an unanswered query whose ExpiresAt is after Answer.At the judgment is
// bound (AnswerBound); a query bound to the same judgment id is a retry
// (AnswerRepeated); one bound to another id is AnswerTaken and one past
// its TTL unanswered is AnswerExpired. Unless every outcome is bound or
// repeated nothing is written; otherwise the answered workers' counts and
// flags (worker_flags, by flags.Reasons) are updated in the same
// transaction. Every answer must belong to study, whose absence yields an
// error wrapping alignet.ErrNotFound.
func (d *DB) AnswerQueries(ctx context.Context, study string, as []alignet.Answer, flags alignet.FlagSettings) ([]alignet.AnswerOutcome, error) {
	if len(as) == 0 {
		return []alignet.AnswerOutcome{}, nil
	}
	order := make([]int, len(as))
	for i := range as {
		if as[i].Query.Study != study || as[i].JudgmentID == "" || as[i].At.IsZero() {
			return nil, fmt.Errorf("db: answer queries: %w: answer %d is not a complete answer in study %q", alignet.ErrInvalid, i, study)
		}
		if err := checkQuery(&as[i].Query); err != nil {
			return nil, fmt.Errorf("db: answer queries: %w", err)
		}
		order[i] = i
	}
	// Lock queries in id order so overlapping batches cannot deadlock.
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(as[a].Query.ID, as[b].Query.ID) })
	outcomes := make([]alignet.AnswerOutcome, len(as))
	errRefused := errors.New("refused")
	err := d.inTx(ctx, "answer_queries", func(tx pgx.Tx) error {
		if err := lockStudies(ctx, tx, []string{study}); err != nil {
			return err
		}
		qs := make([]alignet.Query, len(order))
		ids := make([]string, len(order))
		for k, i := range order {
			qs[k], ids[k] = as[i].Query, as[i].Query.ID
		}
		if _, err := insertQueries(ctx, tx, qs); err != nil {
			return err
		}
		// Lock the rows in id order and read their bindings at once.
		rows, err := tx.Query(ctx, `SELECT id, coalesce(answered_by, ''), expires_at FROM queries
			WHERE study = $1 AND id = ANY($2::text[]) ORDER BY id FOR UPDATE`, study, ids)
		if err != nil {
			return err
		}
		type binding struct {
			by      string
			expires time.Time
		}
		cur := make(map[string]binding, len(ids))
		var id string
		var b binding
		if _, err := pgx.ForEachRow(rows, []any{&id, &b.by, &b.expires}, func() error {
			cur[id] = b
			return nil
		}); err != nil {
			return err
		}
		refused := false
		var bid, bjid []string
		var bat []time.Time
		var brt []int32
		var bfast []bool
		var bpassed []*bool
		var workers []string
		for _, i := range order {
			a := &as[i]
			c := cur[a.Query.ID]
			switch {
			case c.by == a.JudgmentID:
				outcomes[i] = alignet.AnswerRepeated
			case c.by != "":
				outcomes[i], refused = alignet.AnswerTaken, true
			case !c.expires.After(a.At):
				outcomes[i], refused = alignet.AnswerExpired, true
			default:
				// Two answers to one query in the same batch: the first binds.
				outcomes[i] = alignet.AnswerBound
				cur[a.Query.ID] = binding{by: a.JudgmentID, expires: c.expires}
				bid, bjid, bat = append(bid, a.Query.ID), append(bjid, a.JudgmentID), append(bat, a.At)
				brt, bfast, bpassed = append(brt, a.RTMillis), append(bfast, a.Fast), append(bpassed, a.CheckPassed)
				workers = append(workers, a.Query.Worker)
			}
		}
		if refused {
			return errRefused
		}
		if len(bid) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE queries q SET answered_by = u.jid, answered_at = u.at, rt_ms = u.rt, fast = u.fast, check_passed = u.passed
			FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::int4[], $6::bool[], $7::bool[]) AS u(id, jid, at, rt, fast, passed)
			WHERE q.study = $1 AND q.id = u.id`, study, bid, bjid, bat, brt, bfast, bpassed); err != nil {
			return err
		}
		return updateWorkerFlags(ctx, tx, study, workers, flags)
	})
	if errors.Is(err, errRefused) {
		return outcomes, nil
	}
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("answer %d queries of study %q", len(as), study), err)
	}
	return outcomes, nil
}

// UnanswerQueries takes back bindings made by AnswerQueries that could not
// be published (the answers' Query.ID and JudgmentID; bindings to other
// judgments are left alone) and updates the workers' counts and flags.
func (d *DB) UnanswerQueries(ctx context.Context, study string, as []alignet.Answer, flags alignet.FlagSettings) error {
	if len(as) == 0 {
		return nil
	}
	ids, jids := make([]string, len(as)), make([]string, len(as))
	var workers []string
	for i, a := range as {
		ids[i], jids[i] = a.Query.ID, a.JudgmentID
		workers = append(workers, a.Query.Worker)
	}
	err := d.inTx(ctx, "unanswer_queries", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE queries q SET answered_by = NULL, answered_at = NULL, rt_ms = NULL, fast = NULL, check_passed = NULL
			FROM unnest($2::text[], $3::text[]) AS u(id, jid)
			WHERE q.study = $1 AND q.id = u.id AND q.answered_by = u.jid`, study, ids, jids); err != nil {
			return err
		}
		return updateWorkerFlags(ctx, tx, study, workers, flags)
	})
	return wrapErr(fmt.Sprintf("unanswer %d queries of study %q", len(as), study), err)
}
