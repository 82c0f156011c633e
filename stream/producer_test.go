package stream

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/alignet/alignet"
)

func TestEnsureTopicsAndPing(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		missing := uniqueName(t, "missing")
		if err := Ping(ctx, brokers, missing); !errors.Is(err, alignet.ErrUnavailable) {
			t.Errorf("ping of a missing topic: err = %v, want ErrUnavailable", err)
		}
		cfg := TopicConfig{Judgments: uniqueName(t, "j"), DeadLetters: uniqueName(t, "dlq"), Partitions: 4}
		for i := 0; i < 2; i++ { // the second call finds the topics existing
			if err := EnsureTopics(ctx, brokers, cfg); err != nil {
				t.Fatalf("ensure topics (call %d): %v", i+1, err)
			}
		}
		conn, err := dialAny(ctx, brokers)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		parts, err := conn.ReadPartitions(cfg.Judgments, cfg.DeadLetters)
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, p := range parts {
			count[p.Topic]++
		}
		if count[cfg.Judgments] != 4 || count[cfg.DeadLetters] != 4 {
			t.Errorf("partitions = %v, want 4 each", count)
		}
		if err := Ping(ctx, brokers); err != nil {
			t.Errorf("ping: %v", err)
		}
		if err := Ping(ctx, brokers, cfg.Judgments, cfg.DeadLetters); err != nil {
			t.Errorf("ping with topics: %v", err)
		}
		p := newTestProducer(t, brokers, cfg.Judgments, nil, nil)
		if err := p.Ping(ctx); err != nil {
			t.Errorf("producer ping: %v", err)
		}
	})
}

// TestPublishRecordFormat reads a published batch back with a plain reader.
func TestPublishRecordFormat(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		reg := prometheus.NewRegistry()
		p := newTestProducer(t, brokers, topics.Judgments, reg, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		first, second := judgments("study-x", "a", 3), judgments("study-x", "b", 2)
		if err := p.Publish(ctx, "study-x", first); err != nil {
			t.Fatalf("publish: %v", err)
		}
		if err := p.Publish(ctx, "study-x", second); err != nil {
			t.Fatalf("publish: %v", err)
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topics.Judgments, GroupID: uniqueName(t, "g"), StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
		defer r.Close()
		var ms []kafka.Message
		for len(ms) < 2 {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			ms = append(ms, m)
		}
		if ms[0].Partition != ms[1].Partition {
			t.Errorf("batches of one study went to partitions %d and %d", ms[0].Partition, ms[1].Partition)
		}
		for i, want := range [][]alignet.Judgment{first, second} {
			m := ms[i]
			if string(m.Key) != "study-x" {
				t.Errorf("message %d key = %q", i, m.Key)
			}
			var ct string
			for _, h := range m.Headers {
				if h.Key == "content-type" {
					ct = string(h.Value)
				}
			}
			if ct != ContentType {
				t.Errorf("message %d content-type = %q", i, ct)
			}
			got, err := DecodeBatch(m)
			if err != nil {
				t.Fatalf("decode message %d: %v", i, err)
			}
			if len(got) != len(want) || got[0].ID != want[0].ID {
				t.Errorf("message %d carries %d judgments starting %q, want %d starting %q", i, len(got), got[0].ID, len(want), want[0].ID)
			}
		}
		if n := metricValue(t, reg, "alignet_kafka_produce_duration_seconds", nil); n != 2 {
			t.Errorf("produce duration samples = %v, want 2", n)
		}
		if n := metricValue(t, reg, "alignet_kafka_produce_errors_total", nil); n != 0 {
			t.Errorf("produce errors = %v, want 0", n)
		}
	})
}

// TestPublishBatchesConcurrentRequests shows that concurrent Publish calls
// share one produce request: with a linger far longer than the test and a
// batch size equal to the number of publishers, all calls can return only
// if their messages were sent together when the batch filled up.
func TestPublishBatchesConcurrentRequests(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		const n = 50
		p := newTestProducer(t, brokers, topics.Judgments, nil, func(c *ProducerConfig) {
			c.Linger = time.Minute
			c.BatchSize = n
			c.WriteTimeout = 2 * time.Minute
		})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- p.Publish(ctx, "one-study", judgments("one-study", "c"+string(rune('A'+i%26))+string(rune('a'+i/26)), 2))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
		// BatchSize counts batches, not attempts: a retried batch counts once.
		st := p.w.Stats()
		if st.BatchSize.Count != 1 || st.BatchSize.Sum != n {
			t.Errorf("writer formed %d batches of %d messages in total, want 1 of %d", st.BatchSize.Count, st.BatchSize.Sum, n)
		}
	})
}

