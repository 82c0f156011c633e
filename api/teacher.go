package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
	"github.com/labstack/echo/v4"
)

// The /teacher routes show what the learner role stores: the current
// teacher state of a study and its versions. The parameters W and b are
// never part of a JSON answer; GET .../teacher.npz downloads them.

// Messages of GET .../teacher by status.
const (
	msgTeacherEmpty  = "no judgment applied yet; the teacher is the raw embedding space"
	msgTeacherOnline = "online steps only; no full refit has run yet"
)

// dimsBody are a teacher's input (d) and output (p) dimensions.
type dimsBody struct {
	D int `json:"d"`
	P int `json:"p"`
}

// lastRefitBody describes the last refit.
type lastRefitBody struct {
	At        time.Time `json:"at"`
	Judgments int64     `json:"judgments"`
}

// teacherBody is the JSON form of a study's current teacher.
type teacherBody struct {
	Study            string                `json:"study"`
	Task             alignet.Task          `json:"task"`
	Status           alignet.TeacherStatus `json:"status"`
	Message          string                `json:"message,omitempty"`
	Version          int64                 `json:"version"`
	UpdatedAt        *time.Time            `json:"updated_at"`
	NewestAcceptedAt *time.Time            `json:"newest_accepted_at"`
	FreshnessSeconds *float64              `json:"freshness_seconds"`
	StalenessSeconds *float64              `json:"staleness_seconds"`
	JudgmentsSeen    int64                 `json:"judgments_seen"`
	JudgmentsTrained int64                 `json:"judgments_trained"`
	LastRefit        *lastRefitBody        `json:"last_refit"`
	Lambda           float64               `json:"lambda"`
	Tau              float64               `json:"tau"`
	Dims             dimsBody              `json:"dims"`
	Hyper            *alignet.TeacherHyper `json:"hyper"`
	Eval             *alignet.TeacherEval  `json:"eval"`
	Prequential      []alignet.Prequential `json:"prequential"`
	Skipped          map[string]int64      `json:"skipped"`
}

func seconds(d time.Duration) *float64 {
	v := d.Seconds()
	return &v
}

func (s *Server) getTeacher(c echo.Context) error {
	ctx := c.Request().Context()
	st, err := s.study(ctx, c.Param("study"))
	if err != nil {
		return err
	}
	study := st.study
	state, err := s.deps.Teachers.TeacherStateMeta(ctx, study.ID)
	if errors.Is(err, alignet.ErrNotFound) {
		sp, err := s.deps.Spaces.GetSpace(ctx, study.Space)
		if err != nil {
			return storeErr(err, "space", "")
		}
		return c.JSON(http.StatusOK, teacherBody{Study: study.ID, Task: study.Task, Status: alignet.TeacherEmpty,
			Message: msgTeacherEmpty, Tau: 1, Dims: dimsBody{D: sp.Dim, P: sp.Dim},
			Prequential: []alignet.Prequential{}, Skipped: map[string]int64{}})
	}
	if err != nil {
		return storeErr(err, "teacher", "")
	}
	b := teacherBody{
		Study: study.ID, Task: state.Params.Task, Status: state.Status, Version: state.Version,
		UpdatedAt: &state.UpdatedAt, StalenessSeconds: seconds(s.cfg.Now().Sub(state.UpdatedAt)),
		JudgmentsSeen: state.JudgmentsSeen, JudgmentsTrained: state.JudgmentsTrained,
		Lambda: state.Params.Lambda, Tau: state.Params.Tau, Dims: dimsBody{D: state.Params.D, P: state.Params.P},
		Hyper: &state.Hyper, Eval: state.Eval, Prequential: state.Prequential, Skipped: state.Skipped,
	}
	switch state.Status {
	case alignet.TeacherEmpty:
		b.Message = msgTeacherEmpty
	case alignet.TeacherOnline:
		b.Message = msgTeacherOnline
	}
	if !state.NewestAcceptedAt.IsZero() {
		b.NewestAcceptedAt = &state.NewestAcceptedAt
		b.FreshnessSeconds = seconds(state.UpdatedAt.Sub(state.NewestAcceptedAt))
	}
	if state.LastRefitAt != nil {
		b.LastRefit = &lastRefitBody{At: *state.LastRefitAt, Judgments: state.LastRefitJudgments}
	}
	if b.Prequential == nil {
		b.Prequential = []alignet.Prequential{}
	}
	if b.Skipped == nil {
		b.Skipped = map[string]int64{}
	}
	return c.JSON(http.StatusOK, b)
}

