package learner

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkFitVICEThingsSized fits VICE for one epoch on synthetic data the
// size of THINGS: 1,854 items and 113,000 training triplets, 20 dimensions,
// batches of 2,048 (the defaults). Run with
//
//	go test ./learner/ -run '^$' -bench FitVICE -benchtime 3x
func BenchmarkFitVICEThingsSized(b *testing.B) {
	const n, m = 1854, 113000
	rng := rand.New(rand.NewPCG(1, 1))
	ts := make([]Triplet, 0, m)
	for len(ts) < m {
		i, j, k := int32(rng.IntN(n)), int32(rng.IntN(n)), int32(rng.IntN(n))
		if i != j && i != k && j != k {
			ts = append(ts, Triplet{I: i, J: j, K: k})
		}
	}
	cfg := HumanModelConfig{Epochs: 1, Seed: 1}
	b.ReportAllocs()
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		if _, _, err := FitVICE(n, ts, cfg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(m)*float64(b.N)/b.Elapsed().Seconds(), "triplets/s")
}

// BenchmarkVICEPredictBatch measures Monte-Carlo prediction of 113,000
// triplets with 30 samples on a THINGS-sized model.
func BenchmarkVICEPredictBatch(b *testing.B) {
	const n, m, p = 1854, 113000, 20
	rng := rand.New(rand.NewPCG(2, 2))
	v := &VICE{N: n, Dim: p, Mu: make([]float32, n*p), LogSigma: make([]float32, n*p)}
	for i := range v.Mu {
		v.Mu[i] = float32(rng.NormFloat64() * 0.3)
		v.LogSigma[i] = -2
	}
	ts := make([]Triplet, m)
	for a := range ts {
		ts[a] = Triplet{I: int32(rng.IntN(n)), J: int32(rng.IntN(n)), K: int32(rng.IntN(n))}
	}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		if _, err := v.PredictBatch(ts, 30, 1); err != nil {
			b.Fatal(err)
		}
	}
}
