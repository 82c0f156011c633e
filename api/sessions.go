package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/query"
)

// Platform parameters the API reads.
const (
	paramProlificPID    = "PROLIFIC_PID"
	paramProlificStudy  = "STUDY_ID"
	paramProlificSess   = "SESSION_ID"
	paramMTurkWorker    = "workerId"
	paramMTurkAssign    = "assignmentId"
	paramMTurkHIT       = "hitId"
	paramMTurkSubmitTo  = "turkSubmitTo"
	mturkPreview        = "ASSIGNMENT_ID_NOT_AVAILABLE"
	prolificCompleteURL = "https://app.prolific.com/submissions/complete?cc="
)

// Limits of session requests.
const (
	maxSessionParams = 32
	maxParamKeyLen   = 64
	maxParamValueLen = 1024
	// DefaultMaxNext is the default largest n of GET .../next.
	DefaultMaxNext = 100
)

// mturkSubmitHosts are the hosts MTurk completion redirects may go to:
// turkSubmitTo comes from the page's URL, so anything else would make the
// API an open redirect.
var mturkSubmitHosts = map[string]bool{"www.mturk.com": true, "workersandbox.mturk.com": true}

// queryBody is one query as the page sees it: never its kind. Display
// holds the display data of each item, in the order of Items (empty for an
// item without any: the page shows it by its id).
type queryBody struct {
	QueryID string         `json:"query_id,omitempty"`
	Items   [3]string      `json:"items"`
	Display [3]displayBody `json:"display"`
}

// queryBodies returns the queries of a study as pages see them, with their
// items' display data from memory.
func (s *Server) queryBodies(ctx context.Context, study string, qs []alignet.Query) ([]queryBody, error) {
	items := make([]string, 0, 3*len(qs))
	for _, q := range qs {
		items = append(items, q.Items[:]...)
	}
	disp, err := s.displayFor(ctx, study, items)
	if err != nil {
		return nil, err
	}
	out := make([]queryBody, len(qs))
	for i, q := range qs {
		out[i] = queryBody{QueryID: q.ID, Items: q.Items}
		for k, it := range q.Items {
			out[i].Display[k] = disp[it]
		}
	}
	return out, nil
}

// progressBody is a session's progress.
type progressBody struct {
	Trials    int `json:"trials"`
	Answered  int `json:"answered"`
	Open      int `json:"open"`
	Remaining int `json:"remaining"`
}

// completionBody says where a completed participant goes.
type completionBody struct {
	Code     string `json:"code,omitempty"`
	Redirect string `json:"redirect,omitempty"`
}

