package api

import (
	_ "embed"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/alignet/alignet"
	"github.com/labstack/echo/v4"
)

//go:embed openapi.json
var openAPIDoc []byte

func itoa(i int) string { return strconv.Itoa(i) }

// maxDim bounds embedding dimensions.
const maxDim = 1 << 16

// maxKeyNameLen bounds API key names, in characters.
const maxKeyNameLen = 128

// bindJSON decodes a JSON request body of at most limit bytes into v,
// rejecting unknown fields and trailing data.
func bindJSON(c echo.Context, limit int64, v any) error {
	if err := requireJSON(c); err != nil {
		return err
	}
	r := newTextReader(http.MaxBytesReader(c.Response(), c.Request().Body, limit))
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return jsonDecodeErr(errEmptyBody)
		}
		return jsonDecodeErr(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if e := readErr(err); e != nil {
			return e
		}
		return badJSON("", "unexpected data after the JSON value")
	}
	return nil
}

// spaceBody is the JSON form of a space.
type spaceBody struct {
	Name       string    `json:"name"`
	Dim        int       `json:"dim"`
	Embeddings *int64    `json:"embeddings,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

func (s *Server) putSpace(c echo.Context) error {
	name := c.Param("space")
	if !alignet.ValidName(name) {
		return invalid("space", "space names are 1-%d characters of [A-Za-z0-9._-]", alignet.MaxNameLen)
	}
	var req struct {
		Dim *int `json:"dim"`
	}
	if err := bindJSON(c, s.cfg.MaxJudgmentBody, &req); err != nil {
		return err
	}
	if req.Dim == nil {
		return missing("dim")
	}
	if *req.Dim < 1 || *req.Dim > maxDim {
		return invalid("dim", "dim must be between 1 and %d", maxDim)
	}
	sp, created, err := s.deps.Spaces.PutSpace(c.Request().Context(), name, *req.Dim)
	if err != nil {
		return storeErr(err, "space", "dim")
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, spaceBody{Name: sp.Name, Dim: sp.Dim, CreatedAt: sp.CreatedAt})
}

func (s *Server) getSpace(c echo.Context) error {
	ctx := c.Request().Context()
	sp, err := s.deps.Spaces.GetSpace(ctx, c.Param("space"))
	if err != nil {
		return storeErr(err, "space", "")
	}
	n, err := s.deps.Spaces.CountEmbeddings(ctx, sp.Name)
	if err != nil {
		return storeErr(err, "space", "")
	}
	return c.JSON(http.StatusOK, spaceBody{Name: sp.Name, Dim: sp.Dim, Embeddings: &n, CreatedAt: sp.CreatedAt})
}

// studyBody is the JSON form of a study.
type studyBody struct {
	ID        string                `json:"id"`
	Task      alignet.Task          `json:"task"`
	Space     string                `json:"space"`
	CreatedAt time.Time             `json:"created_at"`
	Settings  alignet.StudySettings `json:"settings"`
	Items     *int                  `json:"items,omitempty"`
	Judgments *int64                `json:"judgments,omitempty"`
}

func toStudyBody(st alignet.Study) studyBody {
	return studyBody{ID: st.ID, Task: st.Task, Space: st.Space, CreatedAt: st.CreatedAt, Settings: st.Settings}
}

func (s *Server) postStudy(c echo.Context) error {
	var req struct {
		ID       *string         `json:"id"`
		Task     *string         `json:"task"`
		Space    *string         `json:"space"`
		Settings json.RawMessage `json:"settings"`
	}
	if err := bindJSON(c, s.cfg.MaxJudgmentBody, &req); err != nil {
		return err
	}
	switch {
	case req.ID == nil:
		return missing("id")
	case !alignet.ValidName(*req.ID):
		return invalid("id", "study ids are 1-%d characters of [A-Za-z0-9._-]", alignet.MaxNameLen)
	case req.Task == nil:
		return missing("task")
	case !alignet.Task(*req.Task).Valid():
		return invalid("task", "task must be %q or %q", alignet.TaskOddOneOut, alignet.TaskAnchor)
	case req.Space == nil:
		return missing("space")
	case !alignet.ValidName(*req.Space):
		return invalid("space", "space names are 1-%d characters of [A-Za-z0-9._-]", alignet.MaxNameLen)
	}
	settings, err := alignet.DecodeStudySettings(req.Settings)
	if err != nil {
		return settingsErr(err)
	}
	st, created, err := s.deps.Studies.CreateStudy(c.Request().Context(),
		alignet.Study{ID: *req.ID, Task: alignet.Task(*req.Task), Space: *req.Space, CreatedAt: time.Now().UTC(), Settings: settings})
	switch {
	case errors.Is(err, alignet.ErrNotFound):
		return notFound("space", "space %q not found", *req.Space)
	case errors.Is(err, alignet.ErrConflict):
		return storeErr(err, "study", "id")
	case err != nil:
		return storeErr(err, "study", "")
	}
	s.studies.Invalidate(st.ID)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, toStudyBody(st))
}

func (s *Server) getStudy(c echo.Context) error {
	ctx := c.Request().Context()
	st, err := s.deps.Studies.GetStudy(ctx, c.Param("study"))
	if err != nil {
		return storeErr(err, "study", "")
	}
	items, err := s.deps.Studies.StudyItems(ctx, st.ID)
	if err != nil {
		return storeErr(err, "study", "")
	}
	n, err := s.deps.Studies.CountJudgments(ctx, st.ID)
	if err != nil {
		return storeErr(err, "study", "")
	}
	b := toStudyBody(st)
	ni := len(items)
	b.Items, b.Judgments = &ni, &n
	return c.JSON(http.StatusOK, b)
}

func (s *Server) listStudies(c echo.Context) error {
	sts, err := s.deps.Studies.ListStudies(c.Request().Context())
	if err != nil {
		return storeErr(err, "study", "")
	}
	out := make([]studyBody, len(sts))
	for i, st := range sts {
		out[i] = toStudyBody(st)
	}
	return c.JSON(http.StatusOK, map[string]any{"studies": out})
}

func (s *Server) postItems(c echo.Context) error {
	s.extendDeadlines(c)
	ctx := c.Request().Context()
	id := c.Param("study")
	var req struct {
		Items []string `json:"items"`
	}
	if err := bindJSON(c, s.cfg.MaxEmbeddingJSONBody, &req); err != nil {
		return err
	}
	if req.Items == nil {
		return missing("items")
	}
	if len(req.Items) == 0 {
		return invalid("items", "items must not be empty")
	}
	seen := make(map[string]struct{}, len(req.Items))
	for i, it := range req.Items {
		field := "items[" + itoa(i) + "]"
		if it == "" {
			return invalid(field, "item ids must not be empty")
		}
		if err := badText(field, it, alignet.MaxItemIDLen); err != nil {
			return err
		}
		if _, dup := seen[it]; dup {
			return invalid(field, "item %q appears twice", it)
		}
		seen[it] = struct{}{}
	}
	if _, err := s.deps.Studies.GetStudy(ctx, id); err != nil {
		return storeErr(err, "study", "")
	}
	added, err := s.deps.Studies.AddStudyItems(ctx, id, req.Items)
	if err != nil {
		return storeErr(err, "study", "")
	}
	// Make the new items usable at once on this server.
	s.studies.Invalidate(id)
	st, err := s.study(ctx, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]int64{"added": added, "total": int64(len(st.items))})
}

func (s *Server) getItems(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("study")
	if _, err := s.deps.Studies.GetStudy(ctx, id); err != nil {
		return storeErr(err, "study", "")
	}
	items, err := s.deps.Studies.StudyItems(ctx, id)
	if err != nil {
		return storeErr(err, "study", "")
	}
	if items == nil {
		items = []string{}
	}
	return c.JSON(http.StatusOK, map[string]any{"study": id, "items": items})
}

// keyBody is the JSON form of an API key; Key is set only on creation.
type keyBody struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Scopes    []string   `json:"scopes"`
	Prefix    string     `json:"prefix"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Study     string     `json:"study,omitempty"`
	Key       string     `json:"key,omitempty"`
}

