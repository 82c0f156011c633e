package learner

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// studentProblem returns embeddings, a random head and teacher-labelled
// triplets from a hidden linear teacher.
func studentProblem(n, d, p, nt int, seed uint64) (x []float32, idx []int32, sims []float32, zt []float32) {
	x = randomReps(n, d, seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	w := make([]float64, p*d)
	for i := range w {
		w[i] = rng.NormFloat64() / math.Sqrt(float64(d))
	}
	zt = make([]float32, n*p)
	for i := 0; i < n; i++ {
		for q := 0; q < p; q++ {
			var s float64
			for a := 0; a < d; a++ {
				s += w[q*d+a] * float64(x[i*d+a])
			}
			zt[i*p+q] = float32(s)
		}
	}
	g, err := NewGenerator(zt, n, p, GeneratorConfig{Strategy: StrategyRandom, Seed: seed})
	if err != nil {
		panic(err)
	}
	idx, sims = g.Next(nt)
	return x, idx, sims, zt
}

func TestStudentGradientsMatchFiniteDifferences(t *testing.T) {
	const n, d, p, nt = 30, 5, 4, 40
	x, idx, sims, _ := studentProblem(n, d, p, nt, 1)
	for _, loss := range []string{LossKL, LossJS} {
		h, err := NewStudentHead(d, HeadConfig{Init: InitRandom, OutDim: p, Tau: 0.7, Mean: 0.1, Std: 1.3, Seed: 2})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(3, 3))
		for i := range h.B {
			h.B[i] = rng.NormFloat64() * 0.3
		}
		cfg, _ := DistillConfig{Loss: loss, TeacherTau: 0.8}.withDefaults()
		order := make([]int, nt)
		for i := range order {
			order[i] = i
		}
		gw := make([]float64, p*d)
		gb := make([]float64, p)
		h.batchGrad(x, idx, sims, order, cfg, gw, gb)
		f := func() float64 { return h.batchGrad(x, idx, sims, order, cfg, nil, nil) }
		check := func(name string, params, grad []float64) {
			for i := range params {
				const eps = 1e-5
				old := params[i]
				params[i] = old + eps
				fp := f()
				params[i] = old - eps
				fm := f()
				params[i] = old
				num := (fp - fm) / (2 * eps)
				if math.Abs(num-grad[i]) > 1e-6+1e-4*math.Abs(num) {
					t.Errorf("%s %s[%d]: analytic %.8g, numeric %.8g", loss, name, i, grad[i], num)
				}
			}
		}
		check("W", h.W, gw)
		check("B", h.B, gb)
	}
}

