package learner

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// Student head initialisations.
const (
	// InitAffine starts from the identity map (truncated or zero-padded to
	// the output dimension) and, once CalibrateScale has run, rescaled by
	// the scalar that best matches the teacher's triplet distributions. It
	// keeps the pretrained geometry while fixing the overall logit scale.
	InitAffine = "affine"
	// InitIdentity starts from the plain identity map.
	InitIdentity = "identity"
	// InitRandom starts from W ~ N(0, 1/D) and b = 0.
	InitRandom = "random"
)

// Distillation losses.
const (
	// LossKL is KL(teacher ‖ student) over the three odd-one-out outcomes.
	LossKL = "kl"
	// LossJS is the Jensen–Shannon divergence between the two
	// distributions.
	LossJS = "jsd"
)

// StudentHead is an affine head u = W·x̃ + b on frozen student embeddings x,
// with x̃ = (x − Mean)/Std standardised by two scalars. The student's
// triplet distribution is softmax((u_a·u_b, u_a·u_c, u_b·u_c)/Tau).
type StudentHead struct {
	// W is the P×D weight matrix, row-major.
	W []float64
	// B is the bias, of length P.
	B []float64
	// D is the input and P the output dimension.
	D, P int
	// Mean and Std standardise the inputs (defaults 0 and 1).
	Mean, Std float64
	// Tau is the student temperature (default 1).
	Tau float64
	// Init records how the head was initialised.
	Init string
}

// HeadConfig configures NewStudentHead.
type HeadConfig struct {
	// Init is InitAffine (default), InitIdentity or InitRandom.
	Init string
	// OutDim is the output dimension P (default D).
	OutDim int
	// Tau is the student temperature (default 1).
	Tau float64
	// Mean and Std standardise the inputs; Std 0 means 1.
	Mean, Std float64
	// Seed seeds the random initialisation.
	Seed uint64
}

// NewStudentHead returns a head for d-dimensional embeddings.
func NewStudentHead(d int, cfg HeadConfig) (*StudentHead, error) {
	if d <= 0 {
		return nil, fmt.Errorf("student head: dimension must be positive, got %d", d)
	}
	p := cfg.OutDim
	if p == 0 {
		p = d
	}
	if p < 0 {
		return nil, fmt.Errorf("student head: output dimension must be positive, got %d", p)
	}
	h := &StudentHead{W: make([]float64, p*d), B: make([]float64, p), D: d, P: p,
		Mean: cfg.Mean, Std: cfg.Std, Tau: cfg.Tau, Init: cfg.Init}
	if h.Std == 0 {
		h.Std = 1
	}
	if h.Tau == 0 {
		h.Tau = 1
	}
	if h.Init == "" {
		h.Init = InitAffine
	}
	switch h.Init {
	case InitAffine, InitIdentity:
		for q := 0; q < min(p, d); q++ {
			h.W[q*d+q] = 1
		}
	case InitRandom:
		rng := rand.New(rand.NewPCG(cfg.Seed, 0x73747564656e74))
		s := 1 / math.Sqrt(float64(d))
		for i := range h.W {
			h.W[i] = rng.NormFloat64() * s
		}
	default:
		return nil, fmt.Errorf("student head: unknown init %q (want affine, identity or random)", h.Init)
	}
	return h, nil
}

// Transform maps the n×D row-major embeddings x to the n×P head outputs.
func (h *StudentHead) Transform(x []float32, n int) []float32 {
	out := make([]float32, n*h.P)
	allProcs.blocks(n, 256, func(r0, r1 int) {
		xt := h.standardise(x[r0*h.D:r1*h.D], r1-r0)
		u := h.forward(xt, r1-r0)
		for i, v := range u {
			out[r0*h.P+i] = float32(v)
		}
	})
	return out
}

// standardise returns (x − Mean)/Std as float64 for m rows.
func (h *StudentHead) standardise(x []float32, m int) []float64 {
	xt := make([]float64, m*h.D)
	inv := 1 / h.Std
	for i, v := range x[:m*h.D] {
		xt[i] = (float64(v) - h.Mean) * inv
	}
	return xt
}

// forward returns U = X̃·Wᵀ + b for the m×D matrix xt.
func (h *StudentHead) forward(xt []float64, m int) []float64 {
	u := make([]float64, m*h.P)
	for i := 0; i < m; i++ {
		copy(u[i*h.P:(i+1)*h.P], h.B)
	}
	blas64.Gemm(blas.NoTrans, blas.Trans, 1,
		blas64.General{Rows: m, Cols: h.D, Stride: h.D, Data: xt},
		blas64.General{Rows: h.P, Cols: h.D, Stride: h.D, Data: h.W},
		1, blas64.General{Rows: m, Cols: h.P, Stride: h.P, Data: u})
	return u
}

