// Package learner holds the mathematics of AligNet: probability models for
// odd-one-out and anchor judgments, the surrogate teacher, the probabilistic
// human model used for uncertainty distillation, calibration, clustering,
// AligNet triplet generation, student distillation and alignment metrics.
//
// It does no I/O: every function takes plain slices and returns plain
// values, so all of it is unit-testable. Randomness is always seeded.
package learner

import "math"

// Triplet is an odd-one-out judgment over item indices. I and J are the pair
// kept together and K is the item chosen as the odd one out, as in the THINGS
// text format "i j k". For anchor judgments I is the head, J the item judged
// closer and K the item judged farther.
type Triplet struct{ I, J, K int32 }

// RepeatedTriplet is a triplet shown to many people. Counts[a] is how often
// Items[a] was chosen as the odd one out.
type RepeatedTriplet struct {
	Items  [3]int32
	Counts [3]int32
}

// Logits returns the three similarity logits (s_ij, s_ik, s_jk) of a triplet,
// where s is the dot product of rows of z, an n×p row-major matrix.
func Logits(z []float32, p int, t Triplet) [3]float64 {
	zi := z[int(t.I)*p : int(t.I)*p+p]
	zj := z[int(t.J)*p : int(t.J)*p+p]
	zk := z[int(t.K)*p : int(t.K)*p+p]
	var sij, sik, sjk float64
	for a := 0; a < p; a++ {
		xi, xj, xk := float64(zi[a]), float64(zj[a]), float64(zk[a])
		sij += xi * xj
		sik += xi * xk
		sjk += xj * xk
	}
	return [3]float64{sij, sik, sjk}
}

// Softmax3 returns softmax(l/tau). For logits from Logits, index 0 is the
// probability that K is the odd one out (the pair I,J is the most similar),
// index 1 that J is odd, and index 2 that I is odd.
func Softmax3(l [3]float64, tau float64) [3]float64 {
	a, b, c := l[0]/tau, l[1]/tau, l[2]/tau
	m := math.Max(a, math.Max(b, c))
	ea, eb, ec := math.Exp(a-m), math.Exp(b-m), math.Exp(c-m)
	s := ea + eb + ec
	return [3]float64{ea / s, eb / s, ec / s}
}

// Compact maps the rows of ts to a dense local index: it returns the
// distinct rows in order of first use and ts rewritten over that index.
func Compact(ts []Triplet) (rows []int32, local []Triplet) {
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
	local = make([]Triplet, len(ts))
	for a, t := range ts {
		local[a] = Triplet{I: at(t.I), J: at(t.J), K: at(t.K)}
	}
	return rows, local
}
