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

// servedColumns are the served query's columns, shared by queries and
// query_answers; servedSelect reads them.
const (
	servedColumns = `session, worker, kind, item_a, item_b, item_c, expected, score, teacher_version, served_at, expires_at`
	servedSelect  = `session, worker, kind, item_a, item_b, item_c, coalesce(expected, ''), score, teacher_version, served_at, expires_at`
	queryColumns  = `study, id, ` + servedSelect
	answerColumns = `study, query_id, ` + servedSelect + `, judgment_id, answered_at`
)

func scanQuery(row pgx.Row, q *alignet.Query) error {
	return row.Scan(&q.Study, &q.ID, &q.Session, &q.Worker, &q.Kind, &q.Items[0], &q.Items[1], &q.Items[2], &q.Expected,
		&q.Score, &q.TeacherVersion, &q.ServedAt, &q.ExpiresAt)
}

// scanAnswered scans answerColumns: an answered query with its binding.
func scanAnswered(row pgx.Row, q *alignet.Query) error {
	var at time.Time
	if err := row.Scan(&q.Study, &q.ID, &q.Session, &q.Worker, &q.Kind, &q.Items[0], &q.Items[1], &q.Items[2], &q.Expected,
		&q.Score, &q.TeacherVersion, &q.ServedAt, &q.ExpiresAt, &q.AnsweredBy, &at); err != nil {
		return err
	}
	q.AnsweredAt = &at
	return nil
}

// checkQuery reports a query that cannot be stored.
func checkQuery(q *alignet.Query) error {
	if q.Study == "" || q.ID == "" || q.Session == "" || q.Worker == "" || !q.Kind.Valid() ||
		q.Items[0] == "" || q.Items[1] == "" || q.Items[2] == "" || q.ServedAt.IsZero() || q.ExpiresAt.IsZero() {
		return fmt.Errorf("%w: incomplete query %+v", alignet.ErrInvalid, *q)
	}
	return nil
}

// studiesExist checks that the sorted, distinct studies exist. Unlike
// lockStudies it takes no row lock: query writes are many and small, and
// concurrent key-share locks on one study row contend; studies are never
// deleted while the API serves them.
func studiesExist(ctx context.Context, tx pgx.Tx, studies []string) error {
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM studies WHERE id = ANY($1::text[])`, studies).Scan(&n); err != nil {
		return err
	}
	if n != len(studies) {
		return fmt.Errorf("studies %q: %w", studies, pgx.ErrNoRows)
	}
	return nil
}

// servedArrays are the served columns of a batch of queries as arrays, in
// the order of servedColumns, after the study and id arrays.
func servedArrays(qs []*alignet.Query) []any {
	n := len(qs)
	study, id, sess, worker, kind := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	a, b, c, exp := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	score := make([]float64, n)
	version := make([]int64, n)
	served, expires := make([]time.Time, n), make([]time.Time, n)
	for i, q := range qs {
		study[i], id[i], sess[i], worker[i], kind[i] = q.Study, q.ID, q.Session, q.Worker, string(q.Kind)
		a[i], b[i], c[i], exp[i] = q.Items[0], q.Items[1], q.Items[2], q.Expected
		score[i], version[i], served[i], expires[i] = q.Score, q.TeacherVersion, q.ServedAt, q.ExpiresAt
	}
	return []any{study, id, sess, worker, kind, a, b, c, exp, score, version, served, expires}
}

// servedUnnest selects the arrays of servedArrays as rows.
const servedUnnest = `unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
	$9::text[], $10::float8[], $11::int8[], $12::timestamptz[], $13::timestamptz[])
	AS u(s, i, se, w, k, a, b, c, e, sc, v, sa, ea)`

// LogQueries stores served queries in one transaction and returns how many
// were new; queries stored already are skipped unchanged. A study that
// does not exist yields an error wrapping alignet.ErrNotFound, and nothing
// is stored.
func (d *DB) LogQueries(ctx context.Context, qs []alignet.Query) (int64, error) {
	if len(qs) == 0 {
		return 0, nil
	}
	var studies []string
	ptrs := make([]*alignet.Query, len(qs))
	for i := range qs {
		if err := checkQuery(&qs[i]); err != nil {
			return 0, fmt.Errorf("db: log queries: %w", err)
		}
		studies = append(studies, qs[i].Study)
		ptrs[i] = &qs[i]
	}
	slices.Sort(studies)
	studies = slices.Compact(studies)
	var n int64
	err := d.inTx(ctx, "log_queries", func(tx pgx.Tx) error {
		if err := studiesExist(ctx, tx, studies); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO queries (study, id, `+servedColumns+`)
			SELECT s, i, se, w, k, a, b, c, NULLIF(e, ''), sc, v, sa, ea FROM `+servedUnnest+`
			ORDER BY s, i ON CONFLICT (study, id) DO NOTHING`, servedArrays(ptrs)...)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, wrapErr(fmt.Sprintf("log %d queries", len(qs)), err)
	}
	return n, nil
}

