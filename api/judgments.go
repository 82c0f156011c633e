package api

import (
	"bytes"
	"context"
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
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/alignet/alignet"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// Field limits for judgments.
const (
	maxWorkerLen  = 128
	maxQueryIDLen = 64
	maxIDLen      = 64
	maxItemIDLen  = 128
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

// acceptedBody is the 202 response to posted judgments.
type acceptedBody struct {
	Accepted int      `json:"accepted"`
	IDs      []string `json:"ids"`
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

// validID reports whether id is a valid client idempotency id.
func validID(id string) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// buildJudgments validates decoded judgments against the study and turns
// them into domain judgments. The whole batch fails if one element does.
func buildJudgments(in []judgmentIn, batch bool, r judgmentRules) ([]alignet.Judgment, *Error) {
	out := make([]alignet.Judgment, len(in))
	var seen map[string]int
	if len(in) > 1 {
		seen = make(map[string]int, len(in))
	}
	var lastRaw, lastPseudo string
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
		raw := *in[i].Worker
		if raw != lastRaw || lastPseudo == "" {
			lastRaw, lastPseudo = raw, r.pseudo(raw)
		}
		j.Worker = lastPseudo
		out[i] = j
	}
	for i := range out {
		if out[i].ID == "" {
			id, err := r.newID()
			if err != nil {
				return nil, &Error{Status: http.StatusInternalServerError, Code: CodeInternal,
					Message: "cannot generate judgment id", Err: err}
			}
			out[i].ID = id
		}
	}
	return out, nil
}

func buildJudgment(in *judgmentIn, r judgmentRules) (alignet.Judgment, *Error) {
	j := alignet.Judgment{Study: r.study.ID, Task: r.study.Task, ReceivedAt: r.receive}
	if in.ID != "" {
		if !validID(in.ID) {
			return j, invalid("id", "id must be 1-%d characters of [A-Za-z0-9._:-]", maxIDLen)
		}
		j.ID = in.ID
	}
	if in.Worker == nil {
		return j, missing("worker")
	}
	if n := utf8.RuneCountInString(*in.Worker); n == 0 || n > maxWorkerLen {
		return j, invalid("worker", "worker must be 1-%d characters", maxWorkerLen)
	}
	if utf8.RuneCountInString(in.QueryID) > maxQueryIDLen {
		return j, invalid("query_id", "query_id must be at most %d characters", maxQueryIDLen)
	}
	j.QueryID = in.QueryID
	if in.RTMillis != nil {
		rt := *in.RTMillis
		if math.IsNaN(rt) || rt < 0 || rt > float64(r.maxRT) {
			return j, invalid("rt_ms", "rt_ms must be between 0 and %d", r.maxRT)
		}
		j.RTMillis = int32(math.Round(rt))
	}
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
		}
		for k, it := range in.Items {
			if err := r.checkItem(it, "items["+strconv.Itoa(k)+"]"); err != nil {
				return j, err
			}
			for l := 0; l < k; l++ {
				if in.Items[l] == it {
					return j, invalid("items["+strconv.Itoa(k)+"]", "item %q appears twice", it)
				}
			}
			j.Items[k] = it
		}
		if in.Odd == nil {
			return j, missing("odd")
		}
		if *in.Odd != j.Items[0] && *in.Odd != j.Items[1] && *in.Odd != j.Items[2] {
			return j, invalid("odd", "odd must be one of the three items")
		}
		j.Odd = *in.Odd
	case alignet.TaskAnchor:
		switch {
		case in.Items != nil:
			return j, invalid("items", "anchor studies take head, close and far, not items")
		case in.Odd != nil:
			return j, invalid("odd", "anchor studies take head, close and far, not odd")
		}
		names := [3]string{"head", "close", "far"}
		vals := [3]*string{in.Head, in.Close, in.Far}
		for k, v := range vals {
			if v == nil {
				return j, missing(names[k])
			}
			if err := r.checkItem(*v, names[k]); err != nil {
				return j, err
			}
			for l := 0; l < k; l++ {
				if *vals[l] == *v {
					return j, invalid(names[k], "%s repeats %s", names[k], names[l])
				}
			}
			j.Items[k] = *v
		}
	default:
		return j, &Error{Status: http.StatusInternalServerError, Code: CodeInternal,
			Message: fmt.Sprintf("study has unknown task %q", r.study.Task)}
	}
	return j, nil
}

