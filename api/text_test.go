package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
)

func TestTextCheck(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body string
		bad        int64 // offset of the offending sequence, -1 when fine
	}{
		{"ascii", `{"a":"b"}`, -1},
		{"non-ascii", `{"a":"é€😀"}`, -1},
		{"surrogate pair", `{"a":"\ud83d\ude00"}`, -1},
		{"escaped backslash", `{"a":"\\ud800"}`, -1},
		{"ordinary escapes", `{"a":"\n\t\"\\\u00e9"}`, -1},
		{"invalid byte", "{\"a\":\"x\xffy\"}", 7},
		{"truncated sequence", "{\"a\":\"x\xe2\x82", 7},
		{"truncated then ascii", "{\"a\":\"x\xe2\x82\"}", 7},
		{"overlong", "{\"a\":\"\xc0\xaf\"}", 6},
		{"utf-8 surrogate", "{\"a\":\"\xed\xa0\x80\"}", 6},
		{"lone high", `{"a":"x\ud800"}`, 7},
		{"high then char", `{"a":"\ud800x"}`, 6},
		{"high then non-low escape", `{"a":"\ud800\u0041"}`, 6},
		{"high then high", `{"a":"\ud800\ud800\udc00"}`, 6},
		{"lone low", `{"a":"ab\udc00"}`, 8},
		{"high then non-ascii", `{"a":"\ud800é"}`, 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c textCheck
			_, err := c.scan([]byte(tc.body), true)
			check := func(how string, err error) {
				t.Helper()
				var te *textError
				switch {
				case tc.bad < 0 && err != nil:
					t.Fatalf("%s: %v", how, err)
				case tc.bad >= 0 && (!errors.As(err, &te) || te.Offset != tc.bad):
					t.Fatalf("%s: err = %v, want a textError at byte %d", how, err, tc.bad)
				}
			}
			check("scan", err)
			// The reader finds the same across any chunking, and never
			// passes enough for the decoder to complete the value.
			for _, r := range []io.Reader{strings.NewReader(tc.body), iotest.OneByteReader(strings.NewReader(tc.body)),
				iotest.HalfReader(strings.NewReader(tc.body))} {
				got, err := io.ReadAll(newTextReader(r))
				check("reader", err)
				if tc.bad < 0 && string(got) != tc.body || tc.bad >= 0 && (!strings.HasPrefix(tc.body, string(got)) || json.Valid(got)) {
					t.Fatalf("reader passed %q", got)
				}
			}
			if e := checkText([]byte(tc.body)); (e != nil) != (tc.bad >= 0) {
				t.Fatalf("checkText = %v", e)
			}
		})
	}
}

func TestJSONPathAt(t *testing.T) {
	t.Parallel()
	cases := []struct{ body, at, want string }{
		{"{\"worker\":\"w\xff\"}", "\xff", "worker"},
		{"[{\"worker\":\"w\"},{\"worker\":\"w\",\"items\":[\"a\",\"b\",\"c\xff\"]}]", "\xff", "[1].items[2]"},
		{"{\"items\":[{\"id\":\"x\",\"vector\":[1]},{\"id\":\"\xff\"}]}", "\xff", "items[1].id"},
		{"{\"a\":{\"b\":[[1],[2,\"\xff\"]]}}", "\xff", "a.b[1][1]"},
		{"\"\xff\"", "\xff", ""},
	}
	for _, tc := range cases {
		off := int64(strings.Index(tc.body, tc.at))
		if got := jsonPathAt([]byte(tc.body), off); got != tc.want {
			t.Errorf("jsonPathAt(%q, %d) = %q, want %q", tc.body, off, got, tc.want)
		}
	}
}

