package api

import (
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
)

type openAPIDocument struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas   map[string]json.RawMessage `json:"schemas"`
		Responses map[string]json.RawMessage `json:"responses"`
	} `json:"components"`
}

func TestOpenAPICoversRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := e.must(http.StatusOK, "GET", "/v1/openapi.json", e.collect, "")
	var doc openAPIDocument
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	param := regexp.MustCompile(`:([A-Za-z0-9_]+)`)
	routes := map[string]bool{}
	for _, r := range e.s.e.Routes() {
		routes[strings.ToLower(r.Method)+" "+param.ReplaceAllString(r.Path, "{$1}")] = true
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m, raw := range ops {
			if m == "parameters" {
				continue
			}
			// {student}.npz and {version}.npz are served by the routes
			// of their path segment, which check the suffix.
			documented[m+" "+strings.NewReplacer("{student}.npz", "{student}", "{version}.npz", "{file}").Replace(p)] = true
			var op struct {
				Responses  map[string]json.RawMessage `json:"responses"`
				Parameters []struct{ Name, In string }
				Security   *[]any `json:"security"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", m, p, err)
			}
			for _, name := range regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(p, -1) {
				found := false
				for _, prm := range op.Parameters {
					found = found || prm.In == "path" && prm.Name == name[1]
				}
				if !found {
					t.Errorf("%s %s: path parameter %s undeclared", m, p, name[1])
				}
			}
			if op.Security == nil {
				if _, ok := op.Responses["401"]; !ok {
					t.Errorf("%s %s: secured operation without 401", m, p)
				}
			}
		}
	}
	var missing, extra []string
	for r := range routes {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	for d := range documented {
		if !routes[d] {
			extra = append(extra, d)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing)+len(extra) > 0 {
		t.Fatalf("routes missing from openapi.json: %v; documented but not routed: %v", missing, extra)
	}
	if len(routes) < 18 {
		t.Fatalf("only %d routes", len(routes))
	}
	// Every $ref resolves.
	for _, m := range regexp.MustCompile(`"\$ref":\s*"#/components/(schemas|responses)/([^"]+)"`).FindAllStringSubmatch(string(openAPIDoc), -1) {
		table := doc.Components.Schemas
		if m[1] == "responses" {
			table = doc.Components.Responses
		}
		if _, ok := table[m[2]]; !ok {
			t.Errorf("dangling $ref %s/%s", m[1], m[2])
		}
	}
}
