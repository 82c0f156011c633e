package learner

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync/atomic"
)

// KMeansConfig configures KMeans and MiniBatchKMeans. Zero fields take the
// documented defaults.
type KMeansConfig struct {
	// K is the number of clusters (required, 1 <= K <= n).
	K int
	// MaxIter bounds the Lloyd iterations (default 100) or, for the
	// mini-batch variant, the number of mini-batches (default 100).
	MaxIter int
	// Tol stops Lloyd iterations once the relative inertia improvement of an
	// iteration falls below it (default 1e-4; negative means run until no
	// assignment changes or MaxIter).
	Tol float64
	// Seed seeds every random choice; equal seeds give equal results
	// whatever the number of workers.
	Seed uint64
	// Workers is the number of goroutines (default runtime.GOMAXPROCS(0)).
	Workers int
	// InitSample is how many points k-means++ initialisation runs on: a
	// seeded uniform sample of this size (default max(10·K, 2048), capped
	// at n). Sampled k-means++ keeps initialisation cheap for millions of
	// points.
	InitSample int
	// InitCandidates is the number of candidates tried per centre by the
	// greedy k-means++ (default 2 + ⌊ln K⌋, as in scikit-learn).
	InitCandidates int
	// BatchSize is the mini-batch size for MiniBatchKMeans (default 4096).
	BatchSize int
}

func (c KMeansConfig) withDefaults(n int) KMeansConfig {
	if c.MaxIter <= 0 {
		c.MaxIter = 100
	}
	if c.Tol == 0 {
		c.Tol = 1e-4
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.InitSample <= 0 {
		c.InitSample = max(10*c.K, 2048)
	}
	c.InitSample = max(min(c.InitSample, n), c.K)
	if c.InitCandidates <= 0 {
		c.InitCandidates = 2 + int(math.Log(float64(c.K)))
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 4096
	}
	return c
}

// KMeansResult is a fitted clustering.
type KMeansResult struct {
	// Centroids is the K×D row-major matrix of cluster centres.
	Centroids []float32
	// K and D are the number of clusters and the dimension.
	K, D int
	// Assign holds the cluster of each point.
	Assign []int32
	// Sizes holds the number of points in each cluster.
	Sizes []int
	// Inertia is the sum of squared distances of points to their centres.
	Inertia float64
	// Iter is the number of Lloyd iterations or mini-batches run.
	Iter int
}

// assignBlockRows is the fixed row-block size of the assignment step. It is
// a constant, not derived from the worker count, so results do not depend
// on the number of workers.
const assignBlockRows = 256

// KMeans clusters the n×d row-major points x into cfg.K clusters with
// sampled greedy k-means++ initialisation followed by Lloyd iterations. The
// assignment step is a blocked GEMM (‖x‖² − 2x·c + ‖c‖²) spread over
// cfg.Workers goroutines; centroid sums are reduced per cluster in point
// order, so the result is identical for a seed whatever the worker count.
// A cluster that empties is moved to the point farthest from its centre.
func KMeans(ctx context.Context, x []float32, n, d int, cfg KMeansConfig) (*KMeansResult, error) {
	if err := checkKMeans(x, n, d, cfg); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults(n)
	k := cfg.K
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6b6d65616e73))
	c, err := initPlusPlus(ctx, x, n, d, cfg, rng)
	if err != nil {
		return nil, err
	}
	assign := make([]int32, n)
	dist := make([]float32, n)
	for i := range assign {
		assign[i] = -1
	}
	inertia, _, err := assignAll(ctx, x, n, d, c, k, cfg.Workers, assign, dist)
	if err != nil {
		return nil, err
	}
	sizes := make([]int, k)
	iter := 0
	for iter < cfg.MaxIter {
		updateCentroids(x, d, c, k, assign, sizes, cfg.Workers)
		var empty []int
		for j, sz := range sizes {
			if sz == 0 {
				empty = append(empty, j)
			}
		}
		moveEmpty(x, n, d, c, empty, dist)
		prev := inertia
		var changed int
		inertia, changed, err = assignAll(ctx, x, n, d, c, k, cfg.Workers, assign, dist)
		if err != nil {
			return nil, err
		}
		iter++
		if changed == 0 || (cfg.Tol > 0 && prev-inertia <= cfg.Tol*prev) {
			break
		}
	}
	inertia, err = fixEmpty(ctx, x, n, d, c, k, cfg.Workers, assign, dist, sizes, inertia)
	if err != nil {
		return nil, err
	}
	return &KMeansResult{Centroids: c, K: k, D: d, Assign: assign, Sizes: sizes, Inertia: inertia, Iter: iter}, nil
}

