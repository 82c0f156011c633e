package online

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
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
