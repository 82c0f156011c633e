package stream

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	js := judgments("study-1", "a", 4)
	js[1].Task = alignet.TaskAnchor
	js[1].Odd = ""
	js[2].QueryID = ""
	js[3].QueryKind = alignet.QueryRandom
	m, err := EncodeBatch("study-1", js)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	if string(m.Key) != "study-1" {
		t.Errorf("key = %q, want study-1", m.Key)
	}
	if len(m.Headers) != 1 || m.Headers[0].Key != "content-type" || string(m.Headers[0].Value) != ContentType {
		t.Errorf("headers = %v, want content-type %s", m.Headers, ContentType)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(m.Value, &env); err != nil {
		t.Fatalf("value is not JSON: %v", err)
	}
	if string(env["v"]) != "1" {
		t.Errorf("envelope v = %s, want 1", env["v"])
	}
	got, err := DecodeBatch(m)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(got) != len(js) {
		t.Fatalf("decoded %d judgments, want %d", len(got), len(js))
	}
	for i := range js {
		if !got[i].ReceivedAt.Equal(js[i].ReceivedAt) {
			t.Errorf("judgment %d: received_at %v, want %v", i, got[i].ReceivedAt, js[i].ReceivedAt)
		}
		g, w := got[i], js[i]
		g.ReceivedAt, w.ReceivedAt = time.Time{}, time.Time{}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("judgment %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
	// Without the header the batch is still accepted.
	m.Headers = nil
	if _, err := DecodeBatch(m); err != nil {
		t.Errorf("decode without content-type header: %v", err)
	}
}

// TestWireJudgmentMatchesDomain guards against the wire type drifting from
// alignet.Judgment: the JSON field names must be identical.
func TestWireJudgmentMatchesDomain(t *testing.T) {
	t.Parallel()
	fields := func(typ reflect.Type) []string {
		var out []string
		for i := 0; i < typ.NumField(); i++ {
			out = append(out, typ.Field(i).Name+" "+typ.Field(i).Tag.Get("json"))
		}
		return out
	}
	d, w := fields(reflect.TypeOf(alignet.Judgment{})), fields(reflect.TypeOf(wireJudgment{}))
	if !reflect.DeepEqual(d, w) {
		t.Fatalf("wireJudgment fields %v differ from alignet.Judgment %v", w, d)
	}
}

func TestDecodeBatchRejects(t *testing.T) {
	t.Parallel()
	valid := func() map[string]any {
		return map[string]any{
			"id": "j1", "study": "s", "task": "odd-one-out", "worker": "w",
			"items": []string{"a", "b", "c"}, "odd": "b", "rt_ms": 800,
			"received_at": "2026-11-27T03:00:00Z",
		}
	}
	env := func(mod func(j map[string]any)) string {
		j := valid()
		if mod != nil {
			mod(j)
		}
		b, _ := json.Marshal(map[string]any{"v": 1, "judgments": []any{j}})
		return string(b)
	}
	ct := []kafka.Header{{Key: "content-type", Value: []byte(ContentType)}}
	cases := []struct {
		name    string
		key     string
		value   string
		headers []kafka.Header
		reason  string
		mention string
	}{
		{"not json", "s", `{"v":1,`, ct, "json", "malformed"},
		{"trailing data", "s", env(nil) + `{}`, ct, "json", "trailing"},
		{"unknown version", "s", `{"v":2,"judgments":[]}`, ct, "version", "version 2"},
		{"missing version", "s", `{"judgments":[]}`, ct, "version", "missing envelope version"},
		{"unknown envelope field", "s", `{"v":1,"judgments":[],"x":1}`, ct, "json", "unknown field"},
		{"empty batch", "s", `{"v":1,"judgments":[]}`, ct, "empty", "empty batch"},
		{"null batch", "s", `{"v":1}`, ct, "empty", "empty batch"},
		{"null judgment", "s", `{"v":1,"judgments":[null]}`, ct, "judgment", "null"},
		{"missing key", "", env(nil), ct, "key", "missing study"},
		{"wrong content type", "s", env(nil), []kafka.Header{{Key: "content-type", Value: []byte("text/plain")}}, "content_type", "text/plain"},
		{"study mismatch", "other", env(nil), ct, "study_mismatch", `does not match key "other"`},
		{"missing id", "s", env(func(j map[string]any) { delete(j, "id") }), ct, "judgment", "missing id"},
		{"invalid task", "s", env(func(j map[string]any) { j["task"] = "pairwise" }), ct, "judgment", `task: task must be`},
		{"two items", "s", env(func(j map[string]any) { j["items"] = []string{"a", "b"} }), ct, "judgment", "items has 2 entries"},
		{"four items", "s", env(func(j map[string]any) { j["items"] = []string{"a", "b", "c", "d"} }), ct, "judgment", "items has 4 entries"},
		{"no items", "s", env(func(j map[string]any) { delete(j, "items") }), ct, "judgment", "items has 0 entries"},
		{"empty item", "s", env(func(j map[string]any) { j["items"] = []string{"a", "", "c"} }), ct, "judgment", "items[1]: item must not be empty"},
		{"repeated item", "s", env(func(j map[string]any) { j["items"] = []string{"a", "b", "a"} }), ct, "judgment", `items[2]: item "a" appears twice`},
		{"odd not an item", "s", env(func(j map[string]any) { j["odd"] = "z" }), ct, "judgment", "odd: odd must be one of the three items"},
		{"odd for anchor", "s", env(func(j map[string]any) { j["task"] = "anchor" }), ct, "judgment", "odd: anchor judgments take head, close and far, not odd"},
		{"negative rt", "s", env(func(j map[string]any) { j["rt_ms"] = -1 }), ct, "judgment", "rt_ms: rt_ms must not be negative"},
		{"missing received_at", "s", env(func(j map[string]any) { delete(j, "received_at") }), ct, "judgment", "received_at"},
		{"NUL in query id", "s", env(func(j map[string]any) { j["query_id"] = "q\x00" }), ct, "judgment", "query_id: query_id must not contain control characters"},
		{"invalid UTF-8", "s", strings.Replace(env(nil), `"worker":"`, "\"worker\":\"\xff", 1), ct, "json", "invalid UTF-8"},
		{"unknown judgment field", "s", env(func(j map[string]any) { j["label"] = "x" }), ct, "json", "unknown field"},
		{"wrong type", "s", env(func(j map[string]any) { j["rt_ms"] = "fast" }), ct, "json", "malformed"},
		{"duplicate id", "s", `{"v":1,"judgments":[` + strings.TrimSuffix(strings.TrimPrefix(env(nil), `{"judgments":[`), `],"v":1}`) + `,` + strings.TrimSuffix(strings.TrimPrefix(env(nil), `{"judgments":[`), `],"v":1}`) + `]}`, ct, "judgment", "duplicate id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			js, err := DecodeBatch(kafka.Message{Key: []byte(c.key), Value: []byte(c.value), Headers: c.headers})
			if err == nil {
				t.Fatalf("decode accepted %s as %+v", c.value, js)
			}
			if js != nil {
				t.Errorf("decode returned judgments with an error")
			}
			if !errors.Is(err, ErrInvalidBatch) {
				t.Errorf("error %v does not wrap ErrInvalidBatch", err)
			}
			if got := rejectReason(err); got != c.reason {
				t.Errorf("reason = %q, want %q (err %v)", got, c.reason, err)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("error %q does not mention %q", err, c.mention)
			}
		})
	}
	// The valid judgment used above is accepted, so the rejections are
	// caused by the modifications.
	if _, err := DecodeBatch(kafka.Message{Key: []byte("s"), Value: []byte(env(nil)), Headers: ct}); err != nil {
		t.Fatalf("valid batch rejected: %v", err)
	}
}

func TestEncodeBatchValidates(t *testing.T) {
	t.Parallel()
	js := judgments("s", "a", 2)
	if _, err := EncodeBatch("other", js); !errors.Is(err, ErrInvalidBatch) {
		t.Errorf("study mismatch: err = %v, want ErrInvalidBatch", err)
	}
	if _, err := EncodeBatch("s", nil); !errors.Is(err, ErrInvalidBatch) {
		t.Errorf("empty batch: err = %v, want ErrInvalidBatch", err)
	}
	js[1].Task = "bogus"
	if _, err := EncodeBatch("s", js); !errors.Is(err, ErrInvalidBatch) {
		t.Errorf("invalid task: err = %v, want ErrInvalidBatch", err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	good, err := EncodeBatch("s", judgments("s", "f", 2))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("s"), good.Value)
	f.Add([]byte("s"), []byte(`{"v":1,"judgments":[{"id":"x","study":"s","task":"anchor","items":["a","b","c"],"rt_ms":1,"received_at":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte("s"), []byte(`{"v":2}`))
	f.Add([]byte(""), []byte(`null`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		m := kafka.Message{Key: key, Value: value, Headers: []kafka.Header{{Key: "content-type", Value: []byte(ContentType)}}}
		js, err := DecodeBatch(m)
		if err != nil {
			if !errors.Is(err, ErrInvalidBatch) {
				t.Fatalf("error %v does not wrap ErrInvalidBatch", err)
			}
			return
		}
		// Whatever decodes must satisfy the invariants and re-encode to a
		// batch that decodes to the same judgments.
		if len(js) == 0 {
			t.Fatal("decoded an empty batch")
		}
		m2, err := EncodeBatch(string(key), js)
		if err != nil {
			t.Fatalf("re-encode of decoded batch failed: %v", err)
		}
		js2, err := DecodeBatch(m2)
		if err != nil {
			t.Fatalf("decode of re-encoded batch failed: %v", err)
		}
		if len(js2) != len(js) {
			t.Fatalf("round trip changed length %d -> %d", len(js), len(js2))
		}
		for i := range js {
			if js[i].ID != js2[i].ID || js[i].Study != string(key) || js[i].Items != js2[i].Items || !js[i].ReceivedAt.Equal(js2[i].ReceivedAt) {
				t.Fatalf("round trip changed judgment %d: %+v -> %+v", i, js[i], js2[i])
			}
		}
	})
}

func BenchmarkDecodeBatch(b *testing.B) {
	m, err := EncodeBatch("s", judgments("s", "a", 10))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(m.Value)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeBatch(m); err != nil {
			b.Fatal(err)
		}
	}
}
