// Package testenv decides, in one place, what a test does when a real
// service or the shared data it needs is missing: it skips, except under
// CI=true, where it fails, because CI must never silently skip integration
// tests.
//
// scripts/test.sh starts Postgres and Kafka and sets EnvDatabaseURL and
// EnvKafkaBrokers; the shared data set lives next to the repository, in
// ../shared/data.
package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Environment variables that point tests at the real services.
const (
	// EnvDatabaseURL holds the Postgres connection string for tests.
	EnvDatabaseURL = "ALIGNET_TEST_DATABASE_URL"
	// EnvKafkaBrokers holds the comma-separated Kafka bootstrap brokers.
	EnvKafkaBrokers = "ALIGNET_TEST_KAFKA_BROKERS"
)

// DatabaseURL returns the Postgres URL of EnvDatabaseURL, or skips tb (fails
// it under CI=true) when the variable is unset.
func DatabaseURL(tb testing.TB) string {
	tb.Helper()
	v := strings.TrimSpace(os.Getenv(EnvDatabaseURL))
	if v == "" {
		missing(tb, "%s is not set: run the tests with scripts/test.sh, or start Postgres with scripts/postgres.sh start", EnvDatabaseURL)
	}
	return v
}

// KafkaBrokers returns the brokers of EnvKafkaBrokers, or skips tb (fails it
// under CI=true) when the variable is unset.
func KafkaBrokers(tb testing.TB) []string {
	tb.Helper()
	var brokers []string
	for _, b := range strings.Split(os.Getenv(EnvKafkaBrokers), ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	if len(brokers) == 0 {
		missing(tb, "%s is not set: run the tests with scripts/test.sh, or start Kafka with scripts/kafka.sh start", EnvKafkaBrokers)
	}
	return brokers
}

// Tool returns the path of the program name, for example promtool, or
// skips tb (fails it under CI=true) when it is not installed; install is
// the command that installs it, named in the message (scripts/test.sh runs
// it when it runs as root).
func Tool(tb testing.TB, name, install string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		missing(tb, "%s is not installed: %s", name, install)
	}
	return path
}

// SharedData returns the path of the folder name (for example "things") of
// the shared data set, ../shared/data next to the module root. When that
// folder is missing it skips tb, also under CI=true: the data is not part of
// the repository, so a checkout without it is legitimate (DEVELOPERS.md).
// Any other problem reaching it fails tb.
func SharedData(tb testing.TB, name string) string {
	tb.Helper()
	root, err := moduleRoot()
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return sharedData(tb, filepath.Join(filepath.Dir(root), "shared", "data"), name)
}

// sharedData is SharedData with the data set at base.
func sharedData(tb testing.TB, base, name string) string {
	tb.Helper()
	dir := filepath.Join(base, name)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		tb.Skipf("shared data %s not found (see DEVELOPERS.md)", dir)
	case err != nil:
		tb.Fatalf("testenv: shared data: %v", err)
	case !st.IsDir():
		tb.Fatalf("testenv: shared data %s is not a directory", dir)
	}
	return dir
}

// moduleRoot returns the nearest directory at or above the working
// directory (a test's package directory) that holds go.mod.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("module root: no go.mod at or above %s", wd)
		}
	}
}

// missing skips tb, or fails it when CI=true.
func missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true: "+format, args...)
		return
	}
	tb.Skipf(format, args...)
}
