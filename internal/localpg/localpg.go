// Package localpg starts a real PostgreSQL server in a local data directory,
// for `alignet dev` and for tests that want a private server.
//
// The server binaries (initdb, pg_ctl, postgres) are taken from PATH or from
// /usr/lib/postgresql/*/bin; they are not downloaded. Postgres refuses to run
// as root, so when the calling process is root the server runs as the
// unprivileged `postgres` system user (via runuser) and the data directory is
// owned by that user. When that user cannot reach the data directory (a
// checkout in /root, or in a private temporary directory), the server keeps
// its data in a shared fallback directory instead, /var/tmp/alignet-pg-<hash
// of the data directory>, as scripts/postgres.sh does: the same data
// directory always maps to the same fallback, so the data survives restarts.
package localpg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults applied by Start to zero Config fields.
const (
	// DefaultDataDir is the data directory used when Config.DataDir is empty.
	DefaultDataDir = "alignet-data/postgres"
	// DefaultPort is the TCP port used when Config.Port is zero. It differs
	// from the test server's port (55432) so both can run at once.
	DefaultPort = 55433
	// Database is the database Start creates and URL points at.
	Database = "alignet"
	// superuser is the database superuser created by initdb.
	superuser = "postgres"
	// osUser is the system user the server runs as when the caller is root.
	osUser = "postgres"
	// FallbackRoot is the directory that holds the fallback data
	// directories of servers whose own one osUser cannot reach.
	FallbackRoot = "/var/tmp"
)

// Config configures a local server. The zero value is usable.
type Config struct {
	// DataDir holds the cluster (DataDir/data), the unix socket directory
	// (DataDir/run) and the server log (DataDir/postgres.log). It is
	// created when missing. Default: DefaultDataDir, relative to the
	// working directory. As root, when the postgres user cannot reach it,
	// FallbackDir(DataDir) is used instead (Server.Dir tells).
	DataDir string
	// Port is the TCP port the server listens on at 127.0.0.1.
	// Default: DefaultPort. A server already running on DataDir keeps
	// the port it was started with.
	Port int
	// Logger receives progress messages. Default: a logger that discards.
	Logger *slog.Logger
}

// Server is a running local PostgreSQL server.
type Server struct {
	bin     string
	dir     string
	data    string
	port    int
	runUser string
	log     *slog.Logger
}

// Start makes sure a server is running on cfg.DataDir and returns it. It runs
// initdb when the directory holds no cluster, reuses a server that is already
// running on the directory, waits until the server accepts connections and
// creates the database Database when missing.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("localpg: data dir %q: %w", cfg.DataDir, err)
	}
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	s := &Server{
		bin:  bin,
		dir:  dir,
		data: filepath.Join(dir, "data"),
		port: cfg.Port,
		log:  cfg.Logger,
	}
	if err := s.prepareDir(ctx); err != nil {
		return nil, err
	}
	s.log = s.log.With("dir", s.dir)
	if port, ok := s.runningPort(ctx); ok {
		if port != s.port {
			s.log.Warn("reusing server on a different port", "want", s.port, "port", port)
			s.port = port
		}
		s.log.Info("reusing running postgres", "port", s.port)
	} else {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("localpg: port %d is already in use by another process", s.port)
		}
		if err := s.initdb(ctx); err != nil {
			return nil, err
		}
		if err := s.start(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.ensureDatabase(ctx); err != nil {
		return nil, err
	}
	s.log.Info("postgres ready", "url", s.URL())
	return s, nil
}

// Dir returns the directory that holds the cluster: Config.DataDir, or its
// fallback directory when the postgres user cannot reach it.
func (s *Server) Dir() string { return s.dir }

