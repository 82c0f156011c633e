package online

import (
	"math"
	"math/rand/v2"
	"slices"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// toParams converts a teacher to its stored float32 form.
func toParams(t *learner.Teacher, task alignet.Task) alignet.TeacherParams {
	p := alignet.TeacherParams{
		Task: task, D: t.D, P: t.P, Mean: t.Mean, Std: t.Std, Tau: t.Tau, Lambda: t.Lambda,
		W: make([]float32, len(t.W)), B: make([]float32, len(t.B)),
	}
	for i, v := range t.W {
		p.W[i] = float32(v)
	}
	for i, v := range t.B {
		p.B[i] = float32(v)
	}
	return p
}

// fromParams converts stored parameters to a teacher.
func fromParams(p alignet.TeacherParams) *learner.Teacher {
	t := &learner.Teacher{
		D: p.D, P: p.P, Mean: p.Mean, Std: p.Std, Tau: p.Tau, Lambda: p.Lambda, Task: learner.Task(p.Task),
		W: make([]float64, len(p.W)), B: make([]float64, len(p.B)),
	}
	for i, v := range p.W {
		t.W[i] = float64(v)
	}
	for i, v := range p.B {
		t.B[i] = float64(v)
	}
	return t
}

// initialTeacher is the teacher before any fit: W = c·[I 0] on inputs
// standardised by the mean and deviation of the embedded rows, b = 0, τ=1,
// with c chosen, as learner.FitTeacher does, so that the logit differences
// of random triplets of embedded items have unit spread. P is outDim, or
// the space's dimension when outDim is 0 or larger.
func initialTeacher(sp *space, task alignet.Task, outDim int, lambda float64, seed uint64) *learner.Teacher {
	d := sp.dim
	p := outDim
	if p <= 0 || p > d {
		p = d
	}
	rows := sp.embedded()
	mean, std := 0.0, 1.0
	if len(rows) > 0 {
		x := make([]float32, 0, len(rows)*d)
		for _, r := range rows {
			x = append(x, sp.x[int(r)*d:int(r+1)*d]...)
		}
		mean, std = learner.MeanStd(x)
	}
	c := 1.0
	if len(rows) >= 3 {
		rng := rand.New(rand.NewPCG(seed, 0x1d3a7))
		var s, ss float64
		m := 0
		std1 := func(r int32, a int) float64 { return (float64(sp.x[int(r)*d+a]) - mean) / std }
		for range 2000 {
			i, j, k := rows[rng.IntN(len(rows))], rows[rng.IntN(len(rows))], rows[rng.IntN(len(rows))]
			if i == j || i == k || j == k {
				continue
			}
			var l [3]float64
			for a := range p {
				xi, xj, xk := std1(i, a), std1(j, a), std1(k, a)
				l[0] += xi * xj
				l[1] += xi * xk
				l[2] += xj * xk
			}
			for _, v := range [3]float64{l[0] - l[1], l[0] - l[2], l[1] - l[2]} {
				s += v
				ss += v * v
				m++
			}
		}
		if m > 0 {
			mu := s / float64(m)
			if sd := math.Sqrt(ss/float64(m) - mu*mu); sd > 0 {
				c = math.Sqrt(1 / sd)
			}
		}
	}
	t := &learner.Teacher{
		D: d, P: p, Mean: mean, Std: std, Tau: 1, Lambda: lambda, Task: learner.Task(task),
		W: make([]float64, p*d), B: make([]float64, p),
	}
	for a := range p {
		t.W[a*d+a] = c
	}
	return t
}

// onlineLambda is the regularisation strength of a teacher that has not
// been refitted: the middle of the study's λ grid.
func onlineLambda(lambdas []float64) float64 {
	if len(lambdas) == 0 {
		return 0.1
	}
	s := slices.Sorted(slices.Values(lambdas))
	return s[len(s)/2]
}

// compact maps the rows of ts to a dense local index: it returns the
// distinct rows in order of first use and ts rewritten over that index.
func compact(ts []learner.Triplet) (rows []int32, local []learner.Triplet) {
	idx := make(map[int32]int32, 2*len(ts))
	at := func(r int32) int32 {
		l, ok := idx[r]
		if !ok {
			l = int32(len(rows))
			idx[r] = l
			rows = append(rows, r)
		}
		return l
	}
	local = make([]learner.Triplet, len(ts))
	for a, t := range ts {
		local[a] = learner.Triplet{I: at(t.I), J: at(t.J), K: at(t.K)}
	}
	return rows, local
}

// logitsOf returns the logits of ts under teacher t on the rows of x.
func logitsOf(t *learner.Teacher, x []float32, ts []learner.Triplet) [][3]float64 {
	if len(ts) == 0 {
		return nil
	}
	rows, local := compact(ts)
	return learner.AllLogits(t.TransformRows(x, rows), t.P, local)
}
