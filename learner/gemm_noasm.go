//go:build !amd64 || purego

package learner

// matB is the right-hand matrix of out = a·bᵀ; this build has no assembly
// kernel, so it is used as is.
type matB struct {
	k, d int
	b    []float32
}

// prepareB prepares the k×d matrix b for repeated multiplications.
func prepareB(k, d int, b []float32) *matB { return &matB{k: k, d: d, b: b} }

// mulNT computes out (m×k) = a (m×d) · bᵀ with the portable kernel.
func (mb *matB) mulNT(m int, a, out []float32) { gemmNTGo(m, mb.k, mb.d, a, mb.b, out) }

// mulNTFrom is mulNT restricted to the output columns j ≥ from.
func (mb *matB) mulNTFrom(m int, a, out []float32, from int) {
	gemmNTGoFrom(m, mb.k, mb.d, a, mb.b, out, from)
}

// dot3 returns the dot products a·b, a·c and b·c of equal-length vectors.
func dot3(a, b, c []float32) (ab, ac, bc float32) {
	return dot32(a, b), dot32(a, c), dot32(b, c)
}