// FallbackDir returns the directory used instead of the data directory dir
// when the postgres user cannot reach it: FallbackRoot/alignet-pg- and the
// first 12 hex digits of the SHA-256 of dir and a newline (the same name
// scripts/postgres.sh derives, so both find one instance).
func FallbackDir(dir string) string {
	sum := sha256.Sum256([]byte(dir + "\n"))
	return filepath.Join(FallbackRoot, "alignet-pg-"+hex.EncodeToString(sum[:])[:12])
}

// URL returns the connection URL of the database Database.
func (s *Server) URL() string {
	return s.url(Database)
}

// Stop shuts the server down with pg_ctl's fast mode (open sessions are
// disconnected, then the server checkpoints and exits) and waits for it.
// It also stops a server that Start reused.
func (s *Server) Stop(ctx context.Context) error {
	out, err := s.run(ctx, "pg_ctl", "-D", s.data, "-m", "fast", "-w", "-t", "60", "stop")
	if err != nil {
		return fmt.Errorf("localpg: stop: %w: %s", err, bytes.TrimSpace(out))
	}
	s.log.Info("postgres stopped")
	return nil
}

// FindBinaries returns the directory holding initdb, pg_ctl and postgres,
// looked up in PATH and then in /usr/lib/postgresql/*/bin (newest version
// first). Its error tells how to install them.
func FindBinaries() (string, error) {
	complete := func(d string) bool {
		for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
			if fi, err := os.Stat(filepath.Join(d, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && complete(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		return version(dirs[i]) > version(dirs[j])
	})
	for _, d := range dirs {
		if complete(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("localpg: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in PATH or /usr/lib/postgresql/*/bin; run `make run` (it installs them) or `apt-get install -y postgresql`: %w", exec.ErrNotFound)
}

// version extracts the major version from /usr/lib/postgresql/N/bin.
func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func (s *Server) url(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, s.port, db)
}

// prepareDir creates the directory and, as root, hands it to the postgres
// user, switching to the fallback directory when that user cannot reach it.
func (s *Server) prepareDir(ctx context.Context) error {
	if os.Geteuid() != 0 {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return fmt.Errorf("localpg: create data dir: %w", err)
		}
		return nil
	}
	u, err := user.Lookup(osUser)
	if err != nil {
		return fmt.Errorf("localpg: running as root needs the %q system user (apt-get install -y postgresql creates it): %w", osUser, err)
	}
	s.runUser = osUser
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	created := false
	if _, err := os.Stat(s.dir); errors.Is(err, fs.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("localpg: create data dir: %w", err)
	}
	if err := os.Lchown(s.dir, uid, gid); err != nil {
		return fmt.Errorf("localpg: chown data dir to %s: %w", osUser, err)
	}
	if _, err := s.run(ctx, "", "test", "-w", s.dir); err == nil {
		return chownTree(s.dir, uid, gid)
	}
	// A parent directory is closed to the postgres user.
	alt := FallbackDir(s.dir)
	s.log.Warn("the postgres user cannot reach the data dir; keeping the cluster in the fallback dir", "data_dir", s.dir, "fallback", alt)
	if created {
		_ = os.Remove(s.dir) // leave nothing behind that is never used
	}
	if err := os.Mkdir(alt, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("localpg: create fallback dir: %w", err)
	}
	// FallbackRoot is shared: the directory must be a real directory of
	// ours (root's or the postgres user's), not planted by someone else.
	fi, err := os.Lstat(alt)
	if err != nil {
		return fmt.Errorf("localpg: fallback dir: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || (st.Uid != 0 && int(st.Uid) != uid) {
		return fmt.Errorf("localpg: fallback dir %s exists but is not a directory owned by root or %s; remove it", alt, osUser)
	}
	if err := os.Chmod(alt, 0o700); err != nil {
		return fmt.Errorf("localpg: fallback dir: %w", err)
	}
	s.dir, s.data = alt, filepath.Join(alt, "data")
	return chownTree(alt, uid, gid)
}

// chownTree gives dir and everything below it to uid:gid.
func chownTree(dir string, uid, gid int) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("localpg: chown data dir to %s: %w", osUser, err)
	}
	return nil
}

// runningPort reports whether a server is running on the data directory and
// the port it listens on.
func (s *Server) runningPort(ctx context.Context) (int, bool) {
	pidFile, err := os.ReadFile(filepath.Join(s.data, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	if _, err := s.run(ctx, "pg_ctl", "-D", s.data, "status"); err != nil {
		return 0, false
	}
	// Line 4 of postmaster.pid is the port.
	lines := strings.Split(string(pidFile), "\n")
	if len(lines) < 4 {
		return 0, false
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err != nil {
		return 0, false
	}
	return port, true
}

func (s *Server) initdb(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(s.data, "PG_VERSION")); err == nil {
		return nil
	}
	s.log.Info("creating postgres cluster", "bin", s.bin)
	if err := os.RemoveAll(s.data); err != nil {
		return fmt.Errorf("localpg: clear incomplete cluster: %w", err)
	}
	// --no-sync skips initdb's slow file-by-file fsync; one syncfs below
	// makes the new cluster durable all the same.
	out, err := s.run(ctx, "initdb", "-D", s.data, "-U", superuser, "--auth=trust",
		"-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	if err != nil {
		return fmt.Errorf("localpg: initdb: %w: %s", err, tail(out, 20))
	}
	if out, err := s.run(ctx, "", "sync", "-f", s.data); err != nil {
		return fmt.Errorf("localpg: sync new cluster: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func (s *Server) start(ctx context.Context) error {
	sock := filepath.Join(s.dir, "run")
	if len(sock)+len("/.s.PGSQL.65535") > 107 {
		return fmt.Errorf("localpg: data dir path too long for a unix socket: %s", sock)
	}
	if _, err := s.run(ctx, "", "mkdir", "-p", sock); err != nil {
		return fmt.Errorf("localpg: create socket dir: %w", err)
	}
	logFile := filepath.Join(s.dir, "postgres.log")
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k '%s' -c max_connections=200", s.port, sock)
	s.log.Info("starting postgres", "port", s.port)
	out, err := s.run(ctx, "pg_ctl", "-D", s.data, "-l", logFile, "-w", "-t", "60", "-o", opts, "start")
	if err != nil {
		logTail, _ := os.ReadFile(logFile)
		return fmt.Errorf("localpg: pg_ctl start: %w: %s\n%s", err, bytes.TrimSpace(out), tail(logTail, 20))
	}
	return nil
}

// ensureDatabase waits until the server accepts connections and creates the
// database Database when missing.
func (s *Server) ensureDatabase(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var conn *pgx.Conn
	for {
		var err error
		conn, err = pgx.Connect(ctx, s.url("postgres"))
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("localpg: server does not accept connections: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer conn.Close(context.Background())
	var exists bool
	err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", Database).Scan(&exists)
	if err != nil {
		return fmt.Errorf("localpg: look up database: %w", err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{Database}.Sanitize()); err != nil {
		return fmt.Errorf("localpg: create database %s: %w", Database, err)
	}
	return nil
}

// run runs a tool from the binary directory (or, with tool "", the command
// args[0] from PATH) as the server's user and returns its combined output.
func (s *Server) run(ctx context.Context, tool string, args ...string) ([]byte, error) {
	if tool != "" {
		args = append([]string{filepath.Join(s.bin, tool)}, args...)
	}
	if s.runUser != "" {
		args = append([]string{"runuser", "-u", s.runUser, "--"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	// The server's user may not be able to enter the caller's directory.
	cmd.Dir = s.dir
	// Own process group: a terminal's Ctrl-C goes to alignet, which then
	// stops the server in order, rather than straight to postgres.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The daemon must not keep our output pipe open; do not wait on it.
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil && errors.Is(err, exec.ErrWaitDelay) {
		err = nil
	}
	return out.Bytes(), err
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
