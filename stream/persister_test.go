package stream

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
)

const waitLong = 60 * time.Second

func publishAll(t *testing.T, p *Producer, batches map[string][]alignet.Judgment) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for study, js := range batches {
		if err := p.Publish(ctx, study, js); err != nil {
			t.Fatalf("publish %s: %v", study, err)
		}
	}
}

// assertOnlyMarker starts a persister in group with a fresh sink, publishes
// a marker batch and checks that the marker is the only thing delivered, so
// every earlier message had been committed.
func assertOnlyMarker(t *testing.T, brokers []string, topics TopicConfig, group string, p *Producer) {
	t.Helper()
	sink := newMemSink()
	rp := startPersister(t, newTestPersister(t, brokers, topics, group, sink, nil, nil))
	publishAll(t, p, map[string][]alignet.Judgment{"marker": judgments("marker", "m", 1)})
	eventually(t, waitLong, "marker stored", func() bool { return sink.has("marker", "m-0") })
	if err := rp.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	rows, _, delivered := sink.snapshot()
	if len(rows) != 1 || delivered != 1 {
		t.Errorf("restarted group received %d judgments (%d distinct), want only the marker: %v", delivered, len(rows), rows)
	}
}

func TestPublishPersistEndToEnd(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		reg := prometheus.NewRegistry()
		prod := newTestProducer(t, brokers, topics.Judgments, reg, nil)
		sink := newMemSink()
		group := uniqueName(t, "g")
		rp := startPersister(t, newTestPersister(t, brokers, topics, group, sink, reg, nil))

		// Concurrent publishers, several studies, varying batch sizes.
		want := map[[2]string]alignet.Judgment{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 5; i++ {
					study := fmt.Sprintf("study-%d", (g+i)%4)
					js := judgments(study, fmt.Sprintf("g%d-b%d", g, i), 1+(g+i)%5)
					if err := prod.Publish(context.Background(), study, js); err != nil {
						t.Errorf("publish: %v", err)
						return
					}
					mu.Lock()
					for _, j := range js {
						want[[2]string{j.Study, j.ID}] = j
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		// A retried request: the same batch published twice is stored once.
		dup := judgments("study-0", "g0-b0", 1)
		if err := prod.Publish(context.Background(), "study-0", dup); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitLong, "all judgments stored", func() bool { return sink.count() >= len(want) })
		eventually(t, waitLong, "duplicate delivered", func() bool { _, _, d := sink.snapshot(); return d == len(want)+1 })
		rows, _, _ := sink.snapshot()
		if len(rows) != len(want) {
			t.Fatalf("stored %d judgments, want %d", len(rows), len(want))
		}
		for k, w := range want {
			g, ok := rows[k]
			if !ok {
				t.Errorf("judgment %v not stored", k)
				continue
			}
			if !g.ReceivedAt.Equal(w.ReceivedAt) || g.Items != w.Items || g.Odd != w.Odd || g.Worker != w.Worker || g.RTMillis != w.RTMillis || g.Task != w.Task || g.QueryID != w.QueryID {
				t.Errorf("judgment %v stored as %+v, want %+v", k, g, w)
			}
		}
		if err := rp.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
		if n := metricValue(t, reg, "alignet_judgments_persisted_total", nil); n != float64(len(want)) {
			t.Errorf("persisted_total = %v, want %d (duplicates excluded)", n, len(want))
		}
		if n := metricValue(t, reg, "alignet_persist_lag_seconds", nil); n != float64(len(want)+1) {
			t.Errorf("persist lag samples = %v, want %d", n, len(want)+1)
		}
		if n := metricValue(t, reg, "alignet_consumer_batch_size", nil); n < 1 {
			t.Errorf("batch size samples = %v, want at least 1", n)
		}
		assertOnlyMarker(t, brokers, topics, group, prod)
	})
}

// TestPersisterRetriesUntilSinkSucceeds: a failing sink delays but never
// loses a batch, and offsets are committed once it succeeded.
func TestPersisterRetriesUntilSinkSucceeds(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		reg := prometheus.NewRegistry()
		prod := newTestProducer(t, brokers, topics.Judgments, nil, nil)
		publishAll(t, prod, map[string][]alignet.Judgment{
			"s1": judgments("s1", "a", 3), "s2": judgments("s2", "b", 2), "s3": judgments("s3", "c", 4),
		})
		sink := newMemSink()
		sink.failFirst = 3
		group := uniqueName(t, "g")
		rp := startPersister(t, newTestPersister(t, brokers, topics, group, sink, reg, nil))
		eventually(t, waitLong, "all judgments stored", func() bool { return sink.count() == 9 })
		if err := rp.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
		_, calls, _ := sink.snapshot()
		if calls < 4 {
			t.Errorf("sink called %d times, want at least 4 (3 failures, then success)", calls)
		}
		if n := metricValue(t, reg, "alignet_persist_errors_total", nil); n != 3 {
			t.Errorf("persist errors = %v, want 3", n)
		}
		assertOnlyMarker(t, brokers, topics, group, prod)
	})
}

