// Package e2e runs the alignet binary against a real Postgres and a real
// Apache Kafka broker, started by scripts/test.sh, and checks the whole
// judgment path end to end.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/alignet/alignet/client"
	"github.com/alignet/alignet/internal/testenv"
)

// env holds what every test needs: the built binary and the services.
type env struct {
	bin     string
	dbURL   string
	brokers string
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// setup returns the environment or skips (fails under CI=true) when the
// real services are not configured.
func setup(t *testing.T) env {
	t.Helper()
	dbURL, brokers := testenv.DatabaseURL(t), strings.Join(testenv.KafkaBrokers(t), ",")
	if testing.Short() {
		t.Skip("end-to-end tests skipped in -short mode")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "alignet-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "alignet")
		cmd := exec.Command("go", "build", "-o", buildBin, "../cmd/alignet")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return env{bin: buildBin, dbURL: dbURL, brokers: brokers}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
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

// stack is one isolated deployment: its own schema, topics and keys.
type stack struct {
	t        *testing.T
	env      env
	schema   string
	dbURL    string
	brokers  string
	topic    string
	adminKey string
	pseudo   string
	pool     *pgxpool.Pool
}

// newStack creates a fresh schema and topic names for one test, on the
// test database.
func newStack(t *testing.T, e env, brokers string) *stack {
	t.Helper()
	return newStackOn(t, e, e.dbURL, brokers)
}

// newStackOn is newStack on the Postgres at dbURL.
func newStackOn(t *testing.T, e env, dbURL, brokers string) *stack {
	t.Helper()
	e.dbURL = dbURL
	ctx := context.Background()
	s := &stack{
		t: t, env: e, brokers: brokers,
		schema:   "e2e_" + randHex(6),
		topic:    "e2e." + randHex(6),
		adminKey: "alg_admin_" + randHex(16),
		pseudo:   randHex(16),
	}
	admin, err := pgxpool.New(ctx, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+s.schema); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	u, err := url.Parse(e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", s.schema)
	u.RawQuery = q.Encode()
	s.dbURL = u.String()
	if s.pool, err = pgxpool.New(ctx, s.dbURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.pool.Close()
		p, err := pgxpool.New(context.Background(), e.dbURL)
		if err == nil {
			_, _ = p.Exec(context.Background(), "DROP SCHEMA "+s.schema+" CASCADE")
			p.Close()
		}
	})
	return s
}

// proc is a running alignet process.
type proc struct {
	cmd  *exec.Cmd
	addr string
	done chan error
	log  *os.File
}

// start launches `alignet serve` with the given roles on a free port and
// waits until it answers /healthz. env are extra VAR=value settings.
func (s *stack) start(roles string, env ...string) *proc {
	s.t.Helper()
	return s.startAt(roles, fmt.Sprintf("127.0.0.1:%d", freePort(s.t)), env...)
}

// startEnv is start with extra environment variables.
func (s *stack) startEnv(roles string, extra ...string) *proc {
	s.t.Helper()
	return s.startAt(roles, fmt.Sprintf("127.0.0.1:%d", freePort(s.t)), extra...)
}

// startAt is start listening on addr, with extra environment variables.
func (s *stack) startAt(roles, addr string, extra ...string) *proc {
	t := s.t
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "alignet-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.env.bin, "serve")
	cmd.Env = append(os.Environ(),
		"ALIGNET_LISTEN="+addr,
		"DATABASE_URL="+s.dbURL,
		"KAFKA_BROKERS="+s.brokers,
		"ALIGNET_ADMIN_KEY="+s.adminKey,
		"ALIGNET_PSEUDONYM_KEY="+s.pseudo,
		"ALIGNET_ROLES="+roles,
		"ALIGNET_KAFKA_TOPIC="+s.topic,
		"ALIGNET_KAFKA_DLQ_TOPIC="+s.topic+".dlq",
		"ALIGNET_KAFKA_GROUP="+s.topic+".persister",
		"ALIGNET_LOG_LEVEL=info",
	)
	cmd.Env = append(cmd.Env, extra...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, addr: addr, done: make(chan error, 1), log: logf}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		p.stop(10 * time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("alignet %s log (tail):\n%s", roles, tail(string(b), 4000))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case err := <-p.done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("alignet exited early: %v\n%s", err, tail(string(b), 4000))
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("alignet did not become healthy\n%s", tail(string(b), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a graceful exit.
func (p *proc) stop(timeout time.Duration) error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("did not stop within %v", timeout)
	}
}

// kill ends the process abruptly, as a crash would.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	err := <-p.done
	p.done <- err
}

func (p *proc) url() string { return "http://" + p.addr }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitReady waits for /readyz to answer 200.
func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s/readyz never answered 200", base)
}

// seedStudy creates a space, an odd-one-out study and an item pool.
func seedStudy(t *testing.T, c *client.Client, study string, items int) []string {
	t.Helper()
	ctx := context.Background()
	if err := c.PutSpace(ctx, "e2e", 4); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateStudy(ctx, study, "odd-one-out", "e2e"); err != nil {
		t.Fatal(err)
	}
	pool := make([]string, items)
	for i := range pool {
		pool[i] = fmt.Sprintf("item-%04d", i)
	}
	if _, err := c.AddItems(ctx, study, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// storedIDs returns the judgment ids stored for study and the row count.
func (s *stack) storedIDs(study string) (map[string]int, int64) {
	s.t.Helper()
	ctx := context.Background()
	rows, err := s.pool.Query(ctx, "SELECT id FROM judgments WHERE study = $1", study)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	ids := map[string]int{}
	var n int64
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			s.t.Fatal(err)
		}
		ids[id]++
		n++
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return ids, n
}

// count returns the number of stored judgments of study.
func (s *stack) count(study string) int64 {
	var n int64
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM judgments WHERE study = $1", study).Scan(&n); err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return 0
		}
		s.t.Fatal(err)
	}
	return n
}

// waitCount waits until study has want stored judgments, failing if it
// overshoots or times out.
func (s *stack) waitCount(study string, want int64, timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var n int64
	for time.Now().Before(deadline) {
		n = s.count(study)
		if n == want {
			return
		}
		if n > want {
			s.t.Fatalf("stored %d judgments, more than the %d sent", n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("after %v, %d of %d judgments stored", timeout, n, want)
}
