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

// TestEnsembleSoftTargetsOneModel checks the mixing of EnsembleSoftTargets
// by hand for one prediction set, VICE's: smoothing toward the summed
// counts of repeated responses where a triplet's item set has them, the
// one-hot mix elsewhere, and the prediction itself without either.
func TestEnsembleSoftTargetsOneModel(t *testing.T) {
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
	vp, err := v.PredictBatch(train, 9, 4)
	if err != nil {
		t.Fatal(err)
	}
	cfg := HumanModelConfig{RepeatPseudoCount: 2.5, OneHotMix: 0.25}
	q, err := EnsembleSoftTargets(train, repeats, cfg, vp)
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
	// VICE's prediction itself, renormalised.
	q0, err := EnsembleSoftTargets(train, nil, HumanModelConfig{OneHotMix: -1}, vp)
	if err != nil {
		t.Fatal(err)
	}
	for a, tr := range train {
		pr := v.Predict(tr, 9, 4)
		for s := range pr {
			if q0[a][s] != float32(pr[s]/(pr[0]+pr[1]+pr[2])) {
				t.Fatalf("triplet %d: target %v, prediction %v", a, q0[a], pr)
			}
		}
	}
}

// TestEnsembleDistilledTargetsRejectsBadInput checks that bad repeats,
// configurations, triplets and teachers are errors, found before any model
// is fitted.
func TestEnsembleDistilledTargetsRejectsBadInput(t *testing.T) {
	const n, d = 4, 2
	x := []float32{1, 0, 0, 1, 1, 1, 0.5, -1}
	hard := &Teacher{W: identity(d, d), B: make([]float64, d), D: d, P: d, Std: 1, Tau: 1, Task: TaskOddOneOut}
	anchor := hard.Clone()
	anchor.Task = TaskAnchor
	wide := &Teacher{W: identity(3, 3), B: make([]float64, 3), D: 3, P: 3, Std: 1, Tau: 1, Task: TaskOddOneOut}
	train := []Triplet{{I: 0, J: 1, K: 2}}
	bad := map[string]struct {
		train []Triplet
		reps  []RepeatedTriplet
		hard  *Teacher
		cfg   HumanModelConfig
	}{
		"item outside":          {train, []RepeatedTriplet{{Items: [3]int32{0, 1, 7}, Counts: [3]int32{1, 1, 1}}}, hard, HumanModelConfig{}},
		"negative count":        {train, []RepeatedTriplet{{Items: [3]int32{0, 1, 2}, Counts: [3]int32{1, -1, 1}}}, hard, HumanModelConfig{}},
		"repeated item":         {train, []RepeatedTriplet{{Items: [3]int32{0, 0, 2}, Counts: [3]int32{1, 1, 1}}}, hard, HumanModelConfig{}},
		"mix above one":         {train, nil, hard, HumanModelConfig{OneHotMix: 1.5}},
		"training item outside": {[]Triplet{{I: 0, J: 1, K: 4}}, nil, hard, HumanModelConfig{}},
		"no teacher":            {train, nil, nil, HumanModelConfig{}},
		"anchor teacher":        {train, nil, anchor, HumanModelConfig{}},
		"teacher of another D":  {train, nil, wide, HumanModelConfig{}},
	}
	for name, c := range bad {
		if _, err := EnsembleDistilledTargets(x, n, c.train, c.reps, c.hard, c.cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	} // The inputs the bad cases start from are accepted.
	if _, err := EnsembleDistilledTargets(x, n, train, nil, hard, HumanModelConfig{Dim: 2, Epochs: 1, PredictSamples: 2}); err != nil {
		t.Errorf("valid input: %v", err)
	}
}

// TestEnsembleDistilledTargetsPlanted runs the whole recipe on triplets
// answered by a planted VICE model, with a hard-label teacher of the true
// embedding, and checks that it is reproducible, equals its steps done by
// hand, and gives targets close to the true choice distributions.
func TestEnsembleDistilledTargetsPlanted(t *testing.T) {
	const n, p = 50, 5
	emb, ts, truth := plantedVICEData(21, n, p, 6000)
	x := make([]float32, len(emb))
	for i, v := range emb {
		x[i] = float32(v)
	}
	train, val, truth := ts[:5000], ts[5000:], truth[:5000]
	hard, _, err := SelectLambda(t.Context(), x, n, p, train, nil, val, nil, []float64{1e-3}, TeacherConfig{MaxIter: 100})
	if err != nil {
		t.Fatal(err)
	}
	cfg := HumanModelConfig{Dim: 8, Epochs: 40, BatchSize: 256, LR: 0.02, Seed: 3, PredictSamples: 20, OneHotMix: -1}
	q, err := EnsembleDistilledTargets(x, n, train, nil, hard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	q2, err := EnsembleDistilledTargets(x, n, train, nil, hard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for a := range q {
		if q[a] != q2[a] {
			t.Fatalf("triplet %d: targets differ between runs with one seed", a)
		}
	}
	v, _, err := FitVICE(n, train, cfg)
	if err != nil {
		t.Fatal(err)
	}
	vp, err := v.PredictBatch(train, cfg.PredictSamples, cfg.Seed)
	if err != nil {
		t.Fatal(err)
	}
	tp := hard.Probs(x, n, train)
	q3, err := EnsembleSoftTargets(train, nil, cfg, vp, tp)
	if err != nil {
		t.Fatal(err)
	}
	for a := range q {
		if q[a] != q3[a] {
			t.Fatalf("triplet %d: EnsembleDistilledTargets differs from FitVICE, Teacher.Probs and EnsembleSoftTargets", a)
		}
	}
	// The distilled targets must be closer to the true choice distributions
	// than the observed choice with the best constant label smoothing.
	var klQ, klV, klT float64
	for a, tr := range truth {
		s := float64(q[a][0] + q[a][1] + q[a][2])
		if math.Abs(s-1) > 1e-5 {
			t.Fatalf("triplet %d: targets sum to %v", a, s)
		}
		klQ += KLProbs(tr, [3]float64{float64(q[a][0]), float64(q[a][1]), float64(q[a][2])})
		klV += KLProbs(tr, vp[a])
		klT += KLProbs(tr, tp[a])
	}
	m := float64(len(truth))
	klQ, klV, klT = klQ/m, klV/m, klT/m
	bestSmooth := math.Inf(1)
	for e := 0.05; e < 1; e += 0.05 {
		var kl float64
		for _, tr := range truth {
			kl += KLProbs(tr, [3]float64{1 - e + e/3, e / 3, e / 3})
		}
		bestSmooth = math.Min(bestSmooth, kl/float64(len(truth)))
	}
	t.Logf("KL(true‖distilled) %.4f (VICE alone %.4f, teacher alone %.4f), best label-smoothed one-hot %.4f", klQ, klV, klT, bestSmooth)
	if !(klQ < 0.5*bestSmooth) {
		t.Errorf("distilled targets KL %.4f not well below label smoothing's %.4f", klQ, bestSmooth)
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
}
