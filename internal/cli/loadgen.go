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

func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("loadgen", "Drive a running server with simulated workers posting odd-one-out judgments; report throughput and latency, optionally the teacher's freshness and the learner's lag, then verify that every accepted judgment was stored.", stdout)
	var f importFlags
	f.bind(fs)
	workers := fs.Int("workers", 64, "concurrent simulated workers, each with one request in flight")
	total := fs.Int("judgments", 100000, "judgments to send in all")
	batchFlag := fs.Lookup("batch")
	batchFlag.Usage, batchFlag.DefValue = "judgments per request (1 = single-judgment POSTs)", "1"
	f.batch = 1
	items := fs.Int("items", 1000, "size of the study's item pool")
	study := fs.String("study", "", "study to create and load (default: a fresh loadgen-<time> study)")
	wait := fs.Duration("verify-timeout", 2*time.Minute, "how long to wait for every accepted judgment to be stored")
	seed := fs.Uint64("seed", 1, "random seed for the simulated choices")
	rate := fs.Float64("rate", 0, "target judgments per second over all workers (0: as fast as they go)")
	fresh := fs.Bool("freshness", false, "measure how fast accepted judgments reach the teacher (needs the learner role): poll GET .../teacher while posting")
	poll := fs.Duration("poll", 20*time.Millisecond, "with --freshness, how often the teacher is polled")
	sample := fs.Int("sample", 10, "with --freshness, measure every N-th request")
	freshWait := fs.Duration("freshness-timeout", time.Minute, "with --freshness, how long to wait after posting for the learner to catch up")
	dim := fs.Int("dim", 8, "with --freshness, dimension of the random embeddings uploaded for the pool")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Placeholder("study", "ID")
	fs.Example(`alignet loadgen --workers 64 --judgments 100000 --key "$(cat alignet-data/admin.key)"`,
		`alignet loadgen --freshness --rate 3000 --judgments 180000 --key "$(cat alignet-data/admin.key)"`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	if *workers < 1 || *total < 1 || *items < 3 {
		return errors.New("--workers, --judgments must be positive and --items at least 3")
	}
	if *rate < 0 || *poll <= 0 || *sample < 1 || *dim < 1 {
		return errors.New("--rate must not be negative, --poll positive, and --sample and --dim at least 1")
	}
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	if *study == "" {
		*study = "loadgen-" + runID
	}
	pool := make([]string, *items)
	for i := range pool {
		pool[i] = "item-" + strconv.Itoa(i)
	}
	space, spaceDim := "loadgen", 8
	if *fresh {
		// The learner trains only on items with embeddings.
		space, spaceDim = "loadgen-"+strconv.Itoa(*dim), *dim
	}
	if err := c.PutSpace(ctx, space, spaceDim); err != nil {
		return fmt.Errorf("create space: %w", err)
	}
	if *fresh {
		rng := rand.New(rand.NewPCG(*seed, 0xe3b))
		vecs := make([]float32, len(pool)**dim)
		for i := range vecs {
			vecs[i] = float32(rng.NormFloat64())
		}
		if _, err := c.UploadEmbeddings(ctx, space, pool, vecs, *dim); err != nil {
			return fmt.Errorf("upload embeddings: %w", err)
		}
	}
	if err := c.CreateStudy(ctx, *study, "odd-one-out", space); err != nil {
		return fmt.Errorf("create study: %w", err)
	}
	if _, err := c.AddItems(ctx, *study, pool); err != nil {
		return fmt.Errorf("add items: %w", err)
	}
	before, err := c.Study(ctx, *study)
	if err != nil {
		return fmt.Errorf("read study: %w", err)
	}

	rep := loadReport{Study: *study, Workers: *workers, Batch: f.batch, TargetRate: *rate}
	nreq := (*total + f.batch - 1) / f.batch
	var next atomic.Int64
	var accepted, errs, sent atomic.Int64
	var probe *freshnessProbe
	stopProbe := func() {}
	if *fresh {
		probe = newFreshnessProbe(c, *study, *poll, accepted.Load)
		if err := probe.start(ctx); err != nil {
			return fmt.Errorf("read the teacher: %w", err)
		}
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); probe.run(pctx) }()
		stopProbe = func() { cancel(); <-done }
	}
	lat := make([][]time.Duration, *workers)
	bar := progress.New(stderr, "loadgen", int64(*total))
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(*seed, uint64(w)))
			worker := "lg-worker-" + strconv.Itoa(w)
			for {
				r := int(next.Add(1) - 1)
				if r >= nreq || ctx.Err() != nil {
					return
				}
				if *rate > 0 { // request r is due once r batches' worth of time passed
					due := start.Add(time.Duration(float64(r*f.batch) / *rate * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
							return
						}
					}
				}
				lo := r * f.batch
				hi := min(lo+f.batch, *total)
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
				if f.batch == 1 {
					ack, err = c.PostJudgment(ctx, *study, js[0])
				} else {
					ack, err = c.PostJudgments(ctx, *study, js)
				}
				acked := time.Now()
				lat[w] = append(lat[w], acked.Sub(t0))
				sent.Add(int64(len(js)))
				if err != nil {
					errs.Add(1)
					continue
				}
				accepted.Add(int64(len(js)))
				if probe != nil && r%*sample == 0 && !ack.ReceivedAt.IsZero() {
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
	rep.Sent, rep.Accepted, rep.Errors, rep.Requests = sent.Load(), accepted.Load(), errs.Load(), int64(len(all))
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
	want := before.Judgments + rep.Accepted
	deadline := time.Now().Add(*wait)
	for {
		s, err := c.Study(ctx, *study)
		if err == nil {
			rep.Stored = s.Judgments - before.Judgments
			if s.Judgments >= want {
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rep.PersistLagSeconds = time.Since(start.Add(elapsed)).Seconds()
	// The probe kept polling meanwhile; now it waits for the learner to
	// reflect every sample.
	if probe != nil {
		stopProbe()
		probe.drain(ctx, *freshWait)
		fr := probe.report()
		rep.Freshness = &fr
	}
	rep.Verified = rep.Stored == rep.Accepted && rep.Errors == 0
	if fr := rep.Freshness; fr != nil && (fr.Resolved < fr.Samples || fr.FinalLag > 0) {
		rep.Verified = false
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, `study               %s
workers × batch     %d × %d
judgments accepted  %d of %d sent (%d failed requests)
throughput          %.0f judgments/s (%.0f requests/s) over %.2fs
latency             p50 %.2f ms   p99 %.2f ms   max %.2f ms
stored              %d (persistence lag after the last ack: %.2fs)
`, rep.Study, rep.Workers, rep.Batch, rep.Accepted, rep.Sent, rep.Errors, rep.JudgmentsPerSec, rep.RequestsPerSec, rep.Seconds,
			rep.P50Millis, rep.P99Millis, rep.MaxMillis, rep.Stored, rep.PersistLagSeconds)
		if fr := rep.Freshness; fr != nil {
			fmt.Fprintf(stdout, `freshness           p50 %.0f ms   p99 %.0f ms   max %.0f ms (202 → teacher state, %d of %d sampled, polled every %.0f ms)
  on server clock   p50 %.0f ms   p99 %.0f ms (updated_at − received_at)
learner lag         p50 %d   p99 %d   max %d judgments while posting; %d at the end
`, fr.P50Millis, fr.P99Millis, fr.MaxMillis, fr.Resolved, fr.Samples, fr.PollMillis, fr.ServerP50Millis, fr.ServerP99Millis,
				fr.LagP50, fr.LagP99, fr.LagMax, fr.FinalLag)
		}
		fmt.Fprintf(stdout, "verified            %v\n", rep.Verified)
	}
	if !rep.Verified {
		if fr := rep.Freshness; fr != nil && (fr.Resolved < fr.Samples || fr.FinalLag > 0) {
			return fmt.Errorf("verification failed: the teacher reflects %d of %d sampled requests and lags %d judgments after %s",
				fr.Resolved, fr.Samples, fr.FinalLag, *freshWait)
		}
		return fmt.Errorf("verification failed: %d accepted, %d stored, %d failed requests", rep.Accepted, rep.Stored, rep.Errors)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func pct(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return ms(sorted[i])
}
