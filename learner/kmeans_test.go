package learner

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// plantedClusters returns n points in d dimensions around k well-separated
// random centres, and the true cluster of each point.
func plantedClusters(n, d, k int, spread float64, seed uint64) ([]float32, []int32) {
	rng := rand.New(rand.NewPCG(seed, 1))
	centres := make([]float64, k*d)
	for i := range centres {
		centres[i] = rng.NormFloat64() * 10
	}
	x := make([]float32, n*d)
	truth := make([]int32, n)
	for i := 0; i < n; i++ {
		c := rng.IntN(k)
		truth[i] = int32(c)
		for p := 0; p < d; p++ {
			x[i*d+p] = float32(centres[c*d+p] + rng.NormFloat64()*spread)
		}
	}
	return x, truth
}

// adjustedRand returns the adjusted Rand index of two labelings.
func adjustedRand(a, b []int32) float64 {
	type pair struct{ x, y int32 }
	nij := map[pair]int{}
	ai := map[int32]int{}
	bj := map[int32]int{}
	for i := range a {
		nij[pair{a[i], b[i]}]++
		ai[a[i]]++
		bj[b[i]]++
	}
	c2 := func(n int) float64 { return float64(n) * float64(n-1) / 2 }
	var sij, sa, sb float64
	for _, v := range nij {
		sij += c2(v)
	}
	for _, v := range ai {
		sa += c2(v)
	}
	for _, v := range bj {
		sb += c2(v)
	}
	exp := sa * sb / c2(len(a))
	return (sij - exp) / ((sa+sb)/2 - exp)
}

func TestKMeansRecoversPlantedClusters(t *testing.T) {
	x, truth := plantedClusters(3000, 16, 12, 1, 7)
	for _, mini := range []bool{false, true} {
		cfg := KMeansConfig{K: 12, Seed: 3, BatchSize: 256, MaxIter: 60}
		var res *KMeansResult
		var err error
		if mini {
			res, err = MiniBatchKMeans(context.Background(), x, 3000, 16, cfg)
		} else {
			res, err = KMeans(context.Background(), x, 3000, 16, cfg)
		}
		if err != nil {
			t.Fatal(err)
		}
		if ari := adjustedRand(res.Assign, truth); ari < 0.95 {
			t.Errorf("minibatch=%v: adjusted Rand %.3f < 0.95", mini, ari)
		}
		total := 0
		for _, s := range res.Sizes {
			if s == 0 {
				t.Errorf("minibatch=%v: empty cluster", mini)
			}
			total += s
		}
		if total != 3000 {
			t.Errorf("sizes sum to %d", total)
		}
	}
}

func TestKMeansDeterministicAcrossWorkers(t *testing.T) {
	x, _ := plantedClusters(2000, 24, 20, 4, 11)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, mini := range []bool{false, true} {
		var ref *KMeansResult
		for _, w := range []int{1, 2, 3, 8} {
			runtime.GOMAXPROCS(w)
			cfg := KMeansConfig{K: 20, Seed: 5, BatchSize: 300, MaxIter: 20}
			var res *KMeansResult
			var err error
			if mini {
				res, err = MiniBatchKMeans(context.Background(), x, 2000, 24, cfg)
			} else {
				res, err = KMeans(context.Background(), x, 2000, 24, cfg)
			}
			if err != nil {
				t.Fatal(err)
			}
			if ref == nil {
				ref = res
				continue
			}
			if !slices.Equal(res.Assign, ref.Assign) || !slices.Equal(res.Centroids, ref.Centroids) || res.Inertia != ref.Inertia {
				t.Errorf("minibatch=%v: workers=%d differs from workers=1", mini, w)
			}
		}
	}
}

