package learner

import (
	"math"
	"math/rand/v2"
	"testing"
)

// plantedVICEData draws a sparse non-negative n×p embedding and m triplets
// whose odd one out is sampled from softmax of its dot products, and
// returns the embedding, the observed triplets and, per triplet, the true
// choice distribution in Softmax3 order.
func plantedVICEData(seed uint64, n, p, m int) (emb []float64, ts []Triplet, truth [][3]float64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	emb = make([]float64, n*p)
	for i := range emb {
		if rng.Float64() < 0.35 {
			emb[i] = 1.2 * rng.ExpFloat64()
		}
	}
	for len(ts) < m {
		a, b, c := int32(rng.IntN(n)), int32(rng.IntN(n)), int32(rng.IntN(n))
		if a == b || a == c || b == c {
			continue
		}
		pr := Softmax3(viceLogits(emb, p, Triplet{I: a, J: b, K: c}), 1)
		u := rng.Float64()
		var t Triplet
		var q [3]float64
		switch {
		case u < pr[0]: // c odd
			t, q = Triplet{I: a, J: b, K: c}, pr
		case u < pr[0]+pr[1]: // b odd
			t, q = Triplet{I: a, J: c, K: b}, [3]float64{pr[1], pr[0], pr[2]}
		default: // a odd
			t, q = Triplet{I: b, J: c, K: a}, [3]float64{pr[2], pr[0], pr[1]}
		}
		ts = append(ts, t)
		truth = append(truth, q)
	}
	return emb, ts, truth
}

func TestVICEObjectiveGradient(t *testing.T) {
	const n, p, nTrain = 7, 4, 25
	cfg := HumanModelConfig{SpikeScale: 0.25, SlabScale: 1.5, Pi: 0.3, Workers: 3}.withDefaults()
	rng := rand.New(rand.NewPCG(3, 4))
	mu := make([]float64, n*p)
	ls := make([]float64, n*p)
	eps := make([]float64, n*p)
	for i := range mu {
		mu[i] = 0.8 * rng.NormFloat64()
		ls[i] = -1 + 0.5*rng.NormFloat64()
		eps[i] = rng.NormFloat64()
	}
	var batch []Triplet
	for len(batch) < 12 {
		a, b, c := int32(rng.IntN(n)), int32(rng.IntN(n)), int32(rng.IntN(n))
		if a != b && a != c && b != c {
			batch = append(batch, Triplet{I: a, J: b, K: c})
		}
	}
	obj := newVICEObjective(n, p, nTrain, len(batch), cfg)
	f := func() float64 {
		nll, kl := obj.eval(mu, ls, eps, batch, nil, nil, true)
		return nll + kl
	}
	gMu, gLS := make([]float64, n*p), make([]float64, n*p)
	nll, kl := obj.eval(mu, ls, eps, batch, gMu, gLS, true)
	if math.IsNaN(nll) || math.IsNaN(kl) {
		t.Fatalf("objective is NaN: %v %v", nll, kl)
	}
	// The gradient-only path must agree with the one that evaluates the
	// complexity term.
	gMu2, gLS2 := make([]float64, n*p), make([]float64, n*p)
	obj.eval(mu, ls, eps, batch, gMu2, gLS2, false)
	for i := range gMu {
		if gMu[i] != gMu2[i] || gLS[i] != gLS2[i] {
			t.Fatalf("gradient differs without the complexity value at %d", i)
		}
	}
	const h = 1e-6
	checked := 0
	for _, v := range []struct {
		name  string
		param []float64
		grad  []float64
	}{{"mu", mu, gMu}, {"logsigma", ls, gLS}} {
		for i := range v.param {
			w := mu[i] + math.Exp(ls[i])*eps[i]
			if math.Abs(w) < 1e-3 {
				continue // too close to the ReLU kink
			}
			old := v.param[i]
			v.param[i] = old + h
			fp := f()
			v.param[i] = old - h
			fm := f()
			v.param[i] = old
			num := (fp - fm) / (2 * h)
			if d := math.Abs(num - v.grad[i]); d > 1e-6*math.Max(1, math.Abs(num)) {
				t.Errorf("%s[%d]: analytic %.9g, numeric %.9g", v.name, i, v.grad[i], num)
			}
			checked++
		}
	}
	if checked < n*p {
		t.Fatalf("only %d coordinates checked", checked)
	}
}

