package learner

import (
	"errors"
	"fmt"
)

// EnsembleOneHotMix is the default one-hot weight α of the distilled
// targets (HumanModelConfig.OneHotMix). On THINGS it gave the lowest
// validation NLL of the distilled teacher among the weights tried (0.1,
// 0.2, 0.35 and 0.5); an ensemble is already close to the observed
// choices, so less of them needs mixing in than for VICE alone (0.5).
const EnsembleOneHotMix = 0.2

// EnsembleDistilledTargets returns uncertainty-distilled soft targets for
// fitting the surrogate teacher on the odd-one-out triplets train of n
// items: one distribution per triplet in Softmax3 order (index 0: the
// observed odd one K, 1: J odd, 2: I odd), to pass as the targets of
// FitTeacher or SelectLambda. It is the recipe of "alignet fit --targets
// distilled" and of refitting a teacher online:
//
//  1. Fit VICE, the probabilistic human model, to the n items on train
//     (FitVICE(n, train, cfg)) and take its posterior predictive of each
//     triplet, averaged over cfg.PredictSamples joint samples of the
//     embedding (VICE.PredictBatch with seed cfg.Seed).
//  2. Take the predictions of hard, a teacher of the n×hard.D embeddings x
//     fitted to the hard choices of train, at a temperature calibrated on
//     held-out choices (as SelectLambda returns it): hard.Probs(x, n, train).
//  3. Average the two and mix the average with the observed choice and the
//     repeated responses as EnsembleSoftTargets does (cfg.OneHotMix,
//     default EnsembleOneHotMix, and cfg.RepeatPseudoCount).
//
// The repeats must not be the data the distilled teacher is later
// evaluated on. The result depends only on the inputs and cfg.Seed.
//
// On THINGS (TestDistillationOnThings) a teacher fitted to these targets
// had lower NLL and KL to held-out human response distributions than the
// hard-label teacher it was distilled from, with accuracy within half a
// point, on every seed tried; the gain is small (about 1% of the KL).
// Targets from VICE alone did not beat the hard-label teacher once both
// teachers' λ and temperature were tuned on validation data (a VICE model
// fitted on 10⁵ triplets is no better than the teacher itself), and
// out-of-fold VICE predictions (two folds) were worse still: the gain
// comes from averaging two different models.
func EnsembleDistilledTargets(x []float32, n int, train []Triplet, repeats []RepeatedTriplet, hard *Teacher, cfg HumanModelConfig) ([][3]float32, error) {
	switch {
	case hard == nil:
		return nil, errors.New("ensemble distilled targets: no hard-label teacher")
	case hard.Task != TaskOddOneOut:
		return nil, fmt.Errorf("ensemble distilled targets: teacher task %q, the human model needs %q", hard.Task, TaskOddOneOut)
	case n <= 0 || len(x) != n*hard.D:
		return nil, fmt.Errorf("ensemble distilled targets: embeddings have %d values, want %d×%d", len(x), n, hard.D)
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("ensemble distilled targets: %w", err)
	}
	if err := viceCheckTriplets(n, train); err != nil {
		return nil, fmt.Errorf("ensemble distilled targets: %w", err)
	}
	if _, err := repeatCounts(repeats, n); err != nil {
		return nil, fmt.Errorf("ensemble distilled targets: %w", err)
	}
	v, _, err := FitVICE(n, train, cfg)
	if err != nil {
		return nil, fmt.Errorf("ensemble distilled targets: %w", err)
	}
	vp, err := v.PredictBatch(train, c.PredictSamples, c.Seed)
	if err != nil {
		return nil, fmt.Errorf("ensemble distilled targets: %w", err)
	}
	q, err := EnsembleSoftTargets(train, repeats, cfg, vp, hard.Probs(x, n, train))
	if err != nil {
		return nil, fmt.Errorf("ensemble distilled targets: %w", err)
	}
	return q, nil
}

