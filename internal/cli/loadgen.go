package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alignet/alignet/client"
	"github.com/alignet/alignet/internal/cmdline"
	"github.com/alignet/alignet/internal/progress"
)

// loadReport is what loadgen measured.
type loadReport struct {
	Study             string  `json:"study"`
	Workers           int     `json:"workers"`
	Batch             int     `json:"batch"`
	Sent              int64   `json:"judgments_sent"`
	Accepted          int64   `json:"judgments_accepted"`
	Requests          int64   `json:"requests"`
	Errors            int64   `json:"errors"`
	Seconds           float64 `json:"seconds"`
	JudgmentsPerSec   float64 `json:"judgments_per_second"`
	RequestsPerSec    float64 `json:"requests_per_second"`
	P50Millis         float64 `json:"latency_p50_ms"`
	P99Millis         float64 `json:"latency_p99_ms"`
	MaxMillis         float64 `json:"latency_max_ms"`
	Stored            int64   `json:"judgments_stored"`
	PersistLagSeconds float64 `json:"persist_lag_seconds"`
	Verified          bool    `json:"verified"`
	// TargetRate is --rate (0: as fast as the workers go).
	TargetRate float64 `json:"target_rate,omitempty"`
	// Freshness is measured with --freshness.
	Freshness *freshnessReport `json:"freshness,omitempty"`
}

// loadConfig is what one load run does; runLoadgen reads it from flags.
type loadConfig struct {
	Workers, Total, Batch, Items int
	// Study is created and loaded; Dim is the dimension of the random
	// embeddings uploaded for its pool with Freshness.
	Study string
	Dim   int
	Seed  uint64
	// Rate is the target judgments per second (0: as fast as they go).
	Rate float64
	// VerifyTimeout bounds the wait for every accepted judgment to be stored.
	VerifyTimeout time.Duration
	// Freshness polls the teacher every Poll, measuring every Sample-th
	// request, and waits up to FreshnessTimeout for the learner at the end.
	Freshness        bool
	Poll             time.Duration
	Sample           int
	FreshnessTimeout time.Duration
	// Accepted, when set, counts the judgments accepted so far (for a caller
	// watching the run).
	Accepted *atomic.Int64
	// Prepare, when set, is called once the study, its items (and
	// embeddings) exist, before the first judgment is posted.
	Prepare func(ctx context.Context, study, space string) error
}