func toKeyBody(k alignet.APIKey) keyBody {
	sc := k.Scopes
	if sc == nil {
		sc = []string{}
	}
	return keyBody{ID: k.ID, Name: k.Name, Scopes: sc, Prefix: k.Prefix, CreatedAt: k.CreatedAt, RevokedAt: k.RevokedAt, Study: k.Study}
}

func (s *Server) postKey(c echo.Context) error {
	var req struct {
		Name   *string  `json:"name"`
		Scopes []string `json:"scopes"`
		Study  *string  `json:"study"`
	}
	if err := bindJSON(c, s.cfg.MaxJudgmentBody, &req); err != nil {
		return err
	}
	if req.Name == nil {
		return missing("name")
	}
	if *req.Name == "" {
		return invalid("name", "name must not be empty")
	}
	if err := badText("name", *req.Name, maxKeyNameLen); err != nil {
		return err
	}
	if len(req.Scopes) == 0 {
		return missing("scopes")
	}
	for i, sc := range req.Scopes {
		if !validScope(sc) {
			return invalid("scopes["+itoa(i)+"]", "scope must be collect, read or admin")
		}
	}
	slices.Sort(req.Scopes)
	req.Scopes = slices.Compact(req.Scopes)
	study := ""
	if req.Study != nil {
		// A bound key ships inside a public page: it may only collect.
		switch {
		case !alignet.ValidName(*req.Study):
			return invalid("study", "study ids are 1-%d characters of [A-Za-z0-9._-]", alignet.MaxNameLen)
		case !slices.Equal(req.Scopes, []string{alignet.ScopeCollect}):
			return invalid("scopes", "only collect keys can be bound to a study; give \"scopes\":[\"collect\"]")
		}
		study = *req.Study
	}
	key, err := GenerateKey()
	if err != nil {
		return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "cannot generate key", Err: err}
	}
	id, err := newJudgmentID()
	if err != nil {
		return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "cannot generate key id", Err: err}
	}
	k, err := s.deps.Keys.CreateAPIKey(c.Request().Context(), alignet.APIKey{
		ID: id, Name: *req.Name, Scopes: req.Scopes, Prefix: keyPrefix(key), CreatedAt: time.Now().UTC(), Study: study,
	}, HashKey(key))
	switch {
	case errors.Is(err, alignet.ErrNotFound):
		return notFound("study", "study %q not found", study)
	case err != nil:
		return storeErr(err, "key", "name")
	}
	b := toKeyBody(k)
	b.Key = key
	return c.JSON(http.StatusCreated, b)
}

