package learner

import (
	"math"
	"math/rand/v2"
	"testing"
)

// plantedProblem draws n items in d dimensions and triplets answered by a
// planted affine model z = A·x̃ + c with temperature tau.
func plantedProblem(seed uint64, n, d, p, m int, tau float64, task Task) (x []float32, ts []Triplet, a []float64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	x = make([]float32, n*d)
	for i := range x {
		x[i] = float32(2 + 3*rng.NormFloat64())
	}
	a = make([]float64, p*d)
	for i := range a {
		a[i] = rng.NormFloat64() / math.Sqrt(float64(d))
	}
	mean, std := MeanStd(x)
	tr := &Teacher{W: a, B: make([]float64, p), D: d, P: p, Mean: mean, Std: std, Tau: tau, Task: task}
	z := tr.Transform(x, n)
	for len(ts) < m {
		i, j, k := int32(rng.IntN(n)), int32(rng.IntN(n)), int32(rng.IntN(n))
		if i == j || i == k || j == k {
			continue
		}
		pr := TaskProbs(task, Logits(z, p, Triplet{i, j, k}), tau)
		u := rng.Float64()
		switch {
		case u < pr[0]:
			ts = append(ts, Triplet{i, j, k})
		case u < pr[0]+pr[1]:
			// J is odd (odd-one-out) or K is closer (anchor): either way
			// the observed triplet is (i, k, j).
			ts = append(ts, Triplet{i, k, j})
		default:
			ts = append(ts, Triplet{j, k, i})
		}
	}
	return x, ts, a
}

// TestTeacherObjectiveGradient checks the full objective gradient with
// respect to W and b, including the regulariser, by central differences,
// for both tasks, soft targets and a non-square W.
func TestTeacherObjectiveGradient(t *testing.T) {
	for _, tc := range []struct {
		task Task
		p    int
		soft bool
	}{{TaskOddOneOut, 6, false}, {TaskOddOneOut, 4, true}, {TaskAnchor, 5, true}} {
		const n, d = 12, 6
		x, ts, _ := plantedProblem(7, n, d, d, 40, 1, tc.task)
		var q [][3]float32
		if tc.soft {
			rng := rand.New(rand.NewPCG(8, 8))
			for range ts {
				q = append(q, randTarget(rng))
			}
		}
		cfg := TeacherConfig{Task: tc.task, Lambda: 0.3, Tau: 0.8, OutDim: tc.p, Exact: true}.withDefaults(d)
		mean, std := MeanStd(x)
		o := newTeacherObjective(x, n, d, tc.p, mean, std, ts, q, cfg)
		rng := rand.New(rand.NewPCG(9, 9))
		params := make([]float64, tc.p*d+tc.p)
		for i := range params {
			params[i] = 0.4 * rng.NormFloat64()
		}
		grad := make([]float64, len(params))
		o.eval(params, grad)
		for i := range params {
			const h = 1e-6
			pp := append([]float64(nil), params...)
			pm := append([]float64(nil), params...)
			pp[i] += h
			pm[i] -= h
			_, fp := o.eval(pp, nil)
			_, fm := o.eval(pm, nil)
			num := (fp - fm) / (2 * h)
			if math.Abs(num-grad[i]) > 1e-6*(1+math.Abs(num)) {
				t.Fatalf("%+v: gradient[%d] = %v, numeric %v", tc, i, grad[i], num)
			}
		}
	}
}