func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("loadgen", "Drive a running server and report throughput and latency, then verify that every accepted judgment was stored. Mode judgments: simulated workers post odd-one-out judgments, optionally measuring the teacher's freshness and the learner's lag. Mode sessions: simulated participants run full sessions (open, next, answer, repeat until complete, then a new participant), with GET next paced to --rate.", stdout)
	mode := fs.String("mode", "judgments", "judgments or sessions")
	duration := fs.Duration("duration", 30*time.Second, "sessions mode: how long to measure")
	warmup := fs.Duration("warmup", 3*time.Second, "sessions mode: load before measuring")
	participants := fs.Int("participants", 256, "sessions mode: concurrent participants")
	perNext := fs.Int("n", 1, "sessions mode: queries per GET next")
	answerBatch := fs.Int("answer-batch", 200, "sessions mode: most answers per judgments POST, gathered across participants")
	answerPosts := fs.Int("answer-posts", 4, "sessions mode: judgments POSTs in flight")
	var f importFlags
	f.bind(fs)
	var lc loadConfig
	fs.IntVar(&lc.Workers, "workers", 64, "concurrent simulated workers, each with one request in flight")
	fs.IntVar(&lc.Total, "judgments", 100000, "judgments to send in all")
	batchFlag := fs.Lookup("batch")
	batchFlag.Usage, batchFlag.DefValue = "judgments per request (1 = single-judgment POSTs)", "1"
	f.batch = 1
	fs.IntVar(&lc.Items, "items", 1000, "size of the study's item pool")
	fs.StringVar(&lc.Study, "study", "", "study to create and load (default: a fresh loadgen-<time> study)")
	fs.DurationVar(&lc.VerifyTimeout, "verify-timeout", 2*time.Minute, "how long to wait for every accepted judgment to be stored")
	fs.Uint64Var(&lc.Seed, "seed", 1, "random seed for the simulated choices")
	fs.Float64Var(&lc.Rate, "rate", 0, "target judgments per second over all workers, or in sessions mode GET next requests per second over all participants (0: as fast as they go)")
	fs.BoolVar(&lc.Freshness, "freshness", false, "measure how fast accepted judgments reach the teacher (needs the learner role): poll GET .../teacher while posting")
	fs.DurationVar(&lc.Poll, "poll", 20*time.Millisecond, "with --freshness, how often the teacher is polled")
	fs.IntVar(&lc.Sample, "sample", 10, "with --freshness, measure every N-th request")
	fs.DurationVar(&lc.FreshnessTimeout, "freshness-timeout", time.Minute, "with --freshness, how long to wait after posting for the learner to catch up")
	fs.IntVar(&lc.Dim, "dim", 8, "with --freshness and in sessions mode, dimension of the random embeddings uploaded for the pool")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Placeholder("study", "ID")
	fs.Example(`alignet loadgen --workers 64 --judgments 100000 --key "$(cat alignet-data/admin.key)"`,
		`alignet loadgen --freshness --rate 3000 --judgments 180000 --key "$(cat alignet-data/admin.key)"`,
		`alignet loadgen --mode sessions --rate 5000 --items 1854 --dim 64 --duration 30s --key "$(cat alignet-data/admin.key)"`)
	fs.Placeholder("mode", "MODE")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	switch *mode {
	case "judgments":
	case "sessions":
		if *participants < 1 || *perNext < 1 || *answerBatch < 1 || *answerBatch > 1000 || *answerPosts < 1 || lc.Items < 3 || lc.Dim < 1 || lc.Rate < 0 || *duration <= 0 {
			return errors.New("sessions mode needs positive --participants, --n, --answer-posts, --dim and --duration, --answer-batch in [1, 1000], --items at least 3 and --rate ≥ 0")
		}
		return runSessionLoad(ctx, c, sessionLoad{study: lc.Study, items: lc.Items, dim: lc.Dim, participants: *participants, n: *perNext,
			rate: lc.Rate, duration: *duration, warmup: *warmup, answerBatch: *answerBatch, answerPosts: *answerPosts,
			seed: lc.Seed, verifyWait: lc.VerifyTimeout}, stdout, stderr, *asJSON)
	default:
		return fmt.Errorf("--mode must be judgments or sessions, got %q", *mode)
	}
	lc.Batch = f.batch
	rep, err := generateLoad(ctx, c, lc, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.print(stdout)
	}
	return rep.verifyErr(lc.FreshnessTimeout)
}