func (r judgmentRules) checkItem(it, field string) *Error {
	if _, ok := r.pool[it]; !ok {
		if it == "" {
			return invalid(field, "item must not be empty")
		}
		return newErr(http.StatusUnprocessableEntity, CodeUnknownItem, field,
			"item %q is not in the study's pool", truncate(it, maxItemIDLen))
	}
	return nil
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
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return toAPIError(err)
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
	buf := s.getBuf()
	defer s.putBuf(buf)
	if err := readBody(c, s.cfg.MaxJudgmentBody, buf); err != nil {
		return err
	}
	in, batch, aerr := decodeJudgments(buf.Bytes(), s.cfg.MaxBatch)
	if aerr != nil {
		return aerr
	}
	rules := judgmentRules{
		study:   st.study,
		pool:    st.items,
		maxRT:   s.cfg.MaxRTMillis,
		pseudo:  s.pseudonym,
		newID:   newJudgmentID,
		receive: time.Now().UTC().Truncate(time.Microsecond),
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
	if err := s.pub.Publish(ctx, id, js); err != nil {
		s.log.Warn("publish judgments failed", "study", id, "n", len(js), "err", err)
		return unavailable(fmt.Errorf("publish judgments: %w", err))
	}
	s.metrics.accepted.WithLabelValues(string(st.study.Task)).Add(float64(len(js)))
	ids := make([]string, len(js))
	for i := range js {
		ids[i] = js[i].ID
	}
	return c.JSON(http.StatusAccepted, acceptedBody{Accepted: len(js), IDs: ids})
}

func newJudgmentID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("generate uuid: %w", err)
	}
	return u.String(), nil
}

func (s *Server) pseudonym(raw string) string { return Pseudonym(s.cfg.PseudonymKey, raw) }

func (s *Server) getBuf() *bytes.Buffer {
	if b, ok := s.bufs.Get().(*bytes.Buffer); ok {
		return b
	}
	return new(bytes.Buffer)
}

func (s *Server) putBuf(b *bytes.Buffer) {
	if b.Cap() > 256<<10 {
		return
	}
	b.Reset()
	s.bufs.Put(b)
}

// studyEntry is a cached study definition and item pool.
type studyEntry struct {
	study  alignet.Study
	items  map[string]struct{}
	found  bool
	loaded time.Time
	// refreshing is set while a background reload of this entry runs.
	refreshing atomic.Bool
}

// studyCache holds study entries, including misses.
type studyCache struct {
	mu sync.RWMutex
	m  map[string]*studyEntry
}

// studyCacheMax bounds cached misses.
const studyCacheMax = 10000

func newStudyCache() *studyCache {
	return &studyCache{m: make(map[string]*studyEntry)}
}

func (sc *studyCache) get(id string) *studyEntry {
	sc.mu.RLock()
	defer sc.mu.RUnlock()
	return sc.m[id]
}

func (sc *studyCache) put(id string, e *studyEntry) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if len(sc.m) >= studyCacheMax {
		for k, v := range sc.m {
			if !v.found {
				delete(sc.m, k)
			}
		}
	}
	sc.m[id] = e
}

func (sc *studyCache) forget(id string) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	delete(sc.m, id)
}

// loadStudy reads a study and its pool from the store into the cache.
func (s *Server) loadStudy(ctx context.Context, id string) (*studyEntry, error) {
	ch := s.sf.DoChan("study:"+id, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		now := time.Now()
		st, err := s.store.GetStudy(ctx, id)
		if errors.Is(err, alignet.ErrNotFound) {
			e := &studyEntry{loaded: now}
			s.studies.put(id, e)
			return e, nil
		}
		if err != nil {
			return nil, fmt.Errorf("get study %q: %w", id, err)
		}
		items, err := s.store.StudyItems(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("get items of study %q: %w", id, err)
		}
		e := &studyEntry{study: st, found: true, loaded: now, items: make(map[string]struct{}, len(items))}
		for _, it := range items {
			e.items[it] = struct{}{}
		}
		s.studies.put(id, e)
		return e, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*studyEntry), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("load study %q: %w", id, ctx.Err())
	}
}

// study returns the cached study, loading it on a miss and refreshing it in
// the background once it is older than PoolCacheTTL. Unknown studies are 404.
func (s *Server) study(ctx context.Context, id string) (*studyEntry, error) {
	e := s.studies.get(id)
	if e == nil || !e.found && time.Since(e.loaded) > s.cfg.PoolCacheTTL {
		var err error
		if e, err = s.loadStudy(ctx, id); err != nil {
			return nil, storeErr(err, "study", "")
		}
	} else if time.Since(e.loaded) > s.cfg.PoolCacheTTL && e.refreshing.CompareAndSwap(false, true) {
		go func() {
			if _, err := s.loadStudy(context.Background(), id); err != nil {
				e.refreshing.Store(false)
				s.log.Warn("refresh study pool failed", "study", id, "err", err)
			}
		}()
	}
	if !e.found {
		return nil, notFound("", "study %q not found", id)
	}
	return e, nil
}

// refreshStudy reloads a study synchronously unless it was loaded within the
// last second (bounding reloads caused by bad requests). It reports whether
// a newer entry is available.
func (s *Server) refreshStudy(ctx context.Context, id string, old *studyEntry) (*studyEntry, bool) {
	if time.Since(old.loaded) < min(time.Second, s.cfg.PoolCacheTTL) {
		return nil, false
	}
	e, err := s.loadStudy(ctx, id)
	if err != nil || !e.found || e == old {
		return nil, false
	}
	return e, true
}