// TestPersisterRedeliversUncommittedBatch: a persister killed while its sink
// hangs commits nothing, so the next member of the group gets the batch.
func TestPersisterRedeliversUncommittedBatch(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		prod := newTestProducer(t, brokers, topics.Judgments, nil, nil)
		hung := newMemSink()
		hung.block = make(chan struct{}) // never released
		hung.entered = make(chan struct{}, 1)
		group := uniqueName(t, "g")
		rp := startPersister(t, newTestPersister(t, brokers, topics, group, hung, nil, func(c *PersisterConfig) {
			c.ShutdownTimeout = 300 * time.Millisecond
		}))
		publishAll(t, prod, map[string][]alignet.Judgment{"s1": judgments("s1", "a", 3), "s2": judgments("s2", "b", 2)})
		select {
		case <-hung.entered:
		case <-time.After(waitLong):
			t.Fatal("sink never called")
		}
		if err := rp.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
		if n := hung.count(); n != 0 {
			t.Fatalf("hung sink stored %d judgments", n)
		}
		sink := newMemSink()
		rp2 := startPersister(t, newTestPersister(t, brokers, topics, group, sink, nil, nil))
		eventually(t, waitLong, "redelivered judgments stored", func() bool { return sink.count() == 5 })
		if err := rp2.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
	})
}

// TestPersisterGracefulShutdownCommitsInFlightBatch: cancelling Run flushes
// and commits the batch still waiting for its flush interval.
func TestPersisterGracefulShutdownCommitsInFlightBatch(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		prod := newTestProducer(t, brokers, topics.Judgments, nil, nil)
		sink := newMemSink()
		group := uniqueName(t, "g")
		p := newTestPersister(t, brokers, topics, group, sink, nil, func(c *PersisterConfig) {
			c.FlushInterval = time.Hour
			c.MaxBatch = 1 << 30
		})
		added := make(chan kafka.Message, 10)
		p.added = func(m kafka.Message) { added <- m }
		rp := startPersister(t, p)
		publishAll(t, prod, map[string][]alignet.Judgment{"s1": judgments("s1", "a", 3), "s2": judgments("s2", "b", 2), "s3": judgments("s3", "c", 1)})
		for i := 0; i < 3; i++ {
			select {
			case <-added:
			case <-time.After(waitLong):
				t.Fatalf("only %d of 3 messages reached the batch", i)
			}
		}
		if n := sink.count(); n != 0 {
			t.Fatalf("sink has %d judgments before the flush interval elapsed", n)
		}
		if err := rp.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
		if n := sink.count(); n != 6 {
			t.Fatalf("after shutdown the sink has %d judgments, want 6", n)
		}
		assertOnlyMarker(t, brokers, topics, group, prod)
	})
}

