package learner

import (
	"math"
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
	Task Task
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
	allProcs.split(n, func(lo, hi int) {
		for i := lo * t.D; i < hi*t.D; i++ {
			xt[i] = float32((float64(x[i]) - t.Mean) * inv)
		}
	})
	w32 := make([]float32, len(t.W))
	for i, v := range t.W {
		w32[i] = float32(v)
	}
	parMulNT(prepareB(t.P, t.D, w32), n, t.D, t.P, xt, out, allProcs)
	for r := 0; r < n; r++ {
		row := out[r*t.P : (r+1)*t.P]
		for q, v := range t.B {
			row[q] += float32(v)
		}
	}
	return out
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
