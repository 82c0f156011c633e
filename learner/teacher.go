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
// representations, in parallel over rows (standardisation computed in
// float64, matrix product and bias in float32).
func (t *Teacher) Transform(x []float32, n int) []float32 {
	xt := make([]float32, n*t.D)
	inv := 1 / t.Std
	allProcs.split(n, func(lo, hi int) {
		for i := lo * t.D; i < hi*t.D; i++ {
			xt[i] = float32((float64(x[i]) - t.Mean) * inv)
		}
	})
	return t.forward32(xt, n)
}

// TransformRows returns the teacher representations of the listed rows of
// the row-major embeddings x (D values per row) as a len(rows)×P matrix in
// the order of rows. It costs len(rows) rows of Transform, so a few
// judgments can be scored without transforming every item; each row
// agrees with that row of Transform up to float32 rounding (exactly, with
// the AVX2 kernel).
func (t *Teacher) TransformRows(x []float32, rows []int32) []float32 {
	return t.forward32(t.standardRows(x, rows), len(rows))
}

// ScoreTriplet scores one judgment under the teacher: it returns the
// outcome distribution of the triplet tr of rows of x (TaskProbs layout at
// the teacher's temperature) and the cross-entropy of the target q against
// it, which for HardTarget is the log-loss of the observed choice. Only the
// three rows of tr are transformed.
func (t *Teacher) ScoreTriplet(x []float32, tr Triplet, q [3]float32) (probs [3]float64, loss float64) {
	z := t.TransformRows(x, []int32{tr.I, tr.J, tr.K})
	l := Logits(z, t.P, Triplet{I: 0, J: 1, K: 2})
	loss, _ = TaskCrossEntropy(t.Task, l, t.Tau, q)
	return TaskProbs(t.Task, l, t.Tau), loss
}

// standardRows returns the listed rows of x standardised, (x − Mean)/Std,
// in float32 (computed in float64 as Transform does).
func (t *Teacher) standardRows(x []float32, rows []int32) []float32 {
	d := t.D
	xt := make([]float32, len(rows)*d)
	inv := 1 / t.Std
	for l, r := range rows {
		src := x[int(r)*d : int(r+1)*d]
		dst := xt[l*d : (l+1)*d]
		for a, v := range src {
			dst[a] = float32((float64(v) - t.Mean) * inv)
		}
	}
	return xt
}

// forward32 returns z = x̃·Wᵀ + b (m×P) for the m standardised rows xt,
// with the product on the float32 kernel and the bias added in float32.
func (t *Teacher) forward32(xt []float32, m int) []float32 {
	out := make([]float32, m*t.P)
	if m == 0 {
		return out
	}
	w32 := make([]float32, len(t.W))
	for i, v := range t.W {
		w32[i] = float32(v)
	}
	parMulNT(prepareB(t.P, t.D, w32), m, t.D, t.P, xt, out, allProcs)
	for r := 0; r < m; r++ {
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