func TestVICELogPriorMatchesMixture(t *testing.T) {
	cfg := HumanModelConfig{SpikeScale: 0.2, SlabScale: 1.3, Pi: 0.7}.withDefaults()
	o := newVICEObjective(3, 1, 1, 1, cfg)
	normal := func(w, s float64) float64 { return math.Exp(-0.5*w*w/(s*s)) / (s * math.Sqrt(2*math.Pi)) }
	for _, w := range []float64{-3, -0.5, -0.01, 0, 0.02, 0.3, 1, 4, 12} {
		want := math.Log(0.7*normal(w, 0.2) + 0.3*normal(w, 1.3))
		got, dg := o.logPrior(w)
		if w < 8 && math.Abs(got-want) > 1e-12*math.Max(1, math.Abs(want)) {
			t.Errorf("log prior at %v: %v, want %v", w, got, want)
		}
		if math.IsInf(got, 0) || math.IsNaN(got) {
			t.Errorf("log prior at %v is %v", w, got)
		}
		const h = 1e-6
		lp, _ := o.logPrior(w + h)
		lm, _ := o.logPrior(w - h)
		if num := (lp - lm) / (2 * h); math.Abs(num-dg) > 1e-6*math.Max(1, math.Abs(num)) {
			t.Errorf("log prior derivative at %v: %v, numeric %v", w, dg, num)
		}
	}
}

