//go:build amd64 && !purego

package learner

import "golang.org/x/sys/cpu"

// hasFMA reports whether the AVX2+FMA kernel can run on this CPU. It is a
// property of the machine, so results stay deterministic on it.
func hasFMA() bool { return cpu.X86.HasAVX2 && cpu.X86.HasFMA }

// sdot6x16 computes out[r·16+j] = Σ_p a_r[p]·bp[p·16+j] for r < 6 and
// j < 16, where bp is a packed panel of 16 columns (d×16, row-major).
//
//go:noescape
func sdot6x16(a0, a1, a2, a3, a4, a5, bp *float32, d int, out *[96]float32)

// sdot3 returns the three dot products a·b, a·c and b·c of n-vectors,
// where n is a multiple of 16.
//
//go:noescape
func sdot3(a, b, c *float32, n int) (ab, ac, bc float32)

// fmaPeak runs n iterations of 12 independent 8-wide fused multiply-adds
// (192 float32 flops per iteration); the benchmark uses it to measure the
// machine's peak float32 rate.
//
//go:noescape
func fmaPeak(n int)

// panelWidth is the number of centres in one packed panel.
const panelWidth = 16

// packPanels packs the k×d matrix b into ⌈k/16⌉ panels of d×16 values,
// zero-padding the last panel.
func packPanels(k, d int, b []float32) []float32 {
	np := (k + panelWidth - 1) / panelWidth
	bp := make([]float32, np*d*panelWidth)
	for j := 0; j < k; j++ {
		pan := bp[(j/panelWidth)*d*panelWidth:]
		jj := j % panelWidth
		row := b[j*d : (j+1)*d]
		for p, v := range row {
			pan[p*panelWidth+jj] = v
		}
	}
	return bp
}

// matB is the right-hand matrix of out = a·bᵀ, prepared once (packed into
// panels when the AVX2+FMA kernel is used) and shared read-only by
// concurrent multiplications.
type matB struct {
	k, d int
	b    []float32
	bp   []float32
}

// prepareB prepares the k×d matrix b for repeated multiplications.
func prepareB(k, d int, b []float32) *matB {
	mb := &matB{k: k, d: d, b: b}
	if hasFMA() && d > 0 {
		mb.bp = packPanels(k, d, b)
	}
	return mb
}

// mulNT computes out (m×k) = a (m×d) · bᵀ.
func (mb *matB) mulNT(m int, a, out []float32) {
	if mb.bp != nil {
		gemmPacked(m, mb.k, mb.d, a, mb.bp, out)
		return
	}
	gemmNTGo(m, mb.k, mb.d, a, mb.b, out)
}

// mulNTFrom is mulNT restricted to the output columns j ≥ from, rounded
// down to a panel boundary (the other columns are left untouched).
func (mb *matB) mulNTFrom(m int, a, out []float32, from int) {
	if mb.bp != nil {
		gemmPackedFrom(m, mb.k, mb.d, a, mb.bp, out, from/panelWidth)
		return
	}
	gemmNTGoFrom(m, mb.k, mb.d, a, mb.b, out, from)
}

// gemmPacked computes out = a·bᵀ from b packed by packPanels, six rows by
// sixteen centres at a time. Panels are the outer loop so each one stays
// in cache while the rows of a stream past it.
func gemmPacked(m, k, d int, a, bp []float32, out []float32) {
	gemmPackedFrom(m, k, d, a, bp, out, 0)
}

// gemmPackedFrom is gemmPacked over the panels from panel first on.
func gemmPackedFrom(m, k, d int, a, bp []float32, out []float32, first int) {
	var tile [96]float32
	np := (k + panelWidth - 1) / panelWidth
	for pn := first; pn < np; pn++ {
		panel := &bp[pn*d*panelWidth]
		j0 := pn * panelWidth
		w := min(panelWidth, k-j0)
		for i := 0; i < m; i += 6 {
			sdot6x16(&a[i*d], &a[min(i+1, m-1)*d], &a[min(i+2, m-1)*d], &a[min(i+3, m-1)*d],
				&a[min(i+4, m-1)*d], &a[min(i+5, m-1)*d], panel, d, &tile)
			for r := 0; r < 6 && i+r < m; r++ {
				copy(out[(i+r)*k+j0:(i+r)*k+j0+w], tile[r*16:r*16+w])
			}
		}
	}
}

// dot3 returns the dot products a·b, a·c and b·c of equal-length vectors.
func dot3(a, b, c []float32) (ab, ac, bc float32) {
	n := len(a)
	b, c = b[:n], c[:n]
	main := 0
	if hasFMA() {
		main = n &^ 15
		if main > 0 {
			ab, ac, bc = sdot3(&a[0], &b[0], &c[0], main)
		}
	}
	for p := main; p < n; p++ {
		ab += a[p] * b[p]
		ac += a[p] * c[p]
		bc += b[p] * c[p]
	}
	return ab, ac, bc
}