func TestPublishRejectsInvalidAndOversizedBatches(t *testing.T) {
	t.Parallel()
	brokers := fakeBrokers(t)
	topics := testTopics(t, brokers)
	reg := prometheus.NewRegistry()
	p := newTestProducer(t, brokers, topics.Judgments, reg, func(c *ProducerConfig) { c.MaxBatchBytes = 4096 })
	ctx := context.Background()
	if err := p.Publish(ctx, "s", judgments("other", "a", 1)); !errors.Is(err, ErrInvalidBatch) || errors.Is(err, alignet.ErrUnavailable) {
		t.Errorf("study mismatch: err = %v, want ErrInvalidBatch only", err)
	}
	if err := p.Publish(ctx, "s", judgments("s", "big", 100)); !errors.Is(err, alignet.ErrTooLarge) || errors.Is(err, alignet.ErrUnavailable) {
		t.Errorf("oversized batch: err = %v, want alignet.ErrTooLarge only", err)
	}
	if err := p.Publish(ctx, "s", judgments("s", "ok", 2)); err != nil {
		t.Errorf("valid batch after rejections: %v", err)
	}
}

// TestPublishTooLargeForBroker: a batch within MaxBatchBytes that the
// topic's max.message.bytes refuses is alignet.ErrTooLarge too, not
// ErrUnavailable, so the API answers 413 instead of asking for retries.
func TestPublishTooLargeForBroker(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topic := uniqueName(t, "small")
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		tr := newTransport()
		defer tr.CloseIdleConnections()
		client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
		resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic: topic, NumPartitions: 1, ReplicationFactor: 1,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "2048"}},
		}}})
		if err != nil || resp.Errors[topic] != nil {
			t.Fatalf("create topic: %v %v", err, resp)
		}
		if err := EnsureTopics(ctx, brokers, TopicConfig{Judgments: topic, DeadLetters: topic + ".dlq", Partitions: 1}); err != nil {
			t.Fatal(err)
		}
		p := newTestProducer(t, brokers, topic, nil, nil)
		big := judgments("s", "big", 40) // well over 2 KiB encoded, well under MaxBatchBytes
		if m, err := EncodeBatch("s", big); err != nil || len(m.Value) < 4096 {
			t.Fatalf("test batch encodes to %d bytes (%v), want over 4096", len(m.Value), err)
		}
		err = p.Publish(ctx, "s", big)
		if !errors.Is(err, alignet.ErrTooLarge) || errors.Is(err, alignet.ErrUnavailable) {
			t.Errorf("batch over max.message.bytes: err = %v, want alignet.ErrTooLarge only", err)
		}
		if err := p.Publish(ctx, "s", judgments("s", "small", 1)); err != nil {
			t.Errorf("small batch after the rejection: %v", err)
		}
	})
}

// TestPublishUnavailable is not parallel: it bounds how long Publish takes.
func TestPublishUnavailable(t *testing.T) {
	deadPort := func(t *testing.T) []string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return []string{addr}
	}
	t.Run("dead port", func(t *testing.T) {
		brokers := deadPort(t)
		checkUnavailable(t, brokers, "alignet.judgments", nil)
	})
	t.Run("closed cluster", func(t *testing.T) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		brokers := c.ListenAddrs()
		topics := testTopics(t, brokers)
		// The producer has connected and cached metadata before the broker
		// goes away.
		checkUnavailable(t, brokers, topics.Judgments, c.Close)
	})
}

func checkUnavailable(t *testing.T, brokers []string, topic string, kill func()) {
	reg := prometheus.NewRegistry()
	const timeout = 2 * time.Second
	p := newTestProducer(t, brokers, topic, reg, func(c *ProducerConfig) { c.WriteTimeout = timeout })
	ctx := context.Background()
	if kill != nil {
		if err := p.Publish(ctx, "s", judgments("s", "before", 1)); err != nil {
			t.Fatalf("publish while the broker is up: %v", err)
		}
		kill()
	}
	start := time.Now()
	err := p.Publish(ctx, "s", judgments("s", "a", 2))
	elapsed := time.Since(start)
	if !errors.Is(err, alignet.ErrUnavailable) {
		t.Fatalf("publish: err = %v, want ErrUnavailable", err)
	}
	// WriteTimeout bounds the call; allow scheduling slack under -race.
	if elapsed > timeout+time.Second {
		t.Errorf("publish failed after %v, want within WriteTimeout %v", elapsed, timeout)
	}
	if n := metricValue(t, reg, "alignet_kafka_produce_errors_total", nil); n != 1 {
		t.Errorf("produce errors = %v, want 1", n)
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := p.Ping(pctx); !errors.Is(err, alignet.ErrUnavailable) {
		t.Errorf("ping: err = %v, want ErrUnavailable", err)
	}
}
