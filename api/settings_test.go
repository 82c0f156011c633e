package api

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet"
)

func TestCreateStudyWithSettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := e.must(http.StatusCreated, "POST", "/v1/studies", e.admin,
		`{"id":"s2","task":"odd-one-out","space":"clip","settings":{"learner":{"refit_factor":2,"version_interval":"90s"}}}`)
	got := decodeJSON[studyBody](t, rec.Body.Bytes())
	want := alignet.DefaultStudySettings()
	want.Learner.RefitFactor, want.Learner.VersionInterval = 2, alignet.Duration(90*time.Second)
	if !reflect.DeepEqual(got.Settings, want) {
		t.Fatalf("created settings = %+v, want %+v", got.Settings, want)
	}
	// GET shows every effective setting, defaults included.
	rec = e.must(http.StatusOK, "GET", "/v1/studies/s2", e.read, "")
	raw := decodeJSON[struct {
		Settings struct {
			Learner map[string]any `json:"learner"`
		} `json:"settings"`
	}](t, rec.Body.Bytes())
	for _, k := range []string{"online", "refits", "min_judgments", "refit_factor", "held_out_share", "out_dim", "lambdas",
		"max_iter", "distill", "learning_rate", "version_interval", "keep_versions"} {
		if _, ok := raw.Settings.Learner[k]; !ok {
			t.Fatalf("GET study lacks settings.learner.%s: %s", k, rec.Body)
		}
	}
	if raw.Settings.Learner["version_interval"] != "1m30s" || raw.Settings.Learner["min_judgments"] != 500.0 {
		t.Fatalf("settings = %v", raw.Settings.Learner)
	}
	// Without settings, the defaults.
	rec = e.must(http.StatusCreated, "POST", "/v1/studies", e.admin, `{"id":"s3","task":"anchor","space":"clip"}`)
	if got := decodeJSON[studyBody](t, rec.Body.Bytes()); !reflect.DeepEqual(got.Settings, alignet.DefaultStudySettings()) {
		t.Fatalf("default settings = %+v", got.Settings)
	}
	for _, c := range []struct{ settings, field string }{
		{`{"learner":{"refit_factor":1}}`, "settings.learner.refit_factor"},
		{`{"learner":{"refit_facter":2}}`, "settings.learner.refit_facter"},
		{`{"learner":{"min_judgments":"many"}}`, "settings.learner.min_judgments"},
		{`{"learner":{"lambdas":[0.1,-1]}}`, "settings.learner.lambdas[1]"},
		{`{"learner":{"version_interval":"soon"}}`, "settings.learner.version_interval"},
		{`{"nope":{}}`, "settings.nope"},
		{`[1]`, "settings"},
	} {
		rec := e.req("POST", "/v1/studies", e.admin, `{"id":"bad","task":"odd-one-out","space":"clip","settings":`+c.settings+`}`)
		if rec.Code != http.StatusUnprocessableEntity {
			t.Fatalf("settings %s: status %d: %s", c.settings, rec.Code, rec.Body)
		}
		if ae := apiErr(t, rec); ae.Field != c.field || ae.Code != CodeInvalidField {
			t.Fatalf("settings %s: %+v, want field %s", c.settings, ae, c.field)
		}
	}
	e.must(http.StatusNotFound, "GET", "/v1/studies/bad", e.read, "")
}

func TestPatchStudySettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	patch := func(ct, body string) *studyBody {
		t.Helper()
		req := newReq("PATCH", "/v1/studies/s1", body)
		req.Header.Set("Content-Type", ct)
		rec := e.send(req, e.admin)
		if rec.Code != http.StatusOK {
			t.Fatalf("PATCH %s: %d %s", body, rec.Code, rec.Body)
		}
		b := decodeJSON[studyBody](t, rec.Body.Bytes())
		return &b
	}
	got := patch(mimeMergePatch, `{"settings":{"learner":{"min_judgments":50,"lambdas":[1,2]}}}`)
	want := alignet.DefaultStudySettings()
	want.Learner.MinJudgments, want.Learner.Lambdas = 50, []float64{1, 2}
	if !reflect.DeepEqual(got.Settings, want) || got.ID != "s1" || got.Task != alignet.TaskOddOneOut {
		t.Fatalf("patched = %+v, want settings %+v", got, want)
	}
	// The server's study cache sees the change at once.
	if st, err := e.s.study(t.Context(), "s1"); err != nil || !reflect.DeepEqual(st.study.Settings, want) {
		t.Fatalf("cached settings = %+v, %v", st.study.Settings, err)
	}
	// Members merge; null resets one member, or every setting.
	got = patch("application/json; charset=utf-8", `{"settings":{"learner":{"lambdas":null,"online":false}}}`)
	want.Learner.Lambdas, want.Learner.Online = alignet.DefaultLearnerSettings().Lambdas, false
	if !reflect.DeepEqual(got.Settings, want) {
		t.Fatalf("second patch = %+v, want %+v", got.Settings, want)
	}
	if got = patch(mimeMergePatch, `{}`); !reflect.DeepEqual(got.Settings, want) {
		t.Fatalf("empty patch changed settings to %+v", got.Settings)
	}
	if got = patch(mimeMergePatch, `{"settings":null}`); !reflect.DeepEqual(got.Settings, alignet.DefaultStudySettings()) {
		t.Fatalf("settings: null = %+v, want the defaults", got.Settings)
	}
	patch(mimeMergePatch, `{"settings":{"learner":{"keep_versions":7}}}`)

	for _, c := range []struct {
		ct, body, code, field string
		status                int
	}{
		{mimeMergePatch, `{"settings":{"learner":{"held_out_share":0.9}}}`, CodeInvalidField, "settings.learner.held_out_share", 422},
		{mimeMergePatch, `{"settings":{"learner":{"bogus":1}}}`, CodeInvalidField, "settings.learner.bogus", 422},
		{mimeMergePatch, `{"settings":{"learner":{"max_iter":true}}}`, CodeInvalidField, "settings.learner.max_iter", 422},
		{mimeMergePatch, `{"settings":{"learner":5}}`, CodeInvalidField, "settings.learner", 422},
		{mimeMergePatch, `{"settings":5}`, CodeInvalidField, "settings", 422},
		{mimeMergePatch, `{"settings":[]}`, CodeInvalidField, "settings", 422},
		{mimeMergePatch, `{"task":"anchor"}`, CodeInvalidField, "task", 422},
		{mimeMergePatch, `{"id":"x","settings":{}}`, CodeInvalidField, "id", 422},
		{mimeMergePatch, `{"bogus":{}}`, CodeInvalidJSON, "bogus", 400},
		{mimeMergePatch, `[1]`, CodeInvalidJSON, "", 400},
		{mimeMergePatch, `{"settings":`, CodeInvalidJSON, "", 400},
		{mimeMergePatch, ``, CodeInvalidJSON, "", 400},
		{"text/plain", `{"settings":{}}`, CodeUnsupportedMedia, "", 415},
	} {
		req := httptest.NewRequest("PATCH", "/v1/studies/s1", strings.NewReader(c.body))
		req.Header.Set("Content-Type", c.ct)
		rec := e.send(req, e.admin)
		if rec.Code != c.status {
			t.Fatalf("PATCH %s: status %d, want %d: %s", c.body, rec.Code, c.status, rec.Body)
		}
		if ae := apiErr(t, rec); ae.Code != c.code || ae.Field != c.field {
			t.Fatalf("PATCH %s: %+v, want %s field %q", c.body, ae, c.code, c.field)
		}
	}
	// Failed patches changed nothing.
	if st, _ := e.store.GetStudy(t.Context(), "s1"); st.Settings.Learner.KeepVersions != 7 || st.Settings.Learner.HeldOutShare != 0.1 {
		t.Fatalf("settings after failed patches = %+v", st.Settings.Learner)
	}
	e.must(http.StatusNotFound, "PATCH", "/v1/studies/ghost", e.admin, `{"settings":{}}`)
	e.must(http.StatusForbidden, "PATCH", "/v1/studies/s1", e.read, `{"settings":{}}`)
	e.must(http.StatusForbidden, "PATCH", "/v1/studies/s1", e.collect, `{"settings":{}}`)
}