func TestMiniBatchInertiaCloseToLloyd(t *testing.T) {
	x, _ := plantedClusters(6000, 32, 30, 6, 13)
	lloyd, err := KMeans(context.Background(), x, 6000, 32, KMeansConfig{K: 30, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := MiniBatchKMeans(context.Background(), x, 6000, 32, KMeansConfig{K: 30, Seed: 1, BatchSize: 512, MaxIter: 100})
	if err != nil {
		t.Fatal(err)
	}
	if r := mb.Inertia / lloyd.Inertia; r > 1.05 || r < 0.9 {
		t.Errorf("mini-batch inertia %.4g vs Lloyd %.4g (ratio %.3f)", mb.Inertia, lloyd.Inertia, r)
	}
	// The reported inertia is the true sum of squared distances.
	var want float64
	for i, a := range lloyd.Assign {
		for p := 0; p < 32; p++ {
			dv := float64(x[i*32+p] - lloyd.Centroids[int(a)*32+p])
			want += dv * dv
		}
	}
	if math.Abs(want-lloyd.Inertia) > 1e-3*want {
		t.Errorf("inertia %.6g, recomputed %.6g", lloyd.Inertia, want)
	}
}

func TestKMeansHandlesDuplicatePoints(t *testing.T) {
	// Only 3 distinct points but k=5: clusters must still all be non-empty
	// or the result must at least be valid; more distinct points than k is
	// the usual case, so here check validity and no panic.
	x := []float32{0, 0, 0, 0, 1, 1, 1, 1, 5, 5, 5, 5, 9, 9, 2, 2}
	res, err := KMeans(context.Background(), x, 8, 2, KMeansConfig{K: 5, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range res.Assign {
		if a < 0 || int(a) >= 5 {
			t.Fatalf("point %d assigned to %d", i, a)
		}
	}
	// Five distinct points exist: (0,0) (1,1) (5,5) (9,9) (2,2), so an
	// optimal 5-clustering has zero inertia and no empty cluster.
	if res.Inertia > 1e-6 {
		t.Errorf("inertia %.4g, want 0", res.Inertia)
	}
}

func TestGemmNTMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sh := range [][3]int{{1, 1, 1}, {5, 7, 3}, {17, 70, 33}, {256, 130, 96}, {9, 5, 1000}} {
		m, k, d := sh[0], sh[1], sh[2]
		a := make([]float32, m*d)
		b := make([]float32, k*d)
		for i := range a {
			a[i] = float32(rng.NormFloat64())
		}
		for i := range b {
			b[i] = float32(rng.NormFloat64())
		}
		out := make([]float32, m*k)
		goOut := make([]float32, m*k)
		gemmNT(m, k, d, a, b, out)
		gemmNTGo(m, k, d, a, b, goOut)
		for i := 0; i < m; i++ {
			for j := 0; j < k; j++ {
				var s float64
				for p := 0; p < d; p++ {
					s += float64(a[i*d+p]) * float64(b[j*d+p])
				}
				if math.Abs(s-float64(out[i*k+j])) > 1e-4*(1+math.Sqrt(float64(d))) {
					t.Fatalf("shape %v: out[%d,%d]=%g want %g", sh, i, j, out[i*k+j], s)
				}
				if math.Abs(s-float64(goOut[i*k+j])) > 1e-4*(1+math.Sqrt(float64(d))) {
					t.Fatalf("shape %v: portable out[%d,%d]=%g want %g", sh, i, j, goOut[i*k+j], s)
				}
			}
		}
	}
}

func TestFixEmptyReseedsUnusedCentre(t *testing.T) {
	x, _ := plantedClusters(500, 4, 3, 0.5, 3)
	// Three sensible centres plus one far away that attracts no point.
	c := make([]float32, 4*4)
	copy(c[0:4], x[0:4])
	copy(c[4:8], x[4:8])
	copy(c[8:12], x[8:12])
	for p := 12; p < 16; p++ {
		c[p] = 1e4
	}
	assign := make([]int32, 500)
	dist := make([]float32, 500)
	in, _, err := assignAll(context.Background(), x, 500, 4, c, 4, 2, assign, dist)
	if err != nil {
		t.Fatal(err)
	}
	sizes := make([]int, 4)
	after, err := fixEmpty(context.Background(), x, 500, 4, c, 4, 2, assign, dist, sizes, in)
	if err != nil {
		t.Fatal(err)
	}
	for j, s := range sizes {
		if s == 0 {
			t.Errorf("cluster %d still empty", j)
		}
	}
	if !(after < in) {
		t.Errorf("inertia %.4g → %.4g, want a decrease", in, after)
	}
}

func TestDot3MatchesNaive(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17, 33, 768, 1001} {
		a, b, c := benchMatrix(1, n, 1), benchMatrix(1, n, 2), benchMatrix(1, n, 3)
		ab, ac, bc := dot3(a, b, c)
		var wab, wac, wbc float64
		for p := 0; p < n; p++ {
			wab += float64(a[p]) * float64(b[p])
			wac += float64(a[p]) * float64(c[p])
			wbc += float64(b[p]) * float64(c[p])
		}
		tol := 1e-4 * (1 + math.Sqrt(float64(n)))
		if math.Abs(float64(ab)-wab) > tol || math.Abs(float64(ac)-wac) > tol || math.Abs(float64(bc)-wbc) > tol {
			t.Errorf("n=%d: dot3 = %g %g %g, want %g %g %g", n, ab, ac, bc, wab, wac, wbc)
		}
	}
}
