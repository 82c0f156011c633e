package offline

import (
	"fmt"

	"github.com/alignet/alignet/learner"
)

// distilledTargets returns per-training-triplet soft targets (Softmax3
// order) from the probabilistic human model, fitted on the training
// triplets and smoothed toward repeated responses where available.
func distilledTargets(n int, train []learner.Triplet, reps []learner.RepeatedTriplet, seed uint64) ([][3]float32, error) {
	q, err := learner.DistilledTargets(n, train, reps, learner.HumanModelConfig{Seed: int64(seed)})
	if err != nil {
		return nil, fmt.Errorf("human model: %w", err)
	}
	if len(q) != len(train) {
		return nil, fmt.Errorf("human model returned %d targets for %d triplets", len(q), len(train))
	}
	return q, nil
}