// TestTeacherRecoversPlantedTransform fits a teacher to triplets sampled
// from a planted affine model and checks that held-out accuracy approaches
// that of the planted model and beats the raw features.
func TestTeacherRecoversPlantedTransform(t *testing.T) {
	for _, task := range []Task{TaskOddOneOut, TaskAnchor} {
		const n, d = 60, 10
		x, ts, a := plantedProblem(11, n, d, d, 6000, 0.5, task)
		train, val := ts[:5000], ts[5000:]
		teacher, st, err := FitTeacher(x, n, d, train, nil, TeacherConfig{Task: task, Lambda: 1e-5, MaxIter: 500})
		if err != nil {
			t.Fatal(err)
		}
		mean, std := MeanStd(x)
		planted := &Teacher{W: a, B: make([]float64, d), D: d, P: d, Mean: mean, Std: std, Tau: 0.5, Task: task}
		raw := &Teacher{W: identity(d, d), B: make([]float64, d), D: d, P: d, Mean: mean, Std: std, Tau: 1, Task: task}
		accFit := Accuracy(task, teacher.Transform(x, n), d, val)
		accPlanted := Accuracy(task, planted.Transform(x, n), d, val)
		accRaw := Accuracy(task, raw.Transform(x, n), d, val)
		t.Logf("%s: fit %.3f planted %.3f raw %.3f (%d iterations, %s)", task, accFit, accPlanted, accRaw, st.Iterations, st.Status)
		if accFit < accPlanted-0.03 || accFit < accRaw+0.1 {
			t.Fatalf("%s: held-out accuracy %.3f, planted %.3f, raw %.3f", task, accFit, accPlanted, accRaw)
		}
		// Representational similarity of the recovered Gram matrix with the planted one.
		g1, g2 := gram(teacher.Transform(x, n), n, d), gram(planted.Transform(x, n), n, d)
		if r := SpearmanRSA(g1, g2); r < 0.8 {
			t.Fatalf("%s: Spearman RSA with the planted representation %.3f < 0.8", task, r)
		}
	}
}

func identity(p, d int) []float64 {
	w := make([]float64, p*d)
	for a := 0; a < p; a++ {
		w[a*d+a] = 1
	}
	return w
}

func gram(z []float32, n, p int) []float64 {
	var out []float64
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			var s float64
			for a := 0; a < p; a++ {
				s += float64(z[i*p+a]) * float64(z[j*p+a])
			}
			out = append(out, s)
		}
	}
	return out
}

