package query

import (
	"math"

	"github.com/alignet/alignet/learner"
)

// posterior is the information-gain scorer's approximate posterior over
// the teacher: a diagonal Gaussian (Laplace) approximation on the item
// representations, z_i ~ N(ẑ_i, σ_i² I), whose precision grows linearly
// with the judgments seen on the item, σ_i² = σ0²/(1 + c_i). The prior
// variance σ0² = τ²/(2·mean‖ẑ‖²) makes a fresh item's logit uncertain by
// about one temperature unit. To first order the three logits of a
// triplet are then jointly Gaussian around the teacher's logits, with
//
//	Var s_ij = σ_i²‖z_j‖² + σ_j²‖z_i‖²,  Cov(s_ij, s_ik) = σ_i² s_jk,
//	Cov(s_ij, s_jk) = σ_j² s_ik,         Cov(s_ik, s_jk) = σ_k² s_ij,
//
// and the expected information gain (BALD) H(E p) − E H(p) is computed
// with a deterministic cubature: the six unscented sigma points of the
// three logits for odd-one-out, three-point Gauss–Hermite on the logit
// difference for anchor.
type posterior struct {
	task   learner.Task
	tau    float64
	sigma2 []float64 // σ_i²
	norm2  []float64 // ‖ẑ_i‖²
}

func newPosterior(t *Teacher, counts []int32) posterior {
	n, p := t.N(), t.P
	norm2 := make([]float64, n)
	var mean float64
	for i := range n {
		var s float64
		for _, v := range t.Z[i*p : (i+1)*p] {
			s += float64(v) * float64(v)
		}
		norm2[i] = s
		mean += s / float64(n)
	}
	s0 := t.Tau * t.Tau / (2 * math.Max(mean, 1e-12))
	sigma2 := make([]float64, n)
	for i := range sigma2 {
		c := 0.0
		if i < len(counts) {
			c = float64(max(counts[i], 0))
		}
		sigma2[i] = s0 / (1 + c)
	}
	return posterior{task: t.Task, tau: t.Tau, sigma2: sigma2, norm2: norm2}
}

// infoGain returns the BALD score of triplet tr with teacher logits l.
func (q posterior) infoGain(tr learner.Triplet, l [3]float32) float64 {
	i, j, k := tr.I, tr.J, tr.K
	si, sj, sk := q.sigma2[i], q.sigma2[j], q.sigma2[k]
	ni, nj, nk := q.norm2[i], q.norm2[j], q.norm2[k]
	sij, sik, sjk := float64(l[0]), float64(l[1]), float64(l[2])
	v11 := si*nj + sj*ni
	v22 := si*nk + sk*ni
	v33 := sj*nk + sk*nj
	v12, v13, v23 := si*sjk, sj*sik, sk*sij
	mean := [3]float64{sij, sik, sjk}
	if q.task == learner.TaskAnchor {
		// Only d = s_ij − s_ik matters.
		sd := math.Sqrt(math.Max(v11+v22-2*v12, 0))
		var pm [3]float64
		var eh float64
		for _, node := range [3][2]float64{{0, 2.0 / 3}, {math.Sqrt(3), 1.0 / 6}, {-math.Sqrt(3), 1.0 / 6}} {
			d := (sij - sik + node[0]*sd) / q.tau
			p := learner.AnchorProbs([3]float64{d, 0, 0}, 1)
			for c := range pm {
				pm[c] += node[1] * p[c]
			}
			eh += node[1] * entropyOf(p)
		}
		return math.Max(0, entropyOf(pm)-eh)
	}
	// Cholesky factor of the covariance, with a little jitter.
	const jitter = 1e-12
	l11 := math.Sqrt(math.Max(v11, 0) + jitter)
	l21 := v12 / l11
	l31 := v13 / l11
	l22 := math.Sqrt(math.Max(v22-l21*l21, 0) + jitter)
	l32 := (v23 - l31*l21) / l22
	l33 := math.Sqrt(math.Max(v33-l31*l31-l32*l32, 0) + jitter)
	cols := [3][3]float64{{l11, l21, l31}, {0, l22, l32}, {0, 0, l33}}
	r := math.Sqrt(3)
	var pm [3]float64
	var eh float64
	inv := 1 / q.tau
	for c := 0; c < 3; c++ {
		for _, sign := range [2]float64{1, -1} {
			var x [3]float64
			m := math.Inf(-1)
			for a := range x {
				x[a] = (mean[a] + sign*r*cols[c][a]) * inv
				m = math.Max(m, x[a])
			}
			// Softmax and its entropy from one set of exponentials.
			var e [3]float64
			var sum, dot float64
			for a := range x {
				x[a] -= m
				e[a] = expOrOne(x[a])
				sum += e[a]
				dot += x[a] * e[a]
			}
			for a := range pm {
				pm[a] += e[a] / sum / 6
			}
			eh += (math.Log(sum) - dot/sum) / 6
		}
	}
	return math.Max(0, entropyOf(pm)-eh)
}
