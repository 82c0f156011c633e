package learner

import "math"

// Adam is the Adam optimiser (Kingma and Ba, 2015) with bias correction. The
// zero value with LR set is usable; moment buffers are allocated on the first
// Step. Beta1, Beta2 and Eps default to 0.9, 0.999 and 1e-8 when zero.
type Adam struct {
	// LR is the step size.
	LR float64
	// Beta1 is the decay rate of the first-moment estimate (default 0.9).
	Beta1 float64
	// Beta2 is the decay rate of the second-moment estimate (default 0.999).
	Beta2 float64
	// Eps guards the division by the second-moment root (default 1e-8).
	Eps float64

	m, v []float64
	t    int
}

// NewAdam returns an Adam optimiser with the given step size and the default
// moment decay rates and epsilon.
func NewAdam(lr float64) *Adam {
	return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

// Steps returns the number of steps taken so far.
func (a *Adam) Steps() int { return a.t }

// Reset clears the moment estimates and the step counter.
func (a *Adam) Reset() {
	a.m, a.v, a.t = nil, nil, 0
}

func (a *Adam) hyper() (b1, b2, eps float64) {
	b1, b2, eps = a.Beta1, a.Beta2, a.Eps
	if b1 == 0 {
		b1 = 0.9
	}
	if b2 == 0 {
		b2 = 0.999
	}
	if eps == 0 {
		eps = 1e-8
	}
	return b1, b2, eps
}

// begin starts step t+1 for n parameters, resetting the moments when n
// changed, and returns β1, β2, the bias-corrected step size and ε.
func (a *Adam) begin(n int) (b1, b2, step, epsHat float64) {
	if len(a.m) != n {
		a.m = make([]float64, n)
		a.v = make([]float64, n)
		a.t = 0
	}
	b1, b2, eps := a.hyper()
	a.t++
	c1 := 1 - math.Pow(b1, float64(a.t))
	c2 := 1 - math.Pow(b2, float64(a.t))
	return b1, b2, a.LR * math.Sqrt(c2) / c1, eps * math.Sqrt(c2)
}

// Step updates params in place by one Adam step against grad (the gradient
// of the loss to minimise). params and grad must have equal length, which
// must not change between calls; a length change resets the moments.
func (a *Adam) Step(params, grad []float64) {
	if len(params) != len(grad) {
		panic("learner: Adam.Step params and grad lengths differ")
	}
	b1, b2, step, epsHat := a.begin(len(params))
	for i, g := range grad {
		m := b1*a.m[i] + (1-b1)*g
		v := b2*a.v[i] + (1-b2)*g*g
		a.m[i], a.v[i] = m, v
		params[i] -= step * m / (math.Sqrt(v) + epsHat)
	}
}

// Step32 is Step for float32 parameters and gradients; the moment estimates
// are kept in float64.
func (a *Adam) Step32(params, grad []float32) {
	if len(params) != len(grad) {
		panic("learner: Adam.Step32 params and grad lengths differ")
	}
	b1, b2, step, epsHat := a.begin(len(params))
	for i, g32 := range grad {
		g := float64(g32)
		m := b1*a.m[i] + (1-b1)*g
		v := b2*a.v[i] + (1-b2)*g*g
		a.m[i], a.v[i] = m, v
		params[i] -= float32(step * m / (math.Sqrt(v) + epsHat))
	}
}

// LBFGSSettings configures MinimizeLBFGS. Zero fields take the defaults.
type LBFGSSettings struct {
	// MaxIter bounds the number of iterations (default 200).
	MaxIter int
	// Memory is the number of correction pairs kept (default 15).
	Memory int
	// GradTol stops when the largest gradient component is below it
	// (default 1e-6).
	GradTol float64
	// RelTol stops when the objective improved by less than RelTol·(|f|+1)
	// over the last 10 iterations (default 1e-9).
	RelTol float64
	// Callback, when set, is called after each iteration with the iteration
	// number, the current point (read only) and the objective; returning
	// false stops the minimisation.
	Callback func(iter int, x []float64, f float64) bool
}

// LBFGSResult describes the end of a minimisation.
type LBFGSResult struct {
	// F is the objective at the returned point.
	F float64
	// Iterations and Evaluations count iterations and calls of fg.
	Iterations, Evaluations int
	// Status says why the minimisation stopped.
	Status string
}

// MinimizeLBFGS minimises a smooth function with limited-memory BFGS and a
// weak-Wolfe bisection line search, starting from and updating x in place.
// fg returns the objective at x and writes its gradient into grad. It is
// deterministic.
func MinimizeLBFGS(fg func(x, grad []float64) float64, x []float64, s LBFGSSettings) LBFGSResult {
	if s.MaxIter == 0 {
		s.MaxIter = 200
	}
	if s.Memory == 0 {
		s.Memory = 15
	}
	if s.GradTol == 0 {
		s.GradTol = 1e-6
	}
	if s.RelTol == 0 {
		s.RelTol = 1e-9
	}
	dim := len(x)
	g := make([]float64, dim)
	res := LBFGSResult{}
	f := fg(x, g)
	res.Evaluations++
	sHist := make([][]float64, 0, s.Memory)
	yHist := make([][]float64, 0, s.Memory)
	rho := make([]float64, 0, s.Memory)
	alpha := make([]float64, s.Memory)
	dir := make([]float64, dim)
	xNew := make([]float64, dim)
	gNew := make([]float64, dim)
	var fHist []float64
	const c1, c2 = 1e-4, 0.9
	for res.Iterations < s.MaxIter {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			res.Status = "non-finite objective"
			break
		}
		if normInf(g) < s.GradTol {
			res.Status = "gradient converged"
			break
		}
		// Two-loop recursion: dir = −H·g.
		copy(dir, g)
		for i := len(sHist) - 1; i >= 0; i-- {
			alpha[i] = rho[i] * dot(sHist[i], dir)
			axpy(-alpha[i], yHist[i], dir)
		}
		gamma := 1.0
		if k := len(sHist) - 1; k >= 0 {
			gamma = dot(sHist[k], yHist[k]) / dot(yHist[k], yHist[k])
		} else {
			gamma = 1 / math.Max(normInf(g), 1e-12)
		}
		for i := range dir {
			dir[i] *= gamma
		}
		for i := range sHist {
			b := rho[i] * dot(yHist[i], dir)
			axpy(alpha[i]-b, sHist[i], dir)
		}
		for i := range dir {
			dir[i] = -dir[i]
		}
		dg0 := dot(dir, g)
		if !(dg0 < 0) {
			// Not a descent direction: restart from steepest descent.
			sHist, yHist, rho = sHist[:0], yHist[:0], rho[:0]
			for i := range dir {
				dir[i] = -g[i]
			}
			dg0 = dot(dir, g)
			gamma = 1 / math.Max(normInf(g), 1e-12)
			for i := range dir {
				dir[i] *= gamma
			}
			dg0 *= gamma
		}
		// Weak-Wolfe bisection line search.
		lo, hi, t := 0.0, math.Inf(1), 1.0
		var fNew float64
		ok := false
		for ls := 0; ls < 30; ls++ {
			for i := range x {
				xNew[i] = x[i] + t*dir[i]
			}
			fNew = fg(xNew, gNew)
			res.Evaluations++
			if math.IsNaN(fNew) || fNew > f+c1*t*dg0 {
				hi = t
			} else if dot(gNew, dir) < c2*dg0 {
				lo = t
				ok = true // Armijo holds; accept if we run out of steps.
			} else {
				ok = true
				break
			}
			if math.IsInf(hi, 1) {
				t = 2 * lo
			} else {
				t = (lo + hi) / 2
			}
			if ls == 29 && lo > 0 {
				t = lo
				for i := range x {
					xNew[i] = x[i] + t*dir[i]
				}
				fNew = fg(xNew, gNew)
				res.Evaluations++
			}
		}
		if !ok || !(fNew <= f) {
			res.Status = "line search failed"
			break
		}
		// Update the correction pairs.
		var sv, yv []float64
		if len(sHist) == s.Memory {
			sv, yv = sHist[0], yHist[0]
			sHist, yHist, rho = sHist[1:], yHist[1:], rho[1:]
		} else {
			sv, yv = make([]float64, dim), make([]float64, dim)
		}
		for i := range x {
			sv[i] = xNew[i] - x[i]
			yv[i] = gNew[i] - g[i]
		}
		if sy := dot(sv, yv); sy > 1e-12*dot(yv, yv) {
			sHist = append(sHist, sv)
			yHist = append(yHist, yv)
			rho = append(rho, 1/sy)
		}
		copy(x, xNew)
		copy(g, gNew)
		f = fNew
		res.Iterations++
		fHist = append(fHist, f)
		if s.Callback != nil && !s.Callback(res.Iterations, x, f) {
			res.Status = "stopped by callback"
			break
		}
		if k := len(fHist); k > 10 && fHist[k-11]-f < s.RelTol*(math.Abs(f)+1) {
			res.Status = "objective converged"
			break
		}
	}
	if res.Status == "" {
		res.Status = "iteration limit"
	}
	res.F = f
	return res
}

func dot(a, b []float64) float64 {
	var s float64
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

func axpy(alpha float64, x, y []float64) {
	for i, v := range x {
		y[i] += alpha * v
	}
}

func normInf(a []float64) float64 {
	var m float64
	for _, v := range a {
		m = math.Max(m, math.Abs(v))
	}
	return m
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
