package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/alignet/alignet"
	"github.com/labstack/echo/v4"
)

// Error codes used in the "code" member of error bodies.
const (
	// CodeInvalidJSON (400) marks malformed JSON, a wrong JSON type or an
	// unknown field.
	CodeInvalidJSON = "invalid_json"
	// CodeInvalidParameter (400) marks a bad query parameter.
	CodeInvalidParameter = "invalid_parameter"
	// CodeInvalidBody (400) marks a malformed multipart or .npy body.
	CodeInvalidBody = "invalid_body"
	// CodeInvalidField (422) marks a well-formed but invalid value.
	CodeInvalidField = "invalid_field"
	// CodeMissingField (422) marks a missing required field.
	CodeMissingField = "missing_field"
	// CodeUnknownItem (422) marks an item that is not in the study's pool.
	CodeUnknownItem = "unknown_item"
	// CodeNoEmbedding (422) marks an item of the study's pool that has no
	// embedding yet, so the teacher cannot score it.
	CodeNoEmbedding = "no_embedding"
	// CodeDuplicateID (422) marks a judgment id repeated within a batch.
	CodeDuplicateID = "duplicate_id"
	// CodeUnknownQuery (422) marks a judgment whose query_id names no query
	// served in the study.
	CodeUnknownQuery = "unknown_query"
	// CodeQueryMismatch (422) marks a judgment whose items are not those of
	// the query it names.
	CodeQueryMismatch = "query_mismatch"
	// CodeQueryForeign (409) marks a judgment whose query_id was served to
	// another worker (another session).
	CodeQueryForeign = "query_foreign"
	// CodeQueryAnswered (409) marks a judgment whose query was answered
	// already by a judgment with another id.
	CodeQueryAnswered = "query_answered"
	// CodeQueryExpired (410) marks a judgment whose query's TTL passed
	// before it was answered.
	CodeQueryExpired = "query_expired"
	// CodeNotReady (409) marks a study that cannot open sessions or serve
	// queries yet (no items with embeddings, no completion code for
	// Prolific).
	CodeNotReady = "not_ready"
	// CodeNotFound (404) marks an unknown route, study, space or key.
	CodeNotFound = "not_found"
	// CodeConflict (409) marks an entity that exists with another definition.
	CodeConflict = "conflict"
	// CodeTooLarge (413) marks a body or batch over its cap, or a batch too
	// large for the stream once encoded.
	CodeTooLarge = "too_large"
	// CodeTimeout (408) marks a request body not received in time.
	CodeTimeout = "timeout"
	// CodeUnsupportedMedia (415) marks a wrong Content-Type.
	CodeUnsupportedMedia = "unsupported_media_type"
	// CodeUnauthorized (401) marks a missing or invalid API key.
	CodeUnauthorized = "unauthorized"
	// CodeForbidden (403) marks a key without the route's scope.
	CodeForbidden = "forbidden"
	// CodeRateLimited (429) marks a study-bound key over one of its rate
	// limits; the body's "limit" names it ("session" or "address").
	CodeRateLimited = "rate_limited"
	// CodeUnavailable (503) marks an unreachable Kafka or Postgres, or too
	// many exports at once.
	CodeUnavailable = "unavailable"
	// CodeMethodNotAllowed (405) marks a method the route does not serve.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeInternal (500) marks a server bug.
	CodeInternal = "internal"
)

// Error is an API error. It is rendered as
// {"error":{"code":...,"message":...,"field":...}} with HTTP status Status.
type Error struct {
	// Status is the HTTP status code.
	Status int `json:"-"`
	// Code is a stable machine-readable error code such as "invalid_field".
	Code string `json:"code"`
	// Message is a human-readable explanation.
	Message string `json:"message"`
	// Field is the JSON path of the offending value, if one is to blame.
	// Elements of a batch are prefixed with their index, as in "[3].odd".
	Field string `json:"field,omitempty"`
	// Limit names the rate limit a 429 ran into: "session" or "address".
	Limit string `json:"limit,omitempty"`
	// Err is the underlying cause; it is logged but never sent.
	Err error `json:"-"`
	// retryAfter is the Retry-After of a 503 or 429 in seconds; 0 means 1.
	retryAfter int
}

// Error returns the message, prefixed by the field when there is one.
func (e *Error) Error() string {
	msg := e.Code + ": " + e.Message
	if e.Field != "" {
		msg = e.Code + ": " + e.Field + ": " + e.Message
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// errorBody is the wire form of an error response.
type errorBody struct {
	Error *Error `json:"error"`
}

func newErr(status int, code, field, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

func badJSON(field, format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, CodeInvalidJSON, field, format, args...)
}

func badParam(name, format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, CodeInvalidParameter, name, format, args...)
}

func badBody(field, format string, args ...any) *Error {
	return newErr(http.StatusBadRequest, CodeInvalidBody, field, format, args...)
}

func invalid(field, format string, args ...any) *Error {
	return newErr(http.StatusUnprocessableEntity, CodeInvalidField, field, format, args...)
}

// fieldErr turns a validation error of package alignet into a 422.
func fieldErr(fe *alignet.FieldError) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalidField, Field: fe.Field, Message: fe.Message}
}

