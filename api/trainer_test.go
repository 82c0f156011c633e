package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/npy"
)

// withEmbeddings stores vectors for c1..c6 in clip (dim 4) and a student
// space w2v (dim 3).
func (e *env) withEmbeddings() {
	e.t.Helper()
	e.must(http.StatusOK, "POST", "/v1/spaces/clip/embeddings", e.admin, `{"items":[`+
		`{"id":"c1","vector":[1,0,0,0]},{"id":"c2","vector":[0,1,0,0]},{"id":"c3","vector":[0,0,1,0]},`+
		`{"id":"c4","vector":[0,0,0,1]},{"id":"c5","vector":[1,1,0,0]},{"id":"c6","vector":[0,1,1,0]}]}`)
	e.must(http.StatusCreated, "PUT", "/v1/spaces/w2v", e.admin, `{"dim":3}`)
	e.must(http.StatusOK, "POST", "/v1/spaces/w2v/embeddings", e.admin, `{"items":[`+
		`{"id":"c1","vector":[1,0,0]},{"id":"c2","vector":[0,1,0]},{"id":"c3","vector":[0,0,1]}]}`)
}

func TestPoolRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.withEmbeddings()
	e.must(http.StatusCreated, "PUT", "/v1/spaces/wide", e.admin, `{"dim":5}`)
	if rec := e.req("GET", "/v1/studies/s1/pool", e.read, ""); rec.Code != http.StatusNotFound {
		t.Fatalf("pool before PUT: %d %s", rec.Code, rec.Body)
	}
	for _, c := range []struct {
		body, field string
		status      int
	}{
		{`{}`, "space", 422},
		{`{"space":"bad name"}`, "space", 422},
		{`{"space":"nope"}`, "space", 404},
		{`{"space":"wide"}`, "space", 422},
		{`{"space":"clip","items":["c1","c2"]}`, "items", 422},
		{`{"space":"clip","items":["c1","c2","c1"]}`, "items[2]", 422},
		{`{"space":"clip","items":["c1","c2","zz"]}`, "items[2]", 422},
		{`{"space":"clip","extra":1}`, "extra", 400},
	} {
		rec := e.req("PUT", "/v1/studies/s1/pool", e.admin, c.body)
		if rec.Code != c.status || apiErr(t, rec).Field != c.field {
			t.Errorf("PUT pool %s: %d %s, want %d naming %s", c.body, rec.Code, rec.Body, c.status, c.field)
		}
	}
	if rec := e.req("PUT", "/v1/studies/s1/pool", e.read, `{"space":"clip"}`); rec.Code != http.StatusForbidden {
		t.Fatalf("PUT pool with a read key: %d", rec.Code)
	}
	var p poolBody
	rec := e.must(http.StatusOK, "PUT", "/v1/studies/s1/pool", e.admin, `{"space":"clip"}`)
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Size != 6 || p.Items != nil {
		t.Fatalf("PUT pool = %s", rec.Body)
	}
	e.must(http.StatusOK, "PUT", "/v1/studies/s1/pool", e.admin, `{"space":"clip","items":["c3","c1","c2"]}`)
	rec = e.must(http.StatusOK, "GET", "/v1/studies/s1/pool", e.read, "")
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Size != 3 || strings.Join(p.Items, ",") != "c3,c1,c2" {
		t.Fatalf("GET pool = %s", rec.Body)
	}
}

func TestLabelRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(http.StatusOK, "POST", "/v1/spaces/clip/labels", e.admin, `{"items":[{"id":"c1","labels":["animal","mammal"]},{"id":"x9","labels":[]}]}`)
	got, _ := e.store.ItemLabels(context.Background(), "clip")
	if strings.Join(got["c1"], ",") != "animal,mammal" || got["x9"] == nil {
		t.Fatalf("labels %v", got)
	}
	for _, c := range []struct{ body, field string }{
		{`{"items":[]}`, "items"},
		{`{"items":[{"labels":["a"]}]}`, "items[0].id"},
		{`{"items":[{"id":"c1"}]}`, "items[0].labels"},
		{`{"items":[{"id":"c1","labels":[""]}]}`, "items[0].labels[0]"},
		{`{"items":[{"id":"c1","labels":["a\u0001"]}]}`, "items[0].labels[0]"},
		{`{"items":[{"id":"c1","labels":["a"]},{"id":"c1","labels":["b"]}]}`, "items[1].id"},
	} {
		rec := e.req("POST", "/v1/spaces/clip/labels", e.admin, c.body)
		if rec.Code != 422 || apiErr(t, rec).Field != c.field {
			t.Errorf("POST labels %s: %d %s, want 422 naming %s", c.body, rec.Code, rec.Body, c.field)
		}
	}
	if rec := e.req("POST", "/v1/spaces/nope/labels", e.admin, `{"items":[{"id":"a","labels":["x"]}]}`); rec.Code != 404 {
		t.Fatalf("labels of a missing space: %d", rec.Code)
	}
}

func TestStudentRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.withEmbeddings()
	for _, c := range []struct {
		body, field string
		status      int
	}{
		{`{"space":"w2v"}`, "id", 422},
		{`{"id":"a.npz","space":"w2v"}`, "id", 422},
		{`{"id":"a"}`, "space", 422},
		{`{"id":"a","space":"nope"}`, "space", 404},
		{`{"id":"a","space":"w2v","loss":"mse"}`, "loss", 422},
		{`{"id":"a","space":"w2v","epochs":0}`, "epochs", 422},
		{`{"id":"a","space":"w2v","epoch":3}`, "epoch", 400},
	} {
		rec := e.req("POST", "/v1/studies/s1/students", e.admin, c.body)
		if rec.Code != c.status || apiErr(t, rec).Field != c.field {
			t.Errorf("POST student %s: %d %s, want %d naming %s", c.body, rec.Code, rec.Body, c.status, c.field)
		}
	}
	rec := e.must(http.StatusCreated, "POST", "/v1/studies/s1/students", e.admin, `{"id":"w","space":"w2v","epochs":7,"loss":"jsd"}`)
	var sb studentBody
	if err := json.Unmarshal(rec.Body.Bytes(), &sb); err != nil || sb.Settings.Epochs != 7 || sb.Settings.Loss != "jsd" ||
		sb.Settings.BatchSize != alignet.DefaultStudentSettings().BatchSize {
		t.Fatalf("created %s", rec.Body)
	}
	e.must(http.StatusOK, "POST", "/v1/studies/s1/students", e.admin, `{"id":"w","space":"w2v"}`)
	if rec := e.req("POST", "/v1/studies/s1/students", e.admin, `{"id":"w","space":"clip"}`); rec.Code != http.StatusConflict {
		t.Fatalf("student with another space: %d", rec.Code)
	}
	rec = e.must(http.StatusOK, "GET", "/v1/studies/s1/students/w", e.read, "")
	if !strings.Contains(rec.Body.String(), `"current":null`) {
		t.Fatalf("GET student before training: %s", rec.Body)
	}
	if rec := e.req("GET", "/v1/studies/s1/students/w.npz", e.read, ""); rec.Code != 404 {
		t.Fatalf("head before training: %d", rec.Code)
	}
	// A trained head: version 1 promoted, version 2 not.
	h := &learner.StudentHead{W: []float64{2, 0, 0, 0, 1, 0, 0, 0, 1}, B: []float64{0, 0, 0.5}, D: 3, P: 3, Std: 1, Tau: 1}
	var buf bytes.Buffer
	if err := modelfile.WriteStudent(&buf, h, modelfile.Provenance{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.store.SeedStudentVersion(ctx, alignet.StudentVersion{Study: "s1", Student: "w", Dataset: 1, Promoted: true, D: 3, P: 3}, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.SeedStudentVersion(ctx, alignet.StudentVersion{Study: "s1", Student: "w", Dataset: 2, Reason: "worse", D: 3, P: 3}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	rec = e.must(http.StatusOK, "GET", "/v1/studies/s1/students/w", e.read, "")
	if err := json.Unmarshal(rec.Body.Bytes(), &sb); err != nil || sb.Current == nil || sb.Current.Version != 1 || len(sb.Versions) != 2 || sb.Versions[0].Reason != "worse" {
		t.Fatalf("GET student = %s", rec.Body)
	}
	rec = e.must(http.StatusOK, "GET", "/v1/studies/s1/students/w.npz", e.read, "")
	if !bytes.Equal(rec.Body.Bytes(), buf.Bytes()) || rec.Header().Get("ETag") == "" {
		t.Fatalf("head download differs (%d bytes)", rec.Body.Len())
	}
	if rec := e.req("GET", "/v1/studies/s1/students/w.npz?version=9", e.read, ""); rec.Code != 404 {
		t.Fatalf("missing version: %d", rec.Code)
	}
	if rec := e.req("GET", "/v1/studies/s1/students/w.npz?version=x", e.read, ""); rec.Code != 400 {
		t.Fatalf("bad version: %d", rec.Code)
	}
	rec = e.must(http.StatusOK, "GET", "/v1/studies/s1/students/w/embeddings?items=c2,c1", e.read, "")
	var emb struct {
		Items []struct {
			ID     string    `json:"id"`
			Vector []float32 `json:"vector"`
		} `json:"items"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &emb); err != nil || len(emb.Items) != 2 || emb.Items[1].ID != "c1" ||
		fmt.Sprint(emb.Items[1].Vector) != "[2 0 0.5]" {
		t.Fatalf("embeddings = %s", rec.Body)
	}
	rec = e.must(http.StatusOK, "GET", "/v1/studies/s1/students/w/embeddings?items=c3&format=npy", e.read, "")
	a, err := npy.Read(bytes.NewReader(rec.Body.Bytes()))
	if err != nil || fmt.Sprint(a.Shape) != "[1 3]" || rec.Header().Get("X-Alignet-Items") != `["c3"]` || fmt.Sprint(a.Data) != "[0 0 1.5]" {
		t.Fatalf("npy embeddings: %v %v %v", a, err, rec.Header())
	}
	if rec := e.req("GET", "/v1/studies/s1/students/w/embeddings?items=c4", e.read, ""); rec.Code != 422 || apiErr(t, rec).Code != CodeUnknownItem {
		t.Fatalf("embedding of an item the student lacks: %d %s", rec.Code, rec.Body)
	}
	e.must(http.StatusNoContent, "DELETE", "/v1/studies/s1/students/w", e.admin, "")
	if rec := e.req("GET", "/v1/studies/s1/students/w", e.read, ""); rec.Code != 404 {
		t.Fatalf("deleted student: %d", rec.Code)
	}
}

func TestDatasetRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if rec := e.req("GET", "/v1/studies/s1/datasets/current.npz", e.read, ""); rec.Code != 404 {
		t.Fatalf("current before any: %d", rec.Code)
	}
	data := bytes.Repeat([]byte("alignet!"), 1<<20) // 8 MiB: two download blocks
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := e.store.SeedDataset(ctx, alignet.Dataset{Study: "s1", TeacherVersion: int64(i + 1), Triplets: 5}, append([]byte{byte(i)}, data...), 3); err != nil {
			t.Fatal(err)
		}
	}
	rec := e.must(http.StatusOK, "GET", "/v1/studies/s1/datasets", e.read, "")
	var list struct {
		Datasets []alignet.Dataset `json:"datasets"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list.Datasets) != 2 || list.Datasets[0].Version != 2 {
		t.Fatalf("list = %s", rec.Body)
	}
	rec = e.must(http.StatusOK, "GET", "/v1/studies/s1/datasets/current.npz", e.read, "")
	if rec.Body.Len() != len(data)+1 || rec.Body.Bytes()[0] != 1 || rec.Header().Get("X-Alignet-Dataset-Version") != "2" ||
		rec.Header().Get("Content-Length") != fmt.Sprint(len(data)+1) || rec.Header().Get("Accept-Ranges") != "bytes" {
		t.Fatalf("current.npz: %d bytes, headers %v", rec.Body.Len(), rec.Header())
	}
	// A range across the 4 MiB block boundary, and a resume guarded by
	// If-Range: a stale ETag gets the whole file.
	req := httptest.NewRequest("GET", "/v1/studies/s1/datasets/1.npz", nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", (4<<20)-3, (4<<20)+4))
	rec = e.send(req, e.read)
	want := append([]byte{0}, data...)[(4<<20)-3 : (4<<20)+5]
	if rec.Code != http.StatusPartialContent || !bytes.Equal(rec.Body.Bytes(), want) {
		t.Fatalf("ranged: %d %q, want %q", rec.Code, rec.Body.Bytes(), want)
	}
	etag := rec.Header().Get("ETag")
	req = httptest.NewRequest("GET", "/v1/studies/s1/datasets/1.npz", nil)
	req.Header.Set("Range", "bytes=10-")
	req.Header.Set("If-Range", etag)
	if rec = e.send(req, e.read); rec.Code != http.StatusPartialContent || rec.Body.Len() != len(data)+1-10 {
		t.Fatalf("If-Range with the current ETag: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	req.Header.Set("If-Range", `"stale"`)
	if rec = e.send(req, e.read); rec.Code != http.StatusOK || rec.Body.Len() != len(data)+1 {
		t.Fatalf("If-Range with a stale ETag: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	for path, status := range map[string]int{"/v1/studies/s1/datasets/3.npz": 404, "/v1/studies/s1/datasets/x.npz": 404,
		"/v1/studies/s1/datasets/1": 404, "/v1/studies/nope/datasets/1.npz": 404} {
		if rec := e.req("GET", path, e.read, ""); rec.Code != status {
			t.Errorf("GET %s: %d, want %d", path, rec.Code, status)
		}
	}
	if rec := e.req("GET", "/v1/studies/s1/datasets/1.npz", e.collect, ""); rec.Code != http.StatusForbidden {
		t.Fatalf("download with a collect key: %d", rec.Code)
	}
}
