package online

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
	"github.com/alignet/alignet/internal/testenv"
	"github.com/alignet/alignet/stream"
)

// The db package implements the learner's store.
var _ Store = (*db.DB)(nil)

// realBrokers returns the real Kafka brokers (see testenv.KafkaBrokers).
func realBrokers(tb testing.TB) []string {
	tb.Helper()
	return testenv.KafkaBrokers(tb)
}

// fakeBrokers starts an in-process kfake cluster for the test.
func fakeBrokers(tb testing.TB) []string {
	tb.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		tb.Fatalf("start kfake: %v", err)
	}
	tb.Cleanup(c.Close)
	return c.ListenAddrs()
}

// forEachBroker runs fn against the real broker and against kfake.
func forEachBroker(t *testing.T, fn func(t *testing.T, brokers []string)) {
	t.Helper()
	t.Run("kafka", func(t *testing.T) { t.Parallel(); fn(t, realBrokers(t)) })
	t.Run("kfake", func(t *testing.T) { t.Parallel(); fn(t, fakeBrokers(t)) })
}

var nameChars = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// uniqueName returns a topic or group name unique to the test and run.
func uniqueName(t testing.TB, suffix string) string {
	n := strings.Trim(nameChars.ReplaceAllString(t.Name(), "-"), "-")
	if len(n) > 100 {
		n = n[len(n)-100:]
	}
	return fmt.Sprintf("t.%s.%d.%s", n, time.Now().UnixNano(), suffix)
}

// newTopic creates a judgments topic with the given partitions.
func newTopic(t testing.TB, brokers []string, partitions int) string {
	t.Helper()
	cfg := stream.TopicConfig{Judgments: uniqueName(t, "j"), DeadLetters: uniqueName(t, "dlq"), Partitions: partitions}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := stream.EnsureTopics(ctx, brokers, cfg); err != nil {
		t.Fatalf("ensure topics: %v", err)
	}
	return cfg.Judgments
}

// testLogger logs to the test at the given level.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("ALIGNET_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// synth is a synthetic study: items with embeddings x (n×d) and a hidden
// "human" representation z = x·A whose dot products the simulated workers
// answer with.
type synth struct {
	items []string
	x     []float32
	z     []float64
	n, d  int
}

func newSynth(n, d int, seed uint64) *synth { return newSynthWith(n, d, seed, 1) }

// newSynthWith is newSynth with the hidden transform A = I + noise·N/√d;
// noise 0 makes the raw embeddings the human representation.
func newSynthWith(n, d int, seed uint64, noise float64) *synth {
	rng := rand.New(rand.NewPCG(seed, 1))
	s := &synth{n: n, d: d, x: make([]float32, n*d), z: make([]float64, n*d)}
	a := make([]float64, d*d)
	for i := range a {
		a[i] = noise * rng.NormFloat64() / math.Sqrt(float64(d))
	}
	for i := range d {
		a[i*d+i] += 1
	}
	for r := range n {
		s.items = append(s.items, fmt.Sprintf("it%03d", r))
		for c := range d {
			s.x[r*d+c] = float32(rng.NormFloat64())
		}
		for c := range d {
			var v float64
			for k := range d {
				v += float64(s.x[r*d+k]) * a[k*d+c]
			}
			s.z[r*d+c] = 1.5 * v
		}
	}
	return s
}

// index returns the row of item it.
func (s *synth) index(it string) int {
	for r, v := range s.items {
		if v == it {
			return r
		}
	}
	return -1
}

func (s *synth) sim(i, j int) float64 {
	var v float64
	for c := range s.d {
		v += s.z[i*s.d+c] * s.z[j*s.d+c]
	}
	return v / float64(s.d)
}