// MiniBatchKMeans clusters x like KMeans but updates centres from seeded
// uniform mini-batches with per-centre learning rates 1/count (Sculley,
// "Web-scale k-means clustering", 2010), which scales to millions of
// points. A final full assignment fills Assign, Sizes and Inertia; clusters
// left empty are moved to the farthest points. Deterministic for a seed
// whatever the worker count.
func MiniBatchKMeans(ctx context.Context, x []float32, n, d int, cfg KMeansConfig) (*KMeansResult, error) {
	if err := checkKMeans(x, n, d, cfg); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults(n)
	k := cfg.K
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6d696e69626174))
	c, err := initPlusPlus(ctx, x, n, d, cfg, rng)
	if err != nil {
		return nil, err
	}
	b := min(cfg.BatchSize, n)
	batch := make([]float32, b*d)
	idx := make([]int32, b)
	ba := make([]int32, b)
	bd := make([]float32, b)
	counts := make([]int64, k)
	order := make([]int32, b)
	start := make([]int, k+1)
	for it := 0; it < cfg.MaxIter; it++ {
		for i := range idx {
			idx[i] = int32(rng.IntN(n))
		}
		for i, r := range idx {
			copy(batch[i*d:(i+1)*d], x[int(r)*d:int(r)*d+d])
		}
		if _, _, err := assignAll(ctx, batch, b, d, c, k, cfg.Workers, ba, bd); err != nil {
			return nil, err
		}
		groupBy(ba, k, order, start)
		pool(cfg.Workers).each(k, func(_, j int) {
			cj := c[j*d : (j+1)*d]
			for _, m := range order[start[j]:start[j+1]] {
				counts[j]++
				eta := float32(1 / float64(counts[j]))
				xm := batch[int(m)*d : int(m)*d+d]
				for p := range cj {
					cj[p] += eta * (xm[p] - cj[p])
				}
			}
		})
	}
	assign := make([]int32, n)
	dist := make([]float32, n)
	inertia, _, err := assignAll(ctx, x, n, d, c, k, cfg.Workers, assign, dist)
	if err != nil {
		return nil, err
	}
	sizes := make([]int, k)
	for _, a := range assign {
		sizes[a]++
	}
	inertia, err = fixEmpty(ctx, x, n, d, c, k, cfg.Workers, assign, dist, sizes, inertia)
	if err != nil {
		return nil, err
	}
	return &KMeansResult{Centroids: c, K: k, D: d, Assign: assign, Sizes: sizes, Inertia: inertia, Iter: cfg.MaxIter}, nil
}

func checkKMeans(x []float32, n, d int, cfg KMeansConfig) error {
	switch {
	case n <= 0 || d <= 0:
		return fmt.Errorf("kmeans: need n > 0 and d > 0, got n=%d d=%d", n, d)
	case len(x) != n*d:
		return fmt.Errorf("kmeans: data has %d values, want n·d = %d", len(x), n*d)
	case cfg.K <= 0 || cfg.K > n:
		return fmt.Errorf("kmeans: k must be in [1, %d], got %d", n, cfg.K)
	}
	return nil
}

// rowNorms returns ‖row‖² of each of the n×d rows.
func rowNorms(x []float32, n, d int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = dot32(x[i*d:(i+1)*d], x[i*d:(i+1)*d])
	}
	return out
}