// TestFitTeacherDeterministic checks that the fit is bit-identical across
// worker counts for the same inputs.
func TestFitTeacherDeterministic(t *testing.T) {
	const n, d = 40, 8
	x, ts, _ := plantedProblem(13, n, d, d, 3000, 1, TaskOddOneOut)
	a, _, err := FitTeacher(x, n, d, ts, nil, TeacherConfig{Lambda: 1e-3, MaxIter: 30, Workers: 1, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := FitTeacher(x, n, d, ts, nil, TeacherConfig{Lambda: 1e-3, MaxIter: 30, Workers: 4, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.W {
		if a.W[i] != b.W[i] {
			t.Fatalf("W[%d] differs: %v vs %v", i, a.W[i], b.W[i])
		}
	}
}

// TestOnlineUpdateImprovesHeldOut starts from a teacher fitted on few
// judgments and checks that online Adam updates on fresh judgments mixed
// with replayed ones improve the held-out likelihood of a planted model.
func TestOnlineUpdateImprovesHeldOut(t *testing.T) {
	const n, d = 60, 10
	x, ts, _ := plantedProblem(17, n, d, d, 9000, 0.5, TaskOddOneOut)
	old, fresh, val := ts[:300], ts[300:8000], ts[8000:]
	teacher, _, err := FitTeacher(x, n, d, old, nil, TeacherConfig{Lambda: 1e-2, MaxIter: 100})
	if err != nil {
		t.Fatal(err)
	}
	nll := func(tc *Teacher) float64 { return NLL(TaskOddOneOut, tc.Logits(x, n, val), tc.Tau) }
	before := nll(teacher)
	snapshot := teacher.Clone()
	var state AdamState
	cfg := OnlineConfig{LR: 3e-3, Steps: 20, BatchSize: 320, ReplayFraction: 0.2}
	for round := 0; round < 10; round++ {
		batch := fresh[round*256 : (round+1)*256]
		cfg.Seed = uint64(round)
		st, err := teacher.Update(x, n, batch, nil, old, nil, cfg, &state)
		if err != nil {
			t.Fatal(err)
		}
		if st.Fresh != 20*256 || st.Replayed != 20*64 {
			t.Fatalf("batch composition fresh=%d replayed=%d", st.Fresh, st.Replayed)
		}
	}
	after := nll(teacher)
	t.Logf("held-out NLL %.4f -> %.4f", before, after)
	if !(after < before-0.02) {
		t.Fatalf("held-out NLL did not improve: %.4f -> %.4f", before, after)
	}
	// Same seeds from the same start give the same result.
	again := snapshot
	var st2 AdamState
	for round := 0; round < 10; round++ {
		cfg.Seed = uint64(round)
		if _, err := again.Update(x, n, fresh[round*256:(round+1)*256], nil, old, nil, cfg, &st2); err != nil {
			t.Fatal(err)
		}
	}
	for i := range again.W {
		if again.W[i] != teacher.W[i] {
			t.Fatalf("online update not deterministic at W[%d]", i)
		}
	}
}

// TestOnlineUpdateGradientMatchesObjective checks that one Adam step of
// Update moves W along the sign of the full-objective gradient on the same
// batch (Adam's first step is −LR·sign(g) per coordinate).
func TestOnlineUpdateGradientMatchesObjective(t *testing.T) {
	const n, d = 20, 5
	x, ts, _ := plantedProblem(19, n, d, d, 200, 1, TaskAnchor)
	tc := &Teacher{D: d, P: d, W: identity(d, d), B: make([]float64, d), Tau: 1, Lambda: 0.05, Task: TaskAnchor}
	tc.Mean, tc.Std = MeanStd(x)
	for i := range tc.W {
		tc.W[i] += 0.1 * float64(i%7-3)
	}
	cfg := TeacherConfig{Task: TaskAnchor, Lambda: 0.05, Tau: 1, Exact: true}.withDefaults(d)
	o := newTeacherObjective(x, n, d, d, tc.Mean, tc.Std, ts, nil, cfg)
	params := append(append([]float64(nil), tc.W...), tc.B...)
	grad := make([]float64, len(params))
	o.eval(params, grad)
	before := tc.Clone()
	if _, err := tc.Update(x, n, ts, nil, nil, nil, OnlineConfig{LR: 1e-4, BatchSize: len(ts), ReplayFraction: -1}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range tc.W {
		step := tc.W[i] - before.W[i]
		if math.Abs(grad[i]) > 1e-6 && math.Signbit(step) != math.Signbit(-grad[i]) {
			t.Fatalf("W[%d] moved by %v against gradient %v", i, step, grad[i])
		}
	}
}

// TestFloat32ObjectiveMatchesExact checks that the default float32 path of
// the objective agrees with the exact float64 path.
func TestFloat32ObjectiveMatchesExact(t *testing.T) {
	const n, d, p = 50, 16, 12
	x, ts, _ := plantedProblem(29, n, d, d, 2000, 1, TaskOddOneOut)
	mean, std := MeanStd(x)
	rng := rand.New(rand.NewPCG(30, 30))
	params := make([]float64, p*d+p)
	for i := range params {
		params[i] = 0.3 * rng.NormFloat64()
	}
	var objs [2]float64
	var grads [2][]float64
	for k, exact := range []bool{true, false} {
		cfg := TeacherConfig{Lambda: 0.1, OutDim: p, Exact: exact}.withDefaults(d)
		o := newTeacherObjective(x, n, d, p, mean, std, ts, nil, cfg)
		grads[k] = make([]float64, len(params))
		_, objs[k] = o.eval(params, grads[k])
	}
	if math.Abs(objs[0]-objs[1]) > 1e-5*math.Abs(objs[0]) {
		t.Fatalf("objective %v (exact) vs %v (float32)", objs[0], objs[1])
	}
	var num, den float64
	for i := range params {
		e := grads[0][i] - grads[1][i]
		num += e * e
		den += grads[0][i] * grads[0][i]
	}
	if r := math.Sqrt(num / den); r > 1e-5 {
		t.Fatalf("relative gradient difference %v", r)
	}
}

// TestTransformMatchesDefinition compares Transform with z = W·x̃ + b
// computed directly in float64.
func TestTransformMatchesDefinition(t *testing.T) {
	const n, d, p = 13, 37, 21
	rng := rand.New(rand.NewPCG(31, 31))
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(1 + 2*rng.NormFloat64())
	}
	tc := &Teacher{W: make([]float64, p*d), B: make([]float64, p), D: d, P: p, Mean: 0.7, Std: 1.9, Tau: 1}
	for i := range tc.W {
		tc.W[i] = rng.NormFloat64()
	}
	for i := range tc.B {
		tc.B[i] = rng.NormFloat64()
	}
	z := tc.Transform(x, n)
	for r := 0; r < n; r++ {
		for q := 0; q < p; q++ {
			want := tc.B[q]
			for a := 0; a < d; a++ {
				want += tc.W[q*d+a] * (float64(x[r*d+a]) - 0.7) / 1.9
			}
			if math.Abs(float64(z[r*p+q])-want) > 1e-4*(1+math.Abs(want)) {
				t.Fatalf("z[%d,%d] = %v, want %v", r, q, z[r*p+q], want)
			}
		}
	}
}

// randomTeacher returns a teacher with random weights and bias, P < D,
// standardising with the statistics of x.
func randomTeacher(seed uint64, x []float32, d, p int, task Task) *Teacher {
	rng := rand.New(rand.NewPCG(seed, seed))
	tc := &Teacher{W: make([]float64, p*d), B: make([]float64, p), D: d, P: p, Tau: 0.7, Task: task}
	tc.Mean, tc.Std = MeanStd(x)
	for i := range tc.W {
		tc.W[i] = rng.NormFloat64() / math.Sqrt(float64(d))
	}
	for i := range tc.B {
		tc.B[i] = 0.3 * rng.NormFloat64()
	}
	return tc
}

// TestTransformRowsMatchesTransform checks TransformRows on rows out of
// order, repeated and at both ends of the matrix against the same rows of
// Transform.
func TestTransformRowsMatchesTransform(t *testing.T) {
	const n, d, p = 70, 37, 21
	x, _, _ := plantedProblem(37, n, d, d, 0, 1, TaskOddOneOut)
	tc := randomTeacher(38, x, d, p, TaskOddOneOut)
	full := tc.Transform(x, n)
	rows := []int32{7, 0, n - 1, 7, 12, 50, 1}
	z := tc.TransformRows(x, rows)
	if len(z) != len(rows)*p {
		t.Fatalf("TransformRows returned %d values for %d rows of %d", len(z), len(rows), p)
	}
	for l, r := range rows {
		for q := 0; q < p; q++ {
			got, want := float64(z[l*p+q]), float64(full[int(r)*p+q])
			if math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
				t.Fatalf("row %d (%d), column %d: %v, Transform %v", l, r, q, got, want)
			}
		}
	}
	if z := tc.TransformRows(x, nil); len(z) != 0 {
		t.Fatalf("no rows gave %d values", len(z))
	}
}

// TestScoreTripletMatchesProbs checks that scoring one judgment on its
// three rows gives the probabilities of Probs and the cross-entropy of the
// full representation, for both tasks, hard and soft targets.
func TestScoreTripletMatchesProbs(t *testing.T) {
	const n, d, p = 40, 12, 8
	for _, task := range []Task{TaskOddOneOut, TaskAnchor} {
		x, ts, _ := plantedProblem(41, n, d, d, 30, 1, task)
		tc := randomTeacher(42, x, d, p, task)
		probs := tc.Probs(x, n, ts)
		z := tc.Transform(x, n)
		rng := rand.New(rand.NewPCG(43, 43))
		for a, tr := range ts {
			q := HardTarget
			if a%2 == 1 {
				q = randTarget(rng)
			}
			pr, loss := tc.ScoreTriplet(x, tr, q)
			want, _ := TaskCrossEntropy(task, Logits(z, p, tr), tc.Tau, q)
			if math.Abs(loss-want) > 1e-5*(1+want) {
				t.Fatalf("%s triplet %d: loss %v, want %v", task, a, loss, want)
			}
			for s := range pr {
				if math.Abs(pr[s]-probs[a][s]) > 1e-5 {
					t.Fatalf("%s triplet %d: probabilities %v, Probs %v", task, a, pr, probs[a])
				}
			}
			if q == HardTarget && math.Abs(loss+math.Log(pr[0])) > 1e-9 {
				t.Fatalf("%s triplet %d: hard loss %v is not −log p %v", task, a, loss, pr[0])
			}
		}
	}
}
