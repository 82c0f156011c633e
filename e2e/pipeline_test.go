package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alignet/alignet/client"
)

// postConcurrently posts total judgments with ids prefix-0..total-1 from
// workers goroutines in batches of varying size (1 to maxBatch). It returns
// the ids the server accepted with 202.
func postConcurrently(t *testing.T, c *client.Client, study string, pool []string, prefix string, total, workers, maxBatch int, progress *atomic.Int64) []string {
	t.Helper()
	ctx := context.Background()
	var next atomic.Int64
	var mu sync.Mutex
	var accepted []string
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				size := 1
				if maxBatch > 1 && rng.IntN(4) > 0 {
					size = 1 + rng.IntN(maxBatch)
				}
				lo := int(next.Add(int64(size))) - size
				if lo >= total {
					return
				}
				hi := min(lo+size, total)
				js := make([]client.Judgment, 0, hi-lo)
				for i := lo; i < hi; i++ {
					a := rng.Perm(len(pool))[:3]
					tri := []string{pool[a[0]], pool[a[1]], pool[a[2]]}
					js = append(js, client.Judgment{ID: fmt.Sprintf("%s-%d", prefix, i), Worker: fmt.Sprintf("w%d", w), Items: tri, Odd: tri[rng.IntN(3)], RTMs: 900})
				}
				var err error
				for attempt := 0; attempt < 20; attempt++ {
					_, err = c.PostJudgments(ctx, study, js)
					var ae *client.Error
					if err == nil || !errors.As(err, &ae) || !ae.Temporary() {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mu.Lock()
				for _, j := range js {
					accepted = append(accepted, j.ID)
				}
				mu.Unlock()
				if progress != nil {
					progress.Add(int64(len(js)))
				}
			}
		}(w)
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("posting judgments: %v", firstErr)
	}
	return accepted
}

// checkExactlyOnce asserts that exactly the accepted ids are stored, once each.
func checkExactlyOnce(t *testing.T, s *stack, study string, accepted []string) {
	t.Helper()
	ids, n := s.storedIDs(study)
	if n != int64(len(accepted)) {
		t.Fatalf("stored %d rows for %d accepted judgments", n, len(accepted))
	}
	for _, id := range accepted {
		if ids[id] != 1 {
			t.Fatalf("judgment %s stored %d times", id, ids[id])
		}
	}
}

func TestHundredThousandJudgmentsStoredExactlyOnce(t *testing.T) {
	e := setup(t)
	s := newStack(t, e, e.brokers)
	api := s.start("api")
	s.start("persister")
	waitReady(t, api.url())
	c := client.New(api.url(), s.adminKey, nil)
	pool := seedStudy(t, c, "hundredk", 500)

	const total = 100_000
	accepted := postConcurrently(t, c, "hundredk", pool, "h", total, 32, 200, nil)
	if len(accepted) != total {
		t.Fatalf("accepted %d of %d", len(accepted), total)
	}
	s.waitCount("hundredk", total, 2*time.Minute)
	checkExactlyOnce(t, s, "hundredk", accepted)
}

func TestPersisterKilledMidStream(t *testing.T) {
	e := setup(t)
	s := newStack(t, e, e.brokers)
	api := s.start("api")
	persister := s.start("persister")
	waitReady(t, api.url())
	c := client.New(api.url(), s.adminKey, nil)
	pool := seedStudy(t, c, "crash", 500)

	const total = 100_000
	var posted atomic.Int64
	done := make(chan []string, 1)
	go func() { done <- postConcurrently(t, c, "crash", pool, "c", total, 32, 200, &posted) }()

	// Kill the persister without warning once part of the stream is stored.
	deadline := time.Now().Add(2 * time.Minute)
	for s.count("crash") < total/5 {
		if time.Now().After(deadline) {
			t.Fatal("persister never got a fifth of the stream stored")
		}
		time.Sleep(20 * time.Millisecond)
	}
	persister.kill()
	killedAt := s.count("crash")
	time.Sleep(time.Second)
	if after := s.count("crash"); after != killedAt {
		t.Fatalf("rows kept appearing after the persister was killed: %d then %d", killedAt, after)
	}
	s.start("persister")

	accepted := <-done
	if len(accepted) != total {
		t.Fatalf("accepted %d of %d", len(accepted), total)
	}
	t.Logf("killed persister at %d stored of %d posted", killedAt, posted.Load())
	s.waitCount("crash", total, 3*time.Minute)
	checkExactlyOnce(t, s, "crash", accepted)
}

