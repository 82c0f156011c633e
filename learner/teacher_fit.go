package learner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// TeacherConfig configures FitTeacher. Zero fields take the documented
// defaults.
type TeacherConfig struct {
	// Task is TaskOddOneOut (default) or TaskAnchor.
	Task Task
	// Lambda is the strength of the regulariser λ‖W − mean(diag W)·I‖²_F
	// added to the mean cross-entropy (default 1e-3; a negative value means 0).
	Lambda float64
	// OutDim is the output dimension P ≤ D (default D).
	OutDim int
	// Tau is the softmax temperature used during fitting (default 1).
	Tau float64
	// MaxIter bounds the L-BFGS major iterations (default 300).
	MaxIter int
	// GradTol stops the fit when the largest gradient component falls below
	// it (default 1e-5).
	GradTol float64
	// RelTol stops the fit when the objective improved by less than
	// RelTol·(|f|+1) over the last 10 iterations (default 1e-5).
	RelTol float64
	// Seed seeds every random choice (currently the fit itself is
	// deterministic; the seed is recorded and used by callers for splits).
	Seed uint64
	// Workers is the number of goroutines for the triplet and row passes
	// (default GOMAXPROCS). Results do not depend on it.
	Workers int
	// Init, when set, warm-starts from its W and B (dimensions must match);
	// its Mean and Std are reused.
	Init *Teacher
	// InitScale is the multiple of the identity W starts from when Init is
	// nil (default: chosen so that logit differences have unit spread).
	InitScale float64
	// Progress, when set, is called after every L-BFGS major iteration
	// with the iteration number and the objective.
	Progress func(iter int, objective float64)
	// ProgressTeacher, when set, is called after every iteration with the
	// current teacher; it must not keep or modify the teacher's slices.
	ProgressTeacher func(iter int, objective float64, current *Teacher)
	// Exact computes the objective in float64 throughout. By default the
	// matrix products and the representation gradient run in float32
	// (about twice as fast) while parameters, losses, logit gradients and
	// reductions stay float64.
	Exact bool
}