// GetQuery returns query id of study with its answer, if any: from its
// answer when it was answered (the query log may not hold it yet), else
// from the query log. A query in neither yields an error wrapping
// alignet.ErrNotFound.
func (d *DB) GetQuery(ctx context.Context, study, id string) (alignet.Query, error) {
	defer d.observe("get_query", time.Now())
	var q alignet.Query
	err := scanAnswered(d.pool.QueryRow(ctx, `SELECT `+answerColumns+` FROM query_answers WHERE study = $1 AND query_id = $2`, study, id), &q)
	if errors.Is(err, pgx.ErrNoRows) {
		err = scanQuery(d.pool.QueryRow(ctx, `SELECT `+queryColumns+` FROM queries WHERE study = $1 AND id = $2`, study, id), &q)
	}
	if err != nil {
		return alignet.Query{}, wrapErr(fmt.Sprintf("get query %q of study %q", id, study), err)
	}
	return q, nil
}

// WorkerQueries returns every stored query served to the worker in study,
// from all their sessions, with their answers, oldest first.
func (d *DB) WorkerQueries(ctx context.Context, study, worker string) ([]alignet.Query, error) {
	defer d.observe("worker_queries", time.Now())
	byID := map[string]alignet.Query{}
	collect := func(sql string, scan func(pgx.Row, *alignet.Query) error) error {
		rows, err := d.pool.Query(ctx, sql, study, worker)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var q alignet.Query
			if err := scan(rows, &q); err != nil {
				return err
			}
			byID[q.ID] = q // answers, read second, win
		}
		return rows.Err()
	}
	if err := collect(`SELECT `+queryColumns+` FROM queries WHERE study = $1 AND worker = $2`, scanQuery); err != nil {
		return nil, wrapErr("worker queries", err)
	}
	if err := collect(`SELECT `+answerColumns+` FROM query_answers WHERE study = $1 AND worker = $2`, scanAnswered); err != nil {
		return nil, wrapErr("worker queries", err)
	}
	out := make([]alignet.Query, 0, len(byID))
	for _, q := range byID {
		out = append(out, q)
	}
	slices.SortFunc(out, func(a, b alignet.Query) int {
		if c := a.ServedAt.Compare(b.ServedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// AnswerQueries binds judgments to the queries they answer, all or
// nothing, and returns the outcome of each answer in order. A query is
// bound once: a query not bound yet whose ExpiresAt is after Answer.At is
// bound to the judgment (AnswerBound); one bound to the same judgment id is
// a retry (AnswerRepeated, even past the TTL); one bound to another id is
// AnswerTaken and one past its TTL unanswered is AnswerExpired. Unless
// every outcome is bound or repeated nothing is written; otherwise the
// answered workers' counts and flags (worker_flags, by flags.Reasons) are
// updated in the same transaction. The binding stores the query as served
// (Answer.Query), so it need not be in the query log. Every answer must
// belong to study, whose absence yields an error wrapping
// alignet.ErrNotFound.
func (d *DB) AnswerQueries(ctx context.Context, study string, as []alignet.Answer, flags alignet.FlagSettings) ([]alignet.AnswerOutcome, error) {
	if len(as) == 0 {
		return []alignet.AnswerOutcome{}, nil
	}
	ids := make([]string, len(as))
	for i := range as {
		if as[i].Query.Study != study || as[i].JudgmentID == "" || as[i].At.IsZero() {
			return nil, fmt.Errorf("db: answer queries: %w: answer %d is not a complete answer in study %q", alignet.ErrInvalid, i, study)
		}
		if err := checkQuery(&as[i].Query); err != nil {
			return nil, fmt.Errorf("db: answer queries: %w", err)
		}
		ids[i] = as[i].Query.ID
	}
	outcomes := make([]alignet.AnswerOutcome, len(as))
	errRefused := errors.New("refused")
	err := d.inTx(ctx, "answer_queries", func(tx pgx.Tx) error {
		if err := studiesExist(ctx, tx, []string{study}); err != nil {
			return err
		}
		bound, err := bindings(ctx, tx, study, ids)
		if err != nil {
			return err
		}
		var fresh []int
		if decideAnswers(as, bound, outcomes, &fresh) {
			return errRefused
		}
		if len(fresh) == 0 {
			return nil
		}
		ptrs := make([]*alignet.Query, len(fresh))
		jid, at := make([]string, len(fresh)), make([]time.Time, len(fresh))
		rt, fast, passed := make([]int32, len(fresh)), make([]bool, len(fresh)), make([]*bool, len(fresh))
		ds := make([]countDelta, len(fresh))
		for k, i := range fresh {
			a := &as[i]
			ptrs[k], jid[k], at[k], rt[k], fast[k], passed[k] = &a.Query, a.JudgmentID, a.At, a.RTMillis, a.Fast, a.CheckPassed
			ds[k] = countDelta{worker: a.Query.Worker, fast: a.Fast, passed: a.CheckPassed}
		}
		args := append(servedArrays(ptrs), jid, at, rt, fast, passed)
		// A concurrent binding of the same query wins the primary key: its
		// row is not inserted here, and the batch is refused.
		rows, err := tx.Query(ctx, `INSERT INTO query_answers (study, query_id, `+servedColumns+`, judgment_id, answered_at, rt_ms, fast, check_passed)
			SELECT s, i, se, w, k, a, b, c, NULLIF(e, ''), sc, v, sa, ea, j, t, r, f, p
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
				$9::text[], $10::float8[], $11::int8[], $12::timestamptz[], $13::timestamptz[],
				$14::text[], $15::timestamptz[], $16::int4[], $17::bool[], $18::bool[])
				AS u(s, i, se, w, k, a, b, c, e, sc, v, sa, ea, j, t, r, f, p)
			ORDER BY i ON CONFLICT (study, query_id) DO NOTHING RETURNING query_id`, args...)
		if err != nil {
			return err
		}
		inserted, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if len(inserted) < len(fresh) {
			// Lost a race: decide again against the winners' bindings.
			bound, err := bindings(ctx, tx, study, ids)
			if err != nil {
				return err
			}
			mine := map[string]bool{}
			for _, q := range inserted {
				mine[q] = true
			}
			for _, i := range fresh {
				if !mine[as[i].Query.ID] && bound[as[i].Query.ID] != as[i].JudgmentID {
					outcomes[i] = alignet.AnswerTaken
				}
			}
			return errRefused
		}
		return addWorkerCounts(ctx, tx, study, ds, 1, flags)
	})
	if errors.Is(err, errRefused) {
		return outcomes, nil
	}
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("answer %d queries of study %q", len(as), study), err)
	}
	return outcomes, nil
}

// bindings returns the judgment ids bound to the given queries.
func bindings(ctx context.Context, tx pgx.Tx, study string, ids []string) (map[string]string, error) {
	rows, err := tx.Query(ctx, `SELECT query_id, judgment_id FROM query_answers WHERE study = $1 AND query_id = ANY($2::text[])`, study, ids)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var q, j string
	_, err = pgx.ForEachRow(rows, []any{&q, &j}, func() error {
		out[q] = j
		return nil
	})
	return out, err
}

// decideAnswers sets the outcome of each answer against the bindings
// (updated with the ones it makes), appends the answers to bind to fresh
// and reports whether one is refused. Of two answers to one query in a
// batch, the first binds.
func decideAnswers(as []alignet.Answer, bound map[string]string, outcomes []alignet.AnswerOutcome, fresh *[]int) bool {
	refused := false
	for i := range as {
		a := &as[i]
		by, ok := bound[a.Query.ID]
		switch {
		case ok && by == a.JudgmentID:
			outcomes[i] = alignet.AnswerRepeated
		case ok:
			outcomes[i], refused = alignet.AnswerTaken, true
		case !a.Query.ExpiresAt.After(a.At):
			outcomes[i], refused = alignet.AnswerExpired, true
		default:
			outcomes[i] = alignet.AnswerBound
			bound[a.Query.ID] = a.JudgmentID
			*fresh = append(*fresh, i)
		}
	}
	return refused
}

// UnanswerQueries takes back bindings made by AnswerQueries whose
// judgments could not be published (the answers' Query.ID and
// JudgmentID; bindings to other judgments are left alone): the queries go
// to the query log unanswered, and the workers' counts and flags are
// updated.
func (d *DB) UnanswerQueries(ctx context.Context, study string, as []alignet.Answer, flags alignet.FlagSettings) error {
	if len(as) == 0 {
		return nil
	}
	ids, jids := make([]string, len(as)), make([]string, len(as))
	for i, a := range as {
		ids[i], jids[i] = a.Query.ID, a.JudgmentID
	}
	err := d.inTx(ctx, "unanswer_queries", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `WITH gone AS (
				DELETE FROM query_answers a USING unnest($2::text[], $3::text[]) AS u(id, jid)
				WHERE a.study = $1 AND a.query_id = u.id AND a.judgment_id = u.jid
				RETURNING a.*),
			logged AS (
				INSERT INTO queries (study, id, `+servedColumns+`)
				SELECT study, query_id, `+servedColumns+` FROM gone
				ON CONFLICT (study, id) DO NOTHING)
			SELECT worker, fast, check_passed FROM gone`, study, ids, jids)
		if err != nil {
			return err
		}
		var ds []countDelta
		var c countDelta
		if _, err := pgx.ForEachRow(rows, []any{&c.worker, &c.fast, &c.passed}, func() error {
			d := c
			if c.passed != nil { // the scan target is reused
				v := *c.passed
				d.passed = &v
			}
			ds = append(ds, d)
			return nil
		}); err != nil {
			return err
		}
		return addWorkerCounts(ctx, tx, study, ds, -1, flags)
	})
	return wrapErr(fmt.Sprintf("unanswer %d queries of study %q", len(as), study), err)
}
