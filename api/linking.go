package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/alignet/alignet"
)

// linkedJudgmentID is the id a judgment answering query qid gets when the
// page sends none, so that retries of it are idempotent.
func linkedJudgmentID(qid string) string { return "q:" + qid }

// findQuery returns a query of the study: from the engine that served it
// on this replica, else from the query log. A query served by another
// replica moments ago may not be logged yet, so a miss is retried once
// after the log's write interval.
func (s *Server) findQuery(ctx context.Context, study, id string) (alignet.Query, bool, error) {
	if e, ok := s.sel.loaded(study); ok {
		if q, ok := e.Lookup(id); ok {
			return q, true, nil
		}
	}
	for attempt := 0; ; attempt++ {
		q, err := s.deps.Sessions.GetQuery(ctx, study, id)
		if err == nil {
			return q, true, nil
		}
		if !errors.Is(err, alignet.ErrNotFound) {
			return alignet.Query{}, false, err
		}
		if attempt > 0 {
			return alignet.Query{}, false, nil
		}
		select {
		case <-time.After(2 * s.cfg.QueryLogInterval):
		case <-ctx.Done():
			return alignet.Query{}, false, ctx.Err()
		}
	}
}

// sameItems reports whether a judgment's items are the query's: the same
// three items for odd-one-out (display order aside), the same head and
// the same other two for anchor.
func sameItems(task alignet.Task, j, q [3]string) bool {
	if task == alignet.TaskAnchor {
		return j[0] == q[0] && (j[1] == q[1] && j[2] == q[2] || j[1] == q[2] && j[2] == q[1])
	}
	for _, it := range j {
		if it != q[0] && it != q[1] && it != q[2] {
			return false
		}
	}
	return true
}

// link resolves the query each judgment with a query_id answers, checks
// that it was served to the judgment's worker with the same items, stamps
// the query's kind on the judgment and returns the answers to bind, with
// the index of each one's judgment.
func (s *Server) link(ctx context.Context, st *studyEntry, js []alignet.Judgment, batch bool) ([]alignet.Answer, []int, *Error) {
	var as []alignet.Answer
	var idx []int
	qs := st.study.Settings.Queries
	prefix := func(i int, e *Error) *Error {
		if batch {
			return e.withPrefix("[" + strconv.Itoa(i) + "]")
		}
		return e
	}
	for i := range js {
		j := &js[i]
		if j.QueryID == "" {
			continue
		}
		q, found, err := s.findQuery(ctx, st.study.ID, j.QueryID)
		switch {
		case err != nil:
			return nil, nil, storeErr(err, "query", "query_id")
		case !found:
			s.metrics.answers.WithLabelValues("unknown").Inc()
			return nil, nil, prefix(i, newErr(http.StatusUnprocessableEntity, CodeUnknownQuery, "query_id",
				"query %q was not served in study %q", truncate(j.QueryID, alignet.MaxQueryIDLen), st.study.ID))
		case q.Worker != j.Worker:
			s.metrics.answers.WithLabelValues("foreign").Inc()
			return nil, nil, prefix(i, newErr(http.StatusConflict, CodeQueryForeign, "query_id",
				"query %q belongs to another session", j.QueryID))
		case !sameItems(st.study.Task, j.Items, q.Items):
			s.metrics.answers.WithLabelValues("mismatch").Inc()
			field := "items"
			if st.study.Task == alignet.TaskAnchor {
				field = "head"
			}
			return nil, nil, prefix(i, newErr(http.StatusUnprocessableEntity, CodeQueryMismatch, field,
				"the judgment's items are not those of query %q", j.QueryID))
		}
		j.QueryKind = q.Kind
		a := alignet.Answer{Query: q, JudgmentID: j.ID, At: j.ReceivedAt, RTMillis: j.RTMillis,
			Fast: int(j.RTMillis) < qs.MinRTMillis}
		if q.Kind == alignet.QueryCheck {
			given := j.Odd
			if st.study.Task == alignet.TaskAnchor {
				given = j.Items[1] // the item judged closer
			}
			passed := given == q.Expected
			a.CheckPassed = &passed
		}
		as = append(as, a)
		idx = append(idx, i)
	}
	return as, idx, nil
}

// bindAnswers binds the answers in the store, all or nothing, and turns a
// refusal into the error of the first refused answer.
func (s *Server) bindAnswers(ctx context.Context, st *studyEntry, as []alignet.Answer, idx []int, batch bool) ([]alignet.AnswerOutcome, *Error) {
	outcomes, err := s.deps.Sessions.AnswerQueries(ctx, st.study.ID, as, st.study.Settings.Queries.Flags)
	if err != nil {
		return nil, storeErr(err, "query", "query_id")
	}
	var refusal *Error
	for k, o := range outcomes {
		s.metrics.answers.WithLabelValues(string(o)).Inc()
		if refusal != nil {
			continue
		}
		switch o {
		case alignet.AnswerTaken:
			refusal = newErr(http.StatusConflict, CodeQueryAnswered, "query_id",
				"query %q was answered already by another judgment", as[k].Query.ID)
		case alignet.AnswerExpired:
			refusal = newErr(http.StatusGone, CodeQueryExpired, "query_id",
				"query %q expired at %s before it was answered", as[k].Query.ID, as[k].Query.ExpiresAt.UTC().Format(time.RFC3339))
		default:
			continue
		}
		if batch {
			refusal = refusal.withPrefix("[" + strconv.Itoa(idx[k]) + "]")
		}
	}
	if refusal != nil {
		return nil, refusal
	}
	return outcomes, nil
}

// unbind takes back new bindings after the judgments could not be
// published, so that a retry can bind them again.
func (s *Server) unbind(ctx context.Context, st *studyEntry, as []alignet.Answer, outcomes []alignet.AnswerOutcome) {
	var back []alignet.Answer
	for k, o := range outcomes {
		if o == alignet.AnswerBound {
			back = append(back, as[k])
		}
	}
	if len(back) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.deps.Sessions.UnanswerQueries(ctx, st.study.ID, back, st.study.Settings.Queries.Flags); err != nil {
		s.log.Warn("taking back query answers failed; retries with other judgment ids will be refused",
			"study", st.study.ID, "answers", len(back), "err", err)
	}
}
