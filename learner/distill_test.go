package learner

import (
	"math"
	"testing"
)

// smallVICEModel returns a hand-made VICE model over n items.
func smallVICEModel(n, p int) *VICE {
	v := &VICE{N: n, Dim: p, Mu: make([]float32, n*p), LogSigma: make([]float32, n*p)}
	for i := range v.Mu {
		v.Mu[i] = float32(math.Sin(float64(3*i+1))) * 1.5
		v.LogSigma[i] = -1.5
	}
	return v
}

func TestSoftTargetsRecipe(t *testing.T) {
	v := smallVICEModel(6, 3)
	train := []Triplet{
		{I: 1, J: 4, K: 3}, // item set of the repeats, in another order
		{I: 0, J: 2, K: 5}, // no repeats
		{I: 3, J: 1, K: 4}, // the repeats' set once more
	}
	repeats := []RepeatedTriplet{
		{Items: [3]int32{3, 1, 4}, Counts: [3]int32{5, 2, 9}},
		{Items: [3]int32{4, 3, 1}, Counts: [3]int32{1, 0, 0}}, // same set: counts add
	}
	cfg := HumanModelConfig{PredictSamples: 9, Seed: 4, RepeatPseudoCount: 2.5, OneHotMix: 0.25}
	q, err := v.SoftTargets(train, repeats, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Counts per item: 3 → 5, 1 → 2, 4 → 9+1 = 10; N = 17.
	count := map[int32]float64{3: 5, 1: 2, 4: 10}
	for a, tr := range train {
		pr := v.Predict(tr, 9, 4)
		var want [3]float64
		if a == 1 {
			want = [3]float64{0.75*pr[0] + 0.25, 0.75 * pr[1], 0.75 * pr[2]}
		} else {
			c := [3]float64{count[tr.K], count[tr.J], count[tr.I]}
			for s := range want {
				want[s] = (c[s] + 2.5*pr[s]) / (17 + 2.5)
			}
		}
		var sum float64
		for s := range want {
			if math.Abs(float64(q[a][s])-want[s]) > 1e-6 {
				t.Errorf("triplet %d slot %d: %v, want %v", a, s, q[a][s], want[s])
			}
			sum += float64(q[a][s])
		}
		if math.Abs(sum-1) > 1e-6 {
			t.Errorf("triplet %d: targets sum to %v", a, sum)
		}
	}
	// Without repeats and with α = 0 (a negative OneHotMix) the target is
	// VICE's prediction itself.
	q0, err := v.SoftTargets(train, nil, HumanModelConfig{PredictSamples: 9, Seed: 4, OneHotMix: -1})
	if err != nil {
		t.Fatal(err)
	}
	for a, tr := range train {
		pr := v.Predict(tr, 9, 4)
		for s := range pr {
			if q0[a][s] != float32(pr[s]) {
				t.Fatalf("triplet %d: target %v, prediction %v", a, q0[a], pr)
			}
		}
	}
}

func TestSoftTargetsRejectsBadInput(t *testing.T) {
	v := smallVICEModel(4, 2)
	train := []Triplet{{I: 0, J: 1, K: 2}}
	bad := map[string]struct {
		reps []RepeatedTriplet
		cfg  HumanModelConfig
	}{
		"item outside":   {[]RepeatedTriplet{{Items: [3]int32{0, 1, 7}, Counts: [3]int32{1, 1, 1}}}, HumanModelConfig{}},
		"negative count": {[]RepeatedTriplet{{Items: [3]int32{0, 1, 2}, Counts: [3]int32{1, -1, 1}}}, HumanModelConfig{}},
		"repeated item":  {[]RepeatedTriplet{{Items: [3]int32{0, 0, 2}, Counts: [3]int32{1, 1, 1}}}, HumanModelConfig{}},
		"mix above one":  {nil, HumanModelConfig{OneHotMix: 1.5}},
	}
	for name, c := range bad {
		if _, err := v.SoftTargets(train, c.reps, c.cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := v.SoftTargets([]Triplet{{I: 0, J: 1, K: 4}}, nil, HumanModelConfig{}); err == nil {
		t.Error("a training item outside the model was accepted")
	}
}

func TestDistilledTargetsPlanted(t *testing.T) {
	const n, p = 50, 5
	_, ts, truth := plantedVICEData(21, n, p, 6000)
	cfg := HumanModelConfig{Dim: 8, Epochs: 40, BatchSize: 256, LR: 0.02, Seed: 3, PredictSamples: 20, OneHotMix: -1}
	q, err := DistilledTargets(n, ts, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	q2, err := DistilledTargets(n, ts, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for a := range q {
		if q[a] != q2[a] {
			t.Fatalf("triplet %d: targets differ between runs with one seed", a)
		}
	}
	v, _, err := FitVICE(n, ts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	q3, err := v.SoftTargets(ts, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for a := range q {
		if q[a] != q3[a] {
			t.Fatalf("triplet %d: DistilledTargets differs from FitVICE then SoftTargets", a)
		}
	}
	// The distilled targets must be closer to the true choice distributions
	// than the observed choice with the best constant label smoothing.
	var klQ float64
	for a, tr := range truth {
		s := float64(q[a][0] + q[a][1] + q[a][2])
		if math.Abs(s-1) > 1e-5 {
			t.Fatalf("triplet %d: targets sum to %v", a, s)
		}
		klQ += KLProbs(tr, [3]float64{float64(q[a][0]), float64(q[a][1]), float64(q[a][2])})
	}
	klQ /= float64(len(truth))
	bestSmooth := math.Inf(1)
	for e := 0.05; e < 1; e += 0.05 {
		var kl float64
		for _, tr := range truth {
			kl += KLProbs(tr, [3]float64{1 - e + e/3, e / 3, e / 3})
		}
		bestSmooth = math.Min(bestSmooth, kl/float64(len(truth)))
	}
	t.Logf("KL(true‖distilled) %.4f, best label-smoothed one-hot %.4f", klQ, bestSmooth)
	if !(klQ < 0.5*bestSmooth) {
		t.Errorf("distilled targets KL %.4f not well below label smoothing's %.4f", klQ, bestSmooth)
	}
}

func TestDistilledTargetsCrossFit(t *testing.T) {
	const n, p = 40, 4
	_, ts, truth := plantedVICEData(8, n, p, 4000)
	cfg := HumanModelConfig{Dim: 6, Epochs: 60, BatchSize: 256, LR: 0.02, Seed: 2, PredictSamples: 10, OneHotMix: -1, CrossFitFolds: 2}
	q, err := DistilledTargets(n, ts, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := DistilledTargets(n, ts, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.CrossFitFolds = 0
	in, err := DistilledTargets(n, ts, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var klOut, klIn, klU, obsOut, obsIn float64
	for a := range q {
		if q[a] != again[a] {
			t.Fatalf("triplet %d: cross-fitted targets differ between runs", a)
		}
		if s := float64(q[a][0] + q[a][1] + q[a][2]); math.Abs(s-1) > 1e-5 {
			t.Fatalf("triplet %d: targets sum to %v", a, s)
		}
		f := func(x [3]float32) [3]float64 { return [3]float64{float64(x[0]), float64(x[1]), float64(x[2])} }
		klOut += KLProbs(truth[a], f(q[a]))
		klIn += KLProbs(truth[a], f(in[a]))
		klU += KLProbs(truth[a], [3]float64{1.0 / 3, 1.0 / 3, 1.0 / 3})
		obsOut += float64(q[a][0])
		obsIn += float64(in[a][0])
	}
	m := float64(len(q))
	t.Logf("KL(true‖target): out-of-fold %.4f, in-sample %.4f; mean mass on the observed choice %.4f vs %.4f",
		klOut/m, klIn/m, obsOut/m, obsIn/m)
	// Out-of-fold predictions have not seen the observed choice, so they
	// put less mass on it than in-sample predictions.
	if !(obsOut < obsIn) {
		t.Errorf("out-of-fold mass on the observed choice %.4f not below in-sample %.4f", obsOut/m, obsIn/m)
	}
	if klOut > 0.5*klU {
		t.Errorf("out-of-fold KL to the true distributions %.4f not well below uniform's %.4f", klOut/m, klU/m)
	}
	cfg.CrossFitFolds = len(ts) + 1
	if _, err := DistilledTargets(n, ts, nil, cfg); err == nil {
		t.Error("more folds than triplets were accepted")
	}
}

func TestEnsembleSoftTargets(t *testing.T) {
	train := []Triplet{
		{I: 1, J: 4, K: 3}, // item set of the repeats
		{I: 0, J: 2, K: 5}, // no repeats
	}
	repeats := []RepeatedTriplet{{Items: [3]int32{3, 1, 4}, Counts: [3]int32{5, 2, 9}}}
	p1 := [][3]float64{{0.5, 0.3, 0.2}, {0.6, 0.3, 0.1}}
	p2 := [][3]float64{{0.1, 0.1, 0.8}, {0.2, 0.5, 0.3}}
	cfg := HumanModelConfig{RepeatPseudoCount: 2, OneHotMix: 0.2}
	q, err := EnsembleSoftTargets(train, repeats, cfg, p1, p2)
	if err != nil {
		t.Fatal(err)
	}
	avg := [2][3]float64{{0.3, 0.2, 0.5}, {0.4, 0.4, 0.2}}
	// Triplet 0 (K=3, J=4, I=1 odd counts 5, 9, 2; N = 16).
	want := [2][3]float64{
		{(5 + 2*avg[0][0]) / 18, (9 + 2*avg[0][1]) / 18, (2 + 2*avg[0][2]) / 18},
		{0.8*avg[1][0] + 0.2, 0.8 * avg[1][1], 0.8 * avg[1][2]},
	}
	for a := range want {
		for s := range want[a] {
			if math.Abs(float64(q[a][s])-want[a][s]) > 1e-6 {
				t.Errorf("triplet %d slot %d: %v, want %v", a, s, q[a][s], want[a][s])
			}
		}
	}
	// One model alone reproduces SoftTargets' mixing of that model.
	v := smallVICEModel(6, 3)
	vp, err := v.PredictBatch(train, 9, 4)
	if err != nil {
		t.Fatal(err)
	}
	hc := HumanModelConfig{PredictSamples: 9, Seed: 4, RepeatPseudoCount: 2, OneHotMix: 0.2}
	qv, err := v.SoftTargets(train, repeats, hc)
	if err != nil {
		t.Fatal(err)
	}
	qe, err := EnsembleSoftTargets(train, repeats, hc, vp)
	if err != nil {
		t.Fatal(err)
	}
	for a := range qv {
		for s := range qv[a] {
			if math.Abs(float64(qv[a][s]-qe[a][s])) > 1e-6 {
				t.Errorf("triplet %d slot %d: ensemble of one %v, SoftTargets %v", a, s, qe[a][s], qv[a][s])
			}
		}
	}
	if _, err := EnsembleSoftTargets(train, repeats, cfg, p1[:1]); err == nil {
		t.Error("a prediction set of the wrong length was accepted")
	}
	if _, err := EnsembleSoftTargets(train, repeats, cfg); err == nil {
		t.Error("no prediction sets were accepted")
	}
	if _, err := EnsembleSoftTargets(train, repeats, HumanModelConfig{OneHotMix: 1.5}, p1); err == nil {
		t.Error("a one-hot mix above 1 was accepted")
	}
	if _, err := EnsembleSoftTargets(train, []RepeatedTriplet{{Items: [3]int32{1, 1, 2}}}, cfg, p1); err == nil {
		t.Error("a repeated triplet with a repeated item was accepted")
	}
	if _, err := EnsembleDistilledTargets(6, train, repeats, p1[:1], cfg); err == nil {
		t.Error("EnsembleDistilledTargets accepted teacher predictions of the wrong length")
	}
}
