package learner

import (
	"errors"
	"fmt"
	"math/bits"
	"runtime"
)

// Triplet sampling strategies for AligNet data generation.
const (
	// StrategyClusterBorder draws two items from one cluster and the third
	// from another cluster (the AligNet default).
	StrategyClusterBorder = "cluster_border"
	// StrategyRandom draws three distinct items uniformly.
	StrategyRandom = "random"
	// StrategyWithinCluster draws all three items from one cluster.
	StrategyWithinCluster = "within_cluster"
	// StrategyBetweenClass draws three items from three different classes.
	StrategyBetweenClass = "between_class"
	// StrategyWithinClass draws all three items from one class.
	StrategyWithinClass = "within_class"
	// StrategyClassBorder draws two items from one class and the third from
	// another class.
	StrategyClassBorder = "class_border"
)

// Strategies returns the accepted strategy names, default first.
func Strategies() []string {
	return []string{StrategyClusterBorder, StrategyRandom, StrategyWithinCluster,
		StrategyBetweenClass, StrategyWithinClass, StrategyClassBorder}
}

// GeneratorConfig configures a Generator.
type GeneratorConfig struct {
	// Strategy is one of the Strategy constants (default cluster_border).
	Strategy string
	// Seed makes the triplet sequence reproducible: triplet number t
	// depends only on Seed, the strategy, the groups and t.
	Seed uint64
	// Workers is the number of labelling goroutines (default GOMAXPROCS).
	Workers int
	// Clusters holds each item's cluster (for the cluster strategies).
	Clusters []int32
	// Labels holds each item's class (for the class strategies); items
	// with a negative label are never drawn by those strategies.
	Labels []int32
}

// Generator streams AligNet triplets labelled by a teacher. Each triplet is
// returned as indices (a, b, c) with c the odd one out according to the
// teacher, i.e. (a, b) is the pair with the largest teacher similarity, and
// similarities (s_ab, s_ac, s_bc), so s_ab ≥ s_ac and s_ab ≥ s_bc. This is
// the order of Logits for Triplet{I: a, J: b, K: c} (Softmax3 index 0 is
// "c is odd") and the layout of the official AligNet release
// (google-research/kauldron_projects/alignet: "filename2 is the odd one
// out", similarities "[s01, s02, s12]"). That README also states
// "s12 < s01 and s12 < s02"; under the odd-one-out model used here, where
// p(c odd) ∝ exp(s_ab), the odd one last means s_ab is the largest, which
// is what Generator guarantees (ties keep the sampled order).
//
// The sequence is a pure function of the configuration: triplet t is drawn
// from its own counter-based random stream, so any chunking and any number
// of workers give the same triplets. A Generator is not safe for
// concurrent use; Next itself labels in parallel.
type Generator struct {
	z        []float32
	n, p     int
	strategy string
	seed     uint64
	workers  int
	part     *partition
	next     int64
}

// partition groups items by cluster or class. items lists the eligible
// items sorted by group, group g spans items[start[g]:start[g+1]], pos2
// (for the "within" strategies) and pair list the items whose group is
// big enough to draw two or three members.
type partition struct {
	group []int32 // group of each item, -1 if excluded
	items []int32
	start []int
	two   []int32 // items whose group has ≥ 2 members
	three []int32 // items whose group has ≥ 3 members
	count int     // number of non-empty groups
}

func newPartition(labels []int32, n int) (*partition, error) {
	if len(labels) != n {
		return nil, fmt.Errorf("generator: %d group labels for %d items", len(labels), n)
	}
	ng := 0
	for _, g := range labels {
		if int(g)+1 > ng {
			ng = int(g) + 1
		}
	}
	pt := &partition{group: labels, start: make([]int, ng+1)}
	for _, g := range labels {
		if g >= 0 {
			pt.start[g+1]++
		}
	}
	for g := 0; g < ng; g++ {
		if pt.start[g+1] > 0 {
			pt.count++
		}
		pt.start[g+1] += pt.start[g]
	}
	pt.items = make([]int32, pt.start[ng])
	pos := append([]int(nil), pt.start[:ng]...)
	for i, g := range labels {
		if g >= 0 {
			pt.items[pos[g]] = int32(i)
			pos[g]++
		}
	}
	for _, it := range pt.items {
		s := pt.size(labels[it])
		if s >= 2 {
			pt.two = append(pt.two, it)
		}
		if s >= 3 {
			pt.three = append(pt.three, it)
		}
	}
	return pt, nil
}