// TestTextRejectedEverywhere posts NUL, control characters, invalid UTF-8
// and unpaired surrogates in every string field the API takes. None may
// reach the store (whose fake fails on NUL and invalid UTF-8 as Postgres
// does) or be stored as U+FFFD.
func TestTextRejectedEverywhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(http.StatusAccepted, "POST", "/v1/studies/s1/judgments", e.collect, okOdd)
	before := len(e.pub.published())
	judgment := func(worker, item, query string) string {
		return `{"worker":"` + worker + `","items":["c1","c2","` + item + `"],"odd":"c1","query_id":"` + query + `"}`
	}
	cases := []struct {
		name, method, path, key, ctype, body string
		status                               int
		code, field                          string
	}{
		{"raw invalid UTF-8 in a batch", "POST", "/v1/studies/s1/judgments", e.collect, "", "[" + okOdd + "," + judgment("w\xff", "c3", "") + "]", 400, CodeInvalidJSON, "[1].worker"},
		{"unpaired surrogate", "POST", "/v1/studies/s1/judgments", e.collect, "", judgment("w", "c3", `q\ud800`), 400, CodeInvalidJSON, "query_id"},
		{"NUL in worker", "POST", "/v1/studies/s1/judgments", e.collect, "", judgment(`w\u0000`, "c3", ""), 422, CodeInvalidField, "worker"},
		{"C1 control in query_id", "POST", "/v1/studies/s1/judgments", e.collect, "", judgment("w", "c3", `q\u0085`), 422, CodeInvalidField, "query_id"},
		{"control character in item", "POST", "/v1/studies/s1/judgments", e.collect, "", judgment("w", `c\u0007`, ""), 422, CodeInvalidField, "items[2]"},
		{"NUL in key name", "POST", "/v1/keys", e.admin, "", `{"name":"a\u0000b","scopes":["read"]}`, 422, CodeInvalidField, "name"},
		{"invalid UTF-8 in key name", "POST", "/v1/keys", e.admin, "", "{\"name\":\"a\xffb\",\"scopes\":[\"read\"]}", 400, CodeInvalidJSON, ""},
		{"NUL in study id", "POST", "/v1/studies", e.admin, "", `{"id":"a\u0000","task":"anchor","space":"clip"}`, 422, CodeInvalidField, "id"},
		{"C1 control in item id", "POST", "/v1/studies/s1/items", e.admin, "", `{"items":["ok","a\u0085b"]}`, 422, CodeInvalidField, "items[1]"},
		{"invalid UTF-8 in item id", "POST", "/v1/studies/s1/items", e.admin, "", "{\"items\":[\"ok\",\"a\xe2\x82\"]}", 400, CodeInvalidJSON, ""},
		{"NUL in embedding id", "POST", "/v1/spaces/clip/embeddings", e.admin, "", `{"items":[{"id":"a\u0000","vector":[1,2,3,4]}]}`, 422, CodeInvalidField, "items[0].id"},
		{"invalid UTF-8 in embedding id", "POST", "/v1/spaces/clip/embeddings", e.admin, "", "{\"items\":[{\"id\":\"ok\",\"vector\":[1,2,3,4]},{\"id\":\"\xff\",\"vector\":[1,2,3,4]}]}", 400, CodeInvalidJSON, "items[1]"},
		{"NUL in worker lookup", "POST", "/v1/workers/lookup", e.read, "", `{"worker":"a\u0000b"}`, 422, CodeInvalidField, "worker"},
		{"NUL in export worker", "GET", "/v1/studies/s1/judgments?worker=a%00b", e.read, "", "", 400, CodeInvalidParameter, "worker"},
		{"invalid UTF-8 in export worker", "GET", "/v1/studies/s1/judgments?worker=a%FFb", e.read, "", "", 400, CodeInvalidParameter, "worker"},
		{"NUL in study path", "GET", "/v1/studies/a%00b", e.read, "", "", 404, CodeNotFound, ""},
		{"NUL in study path of judgments", "POST", "/v1/studies/s%00/judgments", e.collect, "", okOdd, 404, CodeNotFound, ""},
		{"invalid UTF-8 in space path", "GET", "/v1/spaces/a%FF", e.read, "", "", 404, CodeNotFound, ""},
		{"NUL in key path", "DELETE", "/v1/keys/a%00b", e.admin, "", "", 404, CodeNotFound, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req := httptest.NewRequest(tc.method, tc.path, body)
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			rec := e.send(req, tc.key)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			got := apiErr(t, rec)
			if got.Code != tc.code || got.Field != tc.field {
				t.Fatalf("code %q field %q, want %q %q (%s)", got.Code, got.Field, tc.code, tc.field, got.Message)
			}
			if tc.code == CodeInvalidJSON && !strings.Contains(got.Message, "at byte") {
				t.Fatalf("message %q does not give the byte offset", got.Message)
			}
		})
	}
	// Multipart ids as a JSON array are checked too.
	mb, ct := multipartBody(t, [2]any{"ids", "[\"e1\",\"e\xff\"]"}, [2]any{"vectors", "x"})
	if rec := e.upload(mb, ct); rec.Code != 400 || apiErr(t, rec).Field != "ids[1]" {
		t.Fatalf("multipart ids with invalid UTF-8: %d %s", rec.Code, rec.Body)
	}
	if n := len(e.pub.published()); n != before {
		t.Fatalf("%d judgments published by bad requests", n-before)
	}
	var keys struct{ Keys []keyBody }
	_ = json.Unmarshal(e.must(http.StatusOK, "GET", "/v1/keys", e.admin, "").Body.Bytes(), &keys)
	for _, k := range keys.Keys {
		if strings.ContainsRune(k.Name, '\uFFFD') || strings.ContainsRune(k.Name, 0) {
			t.Fatalf("key name %q stored", k.Name)
		}
	}
	var items struct{ Items []string }
	_ = json.Unmarshal(e.must(http.StatusOK, "GET", "/v1/studies/s1/items", e.read, "").Body.Bytes(), &items)
	if len(items.Items) != 6 {
		t.Fatalf("items %q", items.Items)
	}
	if len(e.store.embeddings["clip"]) != 0 {
		t.Fatalf("embeddings stored: %v", e.store.embeddings["clip"])
	}
	if bytes.Contains([]byte(e.logs.String()), []byte("level=ERROR")) {
		t.Fatalf("errors logged:\n%s", e.logs)
	}
}
