package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/npy"
)

// maxLabelItems bounds one label upload.
const maxLabelItems = 1 << 20

// poolBody is the JSON form of a generation pool.
type poolBody struct {
	Study     string    `json:"study"`
	Space     string    `json:"space"`
	Items     []string  `json:"items,omitempty"`
	Size      int64     `json:"size"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (s *Server) putPool(c echo.Context) error {
	s.extendDeadlines(c)
	ctx := c.Request().Context()
	var req struct {
		Space *string  `json:"space"`
		Items []string `json:"items"`
	}
	if err := bindJSON(c, s.cfg.MaxEmbeddingJSONBody, &req); err != nil {
		return err
	}
	switch {
	case req.Space == nil:
		return missing("space")
	case !alignet.ValidName(*req.Space):
		return invalid("space", "space names are 1-%d characters of [A-Za-z0-9._-]", alignet.MaxNameLen)
	case req.Items != nil && len(req.Items) < 3:
		return invalid("items", "a pool needs at least 3 items (omit items for every item of the space)")
	}
	seen := make(idSet, len(req.Items))
	for i, it := range req.Items {
		if err := seen.add(it, "items["+itoa(i)+"]"); err != nil {
			return err
		}
	}
	id := c.Param("study")
	if _, err := s.deps.Studies.GetStudy(ctx, id); err != nil {
		return storeErr(err, "study", "")
	}
	if _, err := s.deps.Spaces.GetSpace(ctx, *req.Space); err != nil {
		if errors.Is(err, alignet.ErrNotFound) {
			return notFound("space", "space %q not found", *req.Space)
		}
		return storeErr(err, "space", "space")
	}
	p, err := s.deps.Trainer.PutPool(ctx, alignet.Pool{Study: id, Space: *req.Space, Items: req.Items})
	var fe *alignet.FieldError
	if errors.As(err, &fe) {
		return fieldErr(fe)
	}
	if err != nil {
		return storeErr(err, "pool", "")
	}
	b, err := s.poolBody(ctx, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, b)
}

func (s *Server) poolBody(ctx context.Context, p alignet.Pool) (poolBody, error) {
	b := poolBody{Study: p.Study, Space: p.Space, Items: p.Items, Size: int64(len(p.Items)), UpdatedAt: p.UpdatedAt}
	if p.Items == nil {
		n, err := s.deps.Spaces.CountEmbeddings(ctx, p.Space)
		if err != nil {
			return b, storeErr(err, "space", "")
		}
		b.Size = n
	}
	return b, nil
}

func (s *Server) getPool(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("study")
	if _, err := s.deps.Studies.GetStudy(ctx, id); err != nil {
		return storeErr(err, "study", "")
	}
	p, err := s.deps.Trainer.GetPool(ctx, id)
	if errors.Is(err, alignet.ErrNotFound) {
		return notFound("", "study %q has no generation pool; PUT one", id)
	}
	if err != nil {
		return storeErr(err, "pool", "")
	}
	b, err := s.poolBody(ctx, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, b)
}

func (s *Server) postLabels(c echo.Context) error {
	s.extendDeadlines(c)
	ctx := c.Request().Context()
	var req struct {
		Items []struct {
			ID     *string  `json:"id"`
			Labels []string `json:"labels"`
		} `json:"items"`
	}
	if err := bindJSON(c, s.cfg.MaxEmbeddingJSONBody, &req); err != nil {
		return err
	}
	switch {
	case req.Items == nil:
		return missing("items")
	case len(req.Items) == 0:
		return invalid("items", "items must not be empty")
	case len(req.Items) > maxLabelItems:
		return newErr(http.StatusRequestEntityTooLarge, CodeTooLarge, "items", "at most %d items per request", maxLabelItems)
	}
	seen := make(idSet, len(req.Items))
	out := make([]alignet.ItemLabels, len(req.Items))
	for i, it := range req.Items {
		field := "items[" + itoa(i) + "]"
		if it.ID == nil {
			return missing(field + ".id")
		}
		if err := seen.add(*it.ID, field+".id"); err != nil {
			return err
		}
		if it.Labels == nil {
			return missing(field + ".labels")
		}
		if len(it.Labels) > alignet.MaxCategoriesPerItem {
			return invalid(field+".labels", "at most %d labels per item", alignet.MaxCategoriesPerItem)
		}
		for k, l := range it.Labels {
			if msg := alignet.CheckLabel(l); msg != "" {
				return invalid(fmt.Sprintf("%s.labels[%d]", field, k), "label %s", msg)
			}
		}
		out[i] = alignet.ItemLabels{Item: *it.ID, Labels: it.Labels}
	}
	n, err := s.deps.Trainer.PutItemLabels(ctx, c.Param("space"), out)
	if err != nil {
		return storeErr(err, "space", "")
	}
	return c.JSON(http.StatusOK, map[string]int64{"upserted": n})
}

// studentBody is the JSON form of a student with its current version and
// history.
type studentBody struct {
	Study     string                   `json:"study"`
	ID        string                   `json:"id"`
	Space     string                   `json:"space"`
	Settings  alignet.StudentSettings  `json:"settings"`
	CreatedAt time.Time                `json:"created_at"`
	Current   *alignet.StudentVersion  `json:"current"`
	Versions  []alignet.StudentVersion `json:"versions,omitempty"`
}

func (s *Server) postStudent(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("study")
	raw, err := readJSONObject(c, s.cfg.MaxJudgmentBody)
	if err != nil {
		return err
	}
	var head struct {
		ID    *string `json:"id"`
		Space *string `json:"space"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return jsonDecodeErr(err)
	}
	switch {
	case head.ID == nil:
		return missing("id")
	case !alignet.ValidName(*head.ID) || strings.HasSuffix(*head.ID, ".npz"):
		return invalid("id", "student ids are 1-%d characters of [A-Za-z0-9._-], not ending in .npz", alignet.MaxNameLen)
	case head.Space == nil:
		return missing("space")
	case !alignet.ValidName(*head.Space):
		return invalid("space", "space names are 1-%d characters of [A-Za-z0-9._-]", alignet.MaxNameLen)
	}
	st, err := s.deps.Studies.GetStudy(ctx, id)
	if err != nil {
		return storeErr(err, "study", "")
	}
	// The head settings are the remaining members, over the study's
	// student defaults.
	var rest map[string]json.RawMessage
	_ = json.Unmarshal(raw, &rest)
	delete(rest, "id")
	delete(rest, "space")
	settings := st.Settings.Trainer.Student
	if len(rest) > 0 {
		b, _ := json.Marshal(rest)
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&settings); err != nil {
			return jsonDecodeErr(err)
		}
	}
	if err := settings.Validate(); err != nil {
		var fe *alignet.FieldError
		if errors.As(err, &fe) {
			return fieldErr(fe)
		}
		return invalid("", "%v", err)
	}
	if _, err := s.deps.Spaces.GetSpace(ctx, *head.Space); err != nil {
		if errors.Is(err, alignet.ErrNotFound) {
			return notFound("space", "space %q not found", *head.Space)
		}
		return storeErr(err, "space", "space")
	}
	stu, created, err := s.deps.Trainer.CreateStudent(ctx, alignet.Student{Study: id, ID: *head.ID, Space: *head.Space, Settings: settings})
	if err != nil {
		return storeErr(err, "student", "id")
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, studentBody{Study: stu.Study, ID: stu.ID, Space: stu.Space, Settings: stu.Settings, CreatedAt: stu.CreatedAt})
}

