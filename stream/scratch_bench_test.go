package stream

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
)

func TestScratchRawReader(t *testing.T) {
	brokers := fakeBrokers(t)
	topics := testTopics(t, brokers)
	p := newTestProducer(t, brokers, topics.Judgments, nil, nil)
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topics.Judgments, BatchSize: 1000, BatchTimeout: 10 * time.Millisecond}
	const n = 20000
	var msgs []kafka.Message
	for i := 0; i < n; i++ {
		study := fmt.Sprintf("study-%d", i%12)
		m, _ := EncodeBatch(study, judgments(study, fmt.Sprintf("b%d", i), 10))
		msgs = append(msgs, m)
	}
	_ = p
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topics.Judgments, GroupID: "g", StartOffset: kafka.FirstOffset, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond})
	defer r.Close()
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := r.FetchMessage(context.Background()); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			t.Logf("first after %v", time.Since(start))
			start = time.Now()
		}
	}
	t.Logf("%d msgs in %v: %.0f/s; stats %+v", n, time.Since(start), float64(n)/time.Since(start).Seconds(), r.Stats())
}

func TestScratchPersister(t *testing.T) {
	brokers := fakeBrokers(t)
	topics := testTopics(t, brokers)
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topics.Judgments, BatchSize: 1000, BatchTimeout: 10 * time.Millisecond}
	const n = 20000
	var msgs []kafka.Message
	for i := 0; i < n; i++ {
		study := fmt.Sprintf("study-%d", i%12)
		m, _ := EncodeBatch(study, judgments(study, fmt.Sprintf("b%d", i), 10))
		msgs = append(msgs, m)
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	sink := newMemSink()
	p := newTestPersister(t, brokers, topics, "g", sink, reg, nil)
	var first time.Time
	var decode time.Duration
	cnt := 0
	p.added = func(kafka.Message) {
		cnt++
		if cnt == 1 {
			first = time.Now()
		}
	}
	_ = decode
	rp := startPersister(t, p)
	eventually(t, time.Minute, "all", func() bool { return sink.count() == 10*n })
	el := time.Since(first)
	rp.stop(t)
	t.Logf("%d msgs in %v: %.0f/s, flushes %v", n, el, float64(n)/el.Seconds(), metricValue(t, reg, "alignet_consumer_batch_size", nil))
	start := time.Now()
	for i := range msgs[:5000] {
		DecodeBatch(msgs[i])
	}
	t.Logf("decode: %v per msg", time.Since(start)/5000)
}
