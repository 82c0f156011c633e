package localpg

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
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

// TestStartFallbackDir starts a server as root on a data dir below a
// private (0700) directory, which the postgres user cannot traverse, as in
// a clone in /root or in mktemp -d: the cluster must live in the stable
// fallback dir instead, and a second start must find it again.
func TestStartFallbackDir(t *testing.T) {
	requireBinaries(t)
	if os.Geteuid() != 0 {
		t.Skip("the fallback dir is for root, whose server runs as the postgres user")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(private, "alignet-data", "postgres")
	want := FallbackDir(dataDir)
	if !strings.HasPrefix(want, "/var/tmp/alignet-pg-") || FallbackDir(dataDir) != want || FallbackDir(dataDir+"x") == want {
		t.Fatalf("FallbackDir(%s) = %s: want a stable /var/tmp/alignet-pg-<hash> name per dir", dataDir, want)
	}
	// scripts/postgres.sh derives the same name.
	out, err := exec.Command("bash", "-c", `echo "/var/tmp/alignet-pg-$(echo "$1" | sha256sum | cut -c1-12)"`, "-", dataDir).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != want {
		t.Fatalf("scripts/postgres.sh would use %s, localpg %s", got, want)
	}
	t.Cleanup(func() { os.RemoveAll(want) })

	cfg := Config{DataDir: dataDir, Port: freePort(t), Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	srv, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	if srv.Dir() != want {
		t.Fatalf("Dir() = %s, want the fallback %s", srv.Dir(), want)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unused data dir %s left behind (stat: %v)", dataDir, err)
	}
	if fi, err := os.Stat(want); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("fallback dir: %v, %v; want mode 0700", fi, err)
	}
	conn, err := pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// A restart with the same data dir finds the cluster again.
	srv, err = Start(ctx, cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if srv.Dir() != want {
		t.Fatalf("restart Dir() = %s, want %s", srv.Dir(), want)
	}
	conn, err = pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 7 {
		t.Fatalf("data after restart: v=%d err=%v, want 7", v, err)
	}
}

// TestFallbackDirRefusesForeignDir checks that a fallback dir planted in
// the shared /var/tmp by another user is not used.
func TestFallbackDirRefusesForeignDir(t *testing.T) {
	requireBinaries(t)
	if os.Geteuid() != 0 {
		t.Skip("the fallback dir is for root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(private, "pg")
	alt := FallbackDir(dataDir)
	if err := os.Mkdir(alt, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(alt) })
	if err := os.Chown(alt, uid, uid); err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), Config{DataDir: dataDir, Port: freePort(t)})
	if err == nil || !strings.Contains(err.Error(), "not a directory owned by root or postgres") {
		t.Fatalf("Start with a foreign fallback dir: %v", err)
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