// fastHeadSize is the number of head weights (P·D) from which training
// runs its two matrix products in float32 on the k-means GEMM kernel
// (AVX2+FMA where available) instead of float64 gonum BLAS. Loss, softmax
// and gradient accumulation stay in float64.
const fastHeadSize = 1 << 12

// forward32 is forward with the matrix product in float32.
func (h *StudentHead) forward32(xt []float64, m int) []float64 {
	p, d := h.P, h.D
	w32 := make([]float32, p*d)
	for i, v := range h.W {
		w32[i] = float32(v)
	}
	x32 := make([]float32, m*d)
	for i, v := range xt[:m*d] {
		x32[i] = float32(v)
	}
	wb := prepareB(p, d, w32)
	u32 := make([]float32, m*p)
	allProcs.blocks(m, assignBlockRows, func(r0, r1 int) {
		wb.mulNT(r1-r0, x32[r0*d:r1*d], u32[r0*p:r1*p])
	})
	u := make([]float64, m*p)
	for i := 0; i < m; i++ {
		for q := 0; q < p; q++ {
			u[i*p+q] = float64(u32[i*p+q]) + h.B[q]
		}
	}
	return u
}

// weightGrad32 writes gw (p×d) = guᵀ·xt for gu (m×p) and xt (m×d), with
// the product in float32 over fixed row blocks of gw.
func weightGrad32(gu, xt []float64, m, p, d, workers int, gw []float64) {
	guT := make([]float32, p*m)
	for r := 0; r < m; r++ {
		for q := 0; q < p; q++ {
			guT[q*m+r] = float32(gu[r*p+q])
		}
	}
	xT := make([]float32, d*m)
	for r := 0; r < m; r++ {
		for c := 0; c < d; c++ {
			xT[c*m+r] = float32(xt[r*d+c])
		}
	}
	xb := prepareB(d, m, xT)
	out := make([]float32, p*d)
	pool(workers).blocks(p, 48, func(q0, q1 int) {
		xb.mulNT(q1-q0, guT[q0*m:q1*m], out[q0*d:q1*d])
	})
	for i, v := range out {
		gw[i] = float64(v)
	}
}

// DistillConfig configures TrainStudent and DistillLoss.
type DistillConfig struct {
	// Loss is LossKL (default) or LossJS.
	Loss string
	// TeacherTau is the temperature of the teacher's softmax over its
	// similarity logits (default 1).
	TeacherTau float64
	// Epochs is the number of passes over the triplets (default 10).
	Epochs int
	// BatchSize is the number of triplets per step (default 1024).
	BatchSize int
	// LR is the Adam step size (default 1e-3).
	LR float64
	// Decay is μ in θ ← θ − lr·(Adam(g) + μ(θ − θ₀)), pulling the head
	// toward its initial (pretrained) weights θ₀ (default 0).
	Decay float64
	// Anchor, when set, is θ₀: the head whose W and B the decay pulls
	// toward, so that a head warm-started from an earlier fine-tuning
	// still decays toward its initial weights. Default: the weights on
	// entry.
	Anchor *StudentHead
	// Seed seeds the shuffling of triplets.
	Seed uint64
	// Workers is the number of goroutines (default GOMAXPROCS); results do
	// not depend on it.
	Workers int
	// Progress, when set, is called after each epoch with the epoch number
	// (from 1) and its mean training loss.
	Progress func(epoch int, loss float64)
	// StepProgress, when set, is called after each step with the number of
	// triplets in it.
	StepProgress func(triplets int)
}

