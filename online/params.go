package online

import (
	"math"
	"math/rand/v2"
	"slices"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

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

// logitsOf returns the logits of ts under teacher t on the rows of x.
func logitsOf(t *learner.Teacher, x []float32, ts []learner.Triplet) [][3]float64 {
	if len(ts) == 0 {
		return nil
	}
	rows, local := learner.Compact(ts)
	return learner.AllLogits(t.TransformRows(x, rows), t.P, local)
}