// badText checks s as free text of at most max characters with
// alignet.CheckText and returns a 422 naming field, or nil.
func badText(field, s string, max int) *Error {
	if msg := alignet.CheckText(s, max); msg != "" {
		return invalid(field, "%s %s", field, msg)
	}
	return nil
}

func missing(field string) *Error {
	return newErr(http.StatusUnprocessableEntity, CodeMissingField, field, "required field is missing")
}

func notFound(field, format string, args ...any) *Error {
	return newErr(http.StatusNotFound, CodeNotFound, field, format, args...)
}

// withPrefix returns a copy of e whose field is prefixed, for batch elements.
func (e *Error) withPrefix(prefix string) *Error {
	c := *e
	switch {
	case c.Field == "":
		c.Field = prefix
	case strings.HasPrefix(c.Field, "["):
		c.Field = prefix + c.Field
	default:
		c.Field = prefix + "." + c.Field
	}
	return &c
}

// storeErr translates an error from the Store or Publisher into an API error.
// field names the value to blame for not-found and conflict errors.
func storeErr(err error, what, field string) *Error {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, alignet.ErrNotFound):
		e := notFound(field, "%s not found", what)
		e.Err = err
		return e
	case errors.Is(err, alignet.ErrConflict):
		e := newErr(http.StatusConflict, CodeConflict, field, "%s already exists with a different definition", what)
		e.Err = err
		return e
	case errors.Is(err, alignet.ErrTooLarge):
		return tooLargeForStream(err)
	case errors.Is(err, alignet.ErrInvalid):
		// A value the API let through but the database refused; the client
		// must change it, so it is a 422 rather than a 500.
		var fe *alignet.FieldError
		if errors.As(err, &fe) && fe.Field != "" {
			field = fe.Field
		}
		e := newErr(http.StatusUnprocessableEntity, CodeInvalidField, field, "%s has an invalid value", what)
		e.Err = err
		return e
	case errors.Is(err, alignet.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return unavailable(err)
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error", Err: err}
}

func unavailable(err error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
		Message: "a backing service is unavailable; retry later", Err: err}
}

// tooLargeForStream is the 413 for a batch that passed validation but is
// too large for one stream message once encoded.
func tooLargeForStream(err error) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge,
		Message: "the batch is too large once encoded for the stream; split it into smaller batches", Err: err}
}

// readErr translates a failure to read the request body (too large, too
// slow, or not acceptable text) into its API error, or returns nil for
// other errors.
func readErr(err error) *Error {
	var mbe *http.MaxBytesError
	var te *textError
	switch {
	case errors.As(err, &mbe):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge,
			Message: "request body exceeds " + strconv.FormatInt(mbe.Limit, 10) + " bytes", Err: err}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &Error{Status: http.StatusRequestTimeout, Code: CodeTimeout,
			Message: "the request body was not received in time", Err: err}
	case errors.As(err, &te):
		return badJSON("", "%s", te.Error())
	}
	return nil
}

// toAPIError converts any handler error into an *Error.
func toAPIError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	if e := readErr(err); e != nil {
		return e
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		e := &Error{Status: he.Code, Message: http.StatusText(he.Code), Err: he.Internal}
		if m, ok := he.Message.(string); ok && m != "" {
			e.Message = m
		}
		switch he.Code {
		case http.StatusNotFound:
			e.Code = CodeNotFound
		case http.StatusMethodNotAllowed:
			e.Code = CodeMethodNotAllowed
		case http.StatusRequestEntityTooLarge:
			e.Code = CodeTooLarge
		case http.StatusUnsupportedMediaType:
			e.Code = CodeUnsupportedMedia
		case http.StatusUnauthorized:
			e.Code = CodeUnauthorized
		case http.StatusForbidden:
			e.Code = CodeForbidden
		case http.StatusServiceUnavailable:
			e.Code = CodeUnavailable
		default:
			if he.Code >= 500 {
				e.Code = CodeInternal
			} else {
				e.Code = CodeInvalidJSON
			}
		}
		return e
	}
	return storeErr(err, "entity", "")
}

// jsonDecodeErr translates an encoding/json error into a 400 (or 413 when
// the body limit was hit) naming the JSON path when known.
func jsonDecodeErr(err error) *Error {
	if e := readErr(err); e != nil {
		return e
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te):
		return badJSON(te.Field, "expected %s, got JSON %s", te.Type, te.Value)
	case errors.As(err, &se):
		return badJSON("", "malformed JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, errEmptyBody):
		return badJSON("", "request body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badJSON("", "truncated JSON")
	}
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, "unknown field \""); ok {
		name, _, _ := strings.Cut(after, "\"")
		return badJSON(name, "unknown field %q", name)
	}
	return badJSON("", "malformed JSON: %v", strings.TrimPrefix(msg, "json: "))
}

var errEmptyBody = errors.New("empty body")

// errorHandler renders every error as a JSON error body.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	ae := toAPIError(err)
	h := c.Response().Header()
	switch ae.Status {
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="alignet"`)
	case http.StatusRequestTimeout:
		h.Set("Connection", "close")
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		h.Set("Retry-After", strconv.Itoa(max(ae.retryAfter, 1)))
	}
	// A handler may have set headers for the body it meant to send.
	h.Del(echo.HeaderContentDisposition)
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	c.Set(ctxKeyAPIError, ae)
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.Status)
		return
	}
	_ = c.JSON(ae.Status, errorBody{Error: ae})
}
