package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/alignet/alignet"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// Pseudonym returns the pseudonym of a raw platform worker id under key: the
// first 32 hex digits of HMAC-SHA256(key, raw).
func Pseudonym(key []byte, raw string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(raw))
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0]))[:32]
}

// judgmentIn is one judgment as posted. Pointer fields distinguish absent
// from empty so fields of the other task can be rejected.
type judgmentIn struct {
	ID       string   `json:"id"`
	Worker   *string  `json:"worker"`
	Items    []string `json:"items"`
	Odd      *string  `json:"odd"`
	Head     *string  `json:"head"`
	Close    *string  `json:"close"`
	Far      *string  `json:"far"`
	RTMillis *float64 `json:"rt_ms"`
	QueryID  string   `json:"query_id"`
}

// acceptedBody is the 202 response to posted judgments. ReceivedAt is the
// accept time every judgment of the request carries, which the teacher
// state's newest_accepted_at is compared with to measure freshness.
type acceptedBody struct {
	Accepted   int       `json:"accepted"`
	IDs        []string  `json:"ids"`
	ReceivedAt time.Time `json:"received_at"`
}

// decodeJudgments decodes one judgment object or an array of at most
// maxBatch of them, rejecting unknown fields. Errors name the JSON path.
func decodeJudgments(body []byte, maxBatch int) ([]judgmentIn, bool, *Error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, false, jsonDecodeErr(errEmptyBody)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var out []judgmentIn
	batch := false
	switch trimmed[0] {
	case '{':
		out = make([]judgmentIn, 1)
		if err := dec.Decode(&out[0]); err != nil {
			return nil, false, jsonDecodeErr(err)
		}
	case '[':
		batch = true
		if _, err := dec.Token(); err != nil {
			return nil, true, jsonDecodeErr(err)
		}
		for i := 0; dec.More(); i++ {
			if i >= maxBatch {
				return nil, true, newErr(http.StatusRequestEntityTooLarge, CodeTooLarge, "",
					"a batch holds at most %d judgments", maxBatch)
			}
			out = append(out, judgmentIn{})
			if err := dec.Decode(&out[i]); err != nil {
				return nil, true, jsonDecodeErr(err).withPrefix("[" + strconv.Itoa(i) + "]")
			}
		}
		if _, err := dec.Token(); err != nil {
			return nil, true, jsonDecodeErr(err)
		}
		if len(out) == 0 {
			return nil, true, invalid("", "the batch is empty")
		}
	default:
		return nil, false, badJSON("", "body must be a judgment object or an array of them")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, batch, badJSON("", "unexpected data after the JSON value")
	}
	return out, batch, nil
}

// judgmentRules are the inputs validation needs besides the body.
type judgmentRules struct {
	study   alignet.Study
	pool    map[string]struct{}
	maxRT   int64
	pseudo  func(raw string) string
	newID   func() (string, error)
	receive time.Time
}

// buildJudgments validates decoded judgments against the study and turns
// them into domain judgments. The whole batch fails if one element does.
func buildJudgments(in []judgmentIn, batch bool, r judgmentRules) ([]alignet.Judgment, *Error) {
	out := make([]alignet.Judgment, len(in))
	var seen map[string]int
	if len(in) > 1 {
		seen = make(map[string]int, len(in))
	}
	// Batches usually come from one worker: hash each run of equal raw ids
	// once.
	pseudo, lastRaw, lastPseudo := r.pseudo, "", ""
	r.pseudo = func(raw string) string {
		if raw != lastRaw || lastPseudo == "" {
			lastRaw, lastPseudo = raw, pseudo(raw)
		}
		return lastPseudo
	}
	for i := range in {
		j, err := buildJudgment(&in[i], r)
		if err == nil && seen != nil && in[i].ID != "" {
			if k, dup := seen[in[i].ID]; dup {
				err = newErr(http.StatusUnprocessableEntity, CodeDuplicateID, "id",
					"id %q is used by element %d of this batch", in[i].ID, k)
			}
			seen[in[i].ID] = i
		}
		if err != nil {
			if batch {
				err = err.withPrefix("[" + strconv.Itoa(i) + "]")
			}
			return nil, err
		}
		out[i] = j
	}
	return out, nil
}