func (c TeacherConfig) withDefaults(d int) TeacherConfig {
	if c.Task == "" {
		c.Task = TaskOddOneOut
	}
	if c.Lambda == 0 {
		c.Lambda = 1e-3
	} else if c.Lambda < 0 {
		c.Lambda = 0
	}
	if c.OutDim == 0 {
		c.OutDim = d
	}
	if c.Tau == 0 {
		c.Tau = 1
	}
	if c.MaxIter == 0 {
		c.MaxIter = 300
	}
	if c.GradTol == 0 {
		c.GradTol = 1e-5
	}
	if c.RelTol == 0 {
		c.RelTol = 1e-5
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	return c
}

// FitStats describes a finished fit.
type FitStats struct {
	// Iterations and Evaluations count L-BFGS major iterations and
	// objective evaluations.
	Iterations, Evaluations int
	// Objective is the final objective, CrossEntropy its mean cross-entropy
	// part and Reg the unweighted regulariser ‖W − mean(diag W)·I‖²_F.
	Objective, CrossEntropy, Reg float64
	// Status is the L-BFGS termination status.
	Status string
	// Duration is the wall time of the fit.
	Duration time.Duration
}

// FitTeacher fits the affine surrogate teacher to the n×d embeddings x on
// the training triplets with L-BFGS, minimising the mean cross-entropy
// against targets plus λ‖W − mean(diag W)·I‖²_F. A nil targets slice means
// hard choices (HardTarget for every triplet).
func FitTeacher(x []float32, n, d int, train []Triplet, targets [][3]float32, cfg TeacherConfig) (*Teacher, FitStats, error) {
	return FitTeacherContext(context.Background(), x, n, d, train, targets, cfg)
}

// FitTeacherContext is FitTeacher with cancellation.
func FitTeacherContext(ctx context.Context, x []float32, n, d int, train []Triplet, targets [][3]float32, cfg TeacherConfig) (*Teacher, FitStats, error) {
	start := time.Now()
	cfg = cfg.withDefaults(d)
	if err := checkInputs(x, n, d, train, targets); err != nil {
		return nil, FitStats{}, fmt.Errorf("fit teacher: %w", err)
	}
	if cfg.OutDim > d || cfg.OutDim < 1 {
		return nil, FitStats{}, fmt.Errorf("fit teacher: output dimension %d not in [1,%d]", cfg.OutDim, d)
	}
	if err := cfg.Task.Valid(); err != nil {
		return nil, FitStats{}, fmt.Errorf("fit teacher: %w", err)
	}
	p := cfg.OutDim
	t := &Teacher{D: d, P: p, Tau: cfg.Tau, Lambda: cfg.Lambda, Task: cfg.Task}
	if cfg.Init != nil {
		if cfg.Init.D != d || cfg.Init.P != p {
			return nil, FitStats{}, fmt.Errorf("fit teacher: warm start is %d×%d, want %d×%d", cfg.Init.P, cfg.Init.D, p, d)
		}
		t.Mean, t.Std = cfg.Init.Mean, cfg.Init.Std
		t.W = append([]float64(nil), cfg.Init.W...)
		t.B = append([]float64(nil), cfg.Init.B...)
	} else {
		t.Mean, t.Std = MeanStd(x)
	}
	prob := newTeacherObjective(x, n, d, p, t.Mean, t.Std, train, targets, cfg)
	if cfg.Init == nil {
		c := cfg.InitScale
		if c == 0 {
			c = prob.autoScale()
		}
		t.W = make([]float64, p*d)
		for a := 0; a < p; a++ {
			t.W[a*d+a] = c
		}
		t.B = make([]float64, p)
	}
	x0 := make([]float64, p*d+p)
	copy(x0, t.W)
	copy(x0[p*d:], t.B)

	var ctxErr error
	res := MinimizeLBFGS(prob.eval2, x0, LBFGSSettings{
		MaxIter: cfg.MaxIter,
		Memory:  20,
		GradTol: cfg.GradTol,
		RelTol:  cfg.RelTol,
		Callback: func(iter int, xs []float64, f float64) bool {
			if cfg.Progress != nil {
				cfg.Progress(iter, f)
			}
			if cfg.ProgressTeacher != nil {
				cur := *t
				cur.W, cur.B = xs[:p*d], xs[p*d:]
				cfg.ProgressTeacher(iter, f, &cur)
			}
			ctxErr = ctx.Err()
			return ctxErr == nil
		},
	})
	if ctxErr != nil {
		return nil, FitStats{}, fmt.Errorf("fit teacher: %w", ctxErr)
	}
	if math.IsNaN(res.F) || math.IsInf(res.F, 0) {
		return nil, FitStats{}, fmt.Errorf("fit teacher: objective diverged (%v)", res.F)
	}
	copy(t.W, x0[:p*d])
	copy(t.B, x0[p*d:])
	ce, _ := prob.eval(x0, nil)
	st := FitStats{
		Iterations:   res.Iterations,
		Evaluations:  prob.evals,
		Objective:    res.F,
		CrossEntropy: ce,
		Reg:          regulariser(t.W, p, d, nil),
		Status:       res.Status,
		Duration:     time.Since(start),
	}
	return t, st, nil
}

func checkInputs(x []float32, n, d int, ts []Triplet, targets [][3]float32) error {
	if n <= 0 || d <= 0 || len(x) != n*d {
		return fmt.Errorf("embeddings have %d values, want %d×%d", len(x), n, d)
	}
	if len(ts) == 0 {
		return errors.New("no triplets")
	}
	if targets != nil && len(targets) != len(ts) {
		return fmt.Errorf("%d targets for %d triplets", len(targets), len(ts))
	}
	for a, t := range ts {
		if t.I < 0 || t.J < 0 || t.K < 0 || int(t.I) >= n || int(t.J) >= n || int(t.K) >= n {
			return fmt.Errorf("triplet %d has an item outside [0,%d)", a, n)
		}
	}
	return nil
}

// affine computes z = xt·Wᵀ + 1·bᵀ for xt (n×d), W (p×d) into z (n×p).
func affine(xt []float64, n, d int, w, b []float64, p int, z []float64) {
	for r := 0; r < n; r++ {
		copy(z[r*p:(r+1)*p], b)
	}
	blas64.Gemm(blas.NoTrans, blas.Trans, 1,
		blas64.General{Rows: n, Cols: d, Stride: d, Data: xt},
		blas64.General{Rows: p, Cols: d, Stride: d, Data: w},
		1, blas64.General{Rows: n, Cols: p, Stride: p, Data: z})
}

// regulariser returns ‖W − m·I‖²_F with m the mean of the leading diagonal,
// and when grad is not nil adds its gradient 2(W − m·I) to grad (the
// derivative through m vanishes because the diagonal residuals sum to 0).
func regulariser(w []float64, p, d int, grad []float64) float64 {
	var m float64
	for a := 0; a < p; a++ {
		m += w[a*d+a]
	}
	m /= float64(p)
	var r float64
	for q := 0; q < p; q++ {
		row := w[q*d : (q+1)*d]
		for a, v := range row {
			if a == q {
				v -= m
			}
			r += v * v
			if grad != nil {
				grad[q*d+a] += 2 * v
			}
		}
	}
	return r
}

// teacherObjective evaluates the mean cross-entropy plus regulariser and
// its gradient with respect to (W, b). Evaluation is deterministic: the
// triplet pass writes per-triplet results and fixed-size chunk sums, and the
// gradient with respect to Z is gathered per row in a fixed order.
type teacherObjective struct {
	task        Task
	tau, lambda float64
	n, d, p     int
	xt          []float64
	ts          []Triplet
	q           [][3]float32
	incOff      []int32
	incEnt      []int32
	workers     pool
	z, dz       []float64
	g           [][3]float64
	chunkLoss   []float64
	evals       int
	exact       bool
	xt32, z32   []float32
	dz32, w32   []float32
	gw32        []float32
	xtB         *matB     // X̃ᵀ (d×n) prepared for dW = dZᵀ·X̃
	dzT32       []float32 // dZᵀ (p×n)
}

const tripletChunk = 2048

func newTeacherObjective(x []float32, n, d, p int, mean, std float64, ts []Triplet, q [][3]float32, cfg TeacherConfig) *teacherObjective {
	o := &teacherObjective{
		task: cfg.Task, tau: cfg.Tau, lambda: cfg.Lambda,
		n: n, d: d, p: p, ts: ts, q: q, workers: pool(cfg.Workers),
		xt:        standardise(x, mean, std),
		g:         make([][3]float64, len(ts)),
		chunkLoss: make([]float64, (len(ts)+tripletChunk-1)/tripletChunk),
	}
	o.incOff, o.incEnt = incidence(n, ts)
	o.exact = cfg.Exact
	if o.exact {
		o.z, o.dz = make([]float64, n*p), make([]float64, n*p)
	} else {
		o.xt32 = make([]float32, n*d)
		for i, v := range o.xt {
			o.xt32[i] = float32(v)
		}
		o.z32, o.dz32 = make([]float32, n*p), make([]float32, n*p)
		o.w32, o.gw32 = make([]float32, p*d), make([]float32, p*d)
		xtT := make([]float32, d*n)
		for r := 0; r < n; r++ {
			for a := 0; a < d; a++ {
				xtT[a*n+r] = o.xt32[r*d+a]
			}
		}
		o.xtB = prepareB(d, n, xtT)
		o.dzT32 = make([]float32, p*n)
	}
	return o
}

// incidence builds, for every item, the list of (triplet, role) pairs
// touching it, encoded as 3·triplet+role, in ascending triplet order.
func incidence(n int, ts []Triplet) (off, ent []int32) {
	off = make([]int32, n+1)
	for _, t := range ts {
		off[t.I+1]++
		off[t.J+1]++
		off[t.K+1]++
	}
	for r := 0; r < n; r++ {
		off[r+1] += off[r]
	}
	ent = make([]int32, 3*len(ts))
	pos := append([]int32(nil), off[:n]...)
	for a, t := range ts {
		for role, it := range [3]int32{t.I, t.J, t.K} {
			ent[pos[it]] = int32(3*a + role)
			pos[it]++
		}
	}
	return off, ent
}

// autoScale returns c such that logit differences of c·x̃ on the training
// triplets have unit standard deviation (divided by τ).
func (o *teacherObjective) autoScale() float64 {
	var s, ss float64
	m := 0
	step := max(1, len(o.ts)/20000)
	for a := 0; a < len(o.ts); a += step {
		l := logits64(o.xt, o.d, o.ts[a])
		for _, v := range [3]float64{l[0] - l[1], l[0] - l[2], l[1] - l[2]} {
			s += v
			ss += v * v
			m++
		}
	}
	mean := s / float64(m)
	sd := math.Sqrt(ss/float64(m) - mean*mean)
	if !(sd > 0) {
		return 1
	}
	return math.Sqrt(o.tau / sd)
}

// eval computes the mean cross-entropy at params and, when grad is not
// nil, writes the full gradient of the objective into grad. It returns the
// mean cross-entropy and the objective.
func (o *teacherObjective) eval(params, grad []float64) (ce, obj float64) {
	o.evals++
	n, d, p := o.n, o.d, o.p
	w, b := params[:p*d], params[p*d:]
	if o.exact {
		affine(o.xt, n, d, w, b, p, o.z)
	} else {
		for i, v := range w {
			o.w32[i] = float32(v)
		}
		parMulNT(prepareB(p, d, o.w32), n, d, p, o.xt32, o.z32, o.workers)
		for r := 0; r < n; r++ {
			row := o.z32[r*p : (r+1)*p]
			for q, v := range b {
				row[q] += float32(v)
			}
		}
	}
	nt := len(o.ts)
	o.workers.each(len(o.chunkLoss), func(_, c int) {
		lo, hi := c*tripletChunk, min((c+1)*tripletChunk, nt)
		var s float64
		for a := lo; a < hi; a++ {
			q := HardTarget
			if o.q != nil {
				q = o.q[a]
			}
			var l [3]float64
			if o.exact {
				l = logitsDot(o.z, p, o.ts[a])
			} else {
				t := o.ts[a]
				ab, ac, bc := dot3(o.z32[int(t.I)*p:int(t.I)*p+p], o.z32[int(t.J)*p:int(t.J)*p+p], o.z32[int(t.K)*p:int(t.K)*p+p])
				l = [3]float64{float64(ab), float64(ac), float64(bc)}
			}
			loss, g := TaskCrossEntropy(o.task, l, o.tau, q)
			s += loss
			o.g[a] = g
		}
		o.chunkLoss[c] = s
	})
	var total float64
	for _, s := range o.chunkLoss {
		total += s
	}
	ce = total / float64(nt)
	if grad == nil {
		return ce, ce + o.lambda*regulariser(w, p, d, nil)
	}
	inv := 1 / float64(nt)
	o.workers.blocks(n, 32, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			o.gatherRow(r, inv)
		}
	})
	gw, gb := grad[:p*d], grad[p*d:]
	for q := range gb {
		gb[q] = 0
	}
	if o.exact {
		blas64.Gemm(blas.Trans, blas.NoTrans, 1,
			blas64.General{Rows: n, Cols: p, Stride: p, Data: o.dz},
			blas64.General{Rows: n, Cols: d, Stride: d, Data: o.xt},
			0, blas64.General{Rows: p, Cols: d, Stride: d, Data: gw})
		for r := 0; r < n; r++ {
			axpy(1, o.dz[r*p:(r+1)*p], gb)
		}
	} else {
		for r := 0; r < n; r++ {
			for q, v := range o.dz32[r*p : (r+1)*p] {
				o.dzT32[q*n+r] = v
			}
		}
		parMulNT(o.xtB, p, n, d, o.dzT32, o.gw32, o.workers)
		for i, v := range o.gw32 {
			gw[i] = float64(v)
		}
		for r := 0; r < n; r++ {
			for q, v := range o.dz32[r*p : (r+1)*p] {
				gb[q] += float64(v)
			}
		}
	}
	var reg float64
	if o.lambda != 0 {
		tmp := make([]float64, p*d)
		reg = regulariser(w, p, d, tmp)
		for i, v := range tmp {
			gw[i] += o.lambda * v
		}
	}
	return ce, ce + o.lambda*reg
}

