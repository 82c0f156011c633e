package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alignet/alignet/client"
)

// sessionLoad configures loadgen's sessions mode.
type sessionLoad struct {
	study        string
	items, dim   int
	participants int
	n            int
	rate         float64
	duration     time.Duration
	warmup       time.Duration
	answerBatch  int
	answerPosts  int
	seed         uint64
	verifyWait   time.Duration
}

// latencyStats summarise one kind of request.
type latencyStats struct {
	Count     int     `json:"count"`
	PerSecond float64 `json:"per_second"`
	P50Millis float64 `json:"p50_ms"`
	P99Millis float64 `json:"p99_ms"`
	P999      float64 `json:"p999_ms"`
	MaxMillis float64 `json:"max_ms"`
}

func summarise(ds []time.Duration, seconds float64) latencyStats {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	s := latencyStats{Count: len(ds), P50Millis: pct(ds, 0.50), P99Millis: pct(ds, 0.99), P999: pct(ds, 0.999)}
	if len(ds) > 0 {
		s.MaxMillis = ms(ds[len(ds)-1])
	}
	if seconds > 0 {
		s.PerSecond = float64(len(ds)) / seconds
	}
	return s
}

// sessionReport is what loadgen's sessions mode measured.
type sessionReport struct {
	Study             string       `json:"study"`
	Participants      int          `json:"participants"`
	QueriesPerNext    int          `json:"queries_per_next"`
	AnswerBatch       int          `json:"answer_batch"`
	TargetNextRate    float64      `json:"target_next_rate"`
	Seconds           float64      `json:"seconds"`
	Next              latencyStats `json:"next"`
	Open              latencyStats `json:"open"`
	AnswerPosts       latencyStats `json:"answer_posts"`
	SessionsOpened    int64        `json:"sessions_opened"`
	SessionsCompleted int64        `json:"sessions_completed"`
	QueriesServed     int64        `json:"queries_served"`
	JudgmentsAccepted int64        `json:"judgments_accepted"`
	Errors            int64        `json:"errors"`
	Stored            int64        `json:"judgments_stored"`
	Verified          bool         `json:"verified"`
}

// answerReq is one participant's answers waiting for a batch post.
type answerReq struct {
	js   []client.Judgment
	done chan error
}

// recorder keeps request latencies after the warm-up, per goroutine.
type recorder struct {
	mu      sync.Mutex
	from    time.Time
	samples []time.Duration
}

func (r *recorder) add(start time.Time, d time.Duration) {
	if start.Before(r.from) {
		return
	}
	r.mu.Lock()
	r.samples = append(r.samples, d)
	r.mu.Unlock()
}