// TestPersisterDeadLetters: undecodable messages go to the dead-letter
// topic with their reason and position, and the pipeline continues.
func TestPersisterDeadLetters(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		reg := prometheus.NewRegistry()
		prod := newTestProducer(t, brokers, topics.Judgments, nil, nil)
		raw := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topics.Judgments, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: newTransport()}
		defer raw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()

		publishAll(t, prod, map[string][]alignet.Judgment{"before": judgments("before", "a", 2)})
		poison := []kafka.Message{
			{Key: []byte("p1"), Value: []byte(`{"v":1,"judgments":[`), Headers: []kafka.Header{{Key: "trace", Value: []byte("t1")}}},
			{Key: []byte("p2"), Value: []byte(`{"v":9,"judgments":[]}`)},
			{Key: []byte("p3"), Value: mustEncode(t, "other", judgments("other", "x", 1))},
		}
		for _, m := range poison {
			if err := raw.WriteMessages(ctx, m); err != nil {
				t.Fatalf("write poison: %v", err)
			}
		}
		publishAll(t, prod, map[string][]alignet.Judgment{"after": judgments("after", "b", 2)})

		sink := newMemSink()
		group := uniqueName(t, "g")
		rp := startPersister(t, newTestPersister(t, brokers, topics, group, sink, reg, nil))
		eventually(t, waitLong, "valid judgments around the poison stored", func() bool { return sink.count() == 4 })

		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topics.DeadLetters, GroupID: uniqueName(t, "dlq"), StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
		defer r.Close()
		got := map[string]kafka.Message{}
		for len(got) < 3 {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				t.Fatalf("fetch dead letter: %v", err)
			}
			got[string(m.Key)] = m
		}
		wantReason := map[string]string{"p1": "json", "p2": "version", "p3": "study_mismatch"}
		for i, orig := range poison {
			key := string(orig.Key)
			m, ok := got[key]
			if !ok {
				t.Errorf("dead letter %s missing", key)
				continue
			}
			if string(m.Value) != string(orig.Value) {
				t.Errorf("dead letter %s value = %q, want the original %q", key, m.Value, orig.Value)
			}
			h := map[string]string{}
			for _, x := range m.Headers {
				h[x.Key] = string(x.Value)
			}
			if h[HeaderErrorReason] != wantReason[key] || h[HeaderError] == "" {
				t.Errorf("dead letter %s: reason %q error %q, want reason %q", key, h[HeaderErrorReason], h[HeaderError], wantReason[key])
			}
			if h[HeaderSourceTopic] != topics.Judgments || h[HeaderSourcePartition] == "" {
				t.Errorf("dead letter %s: source %q/%q", key, h[HeaderSourceTopic], h[HeaderSourcePartition])
			}
			if off, err := strconv.ParseInt(h[HeaderSourceOffset], 10, 64); err != nil || off < 0 {
				t.Errorf("dead letter %s: source offset %q", key, h[HeaderSourceOffset])
			}
			if i == 0 && h["trace"] != "t1" {
				t.Errorf("dead letter %s lost its original headers: %v", key, h)
			}
		}
		if err := rp.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
		for reason, want := range map[string]float64{"json": 1, "version": 1, "study_mismatch": 1} {
			if n := metricValue(t, reg, "alignet_dead_letters_total", map[string]string{"reason": reason}); n != want {
				t.Errorf("dead_letters_total{reason=%q} = %v, want %v", reason, n, want)
			}
		}
		// The poison messages were committed too.
		assertOnlyMarker(t, brokers, topics, group, prod)
	})
}

// TestPersisterLagMetric: the lag counts uncommitted messages while the sink
// hangs and returns to zero once they are committed.
func TestPersisterLagMetric(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		reg := prometheus.NewRegistry()
		prod := newTestProducer(t, brokers, topics.Judgments, nil, nil)
		sink := newMemSink()
		sink.block = make(chan struct{})
		rp := startPersister(t, newTestPersister(t, brokers, topics, uniqueName(t, "g"), sink, reg, nil))
		for i := 0; i < 4; i++ {
			publishAll(t, prod, map[string][]alignet.Judgment{"s": judgments("s", fmt.Sprintf("b%d", i), 2)})
		}
		lag := func() float64 {
			return metricValue(t, reg, "alignet_consumer_lag", map[string]string{"topic": topics.Judgments})
		}
		eventually(t, waitLong, "lag of 4 messages", func() bool { return lag() == 4 })
		close(sink.block)
		eventually(t, waitLong, "lag back to 0", func() bool { return lag() == 0 })
		if n := sink.count(); n != 8 {
			t.Errorf("stored %d judgments, want 8", n)
		}
		if err := rp.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
	})
}

func mustEncode(t *testing.T, study string, js []alignet.Judgment) []byte {
	t.Helper()
	m, err := EncodeBatch(study, js)
	if err != nil {
		t.Fatal(err)
	}
	return m.Value
}

// TestPersisterScaleOut: a second member joining the group mid-stream causes
// a rebalance; every judgment is still stored and everything is committed.
func TestPersisterScaleOut(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		prod := newTestProducer(t, brokers, topics.Judgments, nil, nil)
		sink := newMemSink() // shared, like one database behind two processes
		group := uniqueName(t, "g")
		rp1 := startPersister(t, newTestPersister(t, brokers, topics, group, sink, nil, nil))
		publish := func(round int) {
			for i := 0; i < 12; i++ {
				study := fmt.Sprintf("s%d", i)
				publishAll(t, prod, map[string][]alignet.Judgment{study: judgments(study, fmt.Sprintf("r%d-%d", round, i), 3)})
			}
		}
		publish(0)
		eventually(t, waitLong, "first round stored", func() bool { return sink.count() == 36 })
		rp2 := startPersister(t, newTestPersister(t, brokers, topics, group, sink, nil, nil))
		publish(1)
		publish(2)
		eventually(t, waitLong, "all rounds stored", func() bool { return sink.count() == 108 })
		for _, rp := range []*runningPersister{rp1, rp2} {
			if err := rp.stop(t); err != nil {
				t.Fatalf("run: %v", err)
			}
		}
		assertOnlyMarker(t, brokers, topics, group, prod)
	})
}
