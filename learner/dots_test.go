package learner

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestGramAndTripletDotsMatchLogits(t *testing.T) {
	for _, dims := range [][2]int{{1, 1}, {7, 3}, {50, 17}, {130, 64}} {
		n, p := dims[0], dims[1]
		rng := rand.New(rand.NewPCG(uint64(n), uint64(p)))
		z := make([]float32, n*p)
		for i := range z {
			z[i] = float32(rng.NormFloat64())
		}
		g := Gram(z, n, p)
		u := GramUpper(z, n, p)
		ts := make([]Triplet, 300)
		for a := range ts {
			ts[a] = Triplet{I: int32(rng.IntN(n)), J: int32(rng.IntN(n)), K: int32(rng.IntN(n))}
		}
		dots := make([][3]float32, len(ts))
		TripletDots(z, p, ts, dots)
		for a, tr := range ts {
			want := Logits(z, p, tr)
			fromGram := [3]float32{g[int(tr.I)*n+int(tr.J)], g[int(tr.I)*n+int(tr.K)], g[int(tr.J)*n+int(tr.K)]}
			upper := func(i, j int32) float32 { return u[int(min(i, j))*n+int(max(i, j))] }
			fromUpper := [3]float32{upper(tr.I, tr.J), upper(tr.I, tr.K), upper(tr.J, tr.K)}
			for c := 0; c < 3; c++ {
				if tol := 1e-4 * (1 + math.Abs(want[c])); math.Abs(float64(fromUpper[c])-want[c]) > tol {
					t.Fatalf("n=%d p=%d triplet %v logit %d: GramUpper %g, Logits %g", n, p, tr, c, fromUpper[c], want[c])
				}
				tol := 1e-4 * (1 + math.Abs(want[c]))
				if math.Abs(float64(dots[a][c])-want[c]) > tol || math.Abs(float64(fromGram[c])-want[c]) > tol {
					t.Fatalf("n=%d p=%d triplet %v logit %d: TripletDots %g, Gram %g, Logits %g", n, p, tr, c, dots[a][c], fromGram[c], want[c])
				}
			}
		}
	}
}
