package learner

// Gram returns the n×n matrix of dot products G[i·n+j] = z_i·z_j of the
// rows of the n×p row-major matrix z, computed with the package's float32
// GEMM kernel (AVX2/FMA where available) in parallel over blocks of rows.
// Each entry is summed in the same order wherever its row falls, so the
// result does not depend on the number of goroutines; it is exactly
// symmetric only up to the kernel's summation order.
func Gram(z []float32, n, p int) []float32 {
	if len(z) < n*p {
		panic("learner: Gram matrix shape mismatch")
	}
	out := make([]float32, n*n)
	if n == 0 {
		return out
	}
	parMulNT(prepareB(n, p, z), n, p, n, z, out, allProcs)
	return out
}

// GramUpper is Gram computing only the upper triangle: G[i·n+j] = z_i·z_j
// is set for j ≥ i (entries below the diagonal may be set or left zero),
// at about half the cost. Read z_i·z_j as G[min(i,j)·n + max(i,j)].
func GramUpper(z []float32, n, p int) []float32 {
	if len(z) < n*p {
		panic("learner: GramUpper matrix shape mismatch")
	}
	out := make([]float32, n*n)
	if n == 0 {
		return out
	}
	mb := prepareB(n, p, z)
	allProcs.blocks(n, 48, func(lo, hi int) {
		mb.mulNTFrom(hi-lo, z[lo*p:hi*p], out[lo*n:hi*n], lo)
	})
	return out
}

// TripletDots writes to out[a] the three similarity logits (s_IJ, s_IK,
// s_JK) of ts[a] under the n×p representation z, in float32 with the
// package's three-way dot product kernel, in parallel. It is Logits for
// many triplets at once when float32 accuracy suffices (query scoring);
// out must hold len(ts) entries.
func TripletDots(z []float32, p int, ts []Triplet, out [][3]float32) {
	if len(out) < len(ts) {
		panic("learner: TripletDots output too short")
	}
	allProcs.blocks(len(ts), 4096, func(lo, hi int) {
		for a := lo; a < hi; a++ {
			t := ts[a]
			zi := z[int(t.I)*p : int(t.I)*p+p]
			zj := z[int(t.J)*p : int(t.J)*p+p]
			zk := z[int(t.K)*p : int(t.K)*p+p]
			sij, sik, sjk := dot3(zi, zj, zk)
			out[a] = [3]float32{sij, sik, sjk}
		}
	})
}
