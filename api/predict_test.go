package api

import (
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/alignet/alignet"
)

// refZ is the teacher representation of x computed here, independently of
// package learner, in float64: z = W·(x − mean)/std + b, or x itself for
// the raw space (p nil).
func refZ(p *alignet.TeacherParams, x []float32) []float64 {
	if p == nil {
		out := make([]float64, len(x))
		for i, v := range x {
			out[i] = float64(v)
		}
		return out
	}
	z := make([]float64, p.P)
	for q := range p.P {
		z[q] = float64(p.B[q])
		for a := range p.D {
			z[q] += float64(p.W[q*p.D+a]) * (float64(x[a]) - p.Mean) / p.Std
		}
	}
	return z
}

func refDot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// refProbs is the expected answer for a triplet: for odd-one-out, item a
// is odd when b and c are the most similar pair; for anchor, the
// probabilities that b and c are closer to the head a.
func refProbs(task alignet.Task, p *alignet.TeacherParams, tr [3]string) []float64 {
	za, zb, zc := refZ(p, testVectors[tr[0]]), refZ(p, testVectors[tr[1]]), refZ(p, testVectors[tr[2]])
	tau := 1.0
	if p != nil {
		tau = p.Tau
	}
	if task == alignet.TaskAnchor {
		pb := 1 / (1 + math.Exp(-(refDot(za, zb)-refDot(za, zc))/tau))
		return []float64{pb, 1 - pb}
	}
	e := []float64{math.Exp(refDot(zb, zc) / tau), math.Exp(refDot(za, zc) / tau), math.Exp(refDot(za, zb) / tau)}
	s := e[0] + e[1] + e[2]
	return []float64{e[0] / s, e[1] / s, e[2] / s}
}

type predictAnswer struct {
	teacherRefBody
	Predictions []predictionBody `json:"predictions"`
}

func (e *env) predict(study string, ts [][3]string) predictAnswer {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"triplets": ts})
	return decodeJSON[predictAnswer](e.t, e.must(http.StatusOK, "POST", "/v1/studies/"+study+"/predict", e.read, string(b)).Body.Bytes())
}

// checkPredictions compares answers with refProbs to tol.
func checkPredictions(t *testing.T, task alignet.Task, p *alignet.TeacherParams, ts [][3]string, got []predictionBody, tol float64) {
	t.Helper()
	if len(got) != len(ts) {
		t.Fatalf("%d predictions for %d triplets", len(got), len(ts))
	}
	for i, tr := range ts {
		want := refProbs(task, p, tr)
		g := got[i]
		if len(g.Probs) != len(want) {
			t.Fatalf("triplet %v: probs %v, want %v", tr, g.Probs, want)
		}
		var h float64
		best := 0
		for a := range want {
			if math.Abs(g.Probs[a]-want[a]) > tol {
				t.Fatalf("triplet %v: probs %v, want %v (tolerance %g)", tr, g.Probs, want, tol)
			}
			h -= want[a] * math.Log(want[a])
			if want[a] > want[best] {
				best = a
			}
		}
		choice := tr[best]
		if task == alignet.TaskAnchor {
			choice = tr[1+best]
		}
		if g.Choice != choice || math.Abs(g.Entropy-h) > 10*tol {
			t.Fatalf("triplet %v: choice %q entropy %v, want %q %v", tr, g.Choice, g.Entropy, choice, h)
		}
	}
}

var predictTriplets = [][3]string{{"c1", "c2", "c3"}, {"c3", "c4", "c5"}, {"c5", "c1", "c4"}, {"c2", "c5", "c3"}}

func TestPredictRawEmbeddings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.embed()
	for _, task := range []alignet.Task{alignet.TaskOddOneOut, alignet.TaskAnchor} {
		study := map[alignet.Task]string{alignet.TaskOddOneOut: "s1", alignet.TaskAnchor: "a1"}[task]
		got := e.predict(study, predictTriplets)
		if got.Status != alignet.TeacherEmpty || got.Version != 0 || got.UpdatedAt != nil || got.Tau != 1 || got.Task != task || got.Study != study {
			t.Fatalf("%s: teacher %+v, want the raw embeddings", study, got.teacherRefBody)
		}
		checkPredictions(t, task, nil, predictTriplets, got.Predictions, 1e-12)
	}
}