// buildJudgment checks what only the API knows (the request's shape, the
// raw worker id, the response time cap and the study's pool), fills in the
// pseudonym and a generated id, and leaves the invariants of every stored
// judgment to alignet.Judgment.Validate.
func buildJudgment(in *judgmentIn, r judgmentRules) (alignet.Judgment, *Error) {
	j := alignet.Judgment{ID: in.ID, Study: r.study.ID, Task: r.study.Task, QueryID: in.QueryID, ReceivedAt: r.receive}
	if in.Worker == nil {
		return j, missing("worker")
	}
	if *in.Worker == "" {
		return j, invalid("worker", "worker must not be empty")
	}
	if err := badText("worker", *in.Worker, alignet.MaxWorkerLen); err != nil {
		return j, err
	}
	if in.RTMillis != nil {
		rt := *in.RTMillis
		if math.IsNaN(rt) || rt < 0 || rt > float64(r.maxRT) {
			return j, invalid("rt_ms", "rt_ms must be between 0 and %d", r.maxRT)
		}
		j.RTMillis = int32(math.Round(rt))
	}
	var names [3]string
	switch r.study.Task {
	case alignet.TaskOddOneOut:
		switch {
		case in.Head != nil:
			return j, invalid("head", "odd-one-out studies take items and odd, not head")
		case in.Close != nil:
			return j, invalid("close", "odd-one-out studies take items and odd, not close")
		case in.Far != nil:
			return j, invalid("far", "odd-one-out studies take items and odd, not far")
		case in.Items == nil:
			return j, missing("items")
		case len(in.Items) != 3:
			return j, invalid("items", "items must hold exactly 3 items, got %d", len(in.Items))
		case in.Odd == nil:
			return j, missing("odd")
		}
		copy(j.Items[:], in.Items)
		j.Odd = *in.Odd
		names = [3]string{"items[0]", "items[1]", "items[2]"}
	case alignet.TaskAnchor:
		switch {
		case in.Items != nil:
			return j, invalid("items", "anchor studies take head, close and far, not items")
		case in.Odd != nil:
			return j, invalid("odd", "anchor studies take head, close and far, not odd")
		}
		names = [3]string{"head", "close", "far"}
		for k, v := range [3]*string{in.Head, in.Close, in.Far} {
			if v == nil {
				return j, missing(names[k])
			}
			j.Items[k] = *v
		}
	default:
		return j, &Error{Status: http.StatusInternalServerError, Code: CodeInternal,
			Message: fmt.Sprintf("study has unknown task %q", r.study.Task)}
	}
	j.Worker = r.pseudo(*in.Worker)
	if j.ID == "" && j.QueryID != "" && alignet.ValidID(linkedJudgmentID(j.QueryID)) {
		j.ID = linkedJudgmentID(j.QueryID)
	}
	if j.ID == "" {
		id, err := r.newID()
		if err != nil {
			return j, &Error{Status: http.StatusInternalServerError, Code: CodeInternal,
				Message: "cannot generate judgment id", Err: err}
		}
		j.ID = id
	}
	if err := j.Validate(); err != nil {
		var fe *alignet.FieldError
		if errors.As(err, &fe) {
			return j, fieldErr(fe)
		}
		return j, invalid("", "%v", err)
	}
	for k, it := range j.Items {
		if _, ok := r.pool[it]; !ok {
			return j, newErr(http.StatusUnprocessableEntity, CodeUnknownItem, names[k],
				"item %q is not in the study's pool", truncate(it, alignet.MaxItemIDLen))
		}
	}
	return j, nil
}

// truncate shortens s for error messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// requireJSON rejects requests whose Content-Type is not application/json.
func requireJSON(c echo.Context) *Error {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != echo.MIMEApplicationJSON {
		return newErr(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "",
			"Content-Type must be application/json")
	}
	return nil
}

