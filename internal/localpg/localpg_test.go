package localpg

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serverDir returns a fresh directory the postgres user can reach even when
// the test runs as root (t.TempDir creates its parent with mode 0700).
func serverDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatalf("chmod %s: %v", d, err)
			}
		}
	}
	return filepath.Join(dir, "pg")
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := FindBinaries(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("postgres binaries are required under CI: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}

func TestStartQueryStop(t *testing.T) {
	requireBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cfg := Config{
		DataDir: serverDir(t),
		Port:    freePort(t),
		Logger:  slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	srv, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = srv.Stop(context.Background())
		}
	})

	conn, err := pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatalf("connect %s: %v", srv.URL(), err)
	}
	var one int
	var db string
	if err := conn.QueryRow(ctx, "SELECT 1, current_database()").Scan(&one, &db); err != nil {
		t.Fatalf("query: %v", err)
	}
	if one != 1 || db != Database {
		t.Fatalf("got (%d, %q), want (1, %q)", one, db, Database)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	conn.Close(ctx)

	// A second Start on the same directory reuses the running server.
	again, err := Start(ctx, Config{DataDir: cfg.DataDir, Port: cfg.Port})
	if err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if again.URL() != srv.URL() {
		t.Fatalf("reused URL %q, want %q", again.URL(), srv.URL())
	}

	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopped = true
	if c, err := pgx.Connect(ctx, srv.URL()); err == nil {
		c.Close(ctx)
		t.Fatal("connect after Stop succeeded; want an error")
	}

	// A restart on the existing cluster keeps its data.
	srv, err = Start(ctx, cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	stopped = false
	conn, err = pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
		t.Fatalf("data after restart: v=%d err=%v, want 42", v, err)
	}
}

func TestStartPortInUse(t *testing.T) {
	requireBinaries(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	_, err = Start(context.Background(), Config{
		DataDir: serverDir(t),
		Port:    l.Addr().(*net.TCPAddr).Port,
	})
	if err == nil {
		t.Fatal("Start on a busy port succeeded; want an error")
	}
}

func TestFindBinariesErrorNamesTheFix(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	bin, err := FindBinaries()
	if err == nil {
		// /usr/lib/postgresql/*/bin still holds them on this machine.
		if _, statErr := os.Stat(filepath.Join(bin, "postgres")); statErr != nil {
			t.Fatalf("FindBinaries returned %q without a postgres binary", bin)
		}
		return
	}
	if !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("error %v does not wrap exec.ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "make run") || !strings.Contains(err.Error(), "apt-get") {
		t.Fatalf("error %q does not tell how to install the binaries", err)
	}
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
