package storetest

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/alignet/alignet"
)

func session(study, id, worker, external string) alignet.Session {
	return alignet.Session{ID: id, Study: study, Worker: worker, Platform: alignet.PlatformProlific, External: external,
		Params: map[string]string{"STUDY_ID": "st", "SESSION_ID": external}, Trials: 50, CreatedAt: t0}
}

func testSessions(t *testing.T, s Store) {
	ctx := context.Background()
	if _, _, err := s.OpenSession(ctx, session("ghost", "x", "w", "")); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("OpenSession in a missing study: err = %v, want ErrNotFound", err)
	}
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	if _, _, err := s.OpenSession(ctx, alignet.Session{ID: "x", Study: "s", Worker: "w"}); err == nil {
		t.Fatal("OpenSession without platform, trials and time succeeded")
	}
	a, created, err := s.OpenSession(ctx, session("s", "a", "w1", "visit-1"))
	if err != nil || !created || a.ID != "a" || a.Worker != "w1" || a.External != "visit-1" || a.Params["STUDY_ID"] != "st" ||
		a.Trials != 50 || !a.CreatedAt.Equal(t0) || a.CompletedAt != nil {
		t.Fatalf("OpenSession = %+v, %v, %v", a, created, err)
	}
	// A returning worker gets the open session back, whatever the new id.
	again, created, err := s.OpenSession(ctx, session("s", "b", "w1", "visit-2"))
	if err != nil || created || again.ID != "a" {
		t.Fatalf("OpenSession of a returning worker = %+v, %v, %v; want session a", again, created, err)
	}
	other, created, err := s.OpenSession(ctx, session("s", "c", "w2", ""))
	if err != nil || !created || other.ID != "c" || other.Params["SESSION_ID"] != "" {
		t.Fatalf("OpenSession of another worker = %+v, %v, %v", other, created, err)
	}
	if err := s.CompleteSession(ctx, "s", "a", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteSession(ctx, "s", "a", t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession(ctx, "s", "a")
	if err != nil || got.CompletedAt == nil || !got.CompletedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("GetSession after completing twice = %+v, %v; want the first completion time", got, err)
	}
	// The same visit gets its completed session back; a new one a new session.
	if back, created, err := s.OpenSession(ctx, session("s", "d", "w1", "visit-1")); err != nil || created || back.ID != "a" || back.CompletedAt == nil {
		t.Fatalf("OpenSession of a completed visit = %+v, %v, %v; want completed session a", back, created, err)
	}
	if fresh, created, err := s.OpenSession(ctx, session("s", "e", "w1", "visit-3")); err != nil || !created || fresh.ID != "e" {
		t.Fatalf("OpenSession after completion = %+v, %v, %v; want a new session e", fresh, created, err)
	}
	if _, err := s.GetSession(ctx, "s", "zzz"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("GetSession missing: err = %v, want ErrNotFound", err)
	}
	if err := s.CompleteSession(ctx, "s", "zzz", t0); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("CompleteSession missing: err = %v, want ErrNotFound", err)
	}
}

func query(study, id, session, worker string, kind alignet.QueryKind, items [3]string, served time.Time) alignet.Query {
	q := alignet.Query{ID: id, Study: study, Session: session, Worker: worker, Kind: kind, Items: items,
		Score: 0.5, TeacherVersion: 3, ServedAt: served, ExpiresAt: served.Add(10 * time.Minute)}
	if kind == alignet.QueryCheck {
		q.Expected = items[2]
	}
	return q
}

func sameQuery(a, b alignet.Query) bool {
	if !a.ServedAt.Equal(b.ServedAt) || !a.ExpiresAt.Equal(b.ExpiresAt) || (a.AnsweredAt == nil) != (b.AnsweredAt == nil) ||
		a.AnsweredAt != nil && !a.AnsweredAt.Equal(*b.AnsweredAt) {
		return false
	}
	a.ServedAt, a.ExpiresAt, a.AnsweredAt = b.ServedAt, b.ExpiresAt, b.AnsweredAt
	return reflect.DeepEqual(a, b)
}

