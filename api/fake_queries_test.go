package api

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/alignet/alignet"
)

// fakeQuery is a stored query with its answer's measurements.
type fakeQuery struct {
	q      alignet.Query
	fast   bool
	passed *bool
}

// fakeFlags are a worker's stored counts.
type fakeFlags struct {
	w           alignet.WorkerFlags
	flagChanged time.Time
}

func (f *fakeStore) OpenSession(ctx context.Context, s alignet.Session) (alignet.Session, bool, error) {
	done, err := f.enter(ctx, "OpenSession")
	if err != nil {
		return alignet.Session{}, false, err
	}
	defer done()
	if s.Study == "" || s.ID == "" || s.Worker == "" || !s.Platform.Valid() || s.Trials < 1 || s.CreatedAt.IsZero() {
		return alignet.Session{}, false, fmt.Errorf("fake: open session: %w: incomplete session", alignet.ErrInvalid)
	}
	if err := pgText(s.Study, s.ID, s.Worker, s.External); err != nil {
		return alignet.Session{}, false, err
	}
	if _, ok := f.studies[s.Study]; !ok {
		return alignet.Session{}, false, fmt.Errorf("study %q: %w", s.Study, alignet.ErrNotFound)
	}
	var byExternal, open *alignet.Session
	for _, cur := range f.sessions {
		if cur.Study != s.Study || cur.Worker != s.Worker {
			continue
		}
		if s.External != "" && cur.External == s.External && (byExternal == nil || cur.CreatedAt.After(byExternal.CreatedAt)) {
			c := cur
			byExternal = &c
		}
		if cur.CompletedAt == nil {
			c := cur
			open = &c
		}
	}
	switch {
	case byExternal != nil:
		return *byExternal, false, nil
	case open != nil:
		return *open, false, nil
	}
	s.Params = maps.Clone(s.Params)
	if len(s.Params) == 0 {
		s.Params = nil
	}
	f.sessions[[2]string{s.Study, s.ID}] = s
	return s, true, nil
}

func (f *fakeStore) GetSession(ctx context.Context, study, id string) (alignet.Session, error) {
	done, err := f.enter(ctx, "GetSession")
	if err != nil {
		return alignet.Session{}, err
	}
	defer done()
	s, ok := f.sessions[[2]string{study, id}]
	if !ok {
		return alignet.Session{}, fmt.Errorf("session %q: %w", id, alignet.ErrNotFound)
	}
	return s, nil
}

func (f *fakeStore) CompleteSession(ctx context.Context, study, id string, at time.Time) error {
	done, err := f.enter(ctx, "CompleteSession")
	if err != nil {
		return err
	}
	defer done()
	k := [2]string{study, id}
	s, ok := f.sessions[k]
	if !ok {
		return fmt.Errorf("session %q: %w", id, alignet.ErrNotFound)
	}
	if s.CompletedAt == nil {
		t := at
		s.CompletedAt = &t
		f.sessions[k] = s
	}
	return nil
}

func fakeCheckQuery(q *alignet.Query) error {
	if q.Study == "" || q.ID == "" || q.Session == "" || q.Worker == "" || !q.Kind.Valid() ||
		q.Items[0] == "" || q.Items[1] == "" || q.Items[2] == "" || q.ServedAt.IsZero() || q.ExpiresAt.IsZero() {
		return fmt.Errorf("fake: %w: incomplete query", alignet.ErrInvalid)
	}
	return pgText(q.Study, q.ID, q.Session, q.Worker, q.Items[0], q.Items[1], q.Items[2], q.Expected)
}

func (f *fakeStore) LogQueries(ctx context.Context, qs []alignet.Query) (int64, error) {
	done, err := f.enter(ctx, "LogQueries")
	if err != nil {
		return 0, err
	}
	defer done()
	for i := range qs {
		if err := fakeCheckQuery(&qs[i]); err != nil {
			return 0, err
		}
		if _, ok := f.studies[qs[i].Study]; !ok {
			return 0, fmt.Errorf("study %q: %w", qs[i].Study, alignet.ErrNotFound)
		}
	}
	var n int64
	for _, q := range qs {
		k := [2]string{q.Study, q.ID}
		if _, ok := f.queries[k]; !ok {
			q.AnsweredBy, q.AnsweredAt = "", nil
			f.addQueryLocked(&fakeQuery{q: q})
			n++
		}
	}
	return n, nil
}