func TestPredictWithTeacher(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.embed()
	for _, study := range []string{"s1", "a1"} {
		task := alignet.TaskOddOneOut
		if study == "a1" {
			task = alignet.TaskAnchor
		}
		st := e.testState(study, task)
		st.Version = 5
		e.store.setState(st)
		got := e.predict(study, predictTriplets)
		if got.Status != alignet.TeacherFitted || got.Version != 5 || got.UpdatedAt == nil || !got.UpdatedAt.Equal(st.UpdatedAt) || got.Tau != 0.7 {
			t.Fatalf("%s: teacher %+v", study, got.teacherRefBody)
		}
		// The transform is float32, hence the tolerance.
		checkPredictions(t, task, &st.Params, predictTriplets, got.Predictions, 1e-5)
	}
}

func TestPredictValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxPredictTriplets = 3 })
	e.embed()
	cases := []struct {
		body, code, field string
		status            int
	}{
		{`{}`, CodeMissingField, "triplets", 422},
		{`{"triplets":[]}`, CodeInvalidField, "triplets", 422},
		{`{"triplets":null}`, CodeMissingField, "triplets", 422},
		{`{"triplets":"c1"}`, CodeInvalidJSON, "triplets", 400},
		{`{"triplets":[["c1","c2"]]}`, CodeInvalidField, "triplets[0]", 422},
		{`{"triplets":[["c1","c2","c3"],["c1","c2","c3","c4"]]}`, CodeInvalidField, "triplets[1]", 422},
		{`{"triplets":[["c1","c2","c3"],["c1","c2","c1"]]}`, CodeInvalidField, "triplets[1][2]", 422},
		{`{"triplets":[["c1","","c3"]]}`, CodeInvalidField, "triplets[0][1]", 422},
		{`{"triplets":[["c1","c\u0001","c3"]]}`, CodeInvalidField, "triplets[0][1]", 422},
		{`{"triplets":[["c1","c2","c3"],["nope","c2","c3"]]}`, CodeUnknownItem, "triplets[1][0]", 422},
		{`{"triplets":[["c1","c2","c3"],["c1","c2","c6"]]}`, CodeNoEmbedding, "triplets[1][2]", 422},
		{`{"triplets":[["c1","c2","c3"],["c1","c2","c3"],["c1","c2","c3"],["c1","c2","c3"]]}`, CodeTooLarge, "triplets", 413},
		{`{"triplets":[["c1","c2","c3"]],"extra":1}`, CodeInvalidJSON, "extra", 400},
		{`{"triplets":[["c1","c2","c3"]]`, CodeInvalidJSON, "", 400},
	}
	for _, c := range cases {
		rec := e.req("POST", "/v1/studies/s1/predict", e.read, c.body)
		if rec.Code != c.status {
			t.Fatalf("%s: status %d, want %d: %s", c.body, rec.Code, c.status, rec.Body)
		}
		if ae := apiErr(t, rec); ae.Code != c.code || ae.Field != c.field {
			t.Fatalf("%s: %+v, want code %s field %q", c.body, ae, c.code, c.field)
		}
	}
	req := newReq("POST", "/v1/studies/s1/predict", `{"triplets":[["c1","c2","c3"]]}`)
	req.Header.Set("Content-Type", "text/plain")
	if rec := e.send(req, e.read); rec.Code != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain: %d", rec.Code)
	}
	e.must(http.StatusNotFound, "POST", "/v1/studies/ghost/predict", e.read, `{"triplets":[["c1","c2","c3"]]}`)
	e.must(http.StatusForbidden, "POST", "/v1/studies/s1/predict", e.collect, `{"triplets":[["c1","c2","c3"]]}`)
}

// TestPredictSeesNewItemsAtOnce adds an item and its embedding after the
// snapshot was built: the first request naming it reloads the snapshot.
func TestPredictSeesNewItemsAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.embed()
	e.predict("s1", predictTriplets[:1])
	e.must(http.StatusOK, "POST", "/v1/studies/s1/items", e.admin, `{"items":["c7"]}`)
	e.must(http.StatusOK, "POST", "/v1/spaces/clip/embeddings", e.admin, `{"items":[{"id":"c7","vector":[0.3,0.3,0.3,0.3]}]}`)
	got := e.predict("s1", [][3]string{{"c1", "c7", "c3"}})
	if len(got.Predictions) != 1 || len(got.Predictions[0].Probs) != 3 {
		t.Fatalf("predict with a new item = %+v", got)
	}
}

type neighboursAnswer struct {
	teacherRefBody
	Item       string          `json:"item"`
	Neighbours []neighbourBody `json:"neighbours"`
}

