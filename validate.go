package alignet

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits on identifiers and free text, shared by the API, the stream
// decoder and the database layer.
const (
	// MaxNameLen bounds space, study and student names.
	MaxNameLen = 64
	// MaxIDLen bounds judgment ids.
	MaxIDLen = 64
	// MaxQueryIDLen bounds query ids.
	MaxQueryIDLen = 64
	// MaxItemIDLen bounds item (embedding) ids, in characters.
	MaxItemIDLen = 128
	// MaxWorkerLen bounds raw worker ids and pseudonyms, in characters.
	MaxWorkerLen = 128
)

// ErrInvalid is wrapped by every validation error of this package's types.
var ErrInvalid = errors.New("invalid")

// FieldError is a validation failure that names the offending field by its
// JSON path, such as "items[2]" or "learner.refit_factor".
type FieldError struct {
	// Field is the JSON path of the offending value; empty when the value
	// as a whole is to blame.
	Field string
	// Message says what is wrong, in a form fit to show to a client.
	Message string
}

// Error returns "field: message", or the message alone.
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Is makes errors.Is(err, ErrInvalid) true for every FieldError.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Invalid returns a FieldError for field with a formatted message.
func Invalid(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Prefix returns a copy of e with its field prefixed by prefix, joining
// with "." unless the field starts with an index.
func (e *FieldError) Prefix(prefix string) *FieldError {
	c := *e
	switch {
	case c.Field == "":
		c.Field = prefix
	case c.Field[0] == '[':
		c.Field = prefix + c.Field
	default:
		c.Field = prefix + "." + c.Field
	}
	return &c
}

// ValidName reports whether s is 1-64 characters of [A-Za-z0-9._-], the
// form of space, study and student names.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidID reports whether id is 1-64 characters of [A-Za-z0-9._:-], the
// form of client-chosen judgment ids.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
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

// CheckText reports why s is not acceptable free text of at most max
// characters: it must be valid UTF-8 and hold no control characters (C0,
// DEL or C1, NUL included), which Postgres, CSV exports and terminals
// mishandle. It returns "" when s is fine; an empty s is fine.
func CheckText(s string, max int) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	n := 0
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Sprintf("must not contain control characters (found U+%04X)", r)
		}
		n++
	}
	if n > max {
		return fmt.Sprintf("must be at most %d characters", max)
	}
	return ""
}

// ValidItemID reports whether s is a valid item id: 1-128 characters of
// text as CheckText accepts it.
func ValidItemID(s string) bool { return s != "" && CheckText(s, MaxItemIDLen) == "" }
