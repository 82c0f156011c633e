package offline

import (
	"errors"

	"github.com/alignet/alignet/learner"
)

// distilledTargets returns per-training-triplet soft targets from the
// probabilistic human model. It is a placeholder until
// learner.DistilledTargets is available.
func distilledTargets(n int, train []learner.Triplet, reps []learner.RepeatedTriplet, seed uint64) ([][3]float32, error) {
	return nil, errors.New("learner.DistilledTargets is not available in this build; use --targets hard")
}