func TestDuplicateBatchStoresNothingTwice(t *testing.T) {
	e := setup(t)
	s := newStack(t, e, e.brokers)
	api := s.start("api,persister")
	waitReady(t, api.url())
	c := client.New(api.url(), s.adminKey, nil)
	pool := seedStudy(t, c, "dups", 20)
	ctx := context.Background()

	batch := make([]client.Judgment, 300)
	for i := range batch {
		tri := []string{pool[i%20], pool[(i+1)%20], pool[(i+2)%20]}
		batch[i] = client.Judgment{ID: fmt.Sprintf("dup-%d", i), Worker: "w", Items: tri, Odd: tri[0], RTMs: 1000}
	}
	for round := 0; round < 3; round++ {
		res, err := c.PostJudgments(ctx, "dups", batch)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if res.Accepted != len(batch) {
			t.Fatalf("round %d: accepted %d", round, res.Accepted)
		}
	}
	// A later batch proves the persister has moved past all re-posts.
	marker := []client.Judgment{{ID: "marker", Worker: "w", Items: []string{pool[0], pool[1], pool[2]}, Odd: pool[2]}}
	if _, err := c.PostJudgments(ctx, "dups", marker); err != nil {
		t.Fatal(err)
	}
	s.waitCount("dups", int64(len(batch)+1), time.Minute)
	time.Sleep(500 * time.Millisecond)
	var ids []string
	for _, j := range batch {
		ids = append(ids, j.ID)
	}
	checkExactlyOnce(t, s, "dups", append(ids, "marker"))
}

func TestBrokerDownAnswers503AndAcceptsNothing(t *testing.T) {
	e := setup(t)
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// A private broker, so stopping it does not disturb other tests.
	port := freePort(t)
	script := filepath.Join(repo, "scripts", "kafka.sh")
	kafka := func(action string) {
		t.Helper()
		cmd := exec.Command("bash", script, action)
		cmd.Env = append(os.Environ(), fmt.Sprintf("KAFKA_PORT=%d", port), fmt.Sprintf("KAFKA_CONTROLLER_PORT=%d", freePort(t)))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kafka.sh %s: %v\n%s", action, err, out)
		}
	}
	kafka("start")
	t.Cleanup(func() { kafka("stop") })
	brokers := fmt.Sprintf("127.0.0.1:%d", port)

	s := newStack(t, e, brokers)
	api := s.start("api,persister")
	waitReady(t, api.url())
	c := client.New(api.url(), s.adminKey, nil)
	pool := seedStudy(t, c, "outage", 10)
	ctx := context.Background()
	post := func(id string) error {
		_, err := c.PostJudgment(ctx, "outage", client.Judgment{ID: id, Worker: "w", Items: pool[:3], Odd: pool[1], RTMs: 700})
		return err
	}
	if err := post("before"); err != nil {
		t.Fatalf("post with broker up: %v", err)
	}
	s.waitCount("outage", 1, time.Minute)

	kafka("stop")
	var rejected []string
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("during-%d", i)
		err := post(id)
		var ae *client.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
			t.Fatalf("post with broker down: got %v, want 503", err)
		}
		if ae.RetryAfter <= 0 {
			t.Fatalf("503 without a Retry-After header: %+v", ae)
		}
		rejected = append(rejected, id)
	}
	resp, err := http.Get(api.url() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with broker down = %d, want 503", resp.StatusCode)
	}

	kafka("start")
	waitReady(t, api.url())
	var afterErr error
	for i := 0; i < 100; i++ {
		if afterErr = post("after"); afterErr == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if afterErr != nil {
		t.Fatalf("post after broker restart: %v", afterErr)
	}
	s.waitCount("outage", 2, time.Minute)
	ids, _ := s.storedIDs("outage")
	for _, id := range rejected {
		if ids[id] != 0 {
			t.Fatalf("judgment %s was answered 503 but stored", id)
		}
	}
	if ids["before"] != 1 || ids["after"] != 1 {
		t.Fatalf("stored ids = %v", ids)
	}
}

func TestImportThings(t *testing.T) {
	e := setup(t)
	dir := filepath.Join("..", "..", "shared", "data", "things")
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		t.Skip("shared THINGS data missing")
	}
	s := newStack(t, e, e.brokers)
	api := s.start("api,persister")
	waitReady(t, api.url())
	const limit = 20000
	run := func() string {
		cmd := exec.Command(e.bin, "import", "things", "--dir", dir, "--limit", fmt.Sprint(limit), "--server", api.url(), "--key", s.adminKey)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("import: %v\n%s", err, out)
		}
		return string(out)
	}
	out := run()
	if !strings.Contains(out, "THINGS imported") {
		t.Fatalf("unexpected output:\n%s", out)
	}
	s.waitCount("things", limit, time.Minute)
	// Importing again is idempotent.
	run()
	time.Sleep(2 * time.Second)
	if n := s.count("things"); n != limit {
		t.Fatalf("after re-import, %d judgments stored, want %d", n, limit)
	}
	var emb int64
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM embeddings WHERE space = 'clip-vit-b32'").Scan(&emb); err != nil {
		t.Fatal(err)
	}
	if emb != 1854 {
		t.Fatalf("stored %d embeddings, want 1854", emb)
	}
	// The THINGS file's k column is the odd one out and must arrive as such.
	var odd, itemC string
	if err := s.pool.QueryRow(context.Background(), "SELECT odd, item_c FROM judgments WHERE study='things' ORDER BY id LIMIT 1").Scan(&odd, &itemC); err != nil {
		t.Fatal(err)
	}
	if odd != itemC {
		t.Fatalf("odd %q is not the third item %q", odd, itemC)
	}
}