// readJSONObject reads a JSON object body of at most limit bytes.
func readJSONObject(c echo.Context, limit int64) ([]byte, error) {
	var raw json.RawMessage
	if err := bindJSON(c, limit, &raw); err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return nil, badJSON("", "the body must be a JSON object")
	}
	return raw, nil
}

func (s *Server) listStudents(c echo.Context) error {
	ss, err := s.deps.Trainer.ListStudents(c.Request().Context(), c.Param("study"))
	if err != nil {
		return storeErr(err, "study", "")
	}
	out := make([]studentBody, len(ss))
	for i, st := range ss {
		out[i] = studentBody{Study: st.Study, ID: st.ID, Space: st.Space, Settings: st.Settings, CreatedAt: st.CreatedAt}
	}
	return c.JSON(http.StatusOK, map[string]any{"students": out})
}

// getStudent serves a student with its current version and history, and
// with a ".npz" suffix its head.
func (s *Server) getStudent(c echo.Context) error {
	if name, ok := strings.CutSuffix(c.Param("student"), ".npz"); ok {
		return s.studentNPZ(c, name)
	}
	ctx := c.Request().Context()
	study, id := c.Param("study"), c.Param("student")
	stu, err := s.deps.Trainer.GetStudent(ctx, study, id)
	if err != nil {
		return storeErr(err, "student", "")
	}
	vs, err := s.deps.Trainer.StudentVersions(ctx, study, id)
	if err != nil {
		return storeErr(err, "student", "")
	}
	b := studentBody{Study: stu.Study, ID: stu.ID, Space: stu.Space, Settings: stu.Settings, CreatedAt: stu.CreatedAt, Versions: vs}
	for i := range vs {
		if vs[i].Version == stu.Current {
			b.Current = &vs[i]
		}
	}
	return c.JSON(http.StatusOK, b)
}