func testQueryLog(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	q1 := query("s", "q1", "sa", "w1", alignet.QueryActive, [3]string{"a", "b", "c"}, t0)
	q2 := query("s", "q2", "sa", "w1", alignet.QueryCheck, [3]string{"d", "b", "c"}, t0.Add(time.Second))
	q3 := query("s", "q3", "sb", "w2", alignet.QueryRandom, [3]string{"a", "e", "c"}, t0)
	if _, err := s.LogQueries(ctx, []alignet.Query{q1, query("ghost", "q9", "x", "w", alignet.QueryActive, [3]string{"a", "b", "c"}, t0)}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("LogQueries into a missing study: err = %v, want ErrNotFound", err)
	}
	if _, err := s.LogQueries(ctx, []alignet.Query{{ID: "bad", Study: "s"}}); err == nil {
		t.Fatal("LogQueries of an incomplete query succeeded")
	}
	if n, err := s.LogQueries(ctx, []alignet.Query{q2, q1, q3}); err != nil || n != 3 {
		t.Fatalf("LogQueries = %d, %v; want 3", n, err)
	}
	changed := q1
	changed.Score = 9
	if n, err := s.LogQueries(ctx, []alignet.Query{changed}); err != nil || n != 0 {
		t.Fatalf("LogQueries again = %d, %v; want 0", n, err)
	}
	if got, err := s.GetQuery(ctx, "s", "q1"); err != nil || !sameQuery(got, q1) {
		t.Fatalf("GetQuery = %+v, %v; want %+v (the first write wins)", got, err, q1)
	}
	if got, err := s.GetQuery(ctx, "s", "q2"); err != nil || got.Expected != "c" || got.Kind != alignet.QueryCheck {
		t.Fatalf("GetQuery(check) = %+v, %v", got, err)
	}
	if _, err := s.GetQuery(ctx, "s", "nope"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("GetQuery missing: err = %v, want ErrNotFound", err)
	}
	hist, err := s.WorkerQueries(ctx, "s", "w1")
	if err != nil || len(hist) != 2 || hist[0].ID != "q1" || hist[1].ID != "q2" {
		t.Fatalf("WorkerQueries(w1) = %+v, %v; want q1, q2", hist, err)
	}
	if hist, err := s.WorkerQueries(ctx, "s", "nobody"); err != nil || hist == nil || len(hist) != 0 {
		t.Fatalf("WorkerQueries(nobody) = %#v, %v; want empty, non-nil", hist, err)
	}
}

func answer(q alignet.Query, jid string, at time.Time, rt int32, fast bool, passed *bool) alignet.Answer {
	return alignet.Answer{Query: q, JudgmentID: jid, At: at, RTMillis: rt, Fast: fast, CheckPassed: passed}
}

