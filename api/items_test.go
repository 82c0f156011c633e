package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/alignet/alignet"
)

// pngBytes encodes a tiny real PNG.
func pngBytes(t *testing.T, c color.Color) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	for x := range 4 {
		for y := range 4 {
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// putImage uploads body as the image of the item at path with the given
// Content-Type.
func (e *env) putImage(path, key, contentType string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest("PUT", path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return e.send(req, key)
}

func TestItemDisplays(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := `{"items":[{"id":"c1","label":"aardvark"},{"id":"c2","image_url":"https://example.org/c2.jpg","label":"abacus"}]}`
	e.must(http.StatusForbidden, "POST", "/v1/items", e.read, body)
	rec := e.must(http.StatusOK, "POST", "/v1/items", e.admin, body)
	if !strings.Contains(rec.Body.String(), `"written":2`) {
		t.Fatalf("POST /v1/items: %s", rec.Body)
	}
	rec = e.must(http.StatusOK, "GET", "/v1/items/c2", e.read, "")
	var got struct {
		ID       string       `json:"id"`
		Label    string       `json:"label"`
		ImageURL string       `json:"image_url"`
		Image    *imageBody   `json:"image"`
		Display  *displayBody `json:"display"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != "c2" || got.Label != "abacus" || got.ImageURL != "https://example.org/c2.jpg" || got.Image != nil ||
		got.Display == nil || got.Display.Image != got.ImageURL {
		t.Fatalf("GET /v1/items/c2 = %s", rec.Body)
	}
	e.must(http.StatusNotFound, "GET", "/v1/items/c5", e.read, "")
	for _, c := range []struct{ body, field string }{
		{`{"items":[{"label":"x"}]}`, "items[0].id"},
		{`{"items":[{"id":"c1"},{"id":"c2","image_url":"ftp://x/y"}]}`, "items[1].image_url"},
		{`{"items":[{"id":"c1","image_url":"/relative.png"}]}`, "items[0].image_url"},
		{`{"items":[{"id":"c1","label":"a\u0007b"}]}`, "items[0].label"},
		{`{"items":[{"id":"c1"},{"id":"c1"}]}`, "items[1].id"},
		{`{"items":[{"id":""}]}`, "items[0].id"},
		{`{"items":[]}`, "items"},
		{`{}`, "items"},
	} {
		rec := e.req("POST", "/v1/items", e.admin, c.body)
		if rec.Code != http.StatusUnprocessableEntity || apiErr(t, rec).Field != c.field {
			t.Errorf("POST /v1/items %s: %d %s; want 422 naming %s", c.body, rec.Code, rec.Body, c.field)
		}
	}
	// The refused requests changed nothing.
	if ds, _ := e.store.ItemDisplays(context.Background(), []string{"c1", "c2"}); len(ds) != 2 || ds[0].Label != "aardvark" {
		t.Fatalf("after refused writes: %+v", ds)
	}
}

func TestItemImages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxImageBody = 4096 })
	pic := pngBytes(t, color.RGBA{200, 10, 10, 255})
	if rec := e.putImage("/v1/items/c1/image", e.collect, "image/png", pic); rec.Code != http.StatusForbidden {
		t.Fatalf("PUT image with a collect key: %d", rec.Code)
	}
	rec := e.putImage("/v1/items/c1/image", e.admin, "image/png", pic)
	if rec.Code != http.StatusOK {
		t.Fatalf("PUT image: %d %s", rec.Code, rec.Body)
	}
	var img imageBody
	if err := json.Unmarshal(rec.Body.Bytes(), &img); err != nil || img.ContentType != "image/png" || img.Size != int64(len(pic)) ||
		img.URL != "/v1/items/c1/image?v="+img.SHA256[:16] {
		t.Fatalf("PUT image answered %s (%v)", rec.Body, err)
	}
	// Public, with validators and caching headers.
	rec = e.req("GET", "/v1/items/c1/image", "", "")
	h := rec.Header()
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), pic) || h.Get("Content-Type") != "image/png" ||
		h.Get("ETag") != `"`+img.SHA256+`"` || h.Get("Last-Modified") == "" || h.Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("GET image: %d %v", rec.Code, h)
	}
	if rec := e.req("GET", img.URL, "", ""); rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "public, max-age=31536000" {
		t.Fatalf("GET versioned image: %d %v", rec.Code, rec.Header())
	}
	if rec := e.req("GET", "/v1/items/c1/image?v=0000000000000000", "", ""); rec.Header().Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("GET image with a stale version may be cached for %q", rec.Header().Get("Cache-Control"))
	}
	req := httptest.NewRequest("GET", "/v1/items/c1/image", nil)
	req.Header.Set("If-None-Match", h.Get("ETag"))
	if rec := e.send(req, ""); rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Fatalf("If-None-Match: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	req = httptest.NewRequest("GET", "/v1/items/c1/image", nil)
	req.Header.Set("If-Modified-Since", h.Get("Last-Modified"))
	if rec := e.send(req, ""); rec.Code != http.StatusNotModified {
		t.Fatalf("If-Modified-Since: %d", rec.Code)
	}
	req = httptest.NewRequest("GET", "/v1/items/c1/image", nil)
	req.Header.Set("If-None-Match", `"other"`)
	if rec := e.send(req, ""); rec.Code != http.StatusOK {
		t.Fatalf("If-None-Match with another tag: %d", rec.Code)
	}
	// The type is sniffed; a declared type must agree.
	for _, c := range []struct {
		ct     string
		body   []byte
		status int
	}{
		{"image/jpeg", pic, http.StatusUnsupportedMediaType},
		{"image/png", []byte("<html><script>alert(1)</script></html>"), http.StatusUnsupportedMediaType},
		{"", []byte("plain text"), http.StatusUnsupportedMediaType},
		{"image/png", nil, http.StatusBadRequest},
		{"image/png", append(pic, make([]byte, 4096)...), http.StatusRequestEntityTooLarge},
	} {
		if rec := e.putImage("/v1/items/c2/image", e.admin, c.ct, c.body); rec.Code != c.status {
			t.Errorf("PUT %d bytes as %q: %d %s, want %d", len(c.body), c.ct, rec.Code, rec.Body, c.status)
		}
	}
	if rec := e.req("GET", "/v1/items/c2/image", "", ""); rec.Code != http.StatusNotFound {
		t.Fatalf("a refused image was stored: %d", rec.Code)
	}
	// application/octet-stream and no Content-Type are sniffed.
	gif := []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;")
	if rec := e.putImage("/v1/items/c2/image", e.admin, "application/octet-stream", gif); rec.Code != http.StatusOK {
		t.Fatalf("PUT GIF as octet-stream: %d %s", rec.Code, rec.Body)
	}
	if rec := e.req("GET", "/v1/items/c2/image", "", ""); rec.Header().Get("Content-Type") != "image/gif" {
		t.Fatalf("GIF served as %q", rec.Header().Get("Content-Type"))
	}
}

func TestItemIDsAreEscapedInPaths(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pic := pngBytes(t, color.White)
	for _, id := range []string{"a b/c", "50%", "zappos-17", "naïve?#"} {
		path := "/v1/items/" + url.PathEscape(id) + "/image"
		if rec := e.putImage(path, e.admin, "image/png", pic); rec.Code != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", path, rec.Code, rec.Body)
		}
		if _, _, err := e.store.ItemImage(context.Background(), id); err != nil {
			t.Fatalf("PUT %s stored no image for %q: %v", path, id, err)
		}
		d, err := e.s.displayFor(context.Background(), "s1", []string{id})
		if err != nil {
			t.Fatal(err)
		}
		// Not in s1's pool: no display data.
		if len(d) != 0 {
			t.Fatalf("displayFor an item outside the pool = %v", d)
		}
		var body imageBody
		rec := e.putImage(path, e.admin, "image/png", pic)
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if rec := e.req("GET", body.URL, "", ""); rec.Code != http.StatusOK {
			t.Fatalf("GET %s (the URL the API gave for %q): %d", body.URL, id, rec.Code)
		}
	}
}

func TestDisplayFor(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.must(http.StatusOK, "POST", "/v1/items", e.admin, `{"items":[{"id":"c1","label":"aardvark"},{"id":"c2","image_url":"https://example.org/2.png"}]}`)
	pic := pngBytes(t, color.Black)
	var img imageBody
	rec := e.putImage("/v1/items/c3/image", e.admin, "image/png", pic)
	if err := json.Unmarshal(rec.Body.Bytes(), &img); err != nil {
		t.Fatal(err)
	}
	got, err := e.s.displayFor(ctx, "s1", []string{"c1", "c2", "c3", "c4"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]displayBody{"c1": {Label: "aardvark"}, "c2": {Image: "https://example.org/2.png"}, "c3": {Image: img.URL}}
	if len(got) != len(want) {
		t.Fatalf("displayFor = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("displayFor[%s] = %+v, want %+v", k, got[k], v)
		}
	}
	// Served from memory: a store outage changes nothing.
	calls := e.store.callCount("ItemDisplays")
	e.store.setDown(errors.Join(alignet.ErrUnavailable, errors.New("down")))
	again, err := e.s.displayFor(ctx, "s1", []string{"c1"})
	if err != nil || again["c1"].Label != "aardvark" || e.store.callCount("ItemDisplays") != calls {
		t.Fatalf("displayFor in an outage = %v, %v (%d store calls, %d before)", again, err, e.store.callCount("ItemDisplays"), calls)
	}
	e.store.setDown(nil)
	// A write through this server is seen at once.
	e.must(http.StatusOK, "POST", "/v1/items", e.admin, `{"items":[{"id":"c1","label":"ant"}]}`)
	if got, err := e.s.displayFor(ctx, "s1", []string{"c1"}); err != nil || got["c1"].Label != "ant" {
		t.Fatalf("displayFor after relabelling = %v, %v", got, err)
	}
	if got, err := e.s.displayFor(ctx, "nope", []string{"c1"}); err != nil || len(got) != 0 {
		t.Fatalf("displayFor of an unknown study = %v, %v", got, err)
	}
}
