package learner

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// parMulNT computes out (m×k) = a (m×kd) · bᵀ with the prepared matrix b,
// in parallel over blocks of rows. Each output row is computed by one call
// on its own, so the result does not depend on the number of workers.
func parMulNT(b *matB, m, kd, k int, a, out []float32, workers pool) {
	workers.blocks(m, 48, func(lo, hi int) {
		b.mulNT(hi-lo, a[lo*kd:hi*kd], out[lo*k:hi*k])
	})
}

// vec32 views a as a unit-stride blas32 vector.
func vec32(a []float32) blas32.Vector { return blas32.Vector{N: len(a), Data: a, Inc: 1} }

// vec views a as a unit-stride blas64 vector.
func vec(a []float64) blas64.Vector { return blas64.Vector{N: len(a), Data: a, Inc: 1} }

// dot32 is a float32 dot product with four accumulators.
func dot32(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	p := 0
	for ; p+4 <= len(a); p += 4 {
		s0 += a[p] * b[p]
		s1 += a[p+1] * b[p+1]
		s2 += a[p+2] * b[p+2]
		s3 += a[p+3] * b[p+3]
	}
	for ; p < len(a); p++ {
		s0 += a[p] * b[p]
	}
	return (s0 + s1) + (s2 + s3)
}

// gemmNT computes out[i·k+j] = Σ_p a[i·d+p]·b[j·d+p] for the m×d matrix a
// and the k×d matrix b (out = a·bᵀ), single-threaded. On amd64 with AVX2
// and FMA it packs b into 16-column panels and runs a 6×16 register-blocked
// assembly kernel; elsewhere (or with the purego tag) gemmNTGo. Each entry
// is summed in the same order wherever its row falls, so results are
// deterministic on a given machine.
func gemmNT(m, k, d int, a, b, out []float32) {
	if len(a) < m*d || len(b) < k*d || len(out) < m*k {
		panic("learner: gemmNT matrix shape mismatch")
	}
	prepareB(k, d, b).mulNT(m, a, out)
}

// gemmNTGo is the portable kernel behind gemmNT: it blocks the centres into
// panels that stay in L2 and computes 4×4 tiles in registers.
func gemmNTGo(m, k, d int, a, b, out []float32) { gemmNTGoFrom(m, k, d, a, b, out, 0) }

// gemmNTGoFrom is gemmNTGo restricted to the output columns j ≥ from.
func gemmNTGoFrom(m, k, d int, a, b, out []float32, from int) {
	const panel = 64
	for j0 := from; j0 < k; j0 += panel {
		j1 := min(j0+panel, k)
		i := 0
		for ; i+4 <= m; i += 4 {
			a0 := a[i*d : i*d+d]
			a1 := a[(i+1)*d : (i+1)*d+d]
			a2 := a[(i+2)*d : (i+2)*d+d]
			a3 := a[(i+3)*d : (i+3)*d+d]
			j := j0
			for ; j+4 <= j1; j += 4 {
				b0 := b[j*d : j*d+d]
				b1 := b[(j+1)*d : (j+1)*d+d]
				b2 := b[(j+2)*d : (j+2)*d+d]
				b3 := b[(j+3)*d : (j+3)*d+d]
				var s00, s01, s02, s03, s10, s11, s12, s13 float32
				var s20, s21, s22, s23, s30, s31, s32, s33 float32
				for p := range a0 {
					x0, x1, x2, x3 := a0[p], a1[p], a2[p], a3[p]
					y0, y1, y2, y3 := b0[p], b1[p], b2[p], b3[p]
					s00 += x0 * y0
					s01 += x0 * y1
					s02 += x0 * y2
					s03 += x0 * y3
					s10 += x1 * y0
					s11 += x1 * y1
					s12 += x1 * y2
					s13 += x1 * y3
					s20 += x2 * y0
					s21 += x2 * y1
					s22 += x2 * y2
					s23 += x2 * y3
					s30 += x3 * y0
					s31 += x3 * y1
					s32 += x3 * y2
					s33 += x3 * y3
				}
				o := out[i*k+j:]
				o[0], o[1], o[2], o[3] = s00, s01, s02, s03
				o = out[(i+1)*k+j:]
				o[0], o[1], o[2], o[3] = s10, s11, s12, s13
				o = out[(i+2)*k+j:]
				o[0], o[1], o[2], o[3] = s20, s21, s22, s23
				o = out[(i+3)*k+j:]
				o[0], o[1], o[2], o[3] = s30, s31, s32, s33
			}
			for ; j < j1; j++ {
				bj := b[j*d : j*d+d]
				out[i*k+j] = dot32(a0, bj)
				out[(i+1)*k+j] = dot32(a1, bj)
				out[(i+2)*k+j] = dot32(a2, bj)
				out[(i+3)*k+j] = dot32(a3, bj)
			}
		}
		for ; i < m; i++ {
			ai := a[i*d : i*d+d]
			for j := j0; j < j1; j++ {
				out[i*k+j] = dot32(ai, b[j*d:j*d+d])
			}
		}
	}
}