func testAnswers(t *testing.T, s Store) {
	ctx := context.Background()
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	flags := alignet.FlagSettings{MaxFailedChecks: 2, FastShare: 0.5, MinTrials: 3}
	no := false
	at := t0.Add(time.Minute)
	qa := query("s", "qa", "sa", "w1", alignet.QueryActive, [3]string{"a", "b", "c"}, t0)
	qc1 := query("s", "qc1", "sa", "w1", alignet.QueryCheck, [3]string{"a", "b", "d"}, t0)
	qc2 := query("s", "qc2", "sa", "w1", alignet.QueryCheck, [3]string{"a", "b", "e"}, t0)
	qb := query("s", "qb", "sb", "w2", alignet.QueryRandom, [3]string{"c", "d", "e"}, t0)
	old := query("s", "old", "sb", "w2", alignet.QueryActive, [3]string{"a", "d", "e"}, t0.Add(-time.Hour))
	// Only qb is logged; the others are stored by their answers.
	if _, err := s.LogQueries(ctx, []alignet.Query{qb}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AnswerQueries(ctx, "ghost", []alignet.Answer{answer(query("ghost", "g", "x", "w", alignet.QueryActive, [3]string{"a", "b", "c"}, t0), "j", at, 1, false, nil)}, flags); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("AnswerQueries in a missing study: err = %v, want ErrNotFound", err)
	}
	yes := true
	qp := query("s", "qp", "sb", "w2", alignet.QueryCheck, [3]string{"a", "c", "e"}, t0)
	out, err := s.AnswerQueries(ctx, "s", []alignet.Answer{
		answer(qa, "j1", at, 900, false, nil), answer(qc1, "j2", at, 100, true, &no), answer(qb, "j3", at, 800, false, nil),
		answer(qp, "j7", at, 800, false, &yes),
	}, flags)
	if err != nil || !slices.Equal(out, []alignet.AnswerOutcome{alignet.AnswerBound, alignet.AnswerBound, alignet.AnswerBound, alignet.AnswerBound}) {
		t.Fatalf("AnswerQueries = %v, %v; want four bound", out, err)
	}
	if got, err := s.GetQuery(ctx, "s", "qa"); err != nil || got.AnsweredBy != "j1" || got.AnsweredAt == nil || !got.AnsweredAt.Equal(at) {
		t.Fatalf("answered query = %+v, %v", got, err)
	}
	// A batch with a taken query and an expired one binds nothing, not even
	// its fresh query, and says why.
	out, err = s.AnswerQueries(ctx, "s", []alignet.Answer{
		answer(qc2, "j4", at, 100, true, &no), answer(qa, "j5", at, 900, false, nil), answer(old, "j6", at, 900, false, nil),
	}, flags)
	if err != nil || !slices.Equal(out, []alignet.AnswerOutcome{alignet.AnswerBound, alignet.AnswerTaken, alignet.AnswerExpired}) {
		t.Fatalf("AnswerQueries with a taken and an expired query = %v, %v", out, err)
	}
	if got, err := s.GetQuery(ctx, "s", "qc2"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("query of a refused batch = %+v, %v; want it not stored", got, err)
	}
	// Two judgments answering one query in a batch: the second is refused.
	qd := query("s", "qd", "sa", "w1", alignet.QueryActive, [3]string{"b", "c", "d"}, t0)
	out, err = s.AnswerQueries(ctx, "s", []alignet.Answer{answer(qd, "jd1", at, 900, false, nil), answer(qd, "jd2", at, 900, false, nil)}, flags)
	if err != nil || !slices.Equal(out, []alignet.AnswerOutcome{alignet.AnswerBound, alignet.AnswerTaken}) {
		t.Fatalf("AnswerQueries with two answers to one query = %v, %v; want bound, taken", out, err)
	}
	// A retry of the same judgment succeeds, and counts once.
	out, err = s.AnswerQueries(ctx, "s", []alignet.Answer{answer(qa, "j1", at.Add(time.Hour), 900, false, nil), answer(qc2, "j4", at, 100, true, &no)}, flags)
	if err != nil || !slices.Equal(out, []alignet.AnswerOutcome{alignet.AnswerRepeated, alignet.AnswerBound}) {
		t.Fatalf("AnswerQueries retry = %v, %v; want repeated (even past the TTL), bound", out, err)
	}
	fl, err := s.WorkerFlags(ctx, "s")
	if err != nil || len(fl) != 2 {
		t.Fatalf("WorkerFlags = %+v, %v", fl, err)
	}
	w1, w2 := fl[0], fl[1]
	if w1.Worker != "w1" || w1.Trials != 3 || w1.Fast != 2 || w1.ChecksFailed != 2 || w1.ChecksPassed != 0 || !w1.Flagged ||
		!slices.Equal(w1.Reasons, []string{alignet.FlagFailedChecks, alignet.FlagFastResponses}) || w1.FlaggedAt == nil {
		t.Fatalf("w1 flags = %+v; want 3 trials, 2 fast, 2 failed checks, flagged for both", w1)
	}
	if w2.Worker != "w2" || w2.Trials != 2 || w2.ChecksPassed != 1 || w2.ChecksFailed != 0 || w2.Flagged || w2.Reasons != nil || w2.FlaggedAt != nil {
		t.Fatalf("w2 flags = %+v; want 2 trials, 1 passed check, not flagged", w2)
	}
	changes, asOf, err := s.FlagChangesSince(ctx, time.Time{})
	if err != nil || len(changes) != 1 || changes[0].Worker != "w1" || !changes[0].Flagged || asOf.IsZero() {
		t.Fatalf("FlagChangesSince = %+v, %v, %v; want w1 flagged", changes, asOf, err)
	}
	// Taking back an answer that could not be published unflags w1.
	if err := s.UnanswerQueries(ctx, "s", []alignet.Answer{answer(qc2, "j4", at, 0, false, nil), answer(qa, "someone-else", at, 0, false, nil)}, flags); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetQuery(ctx, "s", "qc2"); err != nil || got.AnsweredBy != "" || got.AnsweredAt != nil {
		t.Fatalf("unanswered query = %+v, %v", got, err)
	}
	if got, _ := s.GetQuery(ctx, "s", "qa"); got.AnsweredBy != "j1" {
		t.Fatalf("UnanswerQueries with another judgment id unbound qa: %+v", got)
	}
	fl, _ = s.WorkerFlags(ctx, "s")
	if fl[0].Trials != 2 || fl[0].ChecksFailed != 1 || fl[0].Flagged {
		t.Fatalf("w1 after the unanswer = %+v; want 2 trials, 1 failed check, not flagged", fl[0])
	}
	changes, _, err = s.FlagChangesSince(ctx, time.Time{})
	if err != nil || len(changes) != 1 || changes[0].Flagged {
		t.Fatalf("FlagChangesSince after the unanswer = %+v, %v; want w1 unflagged", changes, err)
	}
	if _, err := s.WorkerFlags(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("WorkerFlags of a missing study: err = %v, want ErrNotFound", err)
	}
	// The export joins each linked judgment to its query.
	j1 := judgment("s", "j1", "w1", 1)
	j1.QueryID, j1.QueryKind = "qa", alignet.QueryActive
	j3 := judgment("s", "j3", "w2", 2)
	j3.QueryID, j3.QueryKind = "qb", alignet.QueryRandom
	free := judgment("s", "free", "w2", 3)
	free.QueryID, free.QueryKind = "", ""
	if _, err := s.InsertJudgments(ctx, []alignet.Judgment{j1, j3, free}); err != nil {
		t.Fatal(err)
	}
	var rows []string
	err = s.ExportJudgmentQueries(ctx, alignet.JudgmentFilter{Study: "s"}, func(j alignet.Judgment, q *alignet.Query) error {
		switch {
		case q == nil:
			rows = append(rows, j.ID+":-")
		case q.ID != j.QueryID || q.Kind != j.QueryKind || q.AnsweredBy != j.ID || q.TeacherVersion != 3 || q.Session == "" || q.ServedAt.IsZero():
			t.Errorf("judgment %+v joined to %+v", j, q)
		default:
			rows = append(rows, j.ID+":"+q.ID)
		}
		return nil
	})
	if err != nil || !slices.Equal(rows, []string{"j1:qa", "j3:qb", "free:-"}) {
		t.Fatalf("ExportJudgmentQueries = %v, %v", rows, err)
	}
	if err := s.ExportJudgmentQueries(ctx, alignet.JudgmentFilter{Study: "ghost"}, func(alignet.Judgment, *alignet.Query) error { return nil }); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("ExportJudgmentQueries of a missing study: err = %v, want ErrNotFound", err)
	}
}

