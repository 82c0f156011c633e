package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/internal/testenv"
)

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

// forEachBroker runs fn against kfake and against the real broker, in
// parallel: each test owns its topics and groups.
func forEachBroker(t *testing.T, fn func(t *testing.T, brokers []string)) {
	t.Helper()
	t.Run("kfake", func(t *testing.T) {
		t.Parallel()
		fn(t, fakeBrokers(t))
	})
	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		fn(t, testenv.KafkaBrokers(t))
	})
}

var nameChars = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// uniqueName returns a topic or group name unique to the test and run.
func uniqueName(t testing.TB, suffix string) string {
	n := strings.Trim(nameChars.ReplaceAllString(t.Name(), "-"), "-")
	if len(n) > 120 {
		n = n[len(n)-120:]
	}
	return fmt.Sprintf("t.%s.%d.%s", n, time.Now().UnixNano(), suffix)
}

// testTopics creates a judgments topic and a dead-letter topic for the test.
func testTopics(t testing.TB, brokers []string) TopicConfig {
	t.Helper()
	cfg := TopicConfig{Judgments: uniqueName(t, "j"), DeadLetters: uniqueName(t, "dlq"), Partitions: 3}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, brokers, cfg); err != nil {
		t.Fatalf("ensure topics: %v", err)
	}
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// judgments returns n valid odd-one-out judgments of study with ids
// prefix-0 ... prefix-(n-1).
func judgments(study, prefix string, n int) []alignet.Judgment {
	now := time.Now().UTC().Round(time.Microsecond)
	js := make([]alignet.Judgment, n)
	for i := range js {
		items := [3]string{fmt.Sprintf("img-%d-a", i), fmt.Sprintf("img-%d-b", i), fmt.Sprintf("img-%d-c", i)}
		js[i] = alignet.Judgment{
			ID: fmt.Sprintf("%s-%d", prefix, i), Study: study, Task: alignet.TaskOddOneOut,
			Worker: "w-" + prefix, Items: items, Odd: items[i%3], RTMillis: int32(500 + i),
			QueryID: "q-" + prefix, ReceivedAt: now,
		}
	}
	return js
}

// memSink is an in-memory Sink that really deduplicates by (study, id).
type memSink struct {
	mu        sync.Mutex
	rows      map[[2]string]alignet.Judgment
	calls     int
	delivered int // judgments passed to successful calls, duplicates included

	failFirst int           // the first failFirst calls fail
	block     chan struct{} // if set, calls wait until it is closed or ctx ends
	entered   chan struct{} // if set, receives a value when a call starts (non-blocking)
}

func newMemSink() *memSink { return &memSink{rows: map[[2]string]alignet.Judgment{}} }

func (s *memSink) InsertJudgments(ctx context.Context, js []alignet.Judgment) (int64, error) {
	s.mu.Lock()
	s.calls++
	fail := s.calls <= s.failFirst
	s.mu.Unlock()
	if s.entered != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
	}
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if fail {
		return 0, errors.New("sink: database unavailable")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, j := range js {
		k := [2]string{j.Study, j.ID}
		if _, ok := s.rows[k]; !ok {
			s.rows[k] = j
			n++
		}
	}
	s.delivered += len(js)
	return n, nil
}

func (s *memSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rows)
}

func (s *memSink) has(study, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.rows[[2]string{study, id}]
	return ok
}

func (s *memSink) snapshot() (rows map[[2]string]alignet.Judgment, calls, delivered int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rows = make(map[[2]string]alignet.Judgment, len(s.rows))
	for k, v := range s.rows {
		rows[k] = v
	}
	return rows, s.calls, s.delivered
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runningPersister is a Persister running in the background.
type runningPersister struct {
	p       *Persister
	cancel  context.CancelFunc
	done    chan error
	stopped atomic.Bool
}

// startPersister runs a persister until stop or the end of the test.
func startPersister(t testing.TB, p *Persister) *runningPersister {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rp := &runningPersister{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() { rp.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		if !rp.stopped.Load() {
			rp.stop(t)
		}
	})
	return rp
}

// stop cancels the persister and returns the result of Run.
func (rp *runningPersister) stop(t testing.TB) error {
	t.Helper()
	rp.stopped.Store(true)
	rp.cancel()
	select {
	case err := <-rp.done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("persister did not stop within 60s")
		return nil
	}
}

// newTestPersister returns a persister for the test's topics with fast
// retries and frequent lag measurement.
func newTestPersister(t testing.TB, brokers []string, topics TopicConfig, group string, sink Sink, reg prometheus.Registerer, tweak func(*PersisterConfig)) *Persister {
	t.Helper()
	cfg := PersisterConfig{
		Brokers: brokers, Topic: topics.Judgments, DeadLetterTopic: topics.DeadLetters, GroupID: group,
		RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond, LagInterval: 50 * time.Millisecond,
		Registerer: reg, Logger: testLogger(t),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	p, err := NewPersister(cfg, sink)
	if err != nil {
		t.Fatalf("new persister: %v", err)
	}
	return p
}

func newTestProducer(t testing.TB, brokers []string, topic string, reg prometheus.Registerer, tweak func(*ProducerConfig)) *Producer {
	t.Helper()
	cfg := ProducerConfig{Brokers: brokers, Topic: topic, Registerer: reg, Logger: testLogger(t)}
	if tweak != nil {
		tweak(&cfg)
	}
	p, err := NewProducer(cfg)
	if err != nil {
		t.Fatalf("new producer: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// metricValue returns the value of the counter or gauge name with the given
// label values on reg, or of the sample count for a histogram; -1 if absent.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}