func (s *Server) listKeys(c echo.Context) error {
	ks, err := s.deps.Keys.ListAPIKeys(c.Request().Context())
	if err != nil {
		return storeErr(err, "key", "")
	}
	out := make([]keyBody, len(ks))
	for i, k := range ks {
		out[i] = toKeyBody(k)
	}
	return c.JSON(http.StatusOK, map[string]any{"keys": out})
}

func (s *Server) deleteKey(c echo.Context) error {
	id := c.Param("id")
	if s.hasAdmin && id == s.adminKeyID() {
		return newErr(http.StatusConflict, CodeConflict, "id",
			"the bootstrap admin key comes from the configuration; change it there")
	}
	if err := s.deps.Keys.RevokeAPIKey(c.Request().Context(), id); err != nil {
		return storeErr(err, "key", "")
	}
	s.forgetKey(id)
	return c.NoContent(http.StatusNoContent)
}

// workerStudyBody is one study in a worker lookup.
type workerStudyBody struct {
	Study     string    `json:"study"`
	Judgments int64     `json:"judgments"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
}

func (s *Server) lookupWorker(c echo.Context) error {
	var req struct {
		Worker *string `json:"worker"`
	}
	if err := bindJSON(c, s.cfg.MaxJudgmentBody, &req); err != nil {
		return err
	}
	if req.Worker == nil {
		return missing("worker")
	}
	if *req.Worker == "" {
		return invalid("worker", "worker must not be empty")
	}
	if err := badText("worker", *req.Worker, alignet.MaxWorkerLen); err != nil {
		return err
	}
	p := s.pseudonym(*req.Worker)
	ws, err := s.deps.Workers.WorkerSummary(c.Request().Context(), p)
	if err != nil {
		return storeErr(err, "worker", "")
	}
	out := make([]workerStudyBody, len(ws))
	for i, w := range ws {
		out[i] = workerStudyBody{Study: w.Study, Judgments: w.Judgments, First: w.First, Last: w.Last}
	}
	return c.JSON(http.StatusOK, map[string]any{"pseudonym": p, "studies": out})
}

func (s *Server) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPIDoc)
}