// generateLoad creates cfg.Study with its pool (and embeddings with
// Freshness), posts cfg.Total judgments, and waits until they are stored
// (and, with Freshness, reflected by the teacher). A report that does not
// verify is no error: see loadReport.verifyErr.
func generateLoad(ctx context.Context, c *client.Client, cfg loadConfig, stderr io.Writer) (loadReport, error) {
	if cfg.Workers < 1 || cfg.Total < 1 || cfg.Items < 3 || cfg.Batch < 1 {
		return loadReport{}, errors.New("--workers, --judgments and --batch must be positive and --items at least 3")
	}
	if cfg.Rate < 0 || cfg.Freshness && (cfg.Poll <= 0 || cfg.Sample < 1 || cfg.Dim < 1) {
		return loadReport{}, errors.New("--rate must not be negative, --poll positive, and --sample and --dim at least 1")
	}
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	if cfg.Study == "" {
		cfg.Study = "loadgen-" + runID
	}
	pool := make([]string, cfg.Items)
	for i := range pool {
		pool[i] = "item-" + strconv.Itoa(i)
	}
	space, spaceDim := "loadgen", 8
	if cfg.Freshness {
		// The learner trains only on items with embeddings.
		space, spaceDim = "loadgen-"+strconv.Itoa(cfg.Dim), cfg.Dim
	}
	if err := c.PutSpace(ctx, space, spaceDim); err != nil {
		return loadReport{}, fmt.Errorf("create space: %w", err)
	}
	if cfg.Freshness {
		rng := rand.New(rand.NewPCG(cfg.Seed, 0xe3b))
		vecs := make([]float32, len(pool)*cfg.Dim)
		for i := range vecs {
			vecs[i] = float32(rng.NormFloat64())
		}
		if _, err := c.UploadEmbeddings(ctx, space, pool, vecs, cfg.Dim); err != nil {
			return loadReport{}, fmt.Errorf("upload embeddings: %w", err)
		}
	}
	if err := c.CreateStudy(ctx, cfg.Study, "odd-one-out", space); err != nil {
		return loadReport{}, fmt.Errorf("create study: %w", err)
	}
	if _, err := c.AddItems(ctx, cfg.Study, pool); err != nil {
		return loadReport{}, fmt.Errorf("add items: %w", err)
	}
	if cfg.Prepare != nil {
		if err := cfg.Prepare(ctx, cfg.Study, space); err != nil {
			return loadReport{}, err
		}
	}
	before, err := c.Study(ctx, cfg.Study)
	if err != nil {
		return loadReport{}, fmt.Errorf("read study: %w", err)
	}

	rep := loadReport{Study: cfg.Study, Workers: cfg.Workers, Batch: cfg.Batch, TargetRate: cfg.Rate}
	nreq := (cfg.Total + cfg.Batch - 1) / cfg.Batch
	var next atomic.Int64
	var errs, sent atomic.Int64
	accepted := cfg.Accepted
	if accepted == nil {
		accepted = new(atomic.Int64)
	}
	accepted0 := accepted.Load()
	var probe *freshnessProbe
	stopProbe := func() {}
	if cfg.Freshness {
		probe = newFreshnessProbe(c, cfg.Study, cfg.Poll, func() int64 { return accepted.Load() - accepted0 })
		if err := probe.start(ctx); err != nil {
			return loadReport{}, fmt.Errorf("read the teacher: %w", err)
		}
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); probe.run(pctx) }()
		stopProbe = func() { cancel(); <-done }
	}
	lat := make([][]time.Duration, cfg.Workers)
	bar := progress.New(stderr, "loadgen", int64(cfg.Total))
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
			worker := "lg-worker-" + strconv.Itoa(w)
			for {
				r := int(next.Add(1) - 1)
				if r >= nreq || ctx.Err() != nil {
					return
				}
				if cfg.Rate > 0 { // request r is due once r batches' worth of time passed
					due := start.Add(time.Duration(float64(r*cfg.Batch) / cfg.Rate * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
							return
						}
					}
				}
				lo := r * cfg.Batch
				hi := min(lo+cfg.Batch, cfg.Total)
				js := make([]client.Judgment, 0, hi-lo)
				for i := lo; i < hi; i++ {
					a := rng.IntN(len(pool))
					b := (a + 1 + rng.IntN(len(pool)-1)) % len(pool)
					c := rng.IntN(len(pool))
					for c == a || c == b {
						c = rng.IntN(len(pool))
					}
					tri := []string{pool[a], pool[b], pool[c]}
					js = append(js, client.Judgment{
						ID: "lg-" + runID + "-" + strconv.Itoa(i), Worker: worker,
						Items: tri, Odd: tri[rng.IntN(3)], RTMs: 500 + rng.IntN(3000),
					})
				}
				t0 := time.Now()
				var err error
				var ack client.Accepted
				if cfg.Batch == 1 {
					ack, err = c.PostJudgment(ctx, cfg.Study, js[0])
				} else {
					ack, err = c.PostJudgments(ctx, cfg.Study, js)
				}
				acked := time.Now()
				lat[w] = append(lat[w], acked.Sub(t0))
				sent.Add(int64(len(js)))
				if err != nil {
					errs.Add(1)
					continue
				}
				accepted.Add(int64(len(js)))
				if probe != nil && r%cfg.Sample == 0 && !ack.ReceivedAt.IsZero() {
					probe.add(acked, ack.ReceivedAt)
				}
				bar.Add(int64(len(js)))
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	bar.Finish()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	rep.Sent, rep.Accepted, rep.Errors, rep.Requests = sent.Load(), accepted.Load()-accepted0, errs.Load(), int64(len(all))
	rep.Seconds = elapsed.Seconds()
	rep.JudgmentsPerSec = float64(rep.Accepted) / rep.Seconds
	rep.RequestsPerSec = float64(rep.Requests) / rep.Seconds
	rep.P50Millis, rep.P99Millis = pct(all, 0.50), pct(all, 0.99)
	if len(all) > 0 {
		rep.MaxMillis = ms(all[len(all)-1])
	}
	if probe != nil {
		probe.stopPosting()
	}

	// Verification: every accepted judgment must be stored exactly once.
	rep.Stored = waitStored(ctx, c, cfg.Study, before.Judgments, rep.Accepted, cfg.VerifyTimeout, 20*time.Millisecond)
	rep.PersistLagSeconds = time.Since(start.Add(elapsed)).Seconds()
	// The probe kept polling meanwhile; now it waits for the learner to
	// reflect every sample.
	if probe != nil {
		stopProbe()
		probe.drain(ctx, cfg.FreshnessTimeout)
		fr := probe.report()
		rep.Freshness = &fr
	}
	rep.Verified = rep.Stored == rep.Accepted && rep.Errors == 0
	if fr := rep.Freshness; fr != nil && (fr.Resolved < fr.Samples || fr.FinalLag > 0) {
		rep.Verified = false
	}
	return rep, nil
}

