package learner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// Task names understood by the teacher and the metrics. They match the
// values of alignet.Task.
const (
	// TaskOddOneOut is the three-alternative odd-one-out task.
	TaskOddOneOut = "odd-one-out"
	// TaskAnchor is the two-alternative anchor task (head, close, far).
	TaskAnchor = "anchor"
)

// Teacher is the surrogate teacher: an affine transform z = W·x̃ + b of a
// representation x, where x̃ = (x − Mean)/Std is standardised with one
// scalar mean and one scalar standard deviation over the whole matrix.
type Teacher struct {
	// W is the P×D weight matrix, row-major.
	W []float64
	// B is the bias, of length P.
	B []float64
	// D is the input dimension and P the output dimension (P ≤ D).
	D, P int
	// Mean and Std standardise the inputs.
	Mean, Std float64
	// Tau is the softmax temperature applied to the similarity logits.
	Tau float64
	// Lambda is the regularisation strength the transform was fitted with.
	Lambda float64
	// Task is TaskOddOneOut or TaskAnchor.
	Task string
}

// Transform maps the n×D row-major matrix x to the n×P matrix of teacher
// representations, in parallel over rows (float32 matrix kernel, float64
// standardisation and bias).
func (t *Teacher) Transform(x []float32, n int) []float32 {
	out := make([]float32, n*t.P)
	if n == 0 {
		return out
	}
	xt := make([]float32, n*t.D)
	inv := 1 / t.Std
	parallelRows(n, func(lo, hi int) {
		for i := lo * t.D; i < hi*t.D; i++ {
			xt[i] = float32((float64(x[i]) - t.Mean) * inv)
		}
	})
	w32 := make([]float32, len(t.W))
	for i, v := range t.W {
		w32[i] = float32(v)
	}
	parMulNT(prepareB(t.P, t.D, w32), n, t.D, t.P, xt, out, runtime.GOMAXPROCS(0))
	for r := 0; r < n; r++ {
		row := out[r*t.P : (r+1)*t.P]
		for q, v := range t.B {
			row[q] += float32(v)
		}
	}
	return out
}

// parallelRows splits [0,n) into contiguous blocks processed by up to
// GOMAXPROCS goroutines. Each row is handled by exactly one call, so results
// written per row do not depend on scheduling.
func parallelRows(n int, f func(lo, hi int)) {
	parallelBlocks(n, runtime.GOMAXPROCS(0), f)
}