func (s *Server) deleteStudent(c echo.Context) error {
	if err := s.deps.Trainer.DeleteStudent(c.Request().Context(), c.Param("study"), c.Param("student")); err != nil {
		return storeErr(err, "student", "")
	}
	return c.NoContent(http.StatusNoContent)
}

// versionParam parses ?version=N (0, the default, means current).
func versionParam(c echo.Context) (int64, error) {
	v := c.QueryParam("version")
	if v == "" || v == "current" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, badParam("version", "version must be a positive integer or \"current\"")
	}
	return n, nil
}

// studentVersion returns the requested version of a student (current by
// default).
func (s *Server) studentVersion(c echo.Context, study, id string) (alignet.StudentVersion, error) {
	n, err := versionParam(c)
	if err != nil {
		return alignet.StudentVersion{}, err
	}
	ctx := c.Request().Context()
	if _, err := s.deps.Trainer.GetStudent(ctx, study, id); err != nil {
		return alignet.StudentVersion{}, storeErr(err, "student", "")
	}
	v, err := s.deps.Trainer.StudentVersion(ctx, study, id, n)
	if errors.Is(err, alignet.ErrNotFound) {
		if n == 0 {
			return v, notFound("", "student %q has no promoted version yet", id)
		}
		return v, notFound("version", "student %q has no version %d", id, n)
	}
	if err != nil {
		return v, storeErr(err, "student", "")
	}
	return v, nil
}

func (s *Server) studentNPZ(c echo.Context, id string) error {
	study := c.Param("study")
	v, err := s.studentVersion(c, study, id)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%s-%s-v%d.npz", study, id, v.Version)
	return s.serveArtifact(c, v.Artifact, name)
}

// loadHead reads a student version's head.
func (s *Server) loadHead(ctx context.Context, v alignet.StudentVersion) (*learner.StudentHead, error) {
	h, err := modelfile.ReadStudentArtifact(ctx, s.deps.Trainer, v.Artifact)
	if errors.Is(err, modelfile.ErrUnreadable) {
		return nil, &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "stored head is unreadable", Err: err}
	}
	if err != nil {
		return nil, storeErr(err, "student version", "")
	}
	return h, nil
}

// studentEmbeddings serves the aligned representations of items: JSON by
// default, or with ?format=npy (or Accept: application/x-npy) an n×P
// float32 .npy whose rows follow the requested items, named in the
// X-Alignet-Items header as a JSON array. items is a comma-separated
// list, repeatable; without it, the study's items.
func (s *Server) studentEmbeddings(c echo.Context) error {
	ctx := c.Request().Context()
	study, id := c.Param("study"), c.Param("student")
	format := c.QueryParam("format")
	if format == "" {
		format = "json"
		if strings.Contains(c.Request().Header.Get("Accept"), "application/x-npy") {
			format = "npy"
		}
	}
	if format != "json" && format != "npy" {
		return badParam("format", "format must be json or npy")
	}
	var items []string
	for _, v := range c.QueryParams()["items"] {
		for _, it := range strings.Split(v, ",") {
			if it != "" {
				items = append(items, it)
			}
		}
	}
	for i, it := range items {
		if msg := alignet.CheckText(it, alignet.MaxItemIDLen); msg != "" {
			return badParam("items", "items[%d] %s", i, msg)
		}
	}
	stu, err := s.deps.Trainer.GetStudent(ctx, study, id)
	if err != nil {
		return storeErr(err, "student", "")
	}
	v, err := s.studentVersion(c, study, id)
	if err != nil {
		return err
	}
	if items == nil {
		if items, err = s.deps.Studies.StudyItems(ctx, study); err != nil {
			return storeErr(err, "study", "")
		}
	}
	x, found, err := s.deps.Trainer.LoadEmbeddings(ctx, stu.Space, items)
	if err != nil {
		return storeErr(err, "space", "")
	}
	for i, ok := range found {
		if !ok {
			return newErr(http.StatusUnprocessableEntity, CodeUnknownItem, "items",
				"item %q has no embedding in the student's space %q", truncate(items[i], alignet.MaxItemIDLen), stu.Space)
		}
	}
	head, err := s.loadHead(ctx, v)
	if err != nil {
		return err
	}
	z := head.Transform(x, len(items))
	p := head.P
	if format == "npy" {
		ids, _ := json.Marshal(items)
		h := c.Response().Header()
		h.Set("X-Alignet-Items", string(ids))
		h.Set("X-Alignet-Student-Version", strconv.FormatInt(v.Version, 10))
		var buf bytes.Buffer
		if err := npy.Write(&buf, npy.FromFloat32(z, len(items), p)); err != nil {
			return err
		}
		return c.Blob(http.StatusOK, "application/x-npy", buf.Bytes())
	}
	type row struct {
		ID     string    `json:"id"`
		Vector []float32 `json:"vector"`
	}
	rows := make([]row, len(items))
	for i, it := range items {
		rows[i] = row{ID: it, Vector: z[i*p : (i+1)*p]}
	}
	return c.JSON(http.StatusOK, map[string]any{"study": study, "student": id, "version": v.Version, "dim": p, "items": rows})
}

