package api

import (
	"bytes"
	"context"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/alignet/alignet/npy"
)

// multipartBody builds a multipart upload from (name, content) parts in order.
func multipartBody(t testing.TB, parts ...[2]any) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		name := p[0].(string)
		w, err := mw.CreateFormFile(name, name+".bin")
		if err != nil {
			t.Fatal(err)
		}
		switch v := p[1].(type) {
		case string:
			_, err = io.WriteString(w, v)
		case []byte:
			_, err = w.Write(v)
		case *npy.Array:
			err = npy.Write(w, v)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

func npyBytes(t testing.TB, a *npy.Array) []byte {
	var b bytes.Buffer
	if err := npy.Write(&b, a); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func (e *env) upload(body io.Reader, ctype string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/v1/spaces/clip/embeddings", body)
	req.Header.Set("Content-Type", ctype)
	return e.send(req, e.admin)
}

func TestEmbeddingsNPYMultipart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	vec := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	body, ct := multipartBody(t, [2]any{"ids", "e1\ne2\r\ne3\n"}, [2]any{"vectors", npy.FromFloat32(vec, 3, 4)})
	rec := e.upload(body, ct)
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"upserted":3}` {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if got := e.store.embeddings["clip"]["e3"]; !reflect.DeepEqual(got, vec[8:12]) {
		t.Fatalf("e3 = %v", got)
	}
	// float64 matrix with JSON ids.
	v64 := []float64{0.5, -1, 2, 3, 4, 5, 6, 1e-30}
	body, ct = multipartBody(t, [2]any{"ids", `["f1","f2"]`}, [2]any{"vectors", npy.FromFloat64(v64, 2, 4)})
	if rec := e.upload(body, ct); rec.Code != http.StatusOK {
		t.Fatalf("float64: %d %s", rec.Code, rec.Body)
	}
	if got := e.store.embeddings["clip"]["f2"]; !reflect.DeepEqual(got, []float32{4, 5, 6, float32(1e-30)}) {
		t.Fatalf("f2 = %v", got)
	}
	upserts := e.store.callCount("UpsertEmbeddings")

	nan := append([]float32(nil), vec...)
	nan[6] = float32(math.NaN())
	good := npy.FromFloat32(vec, 3, 4)
	trunc := npyBytes(t, good)
	trunc = trunc[:len(trunc)-5]
	cases := []struct {
		name   string
		parts  [][2]any
		status int
		field  string
	}{
		{"rows mismatch", [][2]any{{"ids", "a\nb"}, {"vectors", good}}, 422, "vectors"},
		{"cols mismatch", [][2]any{{"ids", "a\nb\nc\nd"}, {"vectors", npy.FromFloat32(vec, 4, 3)}}, 422, "vectors"},
		{"1-D vectors", [][2]any{{"ids", "a\nb\nc"}, {"vectors", npy.FromFloat32(vec, 12)}}, 422, "vectors"},
		{"int dtype", [][2]any{{"ids", "a"}, {"vectors", npy.FromInt32([]int32{1, 2, 3, 4}, 1, 4)}}, 422, "vectors"},
		{"NaN", [][2]any{{"ids", "a\nb\nc"}, {"vectors", npy.FromFloat32(nan, 3, 4)}}, 422, "vectors"},
		{"float64 overflow", [][2]any{{"ids", "a"}, {"vectors", npy.FromFloat64([]float64{1, 1e300, 0, 0}, 1, 4)}}, 422, "vectors"},
		{"vectors before ids", [][2]any{{"vectors", good}, {"ids", "a\nb\nc"}}, 422, "ids"},
		{"missing vectors", [][2]any{{"ids", "a\nb\nc"}}, 422, "vectors"},
		{"missing ids", [][2]any{}, 422, "ids"},
		{"duplicate ids", [][2]any{{"ids", "a\na\nc"}, {"vectors", good}}, 422, "ids[1]"},
		{"empty id", [][2]any{{"ids", "a\n\nc"}, {"vectors", good}}, 422, "ids[1]"},
		{"long id", [][2]any{{"ids", "a\nb\n" + strings.Repeat("z", 129)}, {"vectors", good}}, 422, "ids[2]"},
		{"bad json ids", [][2]any{{"ids", `["a",`}, {"vectors", good}}, 400, "ids"},
		{"truncated npy", [][2]any{{"ids", "a\nb\nc"}, {"vectors", trunc}}, 400, "vectors"},
		{"not npy", [][2]any{{"ids", "a\nb\nc"}, {"vectors", "hello world, not numpy"}}, 400, "vectors"},
		{"trailing data", [][2]any{{"ids", "a\nb\nc"}, {"vectors", append(npyBytes(t, good), 0, 0, 0, 0)}}, 422, "vectors"},
		{"unknown part", [][2]any{{"ids", "a\nb\nc"}, {"extra", "x"}}, 400, "extra"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := multipartBody(t, tc.parts...)
			rec := e.upload(body, ct)
			if rec.Code != tc.status || apiErr(t, rec).Field != tc.field {
				t.Fatalf("status %d, want %d field %q: %s", rec.Code, tc.status, tc.field, rec.Body)
			}
			if e.store.callCount("UpsertEmbeddings") != upserts {
				t.Fatal("invalid upload reached the store")
			}
		})
	}
	if rec := e.upload(bytes.NewReader(npyBytes(t, good)), "application/x-npy"); rec.Code != http.StatusUnsupportedMediaType {
		t.Fatalf("raw npy: %d", rec.Code)
	}
	body, ct = multipartBody(t, [2]any{"ids", "a\nb\nc"}, [2]any{"vectors", good})
	req := httptest.NewRequest("POST", "/v1/spaces/nope/embeddings", body)
	req.Header.Set("Content-Type", ct)
	if rec := e.send(req, e.admin); rec.Code != http.StatusNotFound {
		t.Fatalf("unknown space: %d", rec.Code)
	}
}

func TestEmbeddingsBodyCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxEmbeddingBody = 4 << 10; c.MaxEmbeddingJSONBody = 1 << 10 })
	vec := make([]float32, 400*4)
	ids := make([]string, 400)
	for i := range ids {
		ids[i] = "i" + itoa(i)
	}
	body, ct := multipartBody(t, [2]any{"ids", strings.Join(ids, "\n")}, [2]any{"vectors", npy.FromFloat32(vec, 400, 4)})
	if rec := e.upload(body, ct); rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("multipart over cap: %d %s", rec.Code, rec.Body)
	}
	var items []string
	for i := range 100 {
		items = append(items, `{"id":"x`+itoa(i)+`","vector":[1,2,3,4]}`)
	}
	js := `{"items":[` + strings.Join(items, ",") + `]}`
	if rec := e.upload(strings.NewReader(js), "application/json"); rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("json over cap: %d %s", rec.Code, rec.Body)
	}
}

func TestEmbeddingsJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := e.upload(strings.NewReader(`{"items":[{"id":"c1","vector":[1,2,3,4]},{"id":"c2","vector":[-1,0.5,3e10,4]}]}`), "application/json")
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"upserted":2}` {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	upserts := e.store.callCount("UpsertEmbeddings")
	for body, want := range map[string]struct {
		status int
		field  string
	}{
		`{"items":[{"id":"c1","vector":[1,2,3]}]}`:                                  {422, "items[0].vector"},
		`{"items":[{"id":"c1","vector":[1,2,3,4]},{"id":"c1","vector":[1,2,3,4]}]}`: {422, "items[1].id"},
		`{"items":[{"vector":[1,2,3,4]}]}`:                                          {422, "items[0].id"},
		`{"items":[{"id":"c1"}]}`:                                                   {422, "items[0].vector"},
		`{"items":[{"id":"c1","vector":[1,2,3,1e39]}]}`:                             {422, "items[0].vector[3]"},
		`{"items":[]}`: {422, "items"},
		`{}`:           {422, "items"},
		`{"items":[{"id":"c1","vector":[1,2,3,4],"x":1}]}`: {400, "items[0].x"},
		`{"things":[]}`: {400, "things"},
		`{"items":[{"id":"c1","vector":[1,2,"3",4]}]}`: {400, "items[0].vector"},
		`{"items":[`: {400, ""},
	} {
		rec := e.upload(strings.NewReader(body), "application/json")
		if rec.Code != want.status || apiErr(t, rec).Field != want.field {
			t.Errorf("%s: %d %s, want %d field %q", body, rec.Code, rec.Body, want.status, want.field)
		}
	}
	if e.store.callCount("UpsertEmbeddings") != upserts {
		t.Fatal("invalid upload reached the store")
	}
}

// TestEmbeddingsNPYLarge uploads a 100,000 × 1,152 float32 matrix
// (≈460 MB) through the multipart path. It is skipped with -short and
// under the race detector (where it takes over a minute); run it with
// go test -run TestEmbeddingsNPYLarge ./api/.
func TestEmbeddingsNPYLarge(t *testing.T) {
	t.Parallel()
	if testing.Short() || raceEnabled {
		t.Skip("large upload: run without -short and -race")
	}
	const n, dim = 100_000, 1152
	e := newEnv(t)
	e.must(http.StatusCreated, "PUT", "/v1/spaces/big", e.admin, `{"dim":1152}`)
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		w, _ := mw.CreateFormFile("ids", "ids.txt")
		for i := range n {
			_, _ = io.WriteString(w, "item-"+itoa(i)+"\n")
		}
		w, _ = mw.CreateFormFile("vectors", "vectors.npy")
		_ = npy.WriteHeader(w, npy.Header{Dtype: npy.Float32, Shape: []int{n, dim}})
		row := make([]float32, dim)
		chunk := make([]float32, 0, 100*dim)
		for i := range n {
			row[0] = float32(i)
			chunk = append(chunk, row...)
			if len(chunk) == cap(chunk) || i == n-1 {
				_ = npy.WriteData(w, chunk)
				chunk = chunk[:0]
			}
		}
		pw.CloseWithError(mw.Close())
	}()
	var got int
	store := &countingStore{fakeStore: e.store, onUpsert: func(ids []string, v []float32) {
		if len(ids) == n && len(v) == n*dim && v[(n-1)*dim] == n-1 && ids[n-1] == "item-99999" {
			got = len(ids)
		}
	}}
	deps := e.store.deps(e.pub)
	deps.Spaces = store
	s, err := New(Config{PseudonymKey: []byte(testPseudonymKey), AdminKey: testAdminKey}, deps)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v1/spaces/big/embeddings", pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || got != n {
		t.Fatalf("%d %s (store saw %d rows)", rec.Code, rec.Body, got)
	}
}

// countingStore inspects upserts without keeping 460 MB twice.
type countingStore struct {
	*fakeStore
	onUpsert func([]string, []float32)
}

func (c *countingStore) UpsertEmbeddings(_ context.Context, space string, ids []string, v []float32) (int64, error) {
	c.onUpsert(ids, v)
	return int64(len(ids)), nil
}
