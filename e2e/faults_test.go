package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alignet/alignet/client"
	"github.com/alignet/alignet/internal/localpg"
)

// load is a set of simulated clients that post judgments with unique ids
// until stopped, retrying each batch with the SAME ids, as pages do, until
// it is acknowledged: after a 503 (honouring Retry-After), a connection
// error or a dropped response.
type load struct {
	t        *testing.T
	c        *client.Client
	study    string
	pool     []string
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	accepted []string
	retries  atomic.Int64 // batches posted again after a failure
	status   sync.Map     // HTTP status → count of failed attempts
	failed   error
}

// startLoad starts workers clients posting batches of 1 to 5 judgments.
func startLoad(t *testing.T, c *client.Client, study string, pool []string, workers int) *load {
	l := &load{t: t, c: c, study: study, pool: pool, stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go l.worker(w)
	}
	return l
}

func (l *load) worker(w int) {
	defer l.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(w), 11))
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		default:
		}
		js := make([]client.Judgment, 1+rng.IntN(5))
		for i := range js {
			a := rng.Perm(len(l.pool))[:3]
			tri := []string{l.pool[a[0]], l.pool[a[1]], l.pool[a[2]]}
			js[i] = client.Judgment{ID: fmt.Sprintf("w%d-%d-%d", w, n, i), Worker: fmt.Sprintf("w%d", w),
				Items: tri, Odd: tri[rng.IntN(3)], RTMs: 800}
		}
		if !l.post(js) {
			return
		}
		time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
	}
}

