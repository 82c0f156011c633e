package alignet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// StudySettings are the optional settings of a study, grouped by the role
// that reads them. A study always holds a complete set: fields missing from
// the stored or posted JSON take the values of DefaultStudySettings, so the
// defaults work untouched and GET shows what is in effect.
type StudySettings struct {
	// Learner configures the online learner and its refits.
	Learner LearnerSettings `json:"learner"`
	// Queries configures query selection and participant sessions.
	Queries QuerySettings `json:"queries"`
	// Checks are attention checks the study supplies; without them the
	// checks are triplets on which the teacher is near-certain.
	Checks []CheckTriplet `json:"checks"`
	// Trainer configures AligNet regeneration and student training.
	Trainer TrainerSettings `json:"trainer"`
	// Page holds the texts of the built-in participant page.
	Page PageSettings `json:"page"`
}

// DefaultStudySettings returns the settings of a study that sets nothing.
func DefaultStudySettings() StudySettings {
	return StudySettings{
		Learner: DefaultLearnerSettings(),
		Queries: DefaultQuerySettings(),
		Checks:  []CheckTriplet{},
		Trainer: DefaultTrainerSettings(),
		Page:    DefaultPageSettings(),
	}
}

// Validate checks every group and returns a *FieldError naming the first
// offending field by its JSON path, such as "learner.refit_factor".
func (s *StudySettings) Validate() error {
	if err := s.Learner.validate(); err != nil {
		return err.Prefix("learner")
	}
	if err := s.Queries.validate(); err != nil {
		return err.Prefix("queries")
	}
	if err := validateChecks(s.Checks); err != nil {
		return err.Prefix("checks")
	}
	if err := s.Trainer.validate(); err != nil {
		return err.Prefix("trainer")
	}
	if err := s.Page.validate(); err != nil {
		return err.Prefix("page")
	}
	return nil
}

// DecodeStudySettings decodes settings JSON over the defaults, rejecting
// unknown fields, and validates the result. Empty or null input yields the
// defaults. Errors are *FieldError values.
func DecodeStudySettings(raw []byte) (StudySettings, error) {
	s := DefaultStudySettings()
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return s, nil
	}
	if err := decodeStrict(raw, &s); err != nil {
		return StudySettings{}, err
	}
	if err := s.Validate(); err != nil {
		return StudySettings{}, err
	}
	return s, nil
}

// Patch applies a JSON merge patch (RFC 7396) to s and returns the
// validated result: members of patch replace those of s, null removes a
// member (so it takes its default again), and objects merge recursively.
// s itself is not modified.
func (s StudySettings) Patch(patch []byte) (StudySettings, error) {
	cur, err := json.Marshal(s)
	if err != nil {
		return StudySettings{}, fmt.Errorf("encode settings: %w", err)
	}
	var doc, p any
	if err := json.Unmarshal(cur, &doc); err != nil {
		return StudySettings{}, fmt.Errorf("decode settings: %w", err)
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return StudySettings{}, Invalid("", "settings patch is not valid JSON: %v", err)
	}
	if _, ok := p.(map[string]any); !ok {
		return StudySettings{}, Invalid("", "settings patch must be a JSON object")
	}
	merged, err := json.Marshal(mergePatch(doc, p))
	if err != nil {
		return StudySettings{}, fmt.Errorf("encode settings: %w", err)
	}
	return DecodeStudySettings(merged)
}

// mergePatch applies the RFC 7396 merge patch p to doc.
func mergePatch(doc, p any) any {
	pm, ok := p.(map[string]any)
	if !ok {
		return p
	}
	dm, ok := doc.(map[string]any)
	if !ok {
		dm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(dm, k)
			continue
		}
		dm[k] = mergePatch(dm[k], v)
	}
	return dm
}

// decodeStrict decodes raw into v, rejecting unknown fields and trailing
// data, and turns decoding errors into *FieldError values.
func decodeStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var fe *FieldError
		switch {
		case errors.As(err, &fe):
			return fe
		case errors.As(err, &te):
			return Invalid(te.Field, "expected %s, got JSON %s", te.Type, te.Value)
		}
		msg := err.Error()
		if _, after, ok := strings.Cut(msg, "unknown field \""); ok {
			name, _, _ := strings.Cut(after, "\"")
			// encoding/json names the member but not where it is.
			var doc any
			if json.Unmarshal(raw, &doc) == nil {
				if path := unknownPath(doc, reflect.TypeOf(v), ""); path != "" {
					return Invalid(path, "unknown field %q", name)
				}
			}
			return Invalid(name, "unknown field %q", name)
		}
		return Invalid("", "malformed JSON: %s", strings.TrimPrefix(msg, "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Invalid("", "unexpected data after the JSON value")
	}
	return nil
}

// unknownPath returns the JSON path of the first member of doc (in sorted
// order at each level) that type t has no field for, or "". Member names
// match field names case-insensitively, as encoding/json matches them.
func unknownPath(doc any, t reflect.Type, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := doc.(map[string]any)
		if !ok {
			return ""
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			f, ok := jsonField(t, k)
			if !ok {
				return sub
			}
			if p := unknownPath(m[k], f.Type, sub); p != "" {
				return p
			}
		}
	case reflect.Slice, reflect.Array:
		a, _ := doc.([]any)
		for i, e := range a {
			if p := unknownPath(e, t.Elem(), path+"["+strconv.Itoa(i)+"]"); p != "" {
				return p
			}
		}
	}
	return ""
}

// jsonField returns the field of struct type t that the JSON member name
// decodes into.
func jsonField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		if strings.EqualFold(tag, name) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string such as "10m" or "1h30m".
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string. A value that is not one becomes
// a negative Duration, which the settings' Validate reports with the
// field's path (encoding/json cannot name the path itself).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		*d = -1
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		*d = -1
		return nil
	}
	*d = Duration(v)
	return nil
}

// checkDuration reports a FieldError unless d is at least min.
func checkDuration(field string, d Duration, min time.Duration) *FieldError {
	if d < 0 {
		return Invalid(field, "must be a non-negative duration such as \"10m\" or \"1h30m\"")
	}
	if time.Duration(d) < min {
		return Invalid(field, "must be at least %s", min)
	}
	return nil
}
