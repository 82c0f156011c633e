package trainer

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// genConfig configures one generation of AligNet triplets.
type genConfig struct {
	// Triplets is the number of triplets to draw.
	Triplets int64
	// Clusters is the k of k-means before capping (see effectiveClusters).
	Clusters int
	// MiniBatchAbove is the pool size above which mini-batch k-means runs.
	MiniBatchAbove int
	// Mix is the strategy mix (alignet.TrainerSettings.Strategies).
	Mix map[string]float64
	// Labels are the pool items' classes (-1: none); nil when the pool has
	// no labels, in which case class strategies are dropped from the mix.
	Labels []int32
	// Seed seeds k-means and every strategy's generator.
	Seed uint64
	// Chunk is the number of triplets handed to emit at once.
	Chunk int
}

// genInfo describes a finished generation.
type genInfo struct {
	// Clusters is the k used (0 when no strategy needed clusters) and
	// KMeans "lloyd" or "minibatch".
	Clusters int
	KMeans   string
	// Inertia is the k-means inertia and Empty the number of empty clusters.
	Inertia float64
	Empty   int
	// Parts are the strategies drawn, in order, with their counts.
	Parts []mixPart
	// ClusterTime and SampleTime time the two phases.
	ClusterTime, SampleTime time.Duration
}

// mixPart is one strategy's share of a generation.
type mixPart struct {
	Strategy string `json:"strategy"`
	Triplets int64  `json:"triplets"`
}

// minClusterSize is the mean cluster size below which k is capped: k is at
// most n/minClusterSize (at least 2). On THINGS (1,854 items, so k = 9)
// the recipe sweep (recipe_test.go) found few large clusters best for
// cluster_border (k = 5: 54.2%, 9: 53.9%, 20: 53.5%, 50: 52.1% held-out
// with the same head); ImageNet's 1.28M items keep the paper's 500.
const minClusterSize = 200

// effectiveClusters caps k for a pool of n items.
func effectiveClusters(k, n int) int {
	return max(2, min(k, n/minClusterSize))
}

// planMix splits total triplets over the strategies of mix in the order of
// learner.Strategies, proportionally to their weights (the last one takes
// the rounding remainder). Class strategies are dropped when the pool has
// no labels; if nothing is left, cluster_border takes everything.
func planMix(mix map[string]float64, total int64, labelled bool) []mixPart {
	var names []string
	var sum float64
	for _, s := range learner.Strategies() {
		w := mix[s]
		if !(w > 0) || (alignet.ClassStrategy(s) && !labelled) {
			continue
		}
		names = append(names, s)
		sum += w
	}
	if len(names) == 0 {
		return []mixPart{{Strategy: learner.StrategyClusterBorder, Triplets: total}}
	}
	parts := make([]mixPart, 0, len(names))
	left := total
	for i, s := range names {
		m := left
		if i < len(names)-1 {
			m = min(left, int64(math.Round(float64(total)*mix[s]/sum)))
		}
		if m > 0 {
			parts = append(parts, mixPart{Strategy: s, Triplets: m})
		}
		left -= m
	}
	return parts
}

// needsClusters reports whether a strategy draws from k-means clusters.
func needsClusters(s string) bool {
	return s == learner.StrategyClusterBorder || s == learner.StrategyWithinCluster
}

// generate clusters the n×p teacher representations z when a strategy of
// the mix needs it, then draws cfg.Triplets labelled triplets, strategy by
// strategy (see planMix), and hands them to emit in chunks: indices (odd
// one out last) and the teacher's similarities (s01, s02, s12). Strategy i
// of the plan draws from its own generator seeded with cfg.Seed+i, so the
// dataset is a pure function of z and cfg.
func generate(ctx context.Context, z []float32, n, p int, cfg genConfig, emit func(idx []int32, sims []float32) error) (genInfo, error) {
	info := genInfo{Parts: planMix(cfg.Mix, cfg.Triplets, cfg.Labels != nil)}
	var clusters []int32
	for _, part := range info.Parts {
		if !needsClusters(part.Strategy) || clusters != nil {
			continue
		}
		start := time.Now()
		k := effectiveClusters(cfg.Clusters, n)
		kcfg := learner.KMeansConfig{K: k, Seed: cfg.Seed}
		var res *learner.KMeansResult
		var err error
		if n > cfg.MiniBatchAbove {
			info.KMeans = "minibatch"
			res, err = learner.MiniBatchKMeans(ctx, z, n, p, kcfg)
		} else {
			info.KMeans = "lloyd"
			res, err = learner.KMeans(ctx, z, n, p, kcfg)
		}
		if err != nil {
			return info, fmt.Errorf("k-means: %w", err)
		}
		info.Clusters, info.Inertia = k, res.Inertia
		for _, s := range res.Sizes {
			if s == 0 {
				info.Empty++
			}
		}
		clusters = res.Assign
		info.ClusterTime = time.Since(start)
	}
	start := time.Now()
	chunk := max(cfg.Chunk, 1)
	idx := make([]int32, 3*chunk)
	sims := make([]float32, 3*chunk)
	for i, part := range info.Parts {
		gen, err := learner.NewGenerator(z, n, p, learner.GeneratorConfig{
			Strategy: part.Strategy, Seed: cfg.Seed + uint64(i), Clusters: clusters, Labels: cfg.Labels,
		})
		if err != nil {
			return info, err
		}
		for done := int64(0); done < part.Triplets; {
			if err := ctx.Err(); err != nil {
				return info, err
			}
			m := int(min(int64(chunk), part.Triplets-done))
			gen.NextInto(idx[:3*m], sims[:3*m])
			if err := emit(idx[:3*m], sims[:3*m]); err != nil {
				return info, err
			}
			done += int64(m)
		}
	}
	info.SampleTime = time.Since(start)
	return info, nil
}