// EnsembleSoftTargets returns soft targets for the training triplets
// (Softmax3 order) from the equal-weight average v of the prediction sets
// preds, each one distribution per training triplet in Softmax3 order,
// such as the VICE posterior predictive (VICE.PredictBatch) and a
// hard-label teacher whose temperature was calibrated on held-out choices
// (Teacher.Probs): an average of models that err differently is better
// calibrated than its members, and the distilled teacher inherits that.
// For each triplet:
//
//   - Where its unordered item set appears in repeats (counts of entries
//     with the same set are summed), with counts c of how often each item
//     was chosen (N = Σc), the target is the additive smoothing of the
//     empirical distribution toward v: q = (c + κ·v)/(N + κ) =
//     N/(N+κ)·(c/N) + κ/(N+κ)·v with κ = cfg.RepeatPseudoCount (default 3,
//     the total pseudo-count of Laplace's rule, distributed by v instead
//     of uniformly).
//   - Otherwise q = (1−α)·v + α·onehot(K) with α = cfg.OneHotMix (default
//     EnsembleOneHotMix): the models' predictions lean toward the observed
//     choice already, and mixing in the choice itself gave a better
//     calibrated and more accurate teacher on THINGS.
//
// Zero fields of cfg take their defaults; the other fields are not used.
// EnsembleDistilledTargets is the complete recipe.
func EnsembleSoftTargets(train []Triplet, repeats []RepeatedTriplet, cfg HumanModelConfig, preds ...[][3]float64) ([][3]float32, error) {
	cfg = cfg.withDefaults()
	if !(cfg.OneHotMix <= 1) {
		return nil, fmt.Errorf("ensemble soft targets: one-hot mix %v not in [0,1]", cfg.OneHotMix)
	}
	if len(preds) == 0 {
		return nil, errors.New("ensemble soft targets: no predictions")
	}
	for m, p := range preds {
		if len(p) != len(train) {
			return nil, fmt.Errorf("ensemble soft targets: prediction set %d has %d rows for %d triplets", m, len(p), len(train))
		}
	}
	counts, err := repeatCounts(repeats, -1)
	if err != nil {
		return nil, fmt.Errorf("ensemble soft targets: %w", err)
	}
	avg := make([][3]float64, len(train))
	w := 1 / float64(len(preds))
	for a := range avg {
		var sum float64
		for _, p := range preds {
			for s := 0; s < 3; s++ {
				if !(p[a][s] >= 0) {
					return nil, fmt.Errorf("ensemble soft targets: triplet %d has probability %v", a, p[a][s])
				}
				avg[a][s] += w * p[a][s]
				sum += w * p[a][s]
			}
		}
		if !(sum > 0) {
			return nil, fmt.Errorf("ensemble soft targets: triplet %d has no probability mass", a)
		}
		for s := 0; s < 3; s++ {
			avg[a][s] /= sum
		}
	}
	return mixTargets(train, avg, counts, cfg.RepeatPseudoCount, cfg.OneHotMix), nil
}

// repeatCounts sums the counts of repeated triplets by unordered item set,
// in the slot order of viceSortedItems. Items at or above n are rejected
// when n ≥ 0.
func repeatCounts(repeats []RepeatedTriplet, n int) (map[[3]int32][3]int64, error) {
	counts := make(map[[3]int32][3]int64, len(repeats))
	for a, r := range repeats {
		for _, it := range r.Items {
			if it < 0 {
				return nil, fmt.Errorf("repeated triplet %d has negative item %d", a, it)
			}
			if n >= 0 && int(it) >= n {
				return nil, fmt.Errorf("repeated triplet %d has item %d outside [0,%d)", a, it, n)
			}
		}
		if r.Counts[0] < 0 || r.Counts[1] < 0 || r.Counts[2] < 0 {
			return nil, fmt.Errorf("repeated triplet %d has a negative count", a)
		}
		if r.Items[0] == r.Items[1] || r.Items[0] == r.Items[2] || r.Items[1] == r.Items[2] {
			return nil, fmt.Errorf("repeated triplet %d repeats an item", a)
		}
		key, perm := viceSortedItems(r.Items)
		c := counts[key]
		for s := 0; s < 3; s++ {
			c[s] += int64(r.Counts[perm[s]])
		}
		counts[key] = c
	}
	return counts, nil
}

// mixTargets applies the mixing of EnsembleSoftTargets to the model
// predictions pred (Softmax3 order, one per training triplet).
func mixTargets(train []Triplet, pred [][3]float64, counts map[[3]int32][3]int64, kappa, alpha float64) [][3]float32 {
	out := make([][3]float32, len(train))
	for a, t := range train {
		p := pred[a]
		var q [3]float64
		key, _ := viceSortedItems([3]int32{t.I, t.J, t.K})
		c, ok := counts[key]
		if ok {
			// Counts of K, J and I chosen as odd: Softmax3 order.
			cs := [3]float64{
				float64(c[viceSlotOf(key, t.K)]),
				float64(c[viceSlotOf(key, t.J)]),
				float64(c[viceSlotOf(key, t.I)]),
			}
			total := cs[0] + cs[1] + cs[2]
			ok = total+kappa > 0 && t.I != t.J && t.I != t.K && t.J != t.K
			if ok {
				for s := range q {
					q[s] = (cs[s] + kappa*p[s]) / (total + kappa)
				}
			}
		}
		if !ok {
			for s := range q {
				q[s] = (1 - alpha) * p[s]
			}
			q[0] += alpha
		}
		out[a] = [3]float32{float32(q[0]), float32(q[1]), float32(q[2])}
	}
	return out
}

// viceSortedItems returns the items in ascending order and, for each sorted
// slot, the index of the original item that landed there.
func viceSortedItems(items [3]int32) (key [3]int32, perm [3]int) {
	perm = [3]int{0, 1, 2}
	for i := 1; i < 3; i++ {
		for j := i; j > 0 && items[perm[j]] < items[perm[j-1]]; j-- {
			perm[j], perm[j-1] = perm[j-1], perm[j]
		}
	}
	for s := range key {
		key[s] = items[perm[s]]
	}
	return key, perm
}

// viceSlotOf returns the slot of item it in the sorted key.
func viceSlotOf(key [3]int32, it int32) int {
	switch it {
	case key[0]:
		return 0
	case key[1]:
		return 1
	}
	return 2
}
