package query

import (
	"math"

	"github.com/alignet/alignet"
)

// invPhi is 1/φ, the golden ratio's inverse: the Weyl sequence frac(c/φ)
// is the one-dimensional sequence of lowest discrepancy.
const invPhi = 0.6180339887498949

// mixer assigns kinds to consecutive queries so that over any stretch of
// served queries each kind's count stays within a few of its share: the
// c-th query takes the kind whose cumulative share interval holds
// frac(offset + c/φ). Unlike independent draws (whose counts deviate by
// the square root of the count), the deviation grows only
// logarithmically.
type mixer struct {
	cum    [4]float64
	offset float64
	c      uint64
}

func newMixer(m alignet.QueryMix, seed uint64) mixer {
	var mx mixer
	mx.setMix(m)
	mx.offset = float64(seed>>11) / (1 << 53)
	return mx
}

func (m *mixer) setMix(mix alignet.QueryMix) {
	s := 0.0
	for i, k := range alignet.QueryKinds() {
		s += mix.Share(k)
		m.cum[i] = s
	}
}

// next returns the kind of the next query.
func (m *mixer) next() alignet.QueryKind {
	u := math.Mod(m.offset+float64(m.c)*invPhi, 1)
	m.c++
	kinds := alignet.QueryKinds()
	for i, c := range m.cum {
		if u < c {
			return kinds[i]
		}
	}
	// Rounding left u above the last boundary: the last kind with a share.
	for i := len(kinds) - 1; i > 0; i-- {
		if m.cum[i] > m.cum[i-1] {
			return kinds[i]
		}
	}
	return kinds[0]
}