// judgments returns n simulated judgments of study with ids prefix-0...
func (s *synth) judgments(study string, task alignet.Task, prefix string, count int, seed uint64) []alignet.Judgment {
	rng := rand.New(rand.NewPCG(seed, 2))
	out := make([]alignet.Judgment, 0, count)
	now := time.Now().UTC()
	for len(out) < count {
		i, j, k := rng.IntN(s.n), rng.IntN(s.n), rng.IntN(s.n)
		if i == j || i == k || j == k {
			continue
		}
		jg := alignet.Judgment{
			ID: fmt.Sprintf("%s-%d", prefix, len(out)), Study: study, Task: task,
			Worker: fmt.Sprintf("w%d", rng.IntN(20)), RTMillis: 900, ReceivedAt: now,
		}
		if task == alignet.TaskAnchor {
			// head i; close is the more similar of j, k with logistic noise.
			pj := 1 / (1 + math.Exp(s.sim(i, k)-s.sim(i, j)))
			if rng.Float64() < pj {
				jg.Items = [3]string{s.items[i], s.items[j], s.items[k]}
			} else {
				jg.Items = [3]string{s.items[i], s.items[k], s.items[j]}
			}
		} else {
			l := [3]float64{s.sim(i, j), s.sim(i, k), s.sim(j, k)} // k, j, i odd
			m := math.Max(l[0], math.Max(l[1], l[2]))
			e := [3]float64{math.Exp(l[0] - m), math.Exp(l[1] - m), math.Exp(l[2] - m)}
			u := rng.Float64() * (e[0] + e[1] + e[2])
			odd := k
			switch {
			case u < e[0]:
			case u < e[0]+e[1]:
				odd = j
			default:
				odd = i
			}
			jg.Items = [3]string{s.items[i], s.items[j], s.items[k]}
			jg.Odd = s.items[odd]
		}
		out = append(out, jg)
	}
	return out
}

// createStudy stores a space with the embeddings of the items for which
// embed is true (all when nil), and a study over all items.
func createStudy(t testing.TB, d *db.DB, s *synth, id string, task alignet.Task, settings string, embed func(r int) bool) alignet.Study {
	t.Helper()
	ctx := context.Background()
	space := id + "-space"
	if _, _, err := d.PutSpace(ctx, space, s.d); err != nil {
		t.Fatal(err)
	}
	var ids []string
	var vecs []float32
	for r, it := range s.items {
		if embed == nil || embed(r) {
			ids = append(ids, it)
			vecs = append(vecs, s.x[r*s.d:(r+1)*s.d]...)
		}
	}
	if len(ids) > 0 {
		if _, err := d.UpsertEmbeddings(ctx, space, ids, vecs); err != nil {
			t.Fatal(err)
		}
	}
	st := alignet.Study{ID: id, Task: task, Space: space}
	if settings != "" {
		var err error
		if st.Settings, err = alignet.DefaultStudySettings().Patch([]byte(settings)); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := d.CreateStudy(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.AddStudyItems(ctx, id, s.items); err != nil {
		t.Fatal(err)
	}
	return got
}

// publish sends the judgments as messages of per judgments each.
func publish(t testing.TB, p *stream.Producer, js []alignet.Judgment, per int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for lo := 0; lo < len(js); lo += per {
		hi := min(lo+per, len(js))
		if err := p.Publish(ctx, js[lo].Study, js[lo:hi]); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}

func newProducer(t testing.TB, brokers []string, topic string) *stream.Producer {
	t.Helper()
	p, err := stream.NewProducer(stream.ProducerConfig{Brokers: brokers, Topic: topic, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// running is a learner running in the background.
type running struct {
	l      *Learner
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startLearner runs a learner on store until the test ends or stop is
// called.
func startLearner(t testing.TB, cfg Config, store Store) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	l, err := New(cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{l: l, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- l.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the learner and waits for it.
func (r *running) stop(t testing.TB) {
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("learner: %v", err)
			}
		case <-time.After(time.Minute):
			t.Errorf("learner did not stop")
		}
	})
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// state returns the stored teacher state of study, or the zero state.
func state(t testing.TB, d *db.DB, study string) alignet.TeacherState {
	t.Helper()
	st, err := d.TeacherState(context.Background(), study)
	if err != nil {
		return alignet.TeacherState{}
	}
	return st
}

// newDB returns a migrated database on a fresh schema.
func newDB(t testing.TB) *db.DB {
	t.Helper()
	return dbtest.New(t)
}