func (pt *partition) size(g int32) int { return pt.start[g+1] - pt.start[g] }

// NewGenerator returns a generator over the n×p teacher representations z
// (the teacher's similarity of items a and b is the dot product of rows a
// and b). It validates that the strategy can draw triplets from the given
// clusters or labels.
func NewGenerator(z []float32, n, p int, cfg GeneratorConfig) (*Generator, error) {
	if n < 3 || p <= 0 || len(z) != n*p {
		return nil, fmt.Errorf("generator: need an n×p matrix with n ≥ 3, got %d values for n=%d p=%d", len(z), n, p)
	}
	g := &Generator{z: z, n: n, p: p, strategy: cfg.Strategy, seed: cfg.Seed, workers: cfg.Workers}
	if g.strategy == "" {
		g.strategy = StrategyClusterBorder
	}
	if g.workers <= 0 {
		g.workers = runtime.GOMAXPROCS(0)
	}
	var err error
	switch g.strategy {
	case StrategyRandom:
		return g, nil
	case StrategyClusterBorder, StrategyWithinCluster:
		if cfg.Clusters == nil {
			return nil, fmt.Errorf("generator: strategy %s needs cluster assignments", g.strategy)
		}
		for i, c := range cfg.Clusters {
			if c < 0 {
				return nil, fmt.Errorf("generator: item %d has negative cluster %d", i, c)
			}
		}
		g.part, err = newPartition(cfg.Clusters, n)
	case StrategyBetweenClass, StrategyWithinClass, StrategyClassBorder:
		if cfg.Labels == nil {
			return nil, fmt.Errorf("generator: strategy %s needs class labels", g.strategy)
		}
		g.part, err = newPartition(cfg.Labels, n)
	default:
		return nil, fmt.Errorf("generator: unknown strategy %q (want one of %v)", g.strategy, Strategies())
	}
	if err != nil {
		return nil, err
	}
	pt := g.part
	switch g.strategy {
	case StrategyClusterBorder, StrategyClassBorder:
		if len(pt.two) == 0 || pt.count < 2 {
			return nil, errors.New("generator: border strategies need a group with two items and at least two groups")
		}
	case StrategyWithinCluster, StrategyWithinClass:
		if len(pt.three) == 0 {
			return nil, errors.New("generator: within strategies need a group with at least three items")
		}
	case StrategyBetweenClass:
		if pt.count < 3 {
			return nil, errors.New("generator: between_class needs at least three classes")
		}
	}
	return g, nil
}

// Next returns the next chunk triplets: indices holds chunk×3 item indices
// (odd one last) and sims chunk×3 teacher similarities in the matching
// order.
func (g *Generator) Next(chunk int) (indices []int32, sims []float32) {
	indices = make([]int32, 3*chunk)
	sims = make([]float32, 3*chunk)
	g.NextInto(indices, sims)
	return indices, sims
}

// NextInto fills indices and sims (equal lengths, a multiple of three)
// with the next len(indices)/3 triplets, reusing the caller's buffers.
func (g *Generator) NextInto(indices []int32, sims []float32) {
	if len(indices) != len(sims) || len(indices)%3 != 0 {
		panic("learner: Generator.NextInto needs equal buffers of a multiple of three")
	}
	chunk := len(indices) / 3
	base := g.next
	pool(g.workers).blocks(chunk, 1024, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			tr := g.sample(base + int64(t))
			tr, l := g.label(tr)
			indices[3*t], indices[3*t+1], indices[3*t+2] = tr.I, tr.J, tr.K
			sims[3*t], sims[3*t+1], sims[3*t+2] = l[0], l[1], l[2]
		}
	})
	g.next += int64(chunk)
}

