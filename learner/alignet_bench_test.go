package learner

import (
	"context"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// benchMatrix returns a rows×cols matrix of seeded normal values.
func benchMatrix(rows, cols int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 77))
	m := make([]float32, rows*cols)
	for i := range m {
		m[i] = float32(rng.NormFloat64())
	}
	return m
}

// processCPU returns the user+system CPU time of this process from
// /proc/self/stat (Linux), or 0 when unavailable. With it the ImageNet
// benchmark can report compute time even on a shared machine.
func processCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// reportGFLOPs reports flops per op as GFLOP/s.
func reportGFLOPs(b *testing.B, flops float64) {
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// The assignment GEMM block of k-means at ImageNet scale: 256 points ×
// 500 centres × 768 dims, single-threaded.
func BenchmarkAssignGEMM(b *testing.B) {
	const m, k, d = assignBlockRows, 500, 768
	a := benchMatrix(m, d, 1)
	c := benchMatrix(k, d, 2)
	out := make([]float32, m*k)
	flops := 2.0 * m * k * d
	b.Run("kernel", func(b *testing.B) {
		cb := prepareB(k, d, c)
		for b.Loop() {
			cb.mulNT(m, a, out)
		}
		reportGFLOPs(b, flops)
	})
	b.Run("purego", func(b *testing.B) {
		for b.Loop() {
			gemmNTGo(m, k, d, a, c, out)
		}
		reportGFLOPs(b, flops)
	})
	b.Run("gonum-sgemm", func(b *testing.B) {
		// gonum parallelises internally; pin it to one thread for a fair
		// per-core comparison.
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		for b.Loop() {
			blas32.Gemm(blas.NoTrans, blas.Trans, 1,
				blas32.General{Rows: m, Cols: d, Stride: d, Data: a},
				blas32.General{Rows: k, Cols: d, Stride: d, Data: c},
				0, blas32.General{Rows: m, Cols: k, Stride: k, Data: out})
		}
		reportGFLOPs(b, flops)
	})
}

// BenchmarkPeakSGEMM measures the machine's attainable float32 GEMM rate
// on 2048×2048×2048 with gonum's Sgemm (all cores) and with the k-means
// kernel run on all cores over row blocks.
func BenchmarkPeakSGEMM(b *testing.B) {
	const n = 2048
	a := benchMatrix(n, n, 3)
	c := benchMatrix(n, n, 4)
	out := make([]float32, n*n)
	flops := 2.0 * n * n * n
	b.Run("gonum-sgemm", func(b *testing.B) {
		for b.Loop() {
			blas32.Gemm(blas.NoTrans, blas.Trans, 1,
				blas32.General{Rows: n, Cols: n, Stride: n, Data: a},
				blas32.General{Rows: n, Cols: n, Stride: n, Data: c},
				0, blas32.General{Rows: n, Cols: n, Stride: n, Data: out})
		}
		reportGFLOPs(b, flops)
	})
	b.Run("kernel", func(b *testing.B) {
		for b.Loop() {
			cb := prepareB(n, n, c)
			allProcs.blocks(n/assignBlockRows*assignBlockRows, assignBlockRows, func(r0, _ int) {
				cb.mulNT(assignBlockRows, a[r0*n:], out[r0*n:])
			})
		}
		reportGFLOPs(b, flops)
	})
}

// BenchmarkKMeansSmall clusters 50,000 points × 128 dims into 100
// clusters (always runs).
func BenchmarkKMeansSmall(b *testing.B) {
	const n, d, k = 50000, 128, 100
	x, _ := plantedClusters(n, d, k, 3, 5)
	b.Run("lloyd", func(b *testing.B) {
		for b.Loop() {
			if _, err := KMeans(context.Background(), x, n, d, KMeansConfig{K: k, Seed: 1, MaxIter: 10}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("minibatch", func(b *testing.B) {
		for b.Loop() {
			if _, err := MiniBatchKMeans(context.Background(), x, n, d, KMeansConfig{K: k, Seed: 1, MaxIter: 50, BatchSize: 2048}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGenerate labels cluster_border triplets over 100,000 items ×
// 768 dims and reports triplets per second.
func BenchmarkGenerate(b *testing.B) {
	const n, d = 100000, 768
	z := benchMatrix(n, d, 6)
	clusters := groupsOf(n, 500, 7)
	g, err := NewGenerator(z, n, d, GeneratorConfig{Seed: 1, Clusters: clusters})
	if err != nil {
		b.Fatal(err)
	}
	idx := make([]int32, 3*65536)
	sims := make([]float32, 3*65536)
	for b.Loop() {
		g.NextInto(idx, sims)
	}
	b.ReportMetric(65536*float64(b.N)/b.Elapsed().Seconds(), "triplets/s")
}

// BenchmarkDistill trains a 300→300 student head on THINGS-sized data
// (1,854 items) and reports triplets per second.
func BenchmarkDistill(b *testing.B) {
	const n, d, nt = 1854, 300, 20480
	x := benchMatrix(n, d, 8)
	z := benchMatrix(n, 64, 9)
	g, _ := NewGenerator(z, n, 64, GeneratorConfig{Strategy: StrategyRandom, Seed: 1})
	idx, sims := g.Next(nt)
	for _, loss := range []string{LossKL, LossJS} {
		b.Run(loss, func(b *testing.B) {
			for b.Loop() {
				h, _ := NewStudentHead(d, HeadConfig{Init: InitIdentity})
				if _, err := TrainStudent(context.Background(), h, x, n, idx, sims, DistillConfig{Loss: loss, Epochs: 1, BatchSize: 2048}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(nt*float64(b.N)/b.Elapsed().Seconds(), "triplets/s")
		})
	}
}

// BenchmarkAligNetImageNet runs the AligNet data pipeline at ImageNet
// scale on synthetic data: 1.28M items × 768 dims (float32, 3.9 GB),
// mini-batch k-means with k = 500, then 10M cluster_border triplets
// labelled and streamed to a discarding sink. It runs only with
// ALIGNET_BENCH_IMAGENET=1, e.g.
//
//	ALIGNET_BENCH_IMAGENET=1 /usr/bin/time -v go test ./learner -run '^$' \
//	  -bench AligNetImageNet -benchtime 1x -timeout 30m
func BenchmarkAligNetImageNet(b *testing.B) {
	if os.Getenv("ALIGNET_BENCH_IMAGENET") != "1" {
		b.Skip("set ALIGNET_BENCH_IMAGENET=1 to run the ImageNet-scale benchmark")
	}
	const n, d, k = 1_281_167, 768, 500
	const total, chunk = 10_000_000, 1 << 16
	// Synthetic representations: 1000 class centres plus noise.
	start := time.Now()
	x := make([]float32, n*d)
	centres := benchMatrix(1000, d, 10)
	allProcs.blocks(n, 4096, func(lo, hi int) {
		r := rng64{s: uint64(lo/4096) * 0x9e3779b97f4a7c15}
		for i := lo; i < hi; i++ {
			c := centres[r.intn(1000)*d:]
			for p := 0; p < d; p++ {
				u := float32(r.next()>>40)/float32(1<<24) - 0.5
				x[i*d+p] = c[p] + 2*u
			}
		}
	})
	b.Logf("synthetic data: wall %v, cpu %v", time.Since(start), processCPU())
	for b.Loop() {
		t0, c0 := time.Now(), processCPU()
		res, err := MiniBatchKMeans(context.Background(), x, n, d, KMeansConfig{K: k, Seed: 1, BatchSize: 4096, MaxIter: 100})
		if err != nil {
			b.Fatal(err)
		}
		tk, ck := time.Since(t0), processCPU()-c0
		// FLOPs of the assignment GEMMs: k-means++ on the 5,000-point sample
		// (8 candidates per centre), 100 mini-batches of 4096, final pass.
		gemmFlops := 2.0 * float64(d) * (float64(k)*5000*8 + float64(k)*(100*4096+float64(n)))
		b.Logf("mini-batch k-means: wall %v, cpu %v (inertia %.4g); assignment GEMMs ≈ %.0f GFLOP → %.1f GFLOP/s per CPU-second",
			tk, ck, res.Inertia, gemmFlops/1e9, gemmFlops/ck.Seconds()/1e9)
		t1, c1 := time.Now(), processCPU()
		g, err := NewGenerator(x, n, d, GeneratorConfig{Seed: 2, Clusters: res.Assign})
		if err != nil {
			b.Fatal(err)
		}
		idx := make([]int32, 3*chunk)
		sims := make([]float32, 3*chunk)
		var sink float32
		for done := 0; done < total; done += chunk {
			m := min(chunk, total-done)
			g.NextInto(idx[:3*m], sims[:3*m])
			sink += sims[0]
		}
		tg, cg := time.Since(t1), processCPU()-c1
		b.Logf("generate %d triplets: wall %v, cpu %v (%.0f triplets per CPU-second) sink %g", total, tg, cg, total/cg.Seconds(), sink)
		b.ReportMetric(tk.Seconds(), "kmeans-s")
		b.ReportMetric(ck.Seconds(), "kmeans-cpu-s")
		b.ReportMetric(tg.Seconds(), "generate-s")
		b.ReportMetric(cg.Seconds(), "generate-cpu-s")
	}
}
