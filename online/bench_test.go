package online

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/stream"
)

// benchStudy returns a loaded study of n items in d dimensions (random
// embeddings) with default settings, and its item ids.
func benchStudy(tb testing.TB, l *Learner, n, d int) (*study, []string) {
	rng := rand.New(rand.NewPCG(3, 4))
	sp := &space{dim: d, index: map[string]int32{}, x: make([]float32, n*d), has: make([]bool, n)}
	for r := range n {
		it := fmt.Sprintf("item%05d", r)
		sp.items = append(sp.items, it)
		sp.index[it] = int32(r)
		sp.has[r] = true
		for c := range d {
			sp.x[r*d+c] = float32(rng.NormFloat64())
		}
	}
	meta := alignet.Study{ID: "bench", Task: alignet.TaskOddOneOut, Space: "s", Settings: alignet.DefaultStudySettings()}
	meta.Settings.Learner.Refits = false
	return newStudy(meta, sp, nil, nil, l.cfg), sp.items
}

// benchMessages encodes count judgments over items as messages of per.
func benchMessages(tb testing.TB, items []string, count, per int) []kafka.Message {
	rng := rand.New(rand.NewPCG(5, 6))
	now := time.Now().UTC()
	var msgs []kafka.Message
	for lo := 0; lo < count; lo += per {
		js := make([]alignet.Judgment, 0, per)
		for a := lo; a < min(lo+per, count); a++ {
			var it [3]string
			for {
				i, j, k := rng.IntN(len(items)), rng.IntN(len(items)), rng.IntN(len(items))
				if i != j && i != k && j != k {
					it = [3]string{items[i], items[j], items[k]}
					break
				}
			}
			js = append(js, alignet.Judgment{
				ID: fmt.Sprintf("b%08d", a), Study: "bench", Task: alignet.TaskOddOneOut,
				Worker: "w", Items: it, Odd: it[rng.IntN(3)], ReceivedAt: now,
			})
		}
		m, err := stream.EncodeBatch("bench", js)
		if err != nil {
			tb.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// BenchmarkAbsorb measures the judgments per second one partition absorbs
// with online steps on a THINGS-sized study (1,854 items × 512): decoding
// the Kafka messages, deduplication, the held-out gate, prequential
// scoring and Adam steps on the fresh judgments plus 1,024 replayed ones,
// batched as under load (up to MaxFresh per step). Run with
//
//	go test ./online -run '^$' -bench Absorb -benchtime 200000x
func BenchmarkAbsorb(b *testing.B) {
	l, err := New(Config{Brokers: []string{"unused:9092"}}, nilStore{})
	if err != nil {
		b.Fatal(err)
	}
	s, items := benchStudy(b, l, 1854, 512)
	msgs := benchMessages(b, items, b.N, 100)
	p := newPartition(l, 0, nil)
	p.studies[s.id] = s
	ctx := context.Background()
	b.ResetTimer()
	for i, m := range msgs {
		m.Offset = int64(i)
		js, err := stream.DecodeBatch(m)
		if err := p.handle(ctx, fetched{msg: m, js: js, err: err}); err != nil {
			b.Fatal(err)
		}
	}
	p.stepAll()
	b.StopTimer()
	if s.st.JudgmentsSeen != int64(b.N) {
		b.Fatalf("applied %d of %d", s.st.JudgmentsSeen, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "judgments/s")
}

// nilStore is a Store for benchmarks that never reach the database.
type nilStore struct{ Store }

// BenchmarkRefitTHINGS times one refit on 90% of the THINGS triplets
// (1,854 × 512 CLIP embeddings, file order; 10% of those held out by the
// study's share), on one worker as the learner runs it, with hard targets
// and with the default uncertainty distillation (the record has repeated
// triplets). Run with
//
//	go test ./online -run '^$' -bench RefitTHINGS -benchtime 1x -timeout 30m
func BenchmarkRefitTHINGS(b *testing.B) {
	th := loadThings(b)
	fed, other := th.split()
	now := time.Now().UTC()
	js := make([]alignet.Judgment, len(fed))
	for a, i := range fed {
		js[a] = th.judgment("things", i, now)
	}
	for _, distill := range []bool{false, true} {
		b.Run(fmt.Sprintf("distill=%v", distill), func(b *testing.B) {
			l := memLearner(b, Config{})
			l.store = recordStore{js: js}
			sp := &space{dim: th.d, index: map[string]int32{}, x: th.x, has: make([]bool, th.n), items: th.concepts}
			for r, c := range th.concepts {
				sp.index[c] = int32(r)
				sp.has[r] = true
			}
			set := alignet.DefaultStudySettings()
			set.Learner.Distill = distill
			var res jobResult
			for range b.N {
				res = l.runJob(context.Background(), job{study: "things", task: alignet.TaskOddOneOut, roles: roles{settings: set}, sp: sp, fit: true, seen: int64(len(js))})
				if res.err != nil {
					b.Fatal(res.err)
				}
			}
			st := alignet.TeacherState{Params: modelfile.ParamsOf(res.teacher, alignet.TaskOddOneOut)}
			b.ReportMetric(res.duration.Seconds(), "s/refit")
			b.ReportMetric(100*accuracyOn(th, st, other), "%acc_other10")
			b.Logf("targets %s, λ=%g τ=%.3f, %d training + %d held-out judgments", res.targets, res.teacher.Lambda, res.teacher.Tau, len(res.train), len(res.held))
		})
	}
}

// BenchmarkTenStudies loads ten THINGS-sized studies (1,854 × 512 random
// embeddings) into one partition and feeds each 113,000 judgments, so
// that every replay buffer holds them all, then reports the process's
// peak resident set (VmHWM, which includes the benchmark's own encoded
// messages) and the Go heap in use by the loaded studies. Run with
//
//	go test ./online -run '^$' -bench TenStudies -benchtime 1x
func BenchmarkTenStudies(b *testing.B) {
	l := memLearner(b, Config{})
	p := newPartition(l, 0, nil)
	ctx := context.Background()
	for k := range 10 {
		s, items := benchStudy(b, l, 1854, 512)
		s.id = fmt.Sprintf("bench%d", k)
		p.studies[s.id] = s
		for _, m := range benchMessages(b, items, 113000, 500) {
			js, err := stream.DecodeBatch(m)
			if err != nil {
				b.Fatal(err)
			}
			for i := range js {
				js[i].Study = s.id
			}
			if err := p.handle(ctx, fetched{msg: m, js: js}); err != nil {
				b.Fatal(err)
			}
		}
		p.stepAll()
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(peakRSS(b))/(1<<20), "MiB_peak_rss")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "MiB_heap")
	runtime.KeepAlive(p)
}

// peakRSS returns VmHWM of /proc/self/status in bytes.
func peakRSS(tb testing.TB) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmHWM")
	return 0
}

// BenchmarkFreshness measures, against real Kafka and Postgres, the time
// from a judgment's acceptance (its ReceivedAt, set as the API sets it just
// before publishing) to the first moment the stored teacher state of a
// THINGS-sized study reflects it, at about 1,000 single-judgment messages
// per second from 8 publishers. Run with
//
//	scripts/test.sh -run '^$' -bench Freshness -benchtime 1x ./online/
func BenchmarkFreshness(b *testing.B) {
	brokers := realBrokers(b)
	d := newDB(b)
	topic := newTopic(b, brokers, 1)
	s := newSynth(1854, 512, 12)
	createStudy(b, d, s, "f", alignet.TaskOddOneOut, `{"learner":{"refits":false}}`, nil)
	prod := newProducer(b, brokers, topic)
	run := startLearner(b, Config{Brokers: brokers, Topic: topic, Group: uniqueName(b, "g")}, d)
	defer func() {
		mfs, _ := run.reg.Gather()
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if h := m.GetHistogram(); h != nil {
					b.Logf("%s %v: n=%d mean=%.4fs", mf.GetName(), m.GetLabel(), h.GetSampleCount(), h.GetSampleSum()/float64(h.GetSampleCount()))
				}
			}
		}
	}()
	publish(b, prod, s.judgments("f", alignet.TaskOddOneOut, "warm", 200, 1), 200)
	waitFor(b, time.Minute, "warm-up", func() bool { return state(b, d, "f").JudgmentsSeen == 200 })
	const publishers, perPublisher, every = 8, 1250, 8 * time.Millisecond
	accepted := make(chan time.Time, publishers*perPublisher)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var lat []float64
	done := make(chan struct{})
	go func() {
		defer close(done)
		var queue []time.Time
		var newest time.Time
		for {
			select {
			case t := <-accepted:
				queue = append(queue, t)
				continue
			default:
			}
			if err := d.Pool().QueryRow(ctx, `SELECT coalesce(newest_accepted_at, 'epoch') FROM teacher_state WHERE study = 'f'`).Scan(&newest); err != nil {
				return
			}
			now := time.Now()
			kept := queue[:0]
			for _, t := range queue {
				if !newest.Before(t.Truncate(time.Microsecond)) {
					lat = append(lat, now.Sub(t).Seconds())
				} else {
					kept = append(kept, t)
				}
			}
			queue = kept
			if len(lat) == publishers*perPublisher {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			js := s.judgments("f", alignet.TaskOddOneOut, fmt.Sprintf("p%d", w), perPublisher, uint64(100+w))
			tick := time.NewTicker(every)
			defer tick.Stop()
			for i := range js {
				<-tick.C
				js[i].ReceivedAt = time.Now().UTC().Truncate(time.Microsecond)
				if err := prod.Publish(ctx, "f", js[i:i+1]); err != nil {
					b.Error(err)
					return
				}
				accepted <- js[i].ReceivedAt
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatal("the stored state did not catch up")
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(lat[len(lat)/2], "s_p50")
	b.ReportMetric(lat[len(lat)*99/100], "s_p99")
	b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "judgments/s")
}
