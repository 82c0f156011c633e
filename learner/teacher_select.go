package learner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// CalibrateTemperature returns the temperature τ in [1e-3, 1e3] minimising
// the mean cross-entropy of targets (nil means the observed hard choices)
// against the model distribution at logits/τ. The objective is convex in
// 1/τ, so a grid scan on log τ followed by golden-section refinement finds
// the minimum.
func CalibrateTemperature(task Task, logits [][3]float64, targets [][3]float32) float64 {
	task.check()
	if len(logits) == 0 {
		return 1
	}
	f := func(lt float64) float64 { return MeanCrossEntropy(task, logits, targets, math.Exp(lt)) }
	lo, hi := math.Log(1e-3), math.Log(1e3)
	const grid = 49
	best, bestF := 0, math.Inf(1)
	for g := 0; g < grid; g++ {
		v := f(lo + (hi-lo)*float64(g)/(grid-1))
		if v < bestF {
			best, bestF = g, v
		}
	}
	step := (hi - lo) / (grid - 1)
	a, b := lo+step*float64(max(best-1, 0)), lo+step*float64(min(best+1, grid-1))
	return math.Exp(goldenSection(f, a, b, 1e-6))
}

// LambdaScore is the validation result of one regularisation strength.
type LambdaScore struct {
	// Lambda is the regularisation strength.
	Lambda float64 `json:"lambda"`
	// Tau is the temperature calibrated on the validation triplets.
	Tau float64 `json:"tau"`
	// ValAccuracy and ValNLL score the validation triplets; ValNLL is the
	// mean cross-entropy of the validation targets at the calibrated Tau.
	ValAccuracy float64 `json:"val_accuracy"`
	// ValNLL is described with ValAccuracy.
	ValNLL float64 `json:"val_nll"`
	// TrainCE is the final mean training cross-entropy at the fit τ.
	TrainCE float64 `json:"train_ce"`
	// Iterations is the number of L-BFGS iterations taken.
	Iterations int `json:"iterations"`
	// Duration is the fit's wall time.
	Duration time.Duration `json:"duration_ns"`
}

// DefaultLambdas returns the default log-spaced grid of regularisation
// strengths, from strongest to weakest.
func DefaultLambdas() []float64 {
	return []float64{1, 0.3, 0.1, 0.03, 0.01}
}

// SelectLambda fits a teacher for each λ in lambdas (strongest first, each
// warm-started from the previous solution), calibrates τ and scores it on
// the validation triplets, and returns the teacher with the lowest
// validation cross-entropy (its Tau set to the calibrated temperature) and
// the per-λ scores in the order fitted. Nil target slices mean hard
// choices. An empty lambdas uses DefaultLambdas.
func SelectLambda(ctx context.Context, x []float32, n, d int, train []Triplet, trainTargets [][3]float32, val []Triplet, valTargets [][3]float32, lambdas []float64, cfg TeacherConfig) (*Teacher, []LambdaScore, error) {
	if len(val) == 0 {
		return nil, nil, errors.New("select lambda: no validation triplets")
	}
	if len(lambdas) == 0 {
		lambdas = DefaultLambdas()
	}
	lams := append([]float64(nil), lambdas...)
	sort.Sort(sort.Reverse(sort.Float64Slice(lams)))
	var best *Teacher
	bestNLL := math.Inf(1)
	var scores []LambdaScore
	var prev *Teacher
	for _, lam := range lams {
		c := cfg
		c.Lambda = lam
		if lam == 0 {
			c.Lambda = -1
		}
		c.Init = prev
		if prev != nil {
			c.Init.Tau = cfg.Tau
		}
		t, st, err := FitTeacherContext(ctx, x, n, d, train, trainTargets, c)
		if err != nil {
			return nil, scores, fmt.Errorf("select lambda %g: %w", lam, err)
		}
		prev = t.Clone()
		z := t.Transform(x, n)
		vl := AllLogits(z, t.P, val)
		tau := CalibrateTemperature(t.Task, vl, valTargets)
		s := LambdaScore{
			Lambda: lam, Tau: tau,
			ValAccuracy: AccuracyFromLogits(t.Task, vl),
			ValNLL:      MeanCrossEntropy(t.Task, vl, valTargets, tau),
			TrainCE:     st.CrossEntropy, Iterations: st.Iterations, Duration: st.Duration,
		}
		scores = append(scores, s)
		if s.ValNLL < bestNLL {
			bestNLL = s.ValNLL
			best = t.Clone()
			best.Tau = tau
		}
	}
	return best, scores, nil
}
