package api

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet"
)

// fuzzRules validates against a fixed pool of five items.
func fuzzRules(task alignet.Task) judgmentRules {
	pool := map[string]struct{}{"a": {}, "b": {}, "c": {}, "d": {}, "é": {}}
	n := 0
	return judgmentRules{
		study:   alignet.Study{ID: "s", Task: task, Space: "sp"},
		pool:    pool,
		maxRT:   DefaultMaxRTMillis,
		pseudo:  func(raw string) string { return Pseudonym([]byte(testPseudonymKey), raw) },
		newID:   func() (string, error) { n++; return "gen-" + itoa(n), nil },
		receive: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func FuzzDecodeJudgments(f *testing.F) {
	for _, s := range []string{
		`{"worker":"w1","items":["a","b","c"],"odd":"c","rt_ms":1500}`,
		`[{"worker":"w1","items":["a","b","c"],"odd":"c"},{"id":"x:1","worker":"w2","items":["d","b","c"],"odd":"d","query_id":"q"}]`,
		`{"worker":"w1","head":"a","close":"b","far":"c","rt_ms":1.5}`,
		`[{"id":"k","worker":"w","head":"a","close":"b","far":"é"},{"id":"k","worker":"w","head":"a","close":"b","far":"c"}]`,
		`{"worker":"w1","items":["a","a","c"],"odd":"a"}`,
		`[]`, `{`, `[{"worker":1}]`, `{"worker":"w","items":null,"odd":null}`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, anchor bool) {
		task := alignet.TaskOddOneOut
		if anchor {
			task = alignet.TaskAnchor
		}
		in, batch, err := decodeJudgments(body, 50)
		if err != nil {
			if err.Status < 400 || err.Status > 499 || err.Code == "" {
				t.Fatalf("decode error %+v", err)
			}
			return
		}
		if len(in) == 0 || (!batch && len(in) != 1) || len(in) > 50 {
			t.Fatalf("decoded %d judgments (batch=%v)", len(in), batch)
		}
		r := fuzzRules(task)
		out, err := buildJudgments(in, batch, r)
		if err != nil {
			if err.Status != 422 || err.Field == "" && len(in) > 0 && !batch {
				t.Fatalf("validation error %+v", err)
			}
			if batch && !strings.HasPrefix(err.Field, "[") {
				t.Fatalf("batch error without index: %+v", err)
			}
			return
		}
		if len(out) != len(in) {
			t.Fatalf("%d judgments out of %d", len(out), len(in))
		}
		ids := map[string]bool{}
		for i, j := range out {
			if !alignet.ValidID(j.ID) || ids[j.ID] {
				t.Fatalf("judgment %d: bad or duplicate id %q", i, j.ID)
			}
			ids[j.ID] = true
			if j.Study != "s" || j.Task != task || !j.ReceivedAt.Equal(r.receive) {
				t.Fatalf("judgment %d: %+v", i, j)
			}
			if len(j.Worker) != 32 || j.Worker != r.pseudo(*in[i].Worker) || strings.Contains(string(body), `"`+j.Worker+`"`) {
				t.Fatalf("judgment %d: worker %q", i, j.Worker)
			}
			for k, it := range j.Items {
				if _, ok := r.pool[it]; !ok {
					t.Fatalf("judgment %d: item %q not in pool", i, it)
				}
				for l := 0; l < k; l++ {
					if j.Items[l] == it {
						t.Fatalf("judgment %d: repeated item %q", i, it)
					}
				}
			}
			if task == alignet.TaskOddOneOut && j.Odd != j.Items[0] && j.Odd != j.Items[1] && j.Odd != j.Items[2] {
				t.Fatalf("judgment %d: odd %q not among %v", i, j.Odd, j.Items)
			}
			if task == alignet.TaskAnchor && j.Odd != "" {
				t.Fatalf("judgment %d: anchor with odd %q", i, j.Odd)
			}
			if j.RTMillis < 0 || int64(j.RTMillis) > DefaultMaxRTMillis || len([]rune(j.QueryID)) > alignet.MaxQueryIDLen {
				t.Fatalf("judgment %d: rt %d query %q", i, j.RTMillis, j.QueryID)
			}
		}
	})
}

func FuzzEmbeddingsJSON(f *testing.F) {
	for _, s := range []string{
		`{"items":[{"id":"c1","vector":[1,2,3]}]}`,
		`{"items":[{"id":"c1","vector":[1,2,3]},{"id":"c2","vector":[-1e38,0,3e-45]}]}`,
		`{"items":[{"id":"c1","vector":[1,2,3]},{"id":"c1","vector":[1,2,3]}]}`,
		`{"items":[{"id":"c1","vector":[1,2,1e39]}]}`,
		`{"items":[]}`, `{}`, `{"items":[`, `[1,2]`, `{"items":[{"id":"","vector":[1,2,3]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ids, vecs, err := parseEmbeddingsJSON(bytes.NewReader(body), 3)
		if err != nil {
			if err.Status != 400 && err.Status != 422 {
				t.Fatalf("error %+v", err)
			}
			return
		}
		if len(ids) == 0 || len(vecs) != 3*len(ids) {
			t.Fatalf("%d ids, %d values", len(ids), len(vecs))
		}
		seen := map[string]bool{}
		for _, id := range ids {
			if !alignet.ValidItemID(id) || seen[id] {
				t.Fatalf("bad or duplicate id %q", id)
			}
			seen[id] = true
		}
		for _, v := range vecs {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("non-finite value %v", v)
			}
		}
	})
}