// parallelBlocks runs f over [0,n) split into contiguous blocks on up to
// workers goroutines. Each index is handled by exactly one call.
func parallelBlocks(n, workers int, f func(lo, hi int)) {
	if workers > n {
		workers = n
	}
	if workers <= 1 {
		if n > 0 {
			f(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(lo, hi)
		}()
	}
	wg.Wait()
}

// TeacherConfig configures FitTeacher. Zero fields take the documented
// defaults.
type TeacherConfig struct {
	// Task is TaskOddOneOut (default) or TaskAnchor.
	Task string
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
	if cfg.Task != TaskOddOneOut && cfg.Task != TaskAnchor {
		return nil, FitStats{}, fmt.Errorf("fit teacher: unknown task %q", cfg.Task)
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

// MeanStd returns the scalar mean and standard deviation over all entries
// of x, as used to standardise teacher inputs. A zero spread gives std 1.
func MeanStd(x []float32) (mean, std float64) {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	mean = s / float64(len(x))
	var ss float64
	for _, v := range x {
		dv := float64(v) - mean
		ss += dv * dv
	}
	std = math.Sqrt(ss / float64(len(x)))
	if !(std > 0) {
		std = 1
	}
	return mean, std
}

// standardise returns (x − mean)/std as float64.
func standardise(x []float32, mean, std float64) []float64 {
	out := make([]float64, len(x))
	inv := 1 / std
	for i, v := range x {
		out[i] = (float64(v) - mean) * inv
	}
	return out
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
	task        string
	tau, lambda float64
	n, d, p     int
	xt          []float64
	ts          []Triplet
	q           [][3]float32
	incOff      []int32
	incEnt      []int32
	workers     int
	z, dz       []float64
	g           [][3]float64
	chunkLoss   []float64
	evals       int
	cacheX      []float64
	cacheF      float64
	cacheG      []float64
	cacheOK     bool
	mu          sync.Mutex
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
		n: n, d: d, p: p, ts: ts, q: q, workers: cfg.Workers,
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

// parallelFor runs f(0..tasks-1) on up to workers goroutines.
func parallelFor(tasks, workers int, f func(task int)) {
	if workers > tasks {
		workers = tasks
	}
	if workers <= 1 {
		for i := 0; i < tasks; i++ {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= tasks {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
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
	parallelFor(len(o.chunkLoss), o.workers, func(c int) {
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
	const rowBlock = 32
	parallelFor((n+rowBlock-1)/rowBlock, o.workers, func(blk int) {
		for r := blk * rowBlock; r < min((blk+1)*rowBlock, n); r++ {
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

// parMulNT computes out (m×k) = a (m×kd) · bᵀ with the prepared matrix b,
// in parallel over blocks of rows. Each output row is computed by one call
// on its own, so the result does not depend on the number of workers.
func parMulNT(b *matB, m, kd, k int, a, out []float32, workers int) {
	const block = 48
	parallelFor((m+block-1)/block, workers, func(i int) {
		lo, hi := i*block, min((i+1)*block, m)
		b.mulNT(hi-lo, a[lo*kd:hi*kd], out[lo*k:hi*k])
	})
}

func vec32(a []float32) blas32.Vector { return blas32.Vector{N: len(a), Data: a, Inc: 1} }

// eval2 adapts eval to MinimizeLBFGS.
func (o *teacherObjective) eval2(x, grad []float64) float64 {
	_, obj := o.eval(x, grad)
	return obj
}

func vec(a []float64) blas64.Vector { return blas64.Vector{N: len(a), Data: a, Inc: 1} }

// logitsDot is logits64 using the assembly dot-product kernel.
func logitsDot(z []float64, p int, t Triplet) [3]float64 {
	zi := vec(z[int(t.I)*p : int(t.I)*p+p])
	zj := vec(z[int(t.J)*p : int(t.J)*p+p])
	zk := vec(z[int(t.K)*p : int(t.K)*p+p])
	return [3]float64{blas64.Dot(zi, zj), blas64.Dot(zi, zk), blas64.Dot(zj, zk)}
}

// Logits returns the similarity logits of ts under the teacher
// representation of the n×D embeddings x.
func (t *Teacher) Logits(x []float32, n int, ts []Triplet) [][3]float64 {
	return AllLogits(t.Transform(x, n), t.P, ts)
}

// Probs returns the teacher's outcome distribution for each triplet of ts
// (Softmax3 order for odd-one-out, AnchorProbs layout for anchor) at the
// teacher's temperature.
func (t *Teacher) Probs(x []float32, n int, ts []Triplet) [][3]float64 {
	ls := t.Logits(x, n, ts)
	out := make([][3]float64, len(ls))
	for a, l := range ls {
		out[a] = TaskProbs(t.Task, l, t.Tau)
	}
	return out
}

// Clone returns a deep copy of t.
func (t *Teacher) Clone() *Teacher {
	c := *t
	c.W = append([]float64(nil), t.W...)
	c.B = append([]float64(nil), t.B...)
	return &c
}

// CalibrateTemperature returns the temperature τ in [1e-3, 1e3] minimising
// the mean cross-entropy of targets (nil means the observed hard choices)
// against the model distribution at logits/τ. The objective is convex in
// 1/τ, so a grid scan on log τ followed by golden-section refinement finds
// the minimum.
func CalibrateTemperature(task string, logits [][3]float64, targets [][3]float32) float64 {
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

// goldenSection returns the minimiser of a unimodal f on [a, b] to within
// tol by golden-section search.
func goldenSection(f func(float64) float64, a, b, tol float64) float64 {
	phi := (math.Sqrt(5) - 1) / 2
	c, d := b-phi*(b-a), a+phi*(b-a)
	fc, fd := f(c), f(d)
	for b-a > tol {
		if fc < fd {
			b, d, fd = d, c, fc
			c = b - phi*(b-a)
			fc = f(c)
		} else {
			a, c, fc = c, d, fd
			d = a + phi*(b-a)
			fd = f(d)
		}
	}
	return (a + b) / 2
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

// OnlineConfig configures Teacher.Update. Zero fields take the defaults.
type OnlineConfig struct {
	// LR is the Adam step size (default 1e-3).
	LR float64
	// Beta1, Beta2 and Eps are the Adam constants (defaults 0.9, 0.999, 1e-8).
	Beta1, Beta2, Eps float64
	// Steps is the number of Adam steps (default 1).
	Steps int
	// BatchSize is the number of judgments per step, fresh and replayed
	// together (default 1280).
	BatchSize int
	// ReplayFraction is the share of each batch drawn from the replayed
	// judgments (default 0.8; a negative value means none). When one pool
	// runs short the other fills the batch.
	ReplayFraction float64
	// Seed seeds the sampling of batches.
	Seed uint64
}

func (c OnlineConfig) withDefaults() OnlineConfig {
	if c.LR == 0 {
		c.LR = 1e-3
	}
	if c.Steps == 0 {
		c.Steps = 1
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1280
	}
	if c.ReplayFraction == 0 {
		c.ReplayFraction = 0.8
	} else if c.ReplayFraction < 0 {
		c.ReplayFraction = 0
	}
	return c
}

// AdamState carries the Adam moments of the teacher's W and B across
// calls to Update. The zero value is ready to use.
type AdamState struct {
	// W and B are the optimisers of the weights and the bias.
	W, B Adam
}

// UpdateStats describes an online update.
type UpdateStats struct {
	// Steps is the number of Adam steps taken.
	Steps int
	// Fresh and Replayed count the judgments used per step, summed.
	Fresh, Replayed int
	// Rows is the number of embedding rows transformed, summed over steps.
	Rows int
	// MeanLoss is the mean batch objective before each step.
	MeanLoss float64
	// Duration is the wall time.
	Duration time.Duration
}

// Update takes Adam steps on mini-batches that mix fresh judgments with
// replayed old ones, warm-started from the current transform. The objective
// is the batch mean cross-entropy at t.Tau plus t.Lambda times the
// regulariser. Only the embedding rows touched by a batch are transformed.
// Nil target slices mean hard choices.
func (t *Teacher) Update(x []float32, n int, fresh []Triplet, freshTargets [][3]float32, replay []Triplet, replayTargets [][3]float32, cfg OnlineConfig, state *AdamState) (UpdateStats, error) {
	start := time.Now()
	cfg = cfg.withDefaults()
	if state == nil {
		state = &AdamState{}
	}
	if len(x) != n*t.D {
		return UpdateStats{}, fmt.Errorf("teacher update: embeddings have %d values, want %d×%d", len(x), n, t.D)
	}
	if len(fresh)+len(replay) == 0 {
		return UpdateStats{}, errors.New("teacher update: no judgments")
	}
	if (freshTargets != nil && len(freshTargets) != len(fresh)) || (replayTargets != nil && len(replayTargets) != len(replay)) {
		return UpdateStats{}, errors.New("teacher update: targets and triplets differ in length")
	}
	for _, ts := range [][]Triplet{fresh, replay} {
		for _, tr := range ts {
			if tr.I < 0 || tr.J < 0 || tr.K < 0 || int(tr.I) >= n || int(tr.J) >= n || int(tr.K) >= n {
				return UpdateStats{}, fmt.Errorf("teacher update: triplet %v outside [0,%d)", tr, n)
			}
		}
	}
	for _, a := range []*Adam{&state.W, &state.B} {
		a.LR, a.Beta1, a.Beta2, a.Eps = cfg.LR, cfg.Beta1, cfg.Beta2, cfg.Eps
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x0411e))
	nRep := int(math.Round(float64(cfg.BatchSize) * cfg.ReplayFraction))
	nRep = min(nRep, len(replay))
	nFresh := min(cfg.BatchSize-nRep, len(fresh))
	nRep = min(cfg.BatchSize-nFresh, len(replay))
	freshPerm, repPerm := rng.Perm(len(fresh)), rng.Perm(len(replay))
	fPos, rPos := 0, 0
	var st UpdateStats
	p, d := t.P, t.D
	gw := make([]float64, p*d)
	gb := make([]float64, p)
	w32 := make([]float32, p*d)
	reg := make([]float64, p*d)
	workers := runtime.GOMAXPROCS(0)
	gw32 := make([]float32, p*d)
	batch := make([]Triplet, 0, nFresh+nRep)
	targets := make([][3]float32, 0, nFresh+nRep)
	local := make(map[int32]int32)
	var rows []int32
	for step := 0; step < cfg.Steps; step++ {
		batch, targets = batch[:0], targets[:0]
		take := func(ts []Triplet, qs [][3]float32, perm []int, pos *int, k int) {
			for a := 0; a < k; a++ {
				if *pos == len(perm) {
					*pos = 0
				}
				i := perm[*pos]
				*pos++
				batch = append(batch, ts[i])
				if qs != nil {
					targets = append(targets, qs[i])
				} else {
					targets = append(targets, HardTarget)
				}
			}
		}
		take(fresh, freshTargets, freshPerm, &fPos, nFresh)
		take(replay, replayTargets, repPerm, &rPos, nRep)
		// Map the touched rows to a compact local index.
		clear(local)
		rows = rows[:0]
		lb := make([]Triplet, len(batch))
		for a, tr := range batch {
			var li [3]int32
			for r, it := range [3]int32{tr.I, tr.J, tr.K} {
				l, ok := local[it]
				if !ok {
					l = int32(len(rows))
					local[it] = l
					rows = append(rows, it)
				}
				li[r] = l
			}
			lb[a] = Triplet{li[0], li[1], li[2]}
		}
		m := len(rows)
		// The batch work runs in float32 (blas32 kernels) for latency; the
		// parameters and Adam moments stay float64.
		xt := make([]float32, m*d)
		inv := 1 / t.Std
		for l, r := range rows {
			src := x[int(r)*d : int(r+1)*d]
			dst := xt[l*d : (l+1)*d]
			for a, v := range src {
				dst[a] = float32((float64(v) - t.Mean) * inv)
			}
		}
		for i, v := range t.W {
			w32[i] = float32(v)
		}
		z := make([]float32, m*p)
		parMulNT(prepareB(p, d, w32), m, d, p, xt, z, workers)
		for l := 0; l < m; l++ {
			row := z[l*p : (l+1)*p]
			for q, v := range t.B {
				row[q] += float32(v)
			}
		}
		dz := make([]float64, m*p)
		var loss float64
		scale := 1 / float64(len(lb))
		for a, tr := range lb {
			ce, g := TaskCrossEntropy(t.Task, Logits(z, p, tr), t.Tau, targets[a])
			loss += ce
			for c := range g {
				g[c] *= scale
			}
			AddRepGrad(z, p, tr, g, dz)
		}
		loss *= scale
		// gw = dZᵀ·X̃ as (dZᵀ)·(X̃ᵀ)ᵀ with the transposes laid out row-major.
		dzT := make([]float32, p*m)
		xtT := make([]float32, d*m)
		for l := 0; l < m; l++ {
			for q := 0; q < p; q++ {
				dzT[q*m+l] = float32(dz[l*p+q])
			}
			for a := 0; a < d; a++ {
				xtT[a*m+l] = xt[l*d+a]
			}
		}
		parMulNT(prepareB(d, m, xtT), p, m, d, dzT, gw32, workers)
		for i, v := range gw32 {
			gw[i] = float64(v)
		}
		clear(gb)
		for l := 0; l < m; l++ {
			axpy(1, dz[l*p:(l+1)*p], gb)
		}
		if t.Lambda > 0 {
			clear(reg)
			r := regulariser(t.W, p, d, reg)
			loss += t.Lambda * r
			axpy(t.Lambda, reg, gw)
		}
		state.W.Step(t.W, gw)
		state.B.Step(t.B, gb)
		st.Steps++
		st.Fresh += nFresh
		st.Replayed += nRep
		st.Rows += m
		st.MeanLoss += loss
	}
	st.MeanLoss /= float64(max(st.Steps, 1))
	st.Duration = time.Since(start)
	return st, nil
}