// assignAll assigns each point to its nearest centre, writing assign and
// the squared distance dist, and returns the inertia and the number of
// changed assignments. Rows are processed in fixed blocks; the inertia is
// summed per block and the blocks reduced in order.
func assignAll(ctx context.Context, x []float32, n, d int, c []float32, k, workers int, assign []int32, dist []float32) (float64, int, error) {
	cn := rowNorms(c, k, d)
	cb := prepareB(k, d, c)
	nb := (n + assignBlockRows - 1) / assignBlockRows
	partial := make([]float64, nb)
	changed := make([]int, nb)
	scratch := make([][]float32, pool(workers).size(nb))
	var cancelled atomic.Bool
	pool(workers).each(nb, func(w, blk int) {
		if cancelled.Load() {
			return
		}
		if blk%64 == 0 && ctx.Err() != nil {
			cancelled.Store(true)
			return
		}
		if scratch[w] == nil {
			scratch[w] = make([]float32, assignBlockRows*k)
		}
		r0 := blk * assignBlockRows
		r1 := min(r0+assignBlockRows, n)
		m := r1 - r0
		out := scratch[w][:m*k]
		cb.mulNT(m, x[r0*d:r1*d], out)
		var sum float64
		ch := 0
		for i := 0; i < m; i++ {
			row := out[i*k : (i+1)*k]
			best, bj := float32(math.Inf(1)), 0
			for j, v := range row {
				if s := cn[j] - 2*v; s < best {
					best, bj = s, j
				}
			}
			xi := x[(r0+i)*d : (r0+i+1)*d]
			dd := dot32(xi, xi) + best
			if dd < 0 {
				dd = 0
			}
			if assign[r0+i] != int32(bj) {
				ch++
				assign[r0+i] = int32(bj)
			}
			dist[r0+i] = dd
			sum += float64(dd)
		}
		partial[blk] = sum
		changed[blk] = ch
	})
	if cancelled.Load() {
		return 0, 0, fmt.Errorf("kmeans assignment: %w", ctx.Err())
	}
	var total float64
	tc := 0
	for b := range partial {
		total += partial[b]
		tc += changed[b]
	}
	return total, tc, nil
}

// groupBy writes into order the indices 0..len(a)-1 stably sorted by a,
// with start[j]:start[j+1] the members of group j.
func groupBy(a []int32, k int, order []int32, start []int) {
	clear(start)
	for _, v := range a {
		start[v+1]++
	}
	for j := 0; j < k; j++ {
		start[j+1] += start[j]
	}
	pos := make([]int, k)
	copy(pos, start[:k])
	for i, v := range a {
		order[pos[v]] = int32(i)
		pos[v]++
	}
}

// updateCentroids sets each centre to the mean of its points, summing in
// float64 in point order per cluster, and records the cluster sizes. An
// empty cluster keeps its centre (fixEmpty moves it later).
func updateCentroids(x []float32, d int, c []float32, k int, assign []int32, sizes []int, workers int) {
	order := make([]int32, len(assign))
	start := make([]int, k+1)
	groupBy(assign, k, order, start)
	pool(workers).each(k, func(_, j int) {
		members := order[start[j]:start[j+1]]
		sizes[j] = len(members)
		if len(members) == 0 {
			return
		}
		sum := make([]float64, d)
		for _, m := range members {
			xm := x[int(m)*d : int(m)*d+d]
			for p, v := range xm {
				sum[p] += float64(v)
			}
		}
		inv := 1 / float64(len(members))
		cj := c[j*d : (j+1)*d]
		for p := range cj {
			cj[p] = float32(sum[p] * inv)
		}
	})
}

// fixEmpty moves each empty cluster's centre onto one of the points
// farthest from their centres (distinct points, farthest first, ties by
// index), then reassigns, repeating a few times if needed.
func fixEmpty(ctx context.Context, x []float32, n, d int, c []float32, k, workers int, assign []int32, dist []float32, sizes []int, inertia float64) (float64, error) {
	for round := 0; round < 5; round++ {
		var empty []int
		clear(sizes)
		for _, a := range assign {
			sizes[a]++
		}
		for j, s := range sizes {
			if s == 0 {
				empty = append(empty, j)
			}
		}
		if len(empty) == 0 {
			return inertia, nil
		}
		moveEmpty(x, n, d, c, empty, dist)
		var err error
		inertia, _, err = assignAll(ctx, x, n, d, c, k, workers, assign, dist)
		if err != nil {
			return 0, err
		}
	}
	clear(sizes)
	for _, a := range assign {
		sizes[a]++
	}
	return inertia, nil
}