func (c DistillConfig) withDefaults() (DistillConfig, error) {
	if c.Loss == "" {
		c.Loss = LossKL
	}
	if c.Loss != LossKL && c.Loss != LossJS {
		return c, fmt.Errorf("distill: unknown loss %q (want kl or jsd)", c.Loss)
	}
	if c.TeacherTau <= 0 {
		c.TeacherTau = 1
	}
	if c.Epochs <= 0 {
		c.Epochs = 10
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1024
	}
	if c.LR <= 0 {
		c.LR = 1e-3
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	return c, nil
}

// DistillStats summarises a TrainStudent run.
type DistillStats struct {
	// EpochLoss is the mean training loss of each epoch.
	EpochLoss []float64
	// InitialLoss and FinalLoss are the mean loss over all triplets before
	// and after training.
	InitialLoss, FinalLoss float64
	// Steps is the number of optimiser steps.
	Steps int
	// Triplets is the number of triplets processed (epochs × N).
	Triplets int64
}

// checkDataset validates triplet indices (N×3, odd one last) and teacher
// similarities (N×3, order (s_ab, s_ac, s_bc)) against n items.
func checkDataset(h *StudentHead, x []float32, n int, idx []int32, sims []float32) error {
	if len(x) != n*h.D {
		return fmt.Errorf("distill: embeddings have %d values, want n·D = %d", len(x), n*h.D)
	}
	if len(idx)%3 != 0 || len(idx) != len(sims) || len(idx) == 0 {
		return fmt.Errorf("distill: need N×3 indices and similarities, got %d and %d values", len(idx), len(sims))
	}
	for t, v := range idx {
		if v < 0 || int(v) >= n {
			return fmt.Errorf("distill: triplet %d refers to item %d, outside [0, %d)", t/3, v, n)
		}
	}
	return nil
}

// divergence returns the loss between softmax(t/tauT) and softmax(s/tauS)
// for the raw student logits s, and its gradient with respect to s.
func divergence(loss string, s, t [3]float64, tauT, tauS float64) (float64, [3]float64) {
	q := Softmax3(t, tauT)
	lp := LogSoftmax3(s, tauS)
	p := [3]float64{math.Exp(lp[0]), math.Exp(lp[1]), math.Exp(lp[2])}
	var l float64
	var gs [3]float64
	switch loss {
	case LossJS:
		var dp [3]float64
		for m := 0; m < 3; m++ {
			mm := 0.5 * (p[m] + q[m])
			if q[m] > 0 {
				l += 0.5 * q[m] * math.Log(q[m]/mm)
			}
			if p[m] > 0 {
				l += 0.5 * p[m] * (lp[m] - math.Log(mm))
				dp[m] = 0.5 * (lp[m] - math.Log(mm))
			}
		}
		dot := p[0]*dp[0] + p[1]*dp[1] + p[2]*dp[2]
		for m := 0; m < 3; m++ {
			gs[m] = p[m] * (dp[m] - dot) / tauS
		}
	default:
		for m := 0; m < 3; m++ {
			if q[m] > 0 {
				l += q[m] * (math.Log(q[m]) - lp[m])
			}
			gs[m] = (p[m] - q[m]) / tauS
		}
	}
	return l, gs
}

// tripletLoss returns the divergence between softmax(t/tauT) and the
// student's distribution for the head outputs ua, ub, uc, and adds its
// gradient times scale to ga, gb, gc (which may be nil to skip it).
func tripletLoss(loss string, ua, ub, uc []float64, t [3]float64, tauT, tauS, scale float64, ga, gb, gc []float64) float64 {
	var sab, sac, sbc float64
	for q := range ua {
		a, b, c := ua[q], ub[q], uc[q]
		sab += a * b
		sac += a * c
		sbc += b * c
	}
	l, gs := divergence(loss, [3]float64{sab, sac, sbc}, t, tauT, tauS)
	if ga == nil {
		return l
	}
	gab, gac, gbc := gs[0]*scale, gs[1]*scale, gs[2]*scale
	for q := range ua {
		a, b, c := ua[q], ub[q], uc[q]
		ga[q] += gab*b + gac*c
		gb[q] += gab*a + gbc*c
		gc[q] += gac*a + gbc*b
	}
	return l
}

// batchGrad computes the mean loss over the triplets listed in order (rows
// of idx/sims) and, when gw is non-nil, writes its gradient with respect to
// W and B into gw (P×D) and gb (P). The head is applied once per distinct
// item of the batch; per-triplet gradients are reduced onto the items in
// slot order, so the result does not depend on the number of workers.
func (h *StudentHead) batchGrad(x []float32, idx []int32, sims []float32, order []int, cfg DistillConfig, gw, gb []float64) float64 {
	bsz := len(order)
	d, p := h.D, h.P
	// Map each slot (triplet, position) to a distinct item row.
	slot := make([]int32, 3*bsz)
	local := make(map[int32]int32, 3*bsz)
	var items []int32
	for s, t := range order {
		for a := 0; a < 3; a++ {
			it := idx[3*t+a]
			r, ok := local[it]
			if !ok {
				r = int32(len(items))
				local[it] = r
				items = append(items, it)
			}
			slot[3*s+a] = r
		}
	}
	m := len(items)
	xt := make([]float64, m*d)
	inv := 1 / h.Std
	for r, it := range items {
		row := xt[r*d : (r+1)*d]
		for c, v := range x[int(it)*d : (int(it)+1)*d] {
			row[c] = (float64(v) - h.Mean) * inv
		}
	}
	fast := h.P*h.D >= fastHeadSize
	var u []float64
	if fast {
		u = h.forward32(xt, m)
	} else {
		u = h.forward(xt, m)
	}
	var g []float64
	if gw != nil {
		g = make([]float64, 3*bsz*p)
	}
	const shard = 64
	ns := (bsz + shard - 1) / shard
	partial := make([]float64, ns)
	scale := 1 / float64(bsz)
	pool(cfg.Workers).each(ns, func(_, sh int) {
		var sum float64
		for s := sh * shard; s < min(sh*shard+shard, bsz); s++ {
			t := order[s]
			tl := [3]float64{float64(sims[3*t]), float64(sims[3*t+1]), float64(sims[3*t+2])}
			ra, rb, rc := int(slot[3*s]), int(slot[3*s+1]), int(slot[3*s+2])
			ua, ub, uc := u[ra*p:(ra+1)*p], u[rb*p:(rb+1)*p], u[rc*p:(rc+1)*p]
			var ga, gbb, gc []float64
			if g != nil {
				ga, gbb, gc = g[3*s*p:(3*s+1)*p], g[(3*s+1)*p:(3*s+2)*p], g[(3*s+2)*p:(3*s+3)*p]
			}
			sum += tripletLoss(cfg.Loss, ua, ub, uc, tl, cfg.TeacherTau, h.Tau, scale, ga, gbb, gc)
		}
		partial[sh] = sum
	})
	var loss float64
	for _, v := range partial {
		loss += v
	}
	if gw == nil {
		return loss * scale
	}
	// Reduce slot gradients onto items in slot order.
	gu := make([]float64, m*p)
	for s, r := range slot {
		dst := gu[int(r)*p : (int(r)+1)*p]
		for q, v := range g[s*p : (s+1)*p] {
			dst[q] += v
		}
	}
	if fast {
		weightGrad32(gu, xt, m, p, d, cfg.Workers, gw)
	} else {
		blas64.Gemm(blas.Trans, blas.NoTrans, 1,
			blas64.General{Rows: m, Cols: p, Stride: p, Data: gu},
			blas64.General{Rows: m, Cols: d, Stride: d, Data: xt},
			0, blas64.General{Rows: p, Cols: d, Stride: d, Data: gw})
	}
	clear(gb)
	for r := 0; r < m; r++ {
		for q, v := range gu[r*p : (r+1)*p] {
			gb[q] += v
		}
	}
	return loss * scale
}

// DistillLoss returns the mean divergence between the teacher's triplet
// distributions (indices and similarities as produced by Generator) and
// the head's, evaluated in batches.
func DistillLoss(h *StudentHead, x []float32, n int, idx []int32, sims []float32, cfg DistillConfig) (float64, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return 0, err
	}
	if err := checkDataset(h, x, n, idx, sims); err != nil {
		return 0, err
	}
	nt := len(idx) / 3
	var total float64
	for lo := 0; lo < nt; lo += cfg.BatchSize {
		hi := min(lo+cfg.BatchSize, nt)
		order := make([]int, hi-lo)
		for i := range order {
			order[i] = lo + i
		}
		total += h.batchGrad(x, idx, sims, order, cfg, nil, nil) * float64(hi-lo)
	}
	return total / float64(nt), nil
}

