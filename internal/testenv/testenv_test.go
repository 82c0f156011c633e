package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Skipf and Fatalf instead of
// stopping the test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, args ...any) { r.skipped = fmt.Sprintf(format, args...) }

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

// outcome is what a helper did to the test.
func (r *recorder) outcome() string {
	switch {
	case r.failed != "" && r.skipped != "":
		return "skipped and failed"
	case r.failed != "":
		return "failed"
	case r.skipped != "":
		return "skipped"
	}
	return "ran"
}

func TestMissingToolSkipsOrFailsUnderCI(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		want := "skipped"
		if ci == "true" {
			want = "failed"
		}
		r := &recorder{TB: t}
		Tool(r, "alignet-no-such-tool", "apt-get install nothing")
		if got := r.outcome(); got != want {
			t.Errorf("CI=%q, missing tool: test %s, want %s", ci, got, want)
		}
		if !strings.Contains(r.skipped+r.failed, "apt-get install nothing") {
			t.Errorf("message %q does not say how to install the tool", r.skipped+r.failed)
		}
		r = &recorder{TB: t}
		if path := Tool(r, "go", "install Go"); path == "" || r.outcome() != "ran" {
			t.Errorf("go: path %q, test %s", path, r.outcome())
		}
	}
}

func TestMissingServicesSkipOrFailUnderCI(t *testing.T) {
	for _, ci := range []string{"", "false", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			t.Setenv(EnvDatabaseURL, "")
			t.Setenv(EnvKafkaBrokers, " , ")
			want := "skipped"
			if ci == "true" {
				want = "failed"
			}
			db := &recorder{TB: t}
			DatabaseURL(db)
			kafka := &recorder{TB: t}
			KafkaBrokers(kafka)
			for name, r := range map[string]*recorder{EnvDatabaseURL: db, EnvKafkaBrokers: kafka} {
				if got := r.outcome(); got != want {
					t.Errorf("%s unset: test %s, want %s", name, got, want)
				}
				if msg := r.skipped + r.failed; !strings.Contains(msg, name) {
					t.Errorf("%s unset: message %q does not name the variable", name, msg)
				}
			}
		})
	}
}

func TestServicesFromEnvironment(t *testing.T) {
	t.Setenv("CI", "true")
	t.Setenv(EnvDatabaseURL, "postgres://u@h:1/d")
	t.Setenv(EnvKafkaBrokers, "a:1, b:2,")
	r := &recorder{TB: t}
	if got := DatabaseURL(r); got != "postgres://u@h:1/d" {
		t.Errorf("DatabaseURL = %q", got)
	}
	if got, want := KafkaBrokers(r), []string{"a:1", "b:2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("KafkaBrokers = %q, want %q", got, want)
	}
	if r.outcome() != "ran" {
		t.Errorf("configured services: test %s", r.outcome())
	}
}

func TestSharedData(t *testing.T) {
	base := t.TempDir()
	if err := os.Mkdir(filepath.Join(base, "things"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			r := &recorder{TB: t}
			if got := sharedData(r, base, "things"); got != filepath.Join(base, "things") || r.outcome() != "ran" {
				t.Errorf("present folder: got %q, test %s", got, r.outcome())
			}
			r = &recorder{TB: t}
			sharedData(r, base, "zappos")
			// The data is not in the repository: a checkout without it
			// skips, under CI too.
			if r.outcome() != "skipped" {
				t.Errorf("missing folder: test %s, want skipped", r.outcome())
			}
			r = &recorder{TB: t}
			sharedData(r, base, "file")
			if r.outcome() != "failed" {
				t.Errorf("a file instead of a folder: test %s, want failed", r.outcome())
			}
		})
	}
}

func TestSharedDataIsNextToTheModule(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root %s has no go.mod: %v", root, err)
	}
	if wd, _ := os.Getwd(); filepath.Join(root, "internal", "testenv") != wd {
		t.Errorf("module root %s is not two levels above the package directory %s", root, wd)
	}
	t.Setenv("CI", "")
	r := &recorder{TB: t}
	SharedData(r, "no-such-data-set")
	if want := filepath.Join(filepath.Dir(root), "shared", "data", "no-such-data-set"); !strings.Contains(r.skipped, want) {
		t.Errorf("missing data set: skip message %q does not name %s", r.skipped, want)
	}
}