// At returns triplet number t of the sequence (labelled and ordered)
// without advancing the generator.
func (g *Generator) At(t int64) (Triplet, [3]float32) {
	return g.label(g.sample(t))
}

// label computes the teacher's similarities and reorders the triplet so
// that the most similar pair comes first and the odd one last.
func (g *Generator) label(t Triplet) (Triplet, [3]float32) {
	p := g.p
	zi := g.z[int(t.I)*p : int(t.I)*p+p]
	zj := g.z[int(t.J)*p : int(t.J)*p+p]
	zk := g.z[int(t.K)*p : int(t.K)*p+p]
	sij, sik, sjk := dot3(zi, zj, zk)
	switch {
	case sij >= sik && sij >= sjk:
		return t, [3]float32{sij, sik, sjk}
	case sik >= sjk:
		return Triplet{t.I, t.K, t.J}, [3]float32{sik, sij, sjk}
	default:
		return Triplet{t.J, t.K, t.I}, [3]float32{sjk, sij, sik}
	}
}

// rng64 is a counter-based splitmix64 stream.
type rng64 struct{ s uint64 }

func (r *rng64) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a uniform integer in [0, n) (Lemire's method, unbiased).
func (r *rng64) intn(n int) int {
	un := uint64(n)
	hi, lo := bits.Mul64(r.next(), un)
	if lo < un {
		thresh := -un % un
		for lo < thresh {
			hi, lo = bits.Mul64(r.next(), un)
		}
	}
	return int(hi)
}

// stream returns the random stream of triplet t.
func (g *Generator) stream(t int64) rng64 {
	r := rng64{s: g.seed ^ 0x616c69676e6574}
	r.s = r.next() ^ uint64(t)*0xd1342543de82ef95
	r.next()
	return r
}

// sample draws the unlabelled triplet number t.
func (g *Generator) sample(t int64) Triplet {
	r := g.stream(t)
	switch g.strategy {
	case StrategyRandom:
		i := r.intn(g.n)
		j := r.intn(g.n - 1)
		if j >= i {
			j++
		}
		k := r.intn(g.n - 2)
		lo, hi := min(i, j), max(i, j)
		if k >= lo {
			k++
		}
		if k >= hi {
			k++
		}
		return Triplet{int32(i), int32(j), int32(k)}
	case StrategyClusterBorder, StrategyClassBorder:
		pt := g.part
		i := pt.two[r.intn(len(pt.two))]
		gi := pt.group[i]
		j := pt.drawIn(&r, gi, i, -1)
		k := pt.drawOutside(&r, gi)
		return Triplet{i, j, k}
	case StrategyWithinCluster, StrategyWithinClass:
		pt := g.part
		i := pt.three[r.intn(len(pt.three))]
		gi := pt.group[i]
		j := pt.drawIn(&r, gi, i, -1)
		k := pt.drawIn(&r, gi, i, j)
		return Triplet{i, j, k}
	case StrategyBetweenClass:
		pt := g.part
		i := pt.items[r.intn(len(pt.items))]
		gi := pt.group[i]
		j := pt.drawOutside(&r, gi)
		gj := pt.group[j]
		for {
			k := pt.drawOutside(&r, gi)
			if pt.group[k] != gj {
				return Triplet{i, j, k}
			}
		}
	}
	panic("learner: unknown strategy " + g.strategy)
}

// drawIn draws a member of group gr other than the items a and b.
func (pt *partition) drawIn(r *rng64, gr, a, b int32) int32 {
	members := pt.items[pt.start[gr]:pt.start[gr+1]]
	for {
		m := members[r.intn(len(members))]
		if m != a && m != b {
			return m
		}
	}
}

// drawOutside draws an eligible item uniformly from outside group gr.
func (pt *partition) drawOutside(r *rng64, gr int32) int32 {
	lo, hi := pt.start[gr], pt.start[gr+1]
	u := r.intn(len(pt.items) - (hi - lo))
	if u >= lo {
		u += hi - lo
	}
	return pt.items[u]
}
