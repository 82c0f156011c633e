package stream

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet/internal/testenv"
)

// BenchmarkPublish measures concurrent synchronous publishing: 1, 8 or 32
// goroutines per GOMAXPROCS each publish batches of 10 judgments of one of
// 12 studies and wait for the acknowledgment, as concurrent API requests do.
// The real broker is used when ALIGNET_TEST_KAFKA_BROKERS is set
// (internal/testenv).
func BenchmarkPublish(b *testing.B) {
	setups := []struct {
		name    string
		brokers func(b *testing.B) []string
	}{
		{"kfake", func(b *testing.B) []string { return fakeBrokers(b) }},
		{"kafka", func(b *testing.B) []string { return testenv.KafkaBrokers(b) }},
	}
	for _, s := range setups {
		for _, par := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/publishers=%dxGOMAXPROCS/batch=10", s.name, par), func(b *testing.B) {
				brokers := s.brokers(b)
				topics := testTopics(b, brokers)
				p := newTestProducer(b, brokers, topics.Judgments, nil, nil)
				var next atomic.Int64
				b.SetParallelism(par)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					g := next.Add(1)
					study := fmt.Sprintf("study-%d", g%12)
					js := judgments(study, fmt.Sprintf("g%d", g), 10)
					for pb.Next() {
						if err := p.Publish(context.Background(), study, js); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				sec := b.Elapsed().Seconds()
				b.ReportMetric(float64(b.N)/sec, "requests/s")
				b.ReportMetric(float64(10*b.N)/sec, "judgments/s")
			})
		}
	}
}

// BenchmarkPersist measures how fast a persister drains a backlog of
// batches of 10 judgments into an in-memory sink: decode, batching and
// synchronous offset commits, without database cost.
func BenchmarkPersist(b *testing.B) {
	brokerSets := map[string]func(b *testing.B) []string{
		"kfake": func(b *testing.B) []string { return fakeBrokers(b) },
		"kafka": func(b *testing.B) []string { return testenv.KafkaBrokers(b) },
	}
	for _, name := range []string{"kfake", "kafka"} {
		b.Run(name+"/batch=10", func(b *testing.B) {
			brokers := brokerSets[name](b)
			topics := testTopics(b, brokers)
			p := newTestProducer(b, brokers, topics.Judgments, nil, nil)
			var next atomic.Int64
			var wg sync.WaitGroup
			for g := 0; g < 16; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						study := fmt.Sprintf("study-%d", i%12)
						if err := p.Publish(context.Background(), study, judgments(study, fmt.Sprintf("b%d", i), 10)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			sink := newMemSink()
			per := newTestPersister(b, brokers, topics, uniqueName(b, "g"), sink, nil, nil)
			// judgments/s is measured from the first fetched message, so
			// that it excludes joining the group; ns/op includes it.
			var first atomic.Int64
			per.added = func(kafka.Message) { first.CompareAndSwap(0, time.Now().UnixNano()) }
			b.ResetTimer()
			rp := startPersister(b, per)
			eventually(b, 10*time.Minute, "backlog stored", func() bool { return sink.count() == 10*b.N })
			b.StopTimer()
			drain := time.Since(time.Unix(0, first.Load()))
			rp.stop(b)
			b.ReportMetric(float64(10*b.N)/drain.Seconds(), "judgments/s")
		})
	}
}