// gatherRow writes dz[r] = scale·Σ over the triplets touching item r of the
// logit gradients pushed back to that item's representation.
func (o *teacherObjective) gatherRow(r int, scale float64) {
	p := o.p
	var dst []float64
	var dst32 []float32
	if o.exact {
		dst = o.dz[r*p : (r+1)*p]
		clear(dst)
	} else {
		dst32 = o.dz32[r*p : (r+1)*p]
		clear(dst32)
	}
	for _, e := range o.incEnt[o.incOff[r]:o.incOff[r+1]] {
		a, role := int(e/3), e%3
		t, g := o.ts[a], o.g[a]
		var u, v int
		var gu, gv float64
		switch role {
		case 0:
			u, v, gu, gv = int(t.J), int(t.K), g[0], g[1]
		case 1:
			u, v, gu, gv = int(t.I), int(t.K), g[0], g[2]
		default:
			u, v, gu, gv = int(t.I), int(t.J), g[1], g[2]
		}
		gu *= scale
		gv *= scale
		if o.exact {
			blas64.Axpy(gu, vec(o.z[u*p:(u+1)*p]), vec(dst))
			blas64.Axpy(gv, vec(o.z[v*p:(v+1)*p]), vec(dst))
		} else {
			blas32.Axpy(float32(gu), vec32(o.z32[u*p:(u+1)*p]), vec32(dst32))
			blas32.Axpy(float32(gv), vec32(o.z32[v*p:(v+1)*p]), vec32(dst32))
		}
	}
}

// eval2 adapts eval to MinimizeLBFGS.
func (o *teacherObjective) eval2(x, grad []float64) float64 {
	_, obj := o.eval(x, grad)
	return obj
}

// logitsDot is logits64 using the assembly dot-product kernel.
func logitsDot(z []float64, p int, t Triplet) [3]float64 {
	zi := vec(z[int(t.I)*p : int(t.I)*p+p])
	zj := vec(z[int(t.J)*p : int(t.J)*p+p])
	zk := vec(z[int(t.K)*p : int(t.K)*p+p])
	return [3]float64{blas64.Dot(zi, zj), blas64.Dot(zi, zk), blas64.Dot(zj, zk)}
}