// print writes rep as text.
func (rep loadReport) print(w io.Writer) {
	fmt.Fprintf(w, `study               %s
workers × batch     %d × %d
judgments accepted  %d of %d sent (%d failed requests)
throughput          %.0f judgments/s (%.0f requests/s) over %.2fs
latency             p50 %.2f ms   p99 %.2f ms   max %.2f ms
stored              %d (persistence lag after the last ack: %.2fs)
`, rep.Study, rep.Workers, rep.Batch, rep.Accepted, rep.Sent, rep.Errors, rep.JudgmentsPerSec, rep.RequestsPerSec, rep.Seconds,
		rep.P50Millis, rep.P99Millis, rep.MaxMillis, rep.Stored, rep.PersistLagSeconds)
	if fr := rep.Freshness; fr != nil {
		fmt.Fprintf(w, `freshness           p50 %.0f ms   p99 %.0f ms   max %.0f ms (202 → teacher state, %d of %d sampled, polled every %.0f ms)
  on server clock   p50 %.0f ms   p99 %.0f ms (updated_at − received_at)
learner lag         p50 %d   p99 %d   max %d judgments while posting; %d at the end
`, fr.P50Millis, fr.P99Millis, fr.MaxMillis, fr.Resolved, fr.Samples, fr.PollMillis, fr.ServerP50Millis, fr.ServerP99Millis,
			fr.LagP50, fr.LagP99, fr.LagMax, fr.FinalLag)
	}
	fmt.Fprintf(w, "verified            %v\n", rep.Verified)
}

// verifyErr explains why rep did not verify, or returns nil;
// freshnessTimeout is how long the learner was waited for.
func (rep loadReport) verifyErr(freshnessTimeout time.Duration) error {
	if rep.Verified {
		return nil
	}
	if fr := rep.Freshness; fr != nil && (fr.Resolved < fr.Samples || fr.FinalLag > 0) {
		return fmt.Errorf("verification failed: the teacher reflects %d of %d sampled requests and lags %d judgments after %s",
			fr.Resolved, fr.Samples, fr.FinalLag, freshnessTimeout)
	}
	return fmt.Errorf("verification failed: %d accepted, %d stored, %d failed requests", rep.Accepted, rep.Stored, rep.Errors)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func pct(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return ms(sorted[i])
}

// waitStored polls the study until it holds want judgments more than base,
// or timeout passes, and returns how many more it holds.
func waitStored(ctx context.Context, c *client.Client, study string, base, want int64, timeout, poll time.Duration) int64 {
	var stored int64
	deadline := time.Now().Add(timeout)
	for {
		s, err := c.Study(ctx, study)
		if err == nil {
			stored = s.Judgments - base
			if stored >= want {
				return stored
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return stored
		}
		time.Sleep(poll)
	}
}