// versionBody is the JSON form of a teacher version, without W and b.
type versionBody struct {
	Study         string               `json:"study"`
	Version       int64                `json:"version"`
	CreatedAt     time.Time            `json:"created_at"`
	Kind          string               `json:"kind"`
	Parent        int64                `json:"parent"`
	JudgmentsSeen int64                `json:"judgments_seen"`
	Offsets       map[int32]int64      `json:"offsets"`
	Task          alignet.Task         `json:"task"`
	Dims          dimsBody             `json:"dims"`
	Lambda        float64              `json:"lambda"`
	Tau           float64              `json:"tau"`
	Hyper         alignet.TeacherHyper `json:"hyper"`
	Eval          alignet.TeacherEval  `json:"eval"`
}

func toVersionBody(v alignet.TeacherVersion) versionBody {
	off := v.Offsets
	if off == nil {
		off = map[int32]int64{}
	}
	return versionBody{Study: v.Study, Version: v.Version, CreatedAt: v.CreatedAt, Kind: v.Kind, Parent: v.Parent,
		JudgmentsSeen: v.JudgmentsSeen, Offsets: off, Task: v.Params.Task, Dims: dimsBody{D: v.Params.D, P: v.Params.P},
		Lambda: v.Params.Lambda, Tau: v.Params.Tau, Hyper: v.Hyper, Eval: v.Eval}
}

func (s *Server) listTeacherVersions(c echo.Context) error {
	id := c.Param("study")
	vs, err := s.deps.Teachers.TeacherVersions(c.Request().Context(), id)
	if err != nil {
		return storeErr(err, "study", "")
	}
	out := make([]versionBody, len(vs))
	for i, v := range vs {
		out[i] = toVersionBody(v)
	}
	return c.JSON(http.StatusOK, map[string]any{"study": id, "versions": out})
}

// parseVersion parses a teacher version number, a positive integer, from
// the path parameter or query parameter name.
func parseVersion(name, v string) (int64, *Error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, badParam(name, "version must be a positive integer, got %q", truncate(v, 32))
	}
	return n, nil
}

// teacherVersion reads version n of a study, with a 404 that says which
// versions exist.
func (s *Server) teacherVersion(c echo.Context, n int64) (alignet.TeacherVersion, error) {
	ctx := c.Request().Context()
	id := c.Param("study")
	if _, err := s.study(ctx, id); err != nil {
		return alignet.TeacherVersion{}, err
	}
	v, err := s.deps.Teachers.TeacherVersion(ctx, id, n)
	if errors.Is(err, alignet.ErrNotFound) {
		e := notFound("version", "study %q has no teacher version %d (GET /v1/studies/%s/teacher/versions lists those kept)", id, n, id)
		e.Err = err
		return alignet.TeacherVersion{}, e
	}
	if err != nil {
		return alignet.TeacherVersion{}, storeErr(err, "teacher version", "")
	}
	return v, nil
}

func (s *Server) getTeacherVersion(c echo.Context) error {
	n, aerr := parseVersion("version", c.Param("version"))
	if aerr != nil {
		return aerr
	}
	v, err := s.teacherVersion(c, n)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, toVersionBody(v))
}

// errNoTeacher is the answer for a study whose learner has stored nothing.
func errNoTeacher(status int, code, study, what string) *Error {
	return newErr(status, code, "", "study %q has no teacher yet: no judgment has been applied, so the teacher "+
		"is still the raw embedding space and there is %s (alignet eval without --teacher scores the raw embeddings)", study, what)
}