// CalibrateScale multiplies W and B by the positive scalar α that
// minimises the distillation loss on (up to the first 20,000 of) the given
// triplets, found by golden-section search on log α, and returns α. It is
// the second half of InitAffine and leaves the ranking of similarities
// unchanged. Scaling the head by α scales every logit by α², so the head
// is applied only once.
func (h *StudentHead) CalibrateScale(x []float32, n int, idx []int32, sims []float32, cfg DistillConfig) (float64, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return 0, err
	}
	if err := checkDataset(h, x, n, idx, sims); err != nil {
		return 0, err
	}
	if m := 3 * 20000; len(idx) > m {
		idx, sims = idx[:m], sims[:m]
	}
	nt := len(idx) / 3
	local := make(map[int32]int32)
	var items []int32
	for _, it := range idx {
		if _, ok := local[it]; !ok {
			local[it] = int32(len(items))
			items = append(items, it)
		}
	}
	xs := make([]float32, 0, len(items)*h.D)
	for _, it := range items {
		xs = append(xs, x[int(it)*h.D:(int(it)+1)*h.D]...)
	}
	z := h.Transform(xs, len(items))
	logits := make([][3]float64, nt)
	for t := range logits {
		logits[t] = Logits(z, h.P, Triplet{local[idx[3*t]], local[idx[3*t+1]], local[idx[3*t+2]]})
	}
	eval := func(la float64) float64 {
		a2 := math.Exp(2 * la)
		var sum float64
		for t, l := range logits {
			tl := [3]float64{float64(sims[3*t]), float64(sims[3*t+1]), float64(sims[3*t+2])}
			v, _ := divergence(cfg.Loss, [3]float64{a2 * l[0], a2 * l[1], a2 * l[2]}, tl, cfg.TeacherTau, h.Tau)
			sum += v
		}
		return sum
	}
	a := math.Exp(goldenSection(eval, -12, 8, 1e-4))
	for i := range h.W {
		h.W[i] *= a
	}
	for i := range h.B {
		h.B[i] *= a
	}
	return a, nil
}

