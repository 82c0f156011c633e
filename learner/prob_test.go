package learner

import (
	"math"
	"math/rand/v2"
	"testing"
)

func randLogits(rng *rand.Rand, scale float64) [3]float64 {
	return [3]float64{scale * rng.NormFloat64(), scale * rng.NormFloat64(), scale * rng.NormFloat64()}
}

func randTarget(rng *rand.Rand) [3]float32 {
	a, b, c := rng.Float64(), rng.Float64(), rng.Float64()
	s := a + b + c
	return [3]float32{float32(a / s), float32(b / s), float32(c / s)}
}

// TestCrossEntropyKnownValues checks values computed by hand: equal logits
// give log 3, and a two-way tie against a much smaller third logit gives
// log 2 for the anchor task.
func TestCrossEntropyKnownValues(t *testing.T) {
	ce, g := CrossEntropy3([3]float64{2, 2, 2}, 1, HardTarget)
	if math.Abs(ce-math.Log(3)) > 1e-12 {
		t.Fatalf("CE of equal logits = %v, want log 3", ce)
	}
	if math.Abs(g[0]-(1.0/3-1)) > 1e-12 || math.Abs(g[1]-1.0/3) > 1e-12 {
		t.Fatalf("gradient %v, want (−2/3, 1/3, 1/3)", g)
	}
	// p = softmax(ln 1, ln 2, ln 5) = (1/8, 2/8, 5/8); CE with target e2 = −ln(5/8).
	ce, _ = CrossEntropy3([3]float64{0, math.Log(2), math.Log(5)}, 1, [3]float32{0, 0, 1})
	if math.Abs(ce-(-math.Log(5.0/8))) > 1e-12 {
		t.Fatalf("CE = %v, want %v", ce, -math.Log(5.0/8))
	}
	// Temperature 2 on logits (0, 2 ln 3, −inf-ish): p0 = 1/(1+3) when the third is tiny.
	lp := OddOneOutLogLik([3]float64{0, 2 * math.Log(3), -1e4}, 2)
	if math.Abs(lp-math.Log(0.25)) > 1e-9 {
		t.Fatalf("log p = %v, want log 1/4", lp)
	}
	// Anchor: sigmoid(ln 3) = 3/4.
	if v := AnchorLogLik([3]float64{math.Log(3), 0, 123}, 1); math.Abs(v-math.Log(0.75)) > 1e-12 {
		t.Fatalf("anchor log p = %v, want log 3/4", v)
	}
	// KL of a target against itself is zero.
	q := [3]float32{0.5, 0.25, 0.25}
	kl, _ := KL3([3]float64{math.Log(2), 0, 0}, 1, q)
	if math.Abs(kl) > 1e-7 {
		t.Fatalf("KL(q‖q) = %v, want 0", kl)
	}
}

// TestCrossEntropyStable checks that huge logits do not overflow.
func TestCrossEntropyStable(t *testing.T) {
	ce, g := CrossEntropy3([3]float64{1e5, -1e5, 3e5}, 1, HardTarget)
	if math.IsNaN(ce) || math.IsInf(ce, 0) || math.Abs(ce-2e5) > 1e-6 {
		t.Fatalf("CE = %v, want 2e5", ce)
	}
	for _, v := range g {
		if math.IsNaN(v) {
			t.Fatalf("NaN gradient %v", g)
		}
	}
	ce, _ = AnchorCrossEntropy([3]float64{-1e6, 1e6, 0}, 1, HardTarget)
	if math.Abs(ce-2e6) > 1e-6 {
		t.Fatalf("anchor CE = %v, want 2e6", ce)
	}
}

// TestLogitGradients compares analytic logit gradients with central
// differences for both tasks, hard and soft targets, and several τ.
func TestLogitGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		l := randLogits(rng, 3)
		tau := 0.3 + 2*rng.Float64()
		q := HardTarget
		if trial%2 == 1 {
			q = randTarget(rng)
		}
		for _, task := range []Task{TaskOddOneOut, TaskAnchor} {
			_, g := TaskCrossEntropy(task, l, tau, q)
			for a := 0; a < 3; a++ {
				const h = 1e-5
				lp, lm := l, l
				lp[a] += h
				lm[a] -= h
				fp, _ := TaskCrossEntropy(task, lp, tau, q)
				fm, _ := TaskCrossEntropy(task, lm, tau, q)
				num := (fp - fm) / (2 * h)
				if math.Abs(num-g[a]) > 1e-6*(1+math.Abs(num)) {
					t.Fatalf("%s trial %d: dCE/dl%d = %v, numeric %v", task, trial, a, g[a], num)
				}
			}
		}
	}
}

// TestRepresentationGradient checks AddRepGrad against central differences
// in the representation entries.
func TestRepresentationGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n, p = 5, 4
	z := make([]float32, n*p)
	for i := range z {
		z[i] = float32(rng.NormFloat64())
	}
	ts := []Triplet{{0, 1, 2}, {3, 1, 4}, {2, 4, 0}}
	qs := [][3]float32{HardTarget, randTarget(rng), randTarget(rng)}
	for _, task := range []Task{TaskOddOneOut, TaskAnchor} {
		loss := func(z []float32, dz []float64) float64 {
			var s float64
			for a, tr := range ts {
				s += TripletLoss(task, z, p, tr, 0.7, qs[a], dz)
			}
			return s
		}
		dz := make([]float64, n*p)
		loss(z, dz)
		for i := range z {
			const h = 1e-2 // float32 storage: use a large step and a quadratic-exact check
			zp := append([]float32(nil), z...)
			zm := append([]float32(nil), z...)
			zp[i] += h
			zm[i] -= h
			num := (loss(zp, nil) - loss(zm, nil)) / (float64(zp[i]) - float64(zm[i]))
			if math.Abs(num-dz[i]) > 2e-3*(1+math.Abs(num)) {
				t.Fatalf("%s: dL/dz[%d] = %v, numeric %v", task, i, dz[i], num)
			}
		}
	}
}

// TestPermutationInvariance checks that relabelling the items of a triplet
// permutes the probabilities accordingly.
func TestPermutationInvariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n, p = 3, 6
	z := make([]float32, n*p)
	for i := range z {
		z[i] = float32(rng.NormFloat64())
	}
	base := Softmax3(Logits(z, p, Triplet{0, 1, 2}), 1) // (K odd, J odd, I odd)
	// Swapping I and J leaves "K odd" unchanged and swaps the other two.
	sw := Softmax3(Logits(z, p, Triplet{1, 0, 2}), 1)
	if math.Abs(sw[0]-base[0]) > 1e-12 || math.Abs(sw[1]-base[2]) > 1e-12 || math.Abs(sw[2]-base[1]) > 1e-12 {
		t.Fatalf("swap I,J: %v vs %v", sw, base)
	}
	// Triplet (0,2,1): K=1 odd has the probability base gave to J=1 odd.
	rot := Softmax3(Logits(z, p, Triplet{0, 2, 1}), 1)
	if math.Abs(rot[0]-base[1]) > 1e-12 {
		t.Fatalf("p(1 odd) differs: %v vs %v", rot[0], base[1])
	}
}