func TestVICERecoversPlantedStructure(t *testing.T) {
	const n, p = 60, 6
	emb, ts, truth := plantedVICEData(11, n, p, 9000)
	train, test, testTruth := ts[:8000], ts[8000:], truth[8000:]
	// Accuracies are expected under the true choice distributions, which
	// removes the sampling noise of the observed held-out choices. The noise
	// ceiling is the expected accuracy of the true model's choice.
	var ceiling float64
	for _, q := range testTruth {
		ceiling += q[viceArgmax3(q)]
	}
	ceiling /= float64(len(test))
	v, st, err := FitVICE(n, train, HumanModelConfig{Dim: 10, Epochs: 60, BatchSize: 256, LR: 0.02, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	if first, last := st.EpochLoss[0], st.EpochLoss[len(st.EpochLoss)-1]; !(last < first) {
		t.Errorf("loss did not decrease: %v → %v", first, last)
	}
	pred, err := v.PredictBatch(test, 20, 1)
	if err != nil {
		t.Fatal(err)
	}
	var acc, klModel, klUniform float64
	for a, pr := range pred {
		acc += testTruth[a][viceArgmax3(pr)]
		klModel += KLProbs(testTruth[a], pr)
		klUniform += KLProbs(testTruth[a], [3]float64{1.0 / 3, 1.0 / 3, 1.0 / 3})
	}
	acc /= float64(len(test))
	t.Logf("held-out accuracy %.3f, noise ceiling %.3f; KL(true‖VICE) %.4f vs KL(true‖uniform) %.4f",
		acc, ceiling, klModel/float64(len(test)), klUniform/float64(len(test)))
	// Require most of the gap between chance and the ceiling.
	if floor := 1.0/3 + 0.9*(ceiling-1.0/3); acc < floor {
		t.Errorf("held-out accuracy %.3f below %.3f (ceiling %.3f)", acc, floor, ceiling)
	}
	if klModel > 0.5*klUniform {
		t.Errorf("KL to the true distributions %.4f not well below uniform's %.4f", klModel, klUniform)
	}
	_ = emb
}

// viceArgmax3 returns the index of the largest entry (the first on ties).
func viceArgmax3(v [3]float64) int {
	best := 0
	for c := 1; c < 3; c++ {
		if v[c] > v[best] {
			best = c
		}
	}
	return best
}

func TestVICEDeterministic(t *testing.T) {
	_, ts, _ := plantedVICEData(2, 30, 4, 1500)
	cfg := HumanModelConfig{Dim: 6, Epochs: 3, BatchSize: 100, Seed: 9, Workers: 1}
	a, sa, err := FitVICE(30, ts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Workers = 4
	b, sb, err := FitVICE(30, ts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.Mu {
		if a.Mu[i] != b.Mu[i] || a.LogSigma[i] != b.LogSigma[i] {
			t.Fatalf("parameter %d differs between 1 and 4 workers", i)
		}
	}
	for e := range sa.EpochLoss {
		if sa.EpochLoss[e] != sb.EpochLoss[e] {
			t.Fatalf("epoch %d loss differs: %v vs %v", e, sa.EpochLoss[e], sb.EpochLoss[e])
		}
	}
	cfg.Seed = 10
	c, _, err := FitVICE(30, ts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	same := true
	for i := range a.Mu {
		if a.Mu[i] != c.Mu[i] {
			same = false
		}
	}
	if same {
		t.Error("a different seed gave the same fit")
	}
}

func TestVICEPredictions(t *testing.T) {
	_, ts, _ := plantedVICEData(4, 25, 3, 800)
	v, _, err := FitVICE(25, ts, HumanModelConfig{Dim: 5, Epochs: 2, BatchSize: 64, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := v.PredictBatch(ts[:50], 7, 42)
	if err != nil {
		t.Fatal(err)
	}
	for a, tr := range ts[:50] {
		single := v.Predict(tr, 7, 42)
		if single != batch[a] {
			t.Fatalf("triplet %d: Predict %v, PredictBatch %v", a, single, batch[a])
		}
		var s float64
		for _, q := range single {
			if !(q > 0 && q < 1) {
				t.Fatalf("triplet %d: probability %v outside (0,1)", a, q)
			}
			s += q
		}
		if math.Abs(s-1) > 1e-12 {
			t.Fatalf("triplet %d: probabilities sum to %v", a, s)
		}
		// Swapping the pair leaves the distribution in Softmax3 order
		// permuted accordingly: I and J exchange slots 1 and 2.
		sw := v.Predict(Triplet{I: tr.J, J: tr.I, K: tr.K}, 7, 42)
		if math.Abs(sw[0]-single[0]) > 1e-12 || math.Abs(sw[1]-single[2]) > 1e-12 || math.Abs(sw[2]-single[1]) > 1e-12 {
			t.Fatalf("triplet %d: swapped pair gives %v for %v", a, sw, single)
		}
	}
	if other := v.Predict(ts[0], 7, 43); other == batch[0] {
		t.Error("a different prediction seed gave identical Monte-Carlo estimates")
	}
	if _, err := v.PredictBatch([]Triplet{{I: 0, J: 1, K: 25}}, 3, 1); err == nil {
		t.Error("an item outside the model was accepted")
	}
}

func TestFitVICERejectsBadInput(t *testing.T) {
	ts := []Triplet{{I: 0, J: 1, K: 2}}
	cases := map[string]struct {
		n   int
		ts  []Triplet
		cfg HumanModelConfig
	}{
		"no triplets":  {5, nil, HumanModelConfig{}},
		"item outside": {2, ts, HumanModelConfig{}},
		"negative dim": {5, ts, HumanModelConfig{Dim: -1}},
		"bad pi":       {5, ts, HumanModelConfig{Pi: 1.5}},
		"bad mix":      {5, ts, HumanModelConfig{OneHotMix: 2}},
	}
	for name, c := range cases {
		if _, _, err := FitVICE(c.n, c.ts, c.cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