// moveEmpty moves the centres listed in empty onto the points farthest
// from their current centres (distinct points, farthest first, ties by
// index).
func moveEmpty(x []float32, n, d int, c []float32, empty []int, dist []float32) {
	if len(empty) == 0 {
		return
	}
	order := make([]int32, n)
	for i := range order {
		order[i] = int32(i)
	}
	sort.SliceStable(order, func(a, b int) bool { return dist[order[a]] > dist[order[b]] })
	for e, j := range empty {
		if e >= n {
			break
		}
		m := int(order[e])
		copy(c[j*d:(j+1)*d], x[m*d:(m+1)*d])
	}
}

// initPlusPlus picks k initial centres by greedy k-means++ (Arthur and
// Vassilvitskii 2007; greedy variant as in scikit-learn) run on a seeded
// uniform sample of cfg.InitSample points.
func initPlusPlus(ctx context.Context, x []float32, n, d int, cfg KMeansConfig, rng *rand.Rand) ([]float32, error) {
	k := cfg.K
	m := cfg.InitSample
	// Partial Fisher–Yates over the index range picks m distinct points.
	var sample []float32
	if m == n {
		sample = x
	} else {
		perm := make([]int32, n)
		for i := range perm {
			perm[i] = int32(i)
		}
		for i := 0; i < m; i++ {
			j := i + rng.IntN(n-i)
			perm[i], perm[j] = perm[j], perm[i]
		}
		sel := perm[:m]
		sort.Slice(sel, func(a, b int) bool { return sel[a] < sel[b] })
		sample = make([]float32, m*d)
		for i, r := range sel {
			copy(sample[i*d:(i+1)*d], x[int(r)*d:int(r)*d+d])
		}
	}
	c := make([]float32, k*d)
	sn := rowNorms(sample, m, d)
	first := rng.IntN(m)
	copy(c[:d], sample[first*d:(first+1)*d])
	closest := make([]float32, m)
	distToCands(sample, sn, m, d, c[:d], 1, cfg.Workers, closest)
	L := cfg.InitCandidates
	cands := make([]float32, L*d)
	cd := make([]float32, m*L)
	cum := make([]float64, m)
	for ci := 1; ci < k; ci++ {
		if ci%32 == 0 && ctx.Err() != nil {
			return nil, fmt.Errorf("kmeans init: %w", ctx.Err())
		}
		var total float64
		for i, v := range closest {
			total += float64(v)
			cum[i] = total
		}
		chosen := make([]int, L)
		for l := 0; l < L; l++ {
			if total <= 0 {
				chosen[l] = rng.IntN(m)
			} else {
				u := rng.Float64() * total
				chosen[l] = min(sort.SearchFloat64s(cum, u), m-1)
			}
			copy(cands[l*d:(l+1)*d], sample[chosen[l]*d:(chosen[l]+1)*d])
		}
		distToCands(sample, sn, m, d, cands, L, cfg.Workers, cd)
		best, bestPot := 0, math.Inf(1)
		for l := 0; l < L; l++ {
			var pot float64
			for i := 0; i < m; i++ {
				pot += float64(min(closest[i], cd[i*L+l]))
			}
			if pot < bestPot {
				best, bestPot = l, pot
			}
		}
		for i := 0; i < m; i++ {
			closest[i] = min(closest[i], cd[i*L+best])
		}
		copy(c[ci*d:(ci+1)*d], cands[best*d:(best+1)*d])
	}
	return c, nil
}

// distToCands writes the squared distances between the m sample points and
// the L candidates into out (m×L), using the blocked kernel.
func distToCands(s []float32, sn []float32, m, d int, cands []float32, L, workers int, out []float32) {
	cn := rowNorms(cands, L, d)
	cb := prepareB(L, d, cands)
	pool(workers).blocks(m, assignBlockRows, func(r0, r1 int) {
		o := out[r0*L : r1*L]
		cb.mulNT(r1-r0, s[r0*d:r1*d], o)
		for i := r0; i < r1; i++ {
			for l := 0; l < L; l++ {
				v := sn[i] - 2*o[(i-r0)*L+l] + cn[l]
				if v < 0 {
					v = 0
				}
				o[(i-r0)*L+l] = v
			}
		}
	})
}
