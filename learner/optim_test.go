package learner

import (
	"math"
	"testing"
)

// TestAdamMinimisesQuadratic checks that Adam drives a separable quadratic
// to its minimum, and that its first step is −LR·sign(g).
func TestAdamMinimisesQuadratic(t *testing.T) {
	x := []float64{3, -2, 0.5}
	target := []float64{1, 1, -1}
	a := NewAdam(0.05)
	g := make([]float64, 3)
	for step := 0; step < 2000; step++ {
		for i := range x {
			g[i] = 2 * float64(i+1) * (x[i] - target[i])
		}
		before := append([]float64(nil), x...)
		a.Step(x, g)
		if step == 0 {
			for i := range x {
				if d := x[i] - before[i]; math.Abs(math.Abs(d)-0.05) > 1e-6 || math.Signbit(d) != math.Signbit(-g[i]) {
					t.Fatalf("first step %v for gradient %v", d, g[i])
				}
			}
		}
	}
	for i := range x {
		if math.Abs(x[i]-target[i]) > 1e-3 {
			t.Fatalf("x = %v, want %v", x, target)
		}
	}
	if a.Steps() != 2000 {
		t.Fatalf("steps %d", a.Steps())
	}
}

// TestLBFGSRosenbrock checks MinimizeLBFGS on the Rosenbrock function.
func TestLBFGSRosenbrock(t *testing.T) {
	fg := func(x, g []float64) float64 {
		a, b := x[0], x[1]
		g[0] = -2*(1-a) - 400*a*(b-a*a)
		g[1] = 200 * (b - a*a)
		return (1-a)*(1-a) + 100*(b-a*a)*(b-a*a)
	}
	x := []float64{-1.2, 1}
	res := MinimizeLBFGS(fg, x, LBFGSSettings{MaxIter: 500, GradTol: 1e-9, RelTol: 1e-15})
	if math.Abs(x[0]-1) > 1e-5 || math.Abs(x[1]-1) > 1e-5 {
		t.Fatalf("minimum at %v (%+v)", x, res)
	}
}

// TestSelectLambdaPrefersValidatedStrength checks that SelectLambda scores
// every λ and picks the one with the lowest validation cross-entropy.
func TestSelectLambdaPrefersValidatedStrength(t *testing.T) {
	const n, d = 40, 8
	x, ts, _ := plantedProblem(23, n, d, d, 4000, 0.5, TaskOddOneOut)
	train, val := ts[:3500], ts[3500:]
	best, scores, err := SelectLambda(t.Context(), x, n, d, train, nil, val, nil, []float64{1e-4, 10}, TeacherConfig{MaxIter: 200})
	if err != nil {
		t.Fatal(err)
	}
	if len(scores) != 2 || scores[0].Lambda != 10 || scores[1].Lambda != 1e-4 {
		t.Fatalf("scores %+v", scores)
	}
	t.Logf("scores %+v", scores)
	lo := scores[0]
	if scores[1].ValNLL < lo.ValNLL {
		lo = scores[1]
	}
	if best.Lambda != lo.Lambda || best.Tau != lo.Tau {
		t.Fatalf("picked λ=%v τ=%v, best scored %+v", best.Lambda, best.Tau, lo)
	}
	if best.Lambda != 1e-4 {
		t.Fatalf("a planted full-rank transform should prefer weak regularisation, got λ=%v", best.Lambda)
	}
}
