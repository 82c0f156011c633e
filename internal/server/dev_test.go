package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet/db/dbtest"
)

func TestDevSecretIsStable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	a, err := loadSecret(p, "alg_")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("loadSecret wrote the key before the server ran: %v", err)
	}
	if err := a.save(); err != nil {
		t.Fatal(err)
	}
	b, err := loadSecret(p, "alg_")
	if err != nil {
		t.Fatal(err)
	}
	if a.value != b.value || b.write || !strings.HasPrefix(a.value, "alg_") || len(a.value) < 40 {
		t.Fatalf("secrets %+v %+v", a, b)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v", st.Mode().Perm())
	}
}

// busyPort returns a port that a listener holds until the test ends.
func busyPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestDevFailedStartLeavesNoKeys starts dev where it cannot run (the
// broker's port, then the API's, is taken): no key may be left in the
// data dir, since a later start would not use it.
func TestDevFailedStartLeavesNoKeys(t *testing.T) {
	for _, c := range []struct {
		name string
		dc   func() DevConfig
	}{
		{"broker port taken", func() DevConfig {
			return DevConfig{KafkaPort: busyPort(t), Serve: Config{DatabaseURL: "postgres://127.0.0.1:1/none", Listen: "127.0.0.1:" + itoa(freePort(t))}}
		}},
		{"listen port taken", func() DevConfig {
			return DevConfig{Serve: Config{Listen: "127.0.0.1:" + itoa(busyPort(t))}}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dc := c.dc()
			dc.DataDir = t.TempDir()
			var out bytes.Buffer
			if err := RunDev(context.Background(), dc, &out, quietLogger(), prometheus.NewRegistry()); err == nil {
				t.Fatal("RunDev succeeded; want an error")
			}
			for _, k := range []string{"admin.key", "pseudonym.key"} {
				if _, err := os.Stat(filepath.Join(dc.DataDir, k)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("failed start left %s behind (stat: %v)", k, err)
				}
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// devRun is a RunDev in the background.
type devRun struct {
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
	base   string
}

// startDev runs dev on the test database schema dbURL with the in-process
// broker and waits until it reports that it runs.
func startDev(t *testing.T, dataDir, dbURL string) *devRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	listen := "127.0.0.1:" + itoa(freePort(t))
	r := &devRun{out: &syncBuffer{}, cancel: cancel, done: make(chan error, 1), base: "http://" + listen}
	dc := DevConfig{DataDir: dataDir, KafkaPort: freePort(t), Serve: Config{
		DatabaseURL: dbURL, Listen: listen, Roles: []string{RoleAPI, RolePersister},
		Topic: "dev.judgments", DeadLetterTopic: "dev.dlq", Group: "dev", Partitions: 1,
		LogLevel: "info", LogFormat: "text",
	}}
	go func() { r.done <- RunDev(ctx, dc, r.out, quietLogger(), prometheus.NewRegistry()) }()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(r.out.String(), "alignet dev is running") {
		select {
		case err := <-r.done:
			t.Fatalf("RunDev returned %v before it ran:\n%s", err, r.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("dev did not report that it runs:\n%s", r.out.String())
		}
	}
	return r
}

func (r *devRun) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("RunDev: %v", err)
	}
}

// status returns the status of GET path with key.
func (r *devRun) status(t *testing.T, path, key string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func readKey(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestDevWritesKeysOnceRunning runs dev on the test Postgres: once it
// runs, admin.key holds the key the banner shows and the API accepts; a
// restart keeps it; a start with another data dir leaves the first key as
// it was.
func TestDevWritesKeysOnceRunning(t *testing.T) {
	base, schema := dbtest.Schema(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	dbURL := u.String()

	dir := t.TempDir()
	r := startDev(t, dir, dbURL)
	key := readKey(t, dir)
	if !strings.Contains(r.out.String(), "Admin key   "+key+" (in "+filepath.Join(dir, "admin.key")+")") {
		t.Errorf("banner does not show the key and its file:\n%s", r.out.String())
	}
	if st := r.status(t, "/v1/studies", key); st != http.StatusOK {
		t.Fatalf("GET /v1/studies with admin.key: %d", st)
	}
	if st, err := os.Stat(filepath.Join(dir, "pseudonym.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("pseudonym.key: %v, %v", st, err)
	}
	r.stop(t)

	r = startDev(t, dir, dbURL)
	if again := readKey(t, dir); again != key || r.status(t, "/v1/studies", key) != http.StatusOK {
		t.Fatalf("restart changed or rejected the key: %q, was %q", again, key)
	}
	r.stop(t)

	other := t.TempDir()
	r = startDev(t, other, dbURL)
	if readKey(t, other) == key || readKey(t, dir) != key {
		t.Fatal("another data dir reused or overwrote the first dir's key")
	}
	r.stop(t)
}

func itoa(n int) string { return strconv.Itoa(n) }