// runSessionLoad drives full participant sessions: open, then next and
// answer until the session is complete, then a new participant. next
// requests are paced to the target rate across all participants; answers
// are gathered across participants into batch posts of up to answerBatch
// judgments (as a page gateway would), and each participant waits for its
// answers to be accepted before asking for more.
func runSessionLoad(ctx context.Context, c *client.Client, cfg sessionLoad, stdout, stderr io.Writer, asJSON bool) error {
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	if cfg.study == "" {
		cfg.study = "loadgen-sessions-" + runID
	}
	space := "loadgen-" + strconv.Itoa(cfg.dim) + "d"
	ids := make([]string, cfg.items)
	vecs := make([]float32, cfg.items*cfg.dim)
	rng := rand.New(rand.NewPCG(cfg.seed, 0))
	for i := range ids {
		ids[i] = "item-" + strconv.Itoa(i)
	}
	for i := range vecs {
		vecs[i] = float32(rng.NormFloat64() / 4)
	}
	if err := c.PutSpace(ctx, space, cfg.dim); err != nil {
		return fmt.Errorf("create space: %w", err)
	}
	if _, err := c.UploadEmbeddings(ctx, space, ids, vecs, cfg.dim); err != nil {
		return fmt.Errorf("upload embeddings: %w", err)
	}
	if err := c.CreateStudy(ctx, cfg.study, "odd-one-out", space); err != nil {
		return fmt.Errorf("create study: %w", err)
	}
	if _, err := c.AddItems(ctx, cfg.study, ids); err != nil {
		return fmt.Errorf("add items: %w", err)
	}
	before, err := c.Study(ctx, cfg.study)
	if err != nil {
		return fmt.Errorf("read study: %w", err)
	}
	// One session first, so the study's engine (pool, scores, repeats) is
	// loaded before the clock starts.
	if _, err := c.OpenSession(ctx, cfg.study, "lg-"+runID+"-warm", "generic", nil); err != nil {
		return fmt.Errorf("open a first session: %w", err)
	}

	fmt.Fprintf(stderr, "loadgen: %d participants in study %s for %s after a %s warm-up\n", cfg.participants, cfg.study, cfg.duration, cfg.warmup)
	start := time.Now()
	end := start.Add(cfg.warmup + cfg.duration)
	nextLat, openLat, postLat := &recorder{from: start.Add(cfg.warmup)}, &recorder{from: start.Add(cfg.warmup)}, &recorder{from: start.Add(cfg.warmup)}
	var opened, completed, served, accepted, errs atomic.Int64
	answers := make(chan answerReq, cfg.participants)
	var posters sync.WaitGroup
	posters.Go(func() {
		batchAnswers(ctx, c, cfg, answers, postLat, &accepted, &errs)
	})
	var slot atomic.Int64
	var interval time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.rate)
	}
	pace := func() {
		if interval == 0 {
			return
		}
		due := start.Add(time.Duration(slot.Add(1)-1) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
	}
	var wg sync.WaitGroup
	for p := range cfg.participants {
		wg.Go(func() {
			// Arrivals are spread over the warm-up, so that sessions do not
			// open and complete in lockstep.
			time.Sleep(time.Duration(p) * cfg.warmup / time.Duration(cfg.participants))
			prng := rand.New(rand.NewPCG(cfg.seed, uint64(p)+1))
			for k := 0; time.Now().Before(end) && ctx.Err() == nil; k++ {
				worker := fmt.Sprintf("lg-%s-%d-%d", runID, p, k)
				t0 := time.Now()
				s, err := c.OpenSession(ctx, cfg.study, worker, "generic", nil)
				openLat.add(t0, time.Since(t0))
				if err != nil {
					errs.Add(1)
					continue
				}
				opened.Add(1)
				for time.Now().Before(end) && ctx.Err() == nil {
					pace()
					t0 := time.Now()
					nx, err := c.Next(ctx, cfg.study, s.ID, cfg.n)
					nextLat.add(t0, time.Since(t0))
					if err != nil {
						errs.Add(1)
						break
					}
					if nx.Complete {
						completed.Add(1)
						break
					}
					served.Add(int64(len(nx.Queries)))
					js := make([]client.Judgment, len(nx.Queries))
					for i, q := range nx.Queries {
						js[i] = client.Judgment{Worker: worker, Items: q.Items[:], Odd: q.Items[prng.IntN(3)],
							RTMs: 500 + prng.IntN(3000), QueryID: q.QueryID}
					}
					done := make(chan error, 1)
					answers <- answerReq{js: js, done: done}
					if err := <-done; err != nil {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	close(answers)
	posters.Wait()
	elapsed := time.Since(start) - cfg.warmup
	secs := elapsed.Seconds()
	rep := sessionReport{
		Study: cfg.study, Participants: cfg.participants, QueriesPerNext: cfg.n, AnswerBatch: cfg.answerBatch,
		TargetNextRate: cfg.rate, Seconds: secs,
		Next: summarise(nextLat.samples, secs), Open: summarise(openLat.samples, secs), AnswerPosts: summarise(postLat.samples, secs),
		SessionsOpened: opened.Load(), SessionsCompleted: completed.Load(), QueriesServed: served.Load(),
		JudgmentsAccepted: accepted.Load(), Errors: errs.Load(),
	}
	rep.Stored = waitStored(ctx, c, cfg.study, before.Judgments, rep.JudgmentsAccepted, cfg.verifyWait, 50*time.Millisecond)
	rep.Verified = rep.Stored == rep.JudgmentsAccepted && rep.Errors == 0
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		line := func(name string, s latencyStats) {
			fmt.Fprintf(stdout, "%-18s %8d  %7.0f/s   p50 %6.2f ms   p99 %6.2f ms   p99.9 %6.2f ms   max %7.2f ms\n",
				name, s.Count, s.PerSecond, s.P50Millis, s.P99Millis, s.P999, s.MaxMillis)
		}
		fmt.Fprintf(stdout, "study              %s (%d participants, n=%d, answers in batches of %d, target %.0f next/s, %.1fs measured)\n",
			rep.Study, rep.Participants, rep.QueriesPerNext, rep.AnswerBatch, rep.TargetNextRate, rep.Seconds)
		line("GET next", rep.Next)
		line("POST sessions", rep.Open)
		line("POST judgments", rep.AnswerPosts)
		fmt.Fprintf(stdout, "sessions           %d opened, %d completed\nqueries            %d served, %d judgments accepted, %d errors\nstored             %d\nverified           %v\n",
			rep.SessionsOpened, rep.SessionsCompleted, rep.QueriesServed, rep.JudgmentsAccepted, rep.Errors, rep.Stored, rep.Verified)
	}
	if !rep.Verified {
		return fmt.Errorf("verification failed: %d accepted, %d stored, %d errors", rep.JudgmentsAccepted, rep.Stored, rep.Errors)
	}
	return nil
}

// batchAnswers posts the participants' answers in batches of up to
// cfg.answerBatch judgments, at most cfg.answerPosts at once, flushing a
// partial batch after 2 ms, and tells each participant how its post went.
func batchAnswers(ctx context.Context, c *client.Client, cfg sessionLoad, in <-chan answerReq, lat *recorder, accepted, errs *atomic.Int64) {
	sem := make(chan struct{}, cfg.answerPosts)
	var wg sync.WaitGroup
	post := func(reqs []answerReq) {
		var js []client.Judgment
		for _, r := range reqs {
			js = append(js, r.js...)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			t0 := time.Now()
			_, err := c.PostJudgments(ctx, cfg.study, js)
			lat.add(t0, time.Since(t0))
			if err != nil {
				errs.Add(1)
			} else {
				accepted.Add(int64(len(js)))
			}
			for _, r := range reqs {
				r.done <- err
			}
		})
	}
	var pending []answerReq
	size := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case r, ok := <-in:
			if !ok {
				if len(pending) > 0 {
					post(pending)
				}
				wg.Wait()
				return
			}
			if len(pending) == 0 {
				timer.Reset(2 * time.Millisecond)
			}
			pending = append(pending, r)
			size += len(r.js)
			if size >= cfg.answerBatch {
				timer.Stop()
				post(pending)
				pending, size = nil, 0
			}
		case <-timer.C:
			if len(pending) > 0 {
				post(pending)
				pending, size = nil, 0
			}
		}
	}
}
