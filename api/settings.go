package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"slices"

	"github.com/alignet/alignet"
	"github.com/labstack/echo/v4"
)

// mimeMergePatch is the media type of JSON merge patches (RFC 7396).
const mimeMergePatch = "application/merge-patch+json"

// settingsErr turns an error of alignet.DecodeStudySettings or
// alignet.StudySettings.Patch into a 422 naming the field under
// "settings".
func settingsErr(err error) *Error {
	var fe *alignet.FieldError
	if errors.As(err, &fe) {
		return fieldErr(fe.Prefix("settings"))
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error", Err: err}
}

// readOnlyStudyFields are the members of a study that a PATCH may name only
// to be told they cannot change.
var readOnlyStudyFields = []string{"id", "task", "space", "created_at", "items", "judgments"}

// patchStudy applies a JSON merge patch (RFC 7396) to a study. Only its
// settings can change: the body is {"settings": {...}}, whose members
// replace the stored ones, objects merging recursively and null resetting
// a member (or, for "settings": null, every setting) to its default. The
// update is atomic, and this server's study cache sees it at once.
func (s *Server) patchStudy(c echo.Context) error {
	mt, _, err := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType))
	if err != nil || (mt != mimeMergePatch && mt != echo.MIMEApplicationJSON) {
		return newErr(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "",
			"Content-Type must be %s or %s", mimeMergePatch, echo.MIMEApplicationJSON)
	}
	ctx := c.Request().Context()
	id := c.Param("study")
	buf := s.bufs.get()
	defer s.bufs.put(buf)
	if err := readBody(c, s.cfg.MaxJudgmentBody, buf); err != nil {
		return err
	}
	if err := checkText(buf.Bytes()); err != nil {
		return err
	}
	body := bytes.TrimSpace(buf.Bytes())
	if len(body) == 0 {
		return badJSON("", "request body is empty")
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "" {
			return badJSON("", "a merge patch of a study must be a JSON object")
		}
		return jsonDecodeErr(err)
	}
	for name := range doc {
		switch {
		case name == "settings":
		case slices.Contains(readOnlyStudyFields, name):
			return invalid(name, "%s cannot be changed; only settings can", name)
		default:
			return badJSON(name, "unknown field %q", name)
		}
	}
	raw, ok := doc["settings"]
	if !ok { // An empty patch changes nothing.
		st, err := s.deps.Studies.GetStudy(ctx, id)
		if err != nil {
			return storeErr(err, "study", "")
		}
		return c.JSON(http.StatusOK, toStudyBody(st))
	}
	raw = bytes.TrimSpace(raw)
	if !bytes.Equal(raw, []byte("null")) && (len(raw) == 0 || raw[0] != '{') {
		return invalid("settings", "settings must be an object, or null to reset every setting to its default")
	}
	st, err := s.deps.Settings.UpdateStudySettings(ctx, id, func(cur alignet.StudySettings) (alignet.StudySettings, error) {
		if bytes.Equal(raw, []byte("null")) {
			return alignet.DefaultStudySettings(), nil
		}
		next, err := cur.Patch(raw)
		if err != nil {
			return alignet.StudySettings{}, settingsErr(err)
		}
		return next, nil
	})
	if err != nil {
		return storeErr(err, "study", "")
	}
	s.studies.Invalidate(id)
	return c.JSON(http.StatusOK, toStudyBody(st))
}