// addQueryLocked stores a new query, indexed by worker too.
func (f *fakeStore) addQueryLocked(q *fakeQuery) {
	f.queries[[2]string{q.q.Study, q.q.ID}] = q
	wk := [2]string{q.q.Study, q.q.Worker}
	f.byWorker[wk] = append(f.byWorker[wk], q)
}

func (f *fakeStore) GetQuery(ctx context.Context, study, id string) (alignet.Query, error) {
	done, err := f.enter(ctx, "GetQuery")
	if err != nil {
		return alignet.Query{}, err
	}
	defer done()
	q, ok := f.queries[[2]string{study, id}]
	if !ok {
		return alignet.Query{}, fmt.Errorf("query %q: %w", id, alignet.ErrNotFound)
	}
	return q.q, nil
}

func (f *fakeStore) WorkerQueries(ctx context.Context, study, worker string) ([]alignet.Query, error) {
	done, err := f.enter(ctx, "WorkerQueries")
	if err != nil {
		return nil, err
	}
	defer done()
	out := []alignet.Query{}
	for _, q := range f.byWorker[[2]string{study, worker}] {
		out = append(out, q.q)
	}
	slices.SortFunc(out, func(a, b alignet.Query) int {
		if c := a.ServedAt.Compare(b.ServedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (f *fakeStore) AnswerQueries(ctx context.Context, study string, as []alignet.Answer, flags alignet.FlagSettings) ([]alignet.AnswerOutcome, error) {
	done, err := f.enter(ctx, "AnswerQueries")
	if err != nil {
		return nil, err
	}
	defer done()
	if _, ok := f.studies[study]; !ok {
		return nil, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	for i := range as {
		if as[i].Query.Study != study || as[i].JudgmentID == "" || as[i].At.IsZero() {
			return nil, fmt.Errorf("fake: %w: incomplete answer", alignet.ErrInvalid)
		}
		if err := fakeCheckQuery(&as[i].Query); err != nil {
			return nil, err
		}
	}
	out := make([]alignet.AnswerOutcome, len(as))
	refused := false
	inBatch := map[string]string{} // query id -> judgment id bound by this batch
	for i, a := range as {
		by, bound := inBatch[a.Query.ID]
		exp := a.Query.ExpiresAt
		if cur, ok := f.queries[[2]string{study, a.Query.ID}]; ok {
			exp = cur.q.ExpiresAt
			if !bound {
				by = cur.q.AnsweredBy
			}
		}
		switch {
		case by == a.JudgmentID:
			out[i] = alignet.AnswerRepeated
		case by != "":
			out[i], refused = alignet.AnswerTaken, true
		case !exp.After(a.At):
			out[i], refused = alignet.AnswerExpired, true
		default:
			out[i] = alignet.AnswerBound
			inBatch[a.Query.ID] = a.JudgmentID
		}
	}
	if refused {
		return out, nil
	}
	var workers []string
	for i, a := range as {
		if out[i] != alignet.AnswerBound {
			continue
		}
		k := [2]string{study, a.Query.ID}
		cur, ok := f.queries[k]
		if !ok {
			cur = &fakeQuery{q: a.Query}
			f.addQueryLocked(cur)
		}
		at := a.At
		cur.q.AnsweredBy, cur.q.AnsweredAt, cur.fast, cur.passed = a.JudgmentID, &at, a.Fast, a.CheckPassed
		workers = append(workers, a.Query.Worker)
	}
	f.updateFlagsLocked(study, workers, flags)
	return out, nil
}

func (f *fakeStore) UnanswerQueries(ctx context.Context, study string, as []alignet.Answer, flags alignet.FlagSettings) error {
	done, err := f.enter(ctx, "UnanswerQueries")
	if err != nil {
		return err
	}
	defer done()
	var workers []string
	for _, a := range as {
		if cur, ok := f.queries[[2]string{study, a.Query.ID}]; ok && cur.q.AnsweredBy == a.JudgmentID {
			cur.q.AnsweredBy, cur.q.AnsweredAt, cur.fast, cur.passed = "", nil, false, nil
		}
		workers = append(workers, a.Query.Worker)
	}
	f.updateFlagsLocked(study, workers, flags)
	return nil
}

// updateFlagsLocked recomputes the workers' counts as *db.DB does.
func (f *fakeStore) updateFlagsLocked(study string, workers []string, flags alignet.FlagSettings) {
	now := time.Now().UTC()
	for _, w := range workers {
		c := alignet.WorkerFlags{Study: study, Worker: w}
		for _, q := range f.byWorker[[2]string{study, w}] {
			if q.q.AnsweredBy == "" {
				continue
			}
			c.Trials++
			if q.fast {
				c.Fast++
			}
			if q.passed != nil && *q.passed {
				c.ChecksPassed++
			}
			if q.passed != nil && !*q.passed {
				c.ChecksFailed++
			}
		}
		c.Reasons = flags.Reasons(c)
		c.Flagged = len(c.Reasons) > 0
		c.UpdatedAt = now
		k := [2]string{study, w}
		prev := f.flags[k]
		ff := &fakeFlags{w: c}
		if prev != nil {
			ff.flagChanged, ff.w.FlaggedAt = prev.flagChanged, prev.w.FlaggedAt
		}
		if (prev != nil && prev.w.Flagged) != c.Flagged {
			ff.flagChanged = now
		}
		switch {
		case !c.Flagged:
			ff.w.FlaggedAt = nil
		case ff.w.FlaggedAt == nil:
			t := now
			ff.w.FlaggedAt = &t
		}
		f.flags[k] = ff
	}
}

func (f *fakeStore) WorkerFlags(ctx context.Context, study string) ([]alignet.WorkerFlags, error) {
	done, err := f.enter(ctx, "WorkerFlags")
	if err != nil {
		return nil, err
	}
	defer done()
	if _, ok := f.studies[study]; !ok {
		return nil, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	out := []alignet.WorkerFlags{}
	for k, v := range f.flags {
		if k[0] == study {
			out = append(out, v.w)
		}
	}
	slices.SortFunc(out, func(a, b alignet.WorkerFlags) int { return strings.Compare(a.Worker, b.Worker) })
	return out, nil
}

func (f *fakeStore) FlagChangesSince(ctx context.Context, since time.Time) ([]alignet.WorkerFlags, time.Time, error) {
	done, err := f.enter(ctx, "FlagChangesSince")
	if err != nil {
		return nil, time.Time{}, err
	}
	defer done()
	type change struct {
		at time.Time
		w  alignet.WorkerFlags
	}
	var cs []change
	for _, v := range f.flags {
		if !v.flagChanged.IsZero() && !v.flagChanged.Before(since) {
			cs = append(cs, change{v.flagChanged, v.w})
		}
	}
	slices.SortFunc(cs, func(a, b change) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return strings.Compare(a.w.Study+"\x00"+a.w.Worker, b.w.Study+"\x00"+b.w.Worker)
	})
	out := []alignet.WorkerFlags{}
	for _, c := range cs {
		out = append(out, c.w)
	}
	return out, time.Now().UTC(), nil
}

func (f *fakeStore) RepeatSet(ctx context.Context, study string) ([][3]string, error) {
	done, err := f.enter(ctx, "RepeatSet")
	if err != nil {
		return nil, err
	}
	defer done()
	if _, ok := f.studies[study]; !ok {
		return nil, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	return append([][3]string{}, f.repeats[study]...), nil
}

func (f *fakeStore) EnsureRepeatSet(ctx context.Context, study string, ts [][3]string) ([][3]string, error) {
	done, err := f.enter(ctx, "EnsureRepeatSet")
	if err != nil {
		return nil, err
	}
	defer done()
	if _, ok := f.studies[study]; !ok {
		return nil, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	if len(f.repeats[study]) == 0 {
		f.repeats[study] = slices.Clone(ts)
	}
	return append([][3]string{}, f.repeats[study]...), nil
}

func (f *fakeStore) ExportJudgmentQueries(ctx context.Context, jf alignet.JudgmentFilter, fn func(alignet.Judgment, *alignet.Query) error) error {
	// The join reads the answered queries under the lock, as one snapshot.
	f.mu.Lock()
	qs := make(map[[2]string]alignet.Query, len(f.queries))
	for k, v := range f.queries {
		if v.q.AnsweredBy != "" {
			qs[k] = v.q
		}
	}
	f.mu.Unlock()
	return f.ExportJudgments(ctx, jf, func(j alignet.Judgment) error {
		var qp *alignet.Query
		if q, ok := qs[[2]string{j.Study, j.QueryID}]; ok && j.QueryID != "" {
			qp = &q
		}
		return fn(j, qp)
	})
}
