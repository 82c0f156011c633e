package stream

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkPublish measures concurrent synchronous publishing: 1 or 8
// goroutines per GOMAXPROCS each publish batches of 10 judgments of one of
// 12 studies and wait for the acknowledgment, as concurrent API requests do.
// The real broker is used when ALIGNET_TEST_KAFKA_BROKERS is set.
func BenchmarkPublish(b *testing.B) {
	setups := []struct {
		name    string
		brokers func(b *testing.B) []string
	}{
		{"kfake", func(b *testing.B) []string { return fakeBrokers(b) }},
		{"kafka", func(b *testing.B) []string {
			v := strings.TrimSpace(os.Getenv(brokerEnv))
			if v == "" {
				b.Skipf("%s is not set", brokerEnv)
			}
			return strings.Split(v, ",")
		}},
	}
	for _, s := range setups {
		for _, par := range []int{1, 8} {
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