// TrainStudent fits the head to AligNet data: idx holds N×3 item indices
// into the n×D embeddings x (odd one out last) and sims the teacher's N×3
// similarity logits in the matching order (s_ab, s_ac, s_bc). Each step
// applies θ ← θ − lr·(Adam(g) + μ(θ − θ₀)) to θ = (W, B), where g is the
// gradient of the mean divergence over a shuffled mini-batch and θ₀ the
// weights on entry (or cfg.Anchor). Results depend only on the data and
// cfg.Seed, not on the number of workers.
func TrainStudent(ctx context.Context, h *StudentHead, x []float32, n int, idx []int32, sims []float32, cfg DistillConfig) (DistillStats, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return DistillStats{}, err
	}
	if err := checkDataset(h, x, n, idx, sims); err != nil {
		return DistillStats{}, err
	}
	nt := len(idx) / 3
	var st DistillStats
	if st.InitialLoss, err = DistillLoss(h, x, n, idx, sims, cfg); err != nil {
		return st, err
	}
	pd := h.P * h.D
	theta := make([]float64, pd+h.P)
	copy(theta, h.W)
	copy(theta[pd:], h.B)
	h.W, h.B = theta[:pd:pd], theta[pd:]
	theta0 := append([]float64(nil), theta...)
	if a := cfg.Anchor; a != nil {
		if a.P != h.P || a.D != h.D || len(a.W) != pd || len(a.B) != h.P {
			return st, fmt.Errorf("distill: anchor head is %d×%d, the head %d×%d", a.P, a.D, h.P, h.D)
		}
		copy(theta0, a.W)
		copy(theta0[pd:], a.B)
	}
	grad := make([]float64, len(theta))
	diff := make([]float64, len(theta))
	opt := NewAdam(cfg.LR)
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x64697374696c6c))
	perm := make([]int, nt)
	for i := range perm {
		perm[i] = i
	}
	for ep := 1; ep <= cfg.Epochs; ep++ {
		rng.Shuffle(nt, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		var sum float64
		for lo := 0; lo < nt; lo += cfg.BatchSize {
			if err := ctx.Err(); err != nil {
				return st, fmt.Errorf("distill: %w", err)
			}
			hi := min(lo+cfg.BatchSize, nt)
			l := h.batchGrad(x, idx, sims, perm[lo:hi], cfg, grad[:pd], grad[pd:])
			sum += l * float64(hi-lo)
			for i := range theta {
				diff[i] = theta[i] - theta0[i]
			}
			opt.Step(theta, grad)
			if cfg.Decay != 0 {
				s := cfg.LR * cfg.Decay
				for i := range theta {
					theta[i] -= s * diff[i]
				}
			}
			st.Steps++
			st.Triplets += int64(hi - lo)
			if cfg.StepProgress != nil {
				cfg.StepProgress(hi - lo)
			}
		}
		st.EpochLoss = append(st.EpochLoss, sum/float64(nt))
		if cfg.Progress != nil {
			cfg.Progress(ep, sum/float64(nt))
		}
	}
	st.FinalLoss, err = DistillLoss(h, x, n, idx, sims, cfg)
	return st, err
}