func TestStudentLearnsTeacher(t *testing.T) {
	const n, d, p, nt = 200, 10, 10, 6000
	x, idx, sims, _ := studentProblem(n, d, p, nt, 4)
	for _, loss := range []string{LossKL, LossJS} {
		h, _ := NewStudentHead(d, HeadConfig{Init: InitRandom, Seed: 1})
		st, err := TrainStudent(context.Background(), h, x, n, idx, sims, DistillConfig{Loss: loss, Epochs: 30, BatchSize: 256, LR: 0.02, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		if st.FinalLoss > 0.3*st.InitialLoss {
			t.Errorf("%s: loss %.4f → %.4f, want a drop to below 30%%", loss, st.InitialLoss, st.FinalLoss)
		}
		// The student's odd-one-out choice agrees with the teacher's.
		z := h.Transform(x, n)
		agree := 0
		for tr := 0; tr < nt; tr++ {
			l := Logits(z, p, Triplet{idx[3*tr], idx[3*tr+1], idx[3*tr+2]})
			if l[0] >= l[1] && l[0] >= l[2] {
				agree++
			}
		}
		if frac := float64(agree) / nt; frac < 0.85 {
			t.Errorf("%s: student agrees with teacher on %.3f of triplets", loss, frac)
		}
	}
}

func TestStudentDecayPullsTowardInit(t *testing.T) {
	const n, d, nt = 100, 6, 2000
	x, idx, sims, _ := studentProblem(n, d, d, nt, 7)
	dist := func(mu float64) float64 {
		h, _ := NewStudentHead(d, HeadConfig{Init: InitIdentity})
		w0 := append([]float64(nil), h.W...)
		if _, err := TrainStudent(context.Background(), h, x, n, idx, sims, DistillConfig{Epochs: 5, LR: 0.01, Decay: mu, BatchSize: 100}); err != nil {
			t.Fatal(err)
		}
		var s float64
		for i := range w0 {
			s += (h.W[i] - w0[i]) * (h.W[i] - w0[i])
		}
		return math.Sqrt(s)
	}
	free, held := dist(0), dist(50)
	if !(held < 0.5*free) {
		t.Errorf("decay 50 moved weights %.4f, no decay %.4f: want much less", held, free)
	}
}

// TestStudentDecayPullsTowardAnchor warm-starts a head away from θ₀ and
// checks that, with an anchor, the decay pulls it back toward θ₀ rather
// than holding it at its warm start.
func TestStudentDecayPullsTowardAnchor(t *testing.T) {
	const n, d, nt = 100, 6, 2000
	x, idx, sims, _ := studentProblem(n, d, d, nt, 7)
	theta0, _ := NewStudentHead(d, HeadConfig{Init: InitIdentity})
	warm, _ := NewStudentHead(d, HeadConfig{Init: InitIdentity})
	for i := range warm.W {
		warm.W[i] += 0.5
	}
	dist := func(a, b *StudentHead) float64 {
		var s float64
		for i := range a.W {
			s += (a.W[i] - b.W[i]) * (a.W[i] - b.W[i])
		}
		return math.Sqrt(s)
	}
	train := func(anchor *StudentHead) *StudentHead {
		h := &StudentHead{W: slices.Clone(warm.W), B: slices.Clone(warm.B), D: d, P: d, Std: 1, Tau: 1}
		if _, err := TrainStudent(context.Background(), h, x, n, idx, sims, DistillConfig{Epochs: 3, LR: 0.01, Decay: 50, BatchSize: 100, Anchor: anchor}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	self, anchored := train(nil), train(theta0)
	if !(dist(anchored, theta0) < 0.5*dist(self, theta0)) {
		t.Errorf("distance to θ₀: anchored %.4f, decaying toward the warm start %.4f", dist(anchored, theta0), dist(self, theta0))
	}
	bad := &StudentHead{W: make([]float64, 4), B: make([]float64, 2), D: 2, P: 2}
	if _, err := TrainStudent(context.Background(), train(nil), x, n, idx, sims, DistillConfig{Epochs: 1, Anchor: bad}); err == nil {
		t.Error("an anchor of the wrong shape was accepted")
	}
}

func TestTrainStudentDeterministicAcrossWorkers(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	// A small head (float64 products) and one large enough for the
	// float32 kernel path.
	for _, sz := range [][2]int{{7, 5}, {80, 64}} {
		d, p := sz[0], sz[1]
		const n, nt = 300, 1500
		x, idx, sims, _ := studentProblem(n, d, 5, nt, 9)
		var ref []float64
		for _, w := range []int{1, 3} {
			runtime.GOMAXPROCS(w)
			h, _ := NewStudentHead(d, HeadConfig{Init: InitRandom, OutDim: p, Seed: 3})
			if _, err := TrainStudent(context.Background(), h, x, n, idx, sims, DistillConfig{Loss: LossJS, Epochs: 3, BatchSize: 200, Seed: 4, Workers: w}); err != nil {
				t.Fatal(err)
			}
			if ref == nil {
				ref = append(h.W, h.B...)
			} else if !slices.Equal(ref, append(h.W, h.B...)) {
				t.Errorf("D=%d P=%d: weights differ between worker counts", d, p)
			}
		}
	}
}

func TestCalibrateScaleLowersLoss(t *testing.T) {
	const n, d, nt = 100, 6, 2000
	x, idx, sims, _ := studentProblem(n, d, d, nt, 12)
	for i := range sims {
		sims[i] *= 20 // a sharper teacher than the raw embedding scale
	}
	h, _ := NewStudentHead(d, HeadConfig{})
	before, _ := DistillLoss(h, x, n, idx, sims, DistillConfig{})
	a, err := h.CalibrateScale(x, n, idx, sims, DistillConfig{})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := DistillLoss(h, x, n, idx, sims, DistillConfig{})
	if !(after < before) || a <= 0 {
		t.Errorf("scale %.3g: loss %.4f → %.4f", a, before, after)
	}
}

func TestStudentFloat32PathMatchesFloat64(t *testing.T) {
	// A head with P·D ≥ fastHeadSize trains through the float32 kernel;
	// its loss and gradient must match the float64 reference closely.
	const n, d, p, nt = 300, 80, 64, 700
	x, idx, sims, _ := studentProblem(n, d, 16, nt, 5)
	h, _ := NewStudentHead(d, HeadConfig{Init: InitRandom, OutDim: p, Seed: 6, Tau: 2})
	for i := range h.B {
		h.B[i] = 0.1 * float64(i%5)
	}
	cfg, _ := DistillConfig{Loss: LossJS}.withDefaults()
	order := make([]int, nt)
	for i := range order {
		order[i] = i
	}
	gw32, gb32 := make([]float64, p*d), make([]float64, p)
	l32 := h.batchGrad(x, idx, sims, order, cfg, gw32, gb32)
	// Reference: the same computation with the float64 products.
	xt := h.standardise(x, n)
	u := h.forward(xt, n)
	gw, gb := make([]float64, p*d), make([]float64, p)
	gu := make([]float64, n*p)
	var l64 float64
	for tr := 0; tr < nt; tr++ {
		a, b, c := int(idx[3*tr]), int(idx[3*tr+1]), int(idx[3*tr+2])
		tl := [3]float64{float64(sims[3*tr]), float64(sims[3*tr+1]), float64(sims[3*tr+2])}
		l64 += tripletLoss(cfg.Loss, u[a*p:(a+1)*p], u[b*p:(b+1)*p], u[c*p:(c+1)*p], tl, cfg.TeacherTau, h.Tau,
			1/float64(nt), gu[a*p:(a+1)*p], gu[b*p:(b+1)*p], gu[c*p:(c+1)*p])
	}
	l64 /= nt
	for r := 0; r < n; r++ {
		for q := 0; q < p; q++ {
			gb[q] += gu[r*p+q]
			for a := 0; a < d; a++ {
				gw[q*d+a] += gu[r*p+q] * xt[r*d+a]
			}
		}
	}
	if math.Abs(l32-l64) > 1e-5*math.Abs(l64) {
		t.Errorf("loss %.9g (float32 products) vs %.9g", l32, l64)
	}
	var num, den float64
	for i := range gw {
		num += (gw32[i] - gw[i]) * (gw32[i] - gw[i])
		den += gw[i] * gw[i]
	}
	for i := range gb {
		num += (gb32[i] - gb[i]) * (gb32[i] - gb[i])
		den += gb[i] * gb[i]
	}
	if rel := math.Sqrt(num / den); rel > 1e-4 {
		t.Errorf("gradient relative error %.3g", rel)
	}
}
