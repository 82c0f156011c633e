package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestImportImages(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	uploads := map[string][]byte{}
	var added []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.Method == "PUT" && strings.HasPrefix(r.URL.Path, "/v1/items/") && strings.HasSuffix(r.URL.Path, "/image"):
			uploads[strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/items/"), "/image")] = body
			_, _ = w.Write([]byte(`{}`))
		case r.Method == "POST" && r.URL.Path == "/v1/studies/shoes/items":
			var req struct{ Items []string }
			_ = json.Unmarshal(body, &req)
			added = append(added, req.Items...)
			_, _ = w.Write([]byte(`{"added":2,"total":2}`))
		default:
			http.Error(w, `{"error":{"code":"not_found","message":"no"}}`, http.StatusNotFound)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	files := map[string]string{"0.jpg": "\xff\xd8\xff jpeg", "17.png": "\x89PNG\r\n\x1a\n png", "notes.txt": "not an image"}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"import", "images", "--dir", dir, "--prefix", "zappos-", "--study", "shoes",
		"--server", srv.URL, "--key", "alg_test"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(uploads) != 2 || string(uploads["zappos-0"]) != files["0.jpg"] || string(uploads["zappos-17"]) != files["17.png"] {
		t.Fatalf("uploads = %q", uploads)
	}
	slices.Sort(added)
	if !slices.Equal(added, []string{"zappos-0", "zappos-17"}) {
		t.Fatalf("items added to the study: %v", added)
	}
	if !strings.Contains(out.String(), "uploaded 2 images") {
		t.Fatalf("output: %s", out.String())
	}
}