// refNeighbours lists the embedded items other than item by descending
// teacher similarity.
func refNeighbours(p *alignet.TeacherParams, item string) []neighbourBody {
	var out []neighbourBody
	zq := refZ(p, testVectors[item])
	for it, x := range testVectors {
		if it != item {
			out = append(out, neighbourBody{Item: it, Score: refDot(zq, refZ(p, x))})
		}
	}
	slices.SortFunc(out, func(a, b neighbourBody) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Item, b.Item)
	})
	return out
}

func TestNeighbours(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.embed()
	get := func(path string, k int, p *alignet.TeacherParams, tol float64) {
		t.Helper()
		rec := e.must(http.StatusOK, "GET", path, e.read, "")
		got := decodeJSON[neighboursAnswer](t, rec.Body.Bytes())
		item := strings.Split(path, "/")[5]
		want := refNeighbours(p, item)[:k]
		if got.Item != item || len(got.Neighbours) != len(want) {
			t.Fatalf("GET %s = %s, want %v", path, rec.Body, want)
		}
		for i := range want {
			if got.Neighbours[i].Item != want[i].Item || math.Abs(got.Neighbours[i].Score-want[i].Score) > tol {
				t.Fatalf("GET %s = %+v, want %+v", path, got.Neighbours, want)
			}
		}
	}
	get("/v1/studies/s1/items/c1/neighbours", 4, nil, 1e-12) // default k=10, 4 others embedded (c6 is not)
	get("/v1/studies/s1/items/c3/neighbours?k=2", 2, nil, 1e-12)
	st := e.testState("a1", alignet.TaskAnchor)
	e.store.setState(st)
	get("/v1/studies/a1/items/c5/neighbours?k=3", 3, &st.Params, 1e-5)

	for _, c := range []struct {
		path, code, field string
		status            int
	}{
		{"/v1/studies/s1/items/c1/neighbours?k=0", CodeInvalidParameter, "k", 400},
		{"/v1/studies/s1/items/c1/neighbours?k=1001", CodeInvalidParameter, "k", 400},
		{"/v1/studies/s1/items/c1/neighbours?k=x", CodeInvalidParameter, "k", 400},
		{"/v1/studies/s1/items/nope/neighbours", CodeNotFound, "item", 404},
		{"/v1/studies/s1/items/c6/neighbours", CodeNoEmbedding, "item", 422},
		{"/v1/studies/ghost/items/c1/neighbours", CodeNotFound, "", 404},
		{"/v1/studies/s1/items/" + url.PathEscape("a\x00b") + "/neighbours", CodeNotFound, "item", 404},
	} {
		rec := e.req("GET", c.path, e.read, "")
		if rec.Code != c.status {
			t.Fatalf("GET %s: %d, want %d: %s", c.path, rec.Code, c.status, rec.Body)
		}
		if ae := apiErr(t, rec); ae.Code != c.code || ae.Field != c.field {
			t.Fatalf("GET %s: %+v, want %s field %q", c.path, ae, c.code, c.field)
		}
	}
	e.must(http.StatusForbidden, "GET", "/v1/studies/s1/items/c1/neighbours", e.collect, "")
}

// TestNeighboursOfEscapedItem names an item with a slash and a space in
// the path, escaped.
func TestNeighboursOfEscapedItem(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.embed()
	const odd = "a/b c%"
	b, _ := json.Marshal(map[string]any{"items": []string{odd}})
	e.must(http.StatusOK, "POST", "/v1/studies/s1/items", e.admin, string(b))
	b, _ = json.Marshal(map[string]any{"items": []map[string]any{{"id": odd, "vector": []float32{1, 1, 1, 1}}}})
	e.must(http.StatusOK, "POST", "/v1/spaces/clip/embeddings", e.admin, string(b))
	rec := e.must(http.StatusOK, "GET", "/v1/studies/s1/items/"+url.PathEscape(odd)+"/neighbours?k=1", e.read, "")
	got := decodeJSON[neighboursAnswer](t, rec.Body.Bytes())
	if got.Item != odd || len(got.Neighbours) != 1 {
		t.Fatalf("neighbours of %q = %s", odd, rec.Body)
	}
	best, bestDot := "", math.Inf(-1)
	for it, x := range testVectors {
		if d := refDot(refZ(nil, x), []float64{1, 1, 1, 1}); d > bestDot {
			best, bestDot = it, d
		}
	}
	if got.Neighbours[0].Item != best || math.Abs(got.Neighbours[0].Score-bestDot) > 1e-12 {
		t.Fatalf("neighbours of %q = %+v, want %s (%v)", odd, got.Neighbours, best, bestDot)
	}
}