// readBody reads the request body up to limit bytes into buf.
func readBody(c echo.Context, limit int64, buf *bytes.Buffer) error {
	req := c.Request()
	if req.ContentLength > limit {
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge,
			Message: "request body exceeds " + strconv.FormatInt(limit, 10) + " bytes"}
	}
	if req.ContentLength > 0 {
		buf.Grow(int(req.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(c.Response(), req.Body, limit))
	if err != nil {
		if e := readErr(err); e != nil {
			return e
		}
		return badJSON("", "cannot read request body: %v", err)
	}
	return nil
}

// postJudgments accepts one judgment or a batch, all or nothing, and answers
// 202 only after the stream acknowledged them.
func (s *Server) postJudgments(c echo.Context) error {
	if err := requireJSON(c); err != nil {
		return err
	}
	ctx := c.Request().Context()
	id := c.Param("study")
	st, err := s.study(ctx, id)
	if err != nil {
		return err
	}
	buf := s.bufs.get()
	defer s.bufs.put(buf)
	if err := readBody(c, s.cfg.MaxJudgmentBody, buf); err != nil {
		return err
	}
	if err := checkText(buf.Bytes()); err != nil {
		return err
	}
	in, batch, aerr := decodeJudgments(buf.Bytes(), s.cfg.MaxBatch)
	if aerr != nil {
		return aerr
	}
	if err := s.limitWorkers(c, id, in); err != nil {
		return err
	}
	rules := judgmentRules{
		study:   st.study,
		pool:    st.items,
		maxRT:   s.cfg.MaxRTMillis,
		pseudo:  s.pseudonym,
		newID:   newJudgmentID,
		receive: s.cfg.Now().UTC().Truncate(time.Microsecond),
	}
	js, aerr := buildJudgments(in, batch, rules)
	if aerr != nil && aerr.Code == CodeUnknownItem {
		// The pool may have grown on another server: reload once and retry.
		if st2, ok := s.refreshStudy(ctx, id, st); ok {
			rules.study, rules.pool = st2.study, st2.items
			js, aerr = buildJudgments(in, batch, rules)
		}
	}
	if aerr != nil {
		return aerr
	}
	// Judgments answering served queries are bound to them first, all or
	// nothing: a refused one publishes nothing.
	answers, idx, aerr := s.link(ctx, st, js, batch)
	if aerr != nil {
		return aerr
	}
	var outcomes []alignet.AnswerOutcome
	if len(answers) > 0 {
		if outcomes, aerr = s.bindAnswers(ctx, st, answers, idx, batch); aerr != nil {
			return aerr
		}
	}
	if err := s.deps.Publisher.Publish(ctx, id, js); err != nil {
		s.unbind(ctx, st, answers, outcomes)
		if errors.Is(err, alignet.ErrTooLarge) {
			return tooLargeForStream(err)
		}
		s.log.Warn("publish judgments failed", "study", id, "n", len(js), "err", err)
		return unavailable(fmt.Errorf("publish judgments: %w", err))
	}
	s.metrics.accepted.WithLabelValues(string(st.study.Task)).Add(float64(len(js)))
	s.metrics.countChecks(st.study.ID, answers, outcomes)
	if e, ok := s.sel.loaded(id); ok {
		linked := make(map[int]bool, len(idx))
		for k, i := range idx {
			linked[i] = true
			e.Answer(answers[k].Query.ID, js[i].ID, js[i].ReceivedAt)
		}
		for i := range js {
			if !linked[i] {
				e.Observe(js[i].Items)
			}
		}
	}
	ids := make([]string, len(js))
	for i := range js {
		ids[i] = js[i].ID
	}
	return c.JSON(http.StatusAccepted, acceptedBody{Accepted: len(js), IDs: ids, ReceivedAt: rules.receive})
}

func newJudgmentID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("generate uuid: %w", err)
	}
	return u.String(), nil
}

func (s *Server) pseudonym(raw string) string { return Pseudonym(s.cfg.PseudonymKey, raw) }