func testRepeatSet(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.EnsureRepeatSet(ctx, "ghost", [][3]string{{"a", "b", "c"}}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("EnsureRepeatSet in a missing study: err = %v, want ErrNotFound", err)
	}
	if _, err := s.RepeatSet(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("RepeatSet of a missing study: err = %v, want ErrNotFound", err)
	}
	mustSpaceStudy(t, s, "s", alignet.TaskOddOneOut)
	if got, err := s.RepeatSet(ctx, "s"); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("RepeatSet before one is stored = %#v, %v", got, err)
	}
	first := [][3]string{{"a", "b", "c"}, {"d", "e", "f"}}
	if got, err := s.EnsureRepeatSet(ctx, "s", first); err != nil || !slices.Equal(got, first) {
		t.Fatalf("EnsureRepeatSet = %v, %v", got, err)
	}
	if got, err := s.EnsureRepeatSet(ctx, "s", [][3]string{{"x", "y", "z"}}); err != nil || !slices.Equal(got, first) {
		t.Fatalf("EnsureRepeatSet again = %v, %v; want the first set", got, err)
	}
	if got, err := s.RepeatSet(ctx, "s"); err != nil || !slices.Equal(got, first) {
		t.Fatalf("RepeatSet = %v, %v", got, err)
	}
}
