package stream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
)

// ContentType is the value of the content-type header of every judgment
// batch message.
const ContentType = "application/vnd.alignet.judgments.v1+json"

// EnvelopeVersion is the version of the JSON envelope written by EncodeBatch.
const EnvelopeVersion = 1

// HeaderContentType is the name of the header that carries ContentType.
const HeaderContentType = "content-type"

// ErrInvalidBatch is wrapped by every error of EncodeBatch and DecodeBatch
// that is caused by the content of the batch rather than by infrastructure.
var ErrInvalidBatch = errors.New("invalid judgment batch")

// decodeError is a rejection with a short reason category, used as the
// metric label and in the dead-letter headers.
type decodeError struct {
	reason string
	msg    string
}

func (e *decodeError) Error() string        { return e.msg }
func (e *decodeError) Is(target error) bool { return target == ErrInvalidBatch }

func reject(reason, format string, args ...any) error {
	return &decodeError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// rejectReason returns the short category of an error from DecodeBatch.
func rejectReason(err error) string {
	var de *decodeError
	if errors.As(err, &de) {
		return de.reason
	}
	return "other"
}

// envelope is the value written by EncodeBatch.
type envelope struct {
	V         int                `json:"v"`
	Judgments []alignet.Judgment `json:"judgments"`
}

// wireJudgment mirrors alignet.Judgment, with Items as a slice so that a
// wrong number of items is detected instead of silently truncated or padded.
type wireJudgment struct {
	ID         string            `json:"id"`
	Study      string            `json:"study"`
	Task       alignet.Task      `json:"task"`
	Worker     string            `json:"worker"`
	Items      []string          `json:"items"`
	Odd        string            `json:"odd,omitempty"`
	RTMillis   int32             `json:"rt_ms"`
	QueryID    string            `json:"query_id,omitempty"`
	QueryKind  alignet.QueryKind `json:"query_kind,omitempty"`
	ReceivedAt time.Time         `json:"received_at"`
}

type wireEnvelope struct {
	V         *int            `json:"v"`
	Judgments []*wireJudgment `json:"judgments"`
}

// EncodeBatch encodes one accepted request, a batch of judgments of one
// study, into one Kafka message keyed by the study id. It validates the batch
// with the same rules as DecodeBatch, so that nothing is published that the
// consumers would reject.
func EncodeBatch(study string, js []alignet.Judgment) (kafka.Message, error) {
	if err := validateBatch(study, js); err != nil {
		return kafka.Message{}, fmt.Errorf("encode batch: %w", err)
	}
	v, err := json.Marshal(envelope{V: EnvelopeVersion, Judgments: js})
	if err != nil {
		return kafka.Message{}, fmt.Errorf("encode batch: %w", err)
	}
	return kafka.Message{
		Key:     []byte(study),
		Value:   v,
		Headers: []kafka.Header{{Key: HeaderContentType, Value: []byte(ContentType)}},
	}, nil
}

// DecodeBatch decodes a message written by EncodeBatch. It is strict: an
// unknown envelope version or content type, unknown fields, an empty batch, a
// judgment whose study differs from the key, a missing id, an unknown task,
// a wrong number of items and other invalid judgments are rejected with a
// descriptive error wrapping ErrInvalidBatch. A missing content-type header
// is tolerated so that batches can be replayed by generic tools.
func DecodeBatch(m kafka.Message) ([]alignet.Judgment, error) {
	for _, h := range m.Headers {
		if h.Key == HeaderContentType && string(h.Value) != ContentType {
			return nil, reject("content_type", "decode batch: unsupported content type %q", h.Value)
		}
	}
	study := string(m.Key)
	if study == "" {
		return nil, reject("key", "decode batch: missing study key")
	}
	// encoding/json would silently replace invalid UTF-8 with U+FFFD.
	if !utf8.Valid(m.Value) {
		return nil, reject("json", "decode batch: value holds invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(m.Value))
	dec.DisallowUnknownFields()
	var env wireEnvelope
	if err := dec.Decode(&env); err != nil {
		return nil, reject("json", "decode batch: malformed envelope: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, reject("json", "decode batch: trailing data after envelope")
	}
	if env.V == nil {
		return nil, reject("version", "decode batch: missing envelope version")
	}
	if *env.V != EnvelopeVersion {
		return nil, reject("version", "decode batch: unsupported envelope version %d", *env.V)
	}
	js := make([]alignet.Judgment, len(env.Judgments))
	for i, w := range env.Judgments {
		if w == nil {
			return nil, reject("judgment", "decode batch: judgment %d is null", i)
		}
		if len(w.Items) != 3 {
			return nil, reject("judgment", "decode batch: judgment %d (id %q): items has %d entries, want 3", i, w.ID, len(w.Items))
		}
		js[i] = alignet.Judgment{
			ID: w.ID, Study: w.Study, Task: w.Task, Worker: w.Worker,
			Items: [3]string{w.Items[0], w.Items[1], w.Items[2]},
			Odd:   w.Odd, RTMillis: w.RTMillis, QueryID: w.QueryID, QueryKind: w.QueryKind, ReceivedAt: w.ReceivedAt,
		}
	}
	if err := validateBatch(study, js); err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	return js, nil
}

// validateBatch checks the invariants shared by EncodeBatch and DecodeBatch.
func validateBatch(study string, js []alignet.Judgment) error {
	if study == "" {
		return reject("key", "missing study")
	}
	if len(js) == 0 {
		return reject("empty", "study %q: empty batch", study)
	}
	seen := make(map[string]struct{}, len(js))
	for i := range js {
		j := &js[i]
		if j.ID == "" {
			return reject("judgment", "judgment %d: missing id", i)
		}
		if _, dup := seen[j.ID]; dup {
			return reject("judgment", "judgment %d: duplicate id %q in batch", i, j.ID)
		}
		seen[j.ID] = struct{}{}
		if j.Study != study {
			return reject("study_mismatch", "judgment %d (id %q): study %q does not match key %q", i, j.ID, j.Study, study)
		}
		if err := j.Validate(); err != nil {
			return reject("judgment", "judgment %d (id %q): %v", i, j.ID, err)
		}
	}
	return nil
}