// sessionBody is the JSON form of a session.
type sessionBody struct {
	ID         string            `json:"id"`
	Study      string            `json:"study"`
	Platform   alignet.Platform  `json:"platform"`
	Trials     int               `json:"trials"`
	Answered   int               `json:"answered"`
	Complete   bool              `json:"complete"`
	Progress   progressBody      `json:"progress"`
	Completion *completionBody   `json:"completion,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	Params     map[string]string `json:"params,omitempty"`
}

// nextBody is the response of GET .../next.
type nextBody struct {
	Queries    []queryBody     `json:"queries"`
	Complete   bool            `json:"complete"`
	Progress   progressBody    `json:"progress"`
	Completion *completionBody `json:"completion,omitempty"`
}

// previewBody is the response to an MTurk preview: example items, no
// session.
type previewBody struct {
	Preview bool        `json:"preview"`
	Study   string      `json:"study"`
	Trials  int         `json:"trials"`
	Queries []queryBody `json:"queries"`
}

func progressOf(r query.Result) progressBody {
	return progressBody{Trials: r.Trials, Answered: r.Answered, Open: r.Open, Remaining: max(r.Trials-r.Answered, 0)}
}

// sessionCode returns the per-session completion code used when the study
// sets none: ten characters of an HMAC of the study and session under the
// pseudonym key, so it cannot be guessed.
func (s *Server) sessionCode(study, session string) string {
	m := hmac.New(sha256.New, s.cfg.PseudonymKey)
	m.Write([]byte("completion\x00" + study + "\x00" + session))
	return base32.StdEncoding.EncodeToString(m.Sum(nil))[:10]
}

// completion returns where a completed session goes.
func (s *Server) completion(st alignet.Study, sess alignet.Session) *completionBody {
	c := st.Settings.Queries.Completion
	code := c.Code
	if code == "" && sess.Platform != alignet.PlatformProlific {
		code = s.sessionCode(st.ID, sess.ID)
	}
	out := &completionBody{Code: code}
	switch sess.Platform {
	case alignet.PlatformProlific:
		out.Redirect = prolificCompleteURL + url.QueryEscape(code)
	case alignet.PlatformMTurk:
		out.Redirect = strings.TrimRight(sess.Params[paramMTurkSubmitTo], "/") + "/mturk/externalSubmit?assignmentId=" +
			url.QueryEscape(sess.Params[paramMTurkAssign]) + "&completion_code=" + url.QueryEscape(code)
	default:
		if c.Redirect != "" {
			out.Redirect = strings.NewReplacer("{code}", url.QueryEscape(code), "{session}", url.QueryEscape(sess.ID)).Replace(c.Redirect)
		}
	}
	return out
}

// sessionRequest is the body of POST .../sessions.
type sessionRequest struct {
	Worker   *string           `json:"worker"`
	Platform *string           `json:"platform"`
	Params   map[string]string `json:"params"`
}

// postSession opens a participant session, or returns the worker's open
// one, or answers an MTurk preview with example items.
func (s *Server) postSession(c echo.Context) error {
	var req sessionRequest
	if err := bindJSON(c, s.cfg.MaxJudgmentBody, &req); err != nil {
		return err
	}
	platform := alignet.PlatformGeneric
	if req.Platform != nil {
		platform = alignet.Platform(*req.Platform)
		if !platform.Valid() {
			return invalid("platform", "platform must be prolific, mturk or generic")
		}
	}
	if len(req.Params) > maxSessionParams {
		return invalid("params", "at most %d params", maxSessionParams)
	}
	keys := make([]string, 0, len(req.Params))
	for k := range req.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" || alignet.CheckText(k, maxParamKeyLen) != "" {
			return invalid("params", "param names must be 1-%d characters of text", maxParamKeyLen)
		}
		if err := badText("params."+k, req.Params[k], maxParamValueLen); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	st, err := s.study(ctx, c.Param("study"))
	if err != nil {
		return err
	}
	// The raw worker id: the body's, or the platform's parameter.
	raw := ""
	if req.Worker != nil {
		raw = *req.Worker
	}
	param := map[alignet.Platform]string{alignet.PlatformProlific: paramProlificPID, alignet.PlatformMTurk: paramMTurkWorker}[platform]
	if p := req.Params[param]; param != "" && p != "" {
		if raw != "" && raw != p {
			return invalid("worker", "worker and params.%s differ", param)
		}
		raw = p
	}
	if platform == alignet.PlatformMTurk {
		switch a := req.Params[paramMTurkAssign]; {
		case a == "":
			return missing("params." + paramMTurkAssign)
		case a == mturkPreview:
			return s.preview(c, st)
		}
		u, err := url.Parse(req.Params[paramMTurkSubmitTo])
		if err != nil || u.Scheme != "https" || !mturkSubmitHosts[u.Host] || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return invalid("params."+paramMTurkSubmitTo, "turkSubmitTo must be https://www.mturk.com or https://workersandbox.mturk.com")
		}
	}
	switch {
	case raw == "":
		return missing("worker")
	case alignet.CheckText(raw, alignet.MaxWorkerLen) != "":
		return badText("worker", raw, alignet.MaxWorkerLen)
	}
	if err := s.limitWorker(c, st.study.ID, raw); err != nil {
		return err
	}
	qs := st.study.Settings.Queries
	if platform == alignet.PlatformProlific && qs.Completion.Code == "" {
		return newErr(http.StatusConflict, CodeNotReady, "",
			"study %q has no completion code for Prolific: set settings.queries.completion.code", st.study.ID)
	}
	e, err := s.sel.engine(ctx, st)
	if err != nil {
		return err
	}
	params := make(map[string]string, len(req.Params))
	for k, v := range req.Params {
		if k != paramProlificPID && k != paramMTurkWorker { // raw worker ids are never stored
			params[k] = v
		}
	}
	external := ""
	switch platform {
	case alignet.PlatformProlific:
		external = params[paramProlificSess]
	case alignet.PlatformMTurk:
		external = params[paramMTurkAssign]
	}
	now := s.cfg.Now().UTC().Truncate(time.Microsecond)
	sess, created, err := s.deps.Sessions.OpenSession(ctx, alignet.Session{
		ID: newQueryID(), Study: st.study.ID, Worker: s.pseudonym(raw), Platform: platform, External: external,
		Params: params, Trials: qs.Trials, CreatedAt: now,
	})
	if err != nil {
		return storeErr(err, "session", "")
	}
	res, err := s.serve(c, st, e, sess, 0)
	if err != nil {
		return err
	}
	status, outcome := http.StatusOK, "resumed"
	if created {
		status, outcome = http.StatusCreated, "new"
	}
	s.metrics.sessions.WithLabelValues(string(sess.Platform), outcome).Inc()
	return c.JSON(status, s.toSessionBody(st.study, sess, res))
}

func (s *Server) toSessionBody(st alignet.Study, sess alignet.Session, res query.Result) sessionBody {
	b := sessionBody{ID: sess.ID, Study: sess.Study, Platform: sess.Platform, Trials: res.Trials, Answered: res.Answered,
		Complete: res.Complete, Progress: progressOf(res), CreatedAt: sess.CreatedAt, Params: sess.Params}
	if res.Complete {
		b.Completion = s.completion(st, sess)
	}
	return b
}

// preview answers an MTurk preview: three example items of the study, no
// session and nothing stored.
func (s *Server) preview(c echo.Context, st *studyEntry) error {
	items := make([]string, 0, len(st.items))
	for it := range st.items {
		items = append(items, it)
	}
	sort.Strings(items)
	var examples []alignet.Query
	if len(items) >= 3 {
		var ex alignet.Query
		for i, k := range rand.Perm(len(items))[:3] {
			ex.Items[i] = items[k]
		}
		examples = append(examples, ex)
	}
	qs, err := s.queryBodies(c.Request().Context(), st.study.ID, examples)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, previewBody{Preview: true, Study: st.study.ID, Trials: st.study.Settings.Queries.Trials, Queries: qs})
}

// serve makes sure the session is loaded, hands it up to n queries, logs
// the new ones and records a completion.
func (s *Server) serve(c echo.Context, st *studyEntry, e *query.Engine, sess alignet.Session, n int) (query.Result, error) {
	ctx := c.Request().Context()
	now := s.cfg.Now().UTC().Truncate(time.Microsecond)
	if !e.HasSession(sess.ID) {
		hist, err := s.deps.Sessions.WorkerQueries(ctx, st.study.ID, sess.Worker)
		if err != nil {
			return query.Result{}, storeErr(err, "session", "")
		}
		e.AddSession(sess, hist, now)
	}
	res, err := e.Serve(sess.ID, n, now)
	if err != nil {
		return query.Result{}, &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "cannot serve queries", Err: err}
	}
	s.qlog.add(res.New)
	for _, q := range res.New {
		s.metrics.served.WithLabelValues(string(q.Kind)).Inc()
	}
	if res.JustCompleted {
		if err := s.deps.Sessions.CompleteSession(ctx, st.study.ID, sess.ID, now); err != nil {
			s.log.Warn("record session completion failed", "study", st.study.ID, "session", sess.ID, "err", err)
		}
	}
	return res, nil
}

// loadSession returns the stored session named in the path, with the
// study and its engine.
func (s *Server) loadSession(c echo.Context) (*studyEntry, *query.Engine, alignet.Session, error) {
	ctx := c.Request().Context()
	st, err := s.study(ctx, c.Param("study"))
	if err != nil {
		return nil, nil, alignet.Session{}, err
	}
	id := c.Param("session")
	if id == "" || alignet.CheckText(id, alignet.MaxQueryIDLen) != "" {
		return nil, nil, alignet.Session{}, notFound("", "session not found")
	}
	e, err := s.sel.engine(ctx, st)
	if err != nil {
		return nil, nil, alignet.Session{}, err
	}
	if sess, ok := e.Session(id); ok {
		return st, e, sess, nil
	}
	sess, err := s.deps.Sessions.GetSession(ctx, st.study.ID, id)
	if err != nil {
		return nil, nil, alignet.Session{}, storeErr(err, "session", "")
	}
	return st, e, sess, nil
}

// getSession returns a session's progress (and completion once complete).
func (s *Server) getSession(c echo.Context) error {
	st, e, sess, err := s.loadSession(c)
	if err != nil {
		return err
	}
	res, err := s.serve(c, st, e, sess, 0)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.toSessionBody(st.study, sess, res))
}

// nextQueries hands the session its next n queries.
func (s *Server) nextQueries(c echo.Context) error {
	n := 1
	if v := c.QueryParam("n"); v != "" {
		k, err := strconv.Atoi(v)
		if err != nil || k < 1 || k > s.cfg.MaxNext {
			return badParam("n", "n must be an integer between 1 and %d", s.cfg.MaxNext)
		}
		n = k
	}
	st, e, sess, err := s.loadSession(c)
	if err != nil {
		return err
	}
	res, err := s.serve(c, st, e, sess, n)
	if err != nil {
		return err
	}
	qs, err := s.queryBodies(c.Request().Context(), st.study.ID, res.Queries)
	if err != nil {
		return err
	}
	b := nextBody{Queries: qs, Complete: res.Complete, Progress: progressOf(res)}
	if res.Complete {
		b.Completion = s.completion(st.study, sess)
	}
	return c.JSON(http.StatusOK, b)
}

// workerBody is one worker's counts and flags.
type workerBody struct {
	Worker       string     `json:"worker"`
	Trials       int64      `json:"trials"`
	Fast         int64      `json:"fast"`
	ChecksPassed int64      `json:"checks_passed"`
	ChecksFailed int64      `json:"checks_failed"`
	Flagged      bool       `json:"flagged"`
	Reasons      []string   `json:"reasons"`
	FlaggedAt    *time.Time `json:"flagged_at,omitempty"`
	UpdatedAt    time.Time  `json:"updated_at"`
}

// listWorkers returns the answer counts and flags of a study's workers;
// ?flagged=true keeps the flagged ones.
func (s *Server) listWorkers(c echo.Context) error {
	onlyFlagged := false
	if v := c.QueryParam("flagged"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return badParam("flagged", "flagged must be true or false")
		}
		onlyFlagged = b
	}
	ws, err := s.deps.Flags.WorkerFlags(c.Request().Context(), c.Param("study"))
	if err != nil {
		return storeErr(err, "study", "")
	}
	out := []workerBody{}
	for _, w := range ws {
		if onlyFlagged && !w.Flagged {
			continue
		}
		r := w.Reasons
		if r == nil {
			r = []string{}
		}
		out = append(out, workerBody{Worker: w.Worker, Trials: w.Trials, Fast: w.Fast, ChecksPassed: w.ChecksPassed,
			ChecksFailed: w.ChecksFailed, Flagged: w.Flagged, Reasons: r, FlaggedAt: w.FlaggedAt, UpdatedAt: w.UpdatedAt})
	}
	return c.JSON(http.StatusOK, map[string]any{"study": c.Param("study"), "workers": out})
}