// post sends js until it is accepted, retrying for up to two minutes. It
// reports false when the load should end.
func (l *load) post(js []client.Judgment) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			l.retries.Add(1)
		}
		actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := l.c.PostJudgments(actx, l.study, js)
		acancel()
		if err == nil {
			l.mu.Lock()
			for _, j := range js {
				l.accepted = append(l.accepted, j.ID)
			}
			l.mu.Unlock()
			return true
		}
		var ae *client.Error
		wait := 200 * time.Millisecond
		if errors.As(err, &ae) {
			v, _ := l.status.LoadOrStore(ae.Status, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			if !ae.Temporary() {
				l.fail(fmt.Errorf("batch %s refused for good: %w", js[0].ID, err))
				return false
			}
			if ae.RetryAfter > 0 {
				wait = min(ae.RetryAfter, 2*time.Second)
			}
		}
		if time.Now().After(deadline) {
			l.fail(fmt.Errorf("batch %s not accepted within 2 minutes: %w", js[0].ID, err))
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

func (l *load) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed == nil {
		l.failed = err
	}
}

// count returns how many judgments were accepted so far.
func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

// waitFor waits until n more judgments than now were accepted.
func (l *load) waitFor(n int, timeout time.Duration) {
	l.t.Helper()
	want := l.count() + n
	deadline := time.Now().Add(timeout)
	for l.count() < want {
		if time.Now().After(deadline) {
			l.t.Fatalf("load: %d of %d judgments accepted after %v (err %v)", l.count(), want, timeout, l.failed)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// end stops the clients, waits for their last batches and returns the
// accepted ids.
func (l *load) end() []string {
	l.t.Helper()
	close(l.stop)
	l.wg.Wait()
	if l.failed != nil {
		l.t.Fatal(l.failed)
	}
	return l.accepted
}

// statuses summarises the failed attempts by HTTP status.
func (l *load) statuses() map[int]int64 {
	out := map[int]int64{}
	l.status.Range(func(k, v any) bool {
		out[k.(int)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// privateBroker starts a Kafka broker of its own, so stopping it disturbs
// no other test, and returns its address and a function running
// scripts/kafka.sh actions on it.
func privateBroker(t *testing.T) (string, func(action string)) {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	port, ctrl := freePort(t), freePort(t)
	script := filepath.Join(repo, "scripts", "kafka.sh")
	kafka := func(action string) {
		t.Helper()
		cmd := exec.Command("bash", script, action)
		cmd.Env = append(os.Environ(), fmt.Sprintf("KAFKA_PORT=%d", port), fmt.Sprintf("KAFKA_CONTROLLER_PORT=%d", ctrl))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kafka.sh %s: %v\n%s", action, err, out)
		}
	}
	kafka("start")
	t.Cleanup(func() { kafka("stop") })
	return fmt.Sprintf("127.0.0.1:%d", port), kafka
}

// TestPostgresRestartUnderLoad stops Postgres for ten seconds while clients
// post: the API keeps accepting (Kafka buffers), the persister recovers by
// itself, and exactly the accepted judgments are stored, once each.
func TestPostgresRestartUnderLoad(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	pgCfg := localpg.Config{DataDir: t.TempDir(), Port: freePort(t), Logger: slog.New(slog.DiscardHandler)}
	pg, err := localpg.Start(ctx, pgCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pg != nil {
			_ = pg.Stop(context.Background())
		}
	})
	s := newStackOn(t, e, pg.URL(), e.brokers)
	p := s.start("api,persister")
	waitReady(t, p.url())
	c := client.New(p.url(), s.adminKey, nil)
	pool := seedStudy(t, c, "pgdown", 30)

	l := startLoad(t, c, "pgdown", pool, 8)
	l.waitFor(500, time.Minute)
	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	down := l.count()
	time.Sleep(10 * time.Second)
	acceptedWhileDown := l.count() - down
	if pg, err = localpg.Start(ctx, pgCfg); err != nil {
		t.Fatal(err)
	}
	l.waitFor(500, time.Minute)
	accepted := l.end()
	if acceptedWhileDown == 0 {
		t.Fatalf("the API accepted nothing while Postgres was down (failed attempts %v)", l.statuses())
	}
	s.waitCount("pgdown", int64(len(accepted)), 2*time.Minute)
	checkExactlyOnce(t, s, "pgdown", accepted)
	t.Logf("accepted %d judgments (%d while Postgres was down), %d batches retried, failed attempts by status %v",
		len(accepted), acceptedWhileDown, l.retries.Load(), l.statuses())
}

// TestBrokerRestartUnderLoad stops the broker while clients post: they get
// 503 with Retry-After and retry with the same judgment ids, the API
// recovers by itself once the broker is back, and every accepted judgment
// is stored exactly once.
func TestBrokerRestartUnderLoad(t *testing.T) {
	e := setup(t)
	brokers, kafka := privateBroker(t)
	s := newStack(t, e, brokers)
	p := s.start("api,persister")
	waitReady(t, p.url())
	c := client.New(p.url(), s.adminKey, nil)
	pool := seedStudy(t, c, "kafkadown", 30)

	l := startLoad(t, c, "kafkadown", pool, 8)
	l.waitFor(500, time.Minute)
	kafka("stop")
	time.Sleep(3 * time.Second)
	kafka("start")
	l.waitFor(500, 2*time.Minute)
	accepted := l.end()
	if l.statuses()[http.StatusServiceUnavailable] == 0 {
		t.Fatalf("no client saw a 503 while the broker was down (failed attempts %v)", l.statuses())
	}
	s.waitCount("kafkadown", int64(len(accepted)), 2*time.Minute)
	checkExactlyOnce(t, s, "kafkadown", accepted)
	t.Logf("accepted %d judgments, %d batches retried, failed attempts by status %v",
		len(accepted), l.retries.Load(), l.statuses())
}

// TestAPIKilledUnderLoad kills the API process with SIGKILL while clients
// post and starts it again on the same address: clients retry what was not
// acknowledged, and every accepted judgment is stored exactly once.
func TestAPIKilledUnderLoad(t *testing.T) {
	e := setup(t)
	s := newStack(t, e, e.brokers)
	persister := s.start("persister")
	_ = persister
	api := s.start("api")
	waitReady(t, api.url())
	c := client.New(api.url(), s.adminKey, nil)
	pool := seedStudy(t, c, "apikill", 30)

	l := startLoad(t, c, "apikill", pool, 8)
	l.waitFor(500, time.Minute)
	api.kill()
	time.Sleep(time.Second)
	s.startAt("api", api.addr)
	l.waitFor(500, time.Minute)
	accepted := l.end()
	if l.retries.Load() == 0 {
		t.Fatal("no batch had to be retried: the kill did not hit the load")
	}
	s.waitCount("apikill", int64(len(accepted)), 2*time.Minute)
	checkExactlyOnce(t, s, "apikill", accepted)
	t.Logf("accepted %d judgments, %d batches retried, failed attempts by status %v",
		len(accepted), l.retries.Load(), l.statuses())
}