// postTeacherVersion stores the current teacher state as a manual version.
func (s *Server) postTeacherVersion(c echo.Context) error {
	ctx := c.Request().Context()
	st, err := s.study(ctx, c.Param("study"))
	if err != nil {
		return err
	}
	id := st.study.ID
	state, err := s.deps.Teachers.TeacherState(ctx, id)
	if errors.Is(err, alignet.ErrNotFound) {
		return errNoTeacher(http.StatusConflict, CodeConflict, id, "nothing to version")
	}
	if err != nil {
		return storeErr(err, "teacher", "")
	}
	v := alignet.TeacherVersion{Study: id, Kind: alignet.VersionManual, Parent: state.Version,
		JudgmentsSeen: state.JudgmentsSeen, Offsets: map[int32]int64{}, Params: state.Params, Hyper: state.Hyper}
	if state.Eval != nil {
		v.Eval = *state.Eval
	}
	v, err = s.deps.Teachers.InsertTeacherVersion(ctx, v, st.study.Settings.Learner.KeepVersions)
	if err != nil {
		return storeErr(err, "teacher version", "")
	}
	c.Response().Header().Set(echo.HeaderLocation, fmt.Sprintf("/v1/studies/%s/teacher/versions/%d", id, v.Version))
	return c.JSON(http.StatusCreated, toVersionBody(v))
}

func (s *Server) postRefit(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("study")
	if err := s.deps.Teachers.RequestRefit(ctx, id); err != nil {
		return storeErr(err, "study", "")
	}
	return c.JSON(http.StatusAccepted, map[string]any{
		"study": id, "requested_at": s.cfg.Now().UTC(),
		"message": "refit requested: the learner that owns the study starts it at its next poll; GET /v1/studies/" + id +
			"/teacher shows last_refit once it is done",
	})
}

// getTeacherNPZ sends the current teacher, or version N with ?version=N,
// as the .npz file that alignet fit --out writes.
func (s *Server) getTeacherNPZ(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("study")
	var (
		params alignet.TeacherParams
		hyper  alignet.TeacherHyper
		extra  map[string]any
		name   string
	)
	if q := c.QueryParam("version"); q != "" {
		n, aerr := parseVersion("version", q)
		if aerr != nil {
			return aerr
		}
		v, err := s.teacherVersion(c, n)
		if err != nil {
			return err
		}
		params, hyper, name = v.Params, v.Hyper, fmt.Sprintf("%s-teacher-v%d.npz", id, v.Version)
		extra = map[string]any{"study": id, "version": v.Version, "version_kind": v.Kind, "parent": v.Parent,
			"judgments_seen": v.JudgmentsSeen, "created_at": v.CreatedAt, "offsets": v.Offsets, "eval": v.Eval}
	} else {
		if _, err := s.study(ctx, id); err != nil {
			return err
		}
		state, err := s.deps.Teachers.TeacherState(ctx, id)
		if errors.Is(err, alignet.ErrNotFound) {
			return errNoTeacher(http.StatusNotFound, CodeNotFound, id, "no teacher file to download")
		}
		if err != nil {
			return storeErr(err, "teacher", "")
		}
		params, hyper, name = state.Params, state.Hyper, id+"-teacher.npz"
		extra = map[string]any{"study": id, "version": state.Version, "version_kind": "current", "status": state.Status,
			"judgments_seen": state.JudgmentsSeen, "updated_at": state.UpdatedAt}
		if state.Eval != nil {
			extra["eval"] = state.Eval
		}
	}
	prov := modelfile.Provenance{Seed: hyper.Seed, Task: learner.Task(params.Task), Extra: extra,
		Hyper: map[string]any{"targets": hyper.Targets, "lambdas": hyper.Lambdas, "learning_rate": hyper.LearningRate,
			"lambda": params.Lambda, "tau": params.Tau}}
	var buf bytes.Buffer
	if err := modelfile.WriteTeacher(&buf, modelfile.TeacherOf(params), prov); err != nil {
		return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "cannot encode the teacher", Err: err}
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentDisposition, `attachment; filename="`+name+`"`)
	h.Set("Cache-Control", "no-store")
	return c.Blob(http.StatusOK, echo.MIMEOctetStream, buf.Bytes())
}
