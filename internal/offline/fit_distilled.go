package offline

import (
	"fmt"

	"github.com/alignet/alignet/learner"
)

// distilledTargets returns per-training-triplet soft targets (Softmax3
// order) distilled from an ensemble of the probabilistic human model (VICE,
// fitted on the training triplets) and hard, a teacher fitted to the hard
// choices with its temperature calibrated on validation choices, mixed
// with the observed choice and smoothed toward repeated responses where
// available (learner.EnsembleDistilledTargets).
func distilledTargets(x []float32, n int, train []learner.Triplet, reps []learner.RepeatedTriplet, hard *learner.Teacher, seed uint64) ([][3]float32, error) {
	q, err := learner.EnsembleDistilledTargets(x, n, train, reps, hard, learner.HumanModelConfig{Seed: int64(seed)})
	if err != nil {
		return nil, fmt.Errorf("human model: %w", err)
	}
	if len(q) != len(train) {
		return nil, fmt.Errorf("human model returned %d targets for %d triplets", len(q), len(train))
	}
	return q, nil
}