// datasetFile parses the {version}.npz path segment.
func datasetFile(seg string) (int64, error) {
	name, ok := strings.CutSuffix(seg, ".npz")
	if !ok {
		return 0, notFound("", "datasets are served as {version}.npz or current.npz")
	}
	if name == "current" {
		return 0, nil
	}
	n, err := strconv.ParseInt(name, 10, 64)
	if err != nil || n < 1 {
		return 0, notFound("", "dataset %q not found: versions are positive integers or \"current\"", truncate(name, 32))
	}
	return n, nil
}

func (s *Server) listDatasets(c echo.Context) error {
	ds, err := s.deps.Trainer.Datasets(c.Request().Context(), c.Param("study"))
	if err != nil {
		return storeErr(err, "study", "")
	}
	return c.JSON(http.StatusOK, map[string]any{"datasets": ds})
}

func (s *Server) getDataset(c echo.Context) error {
	n, err := datasetFile(c.Param("file"))
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	study := c.Param("study")
	if _, err := s.deps.Studies.GetStudy(ctx, study); err != nil {
		return storeErr(err, "study", "")
	}
	ds, err := s.deps.Trainer.GetDataset(ctx, study, n)
	if errors.Is(err, alignet.ErrNotFound) {
		if n == 0 {
			return notFound("", "study %q has no dataset yet", study)
		}
		return notFound("", "study %q has no dataset %d (the oldest are deleted by retention)", study, n)
	}
	if err != nil {
		return storeErr(err, "dataset", "")
	}
	c.Response().Header().Set("X-Alignet-Dataset-Version", strconv.FormatInt(ds.Version, 10))
	return s.serveArtifact(c, ds.Artifact, fmt.Sprintf("%s-dataset-%d.npz", study, ds.Version))
}

// artifactBlock is the block size in which downloads read artifacts.
const artifactBlock = 4 << 20

// serveArtifact streams an artifact with http.ServeContent: Content-Length,
// Accept-Ranges, single and multiple Range requests (206), If-Range and
// conditional requests on the artifact's ETag (its SHA-256) and
// Last-Modified. Each write must be taken within WriteTimeout.
func (s *Server) serveArtifact(c echo.Context, id int64, filename string) error {
	ctx := c.Request().Context()
	a, err := s.deps.Trainer.GetArtifact(ctx, id)
	if err != nil {
		return storeErr(err, "artifact", "")
	}
	res := c.Response()
	h := res.Header()
	h.Set(echo.HeaderContentType, "application/octet-stream")
	h.Set(echo.HeaderContentDisposition, `attachment; filename="`+filename+`"`)
	h.Set("ETag", `"`+a.SHA256+`"`)
	h.Set("Cache-Control", "no-cache")
	r := &artifactReader{ctx: ctx, store: s.deps.Trainer, id: id, size: a.Size}
	rc := http.NewResponseController(res)
	w := deadlineResponseWriter{ResponseWriter: res, rc: rc, d: s.cfg.WriteTimeout}
	http.ServeContent(w, c.Request(), filename, a.CreatedAt, r)
	if r.err != nil {
		s.log.Warn("artifact download failed", "artifact", id, "err", r.err)
	}
	return nil
}

// deadlineResponseWriter extends the write deadline before each write.
type deadlineResponseWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w deadlineResponseWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.d))
	return w.ResponseWriter.Write(p)
}

// artifactReader is an io.ReadSeeker over a stored artifact that fetches
// it block by block.
type artifactReader struct {
	ctx   context.Context
	store TrainerStore
	id    int64
	size  int64
	off   int64
	block []byte
	start int64 // offset of block
	err   error
}

func (r *artifactReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.block == nil || r.off < r.start || r.off >= r.start+int64(len(r.block)) {
		start := r.off / artifactBlock * artifactBlock
		n := min(int64(artifactBlock), r.size-start)
		buf := bytes.NewBuffer(make([]byte, 0, n))
		if err := r.store.ReadArtifact(r.ctx, r.id, start, n, buf); err != nil {
			r.err = err
			return 0, err
		}
		r.block, r.start = buf.Bytes(), start
	}
	k := copy(p, r.block[r.off-r.start:])
	r.off += int64(k)
	return k, nil
}

func (r *artifactReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start")
	}
	r.off = offset
	return offset, nil
}
