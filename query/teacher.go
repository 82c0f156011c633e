package query

import (
	"errors"
	"fmt"
	"math"

	"github.com/alignet/alignet/learner"
)

// Teacher is an immutable view of a study's teacher as query selection
// needs it: the teacher representations of the study's items and the
// temperature of its softmax.
type Teacher struct {
	// Version is the teacher version (0: the raw embeddings or the state
	// before any stored version).
	Version int64
	// Task is the study's task.
	Task learner.Task
	// Tau is the softmax temperature.
	Tau float64
	// Items are the item ids, row by row of Z.
	Items []string
	// P is the representation dimension.
	P int
	// Z holds len(Items)×P row-major float32 representations.
	Z []float32
}

// N returns the number of items.
func (t *Teacher) N() int { return len(t.Items) }

// Validate checks shapes, the task and the temperature.
func (t *Teacher) Validate() error {
	if err := t.Task.Valid(); err != nil {
		return fmt.Errorf("teacher: %w", err)
	}
	switch {
	case t.P < 1:
		return fmt.Errorf("teacher: dimension %d", t.P)
	case len(t.Z) != len(t.Items)*t.P:
		return fmt.Errorf("teacher: %d values for %d items of dimension %d", len(t.Z), len(t.Items), t.P)
	case !(t.Tau > 0) || math.IsInf(t.Tau, 0):
		return fmt.Errorf("teacher: temperature %g", t.Tau)
	case len(t.Items) > maxItems:
		return fmt.Errorf("teacher: %d items, at most %d", len(t.Items), maxItems)
	}
	return nil
}

// ErrNoStudent is returned by the disagreement scorer while no student
// representation is available for the study.
var ErrNoStudent = errors.New("disagreement scorer not available: the study has no registered student")

// gramLimit is the largest item count for which logits are gathered from
// the Gram matrix (256 MiB of float32) rather than computed per triplet.
const gramLimit = 8192

// logitsOf writes the similarity logits of ts under t into out: as a
// GEMM on the item representations (the upper triangle of their Gram
// matrix) and a gather when that is cheaper, that is for many triplets
// over few items, otherwise as three dot products per triplet.
func logitsOf(t *Teacher, ts []learner.Triplet, out [][3]float32) {
	n := t.N()
	// The Gram matrix costs n²p/2 multiply-adds at GEMM speed; the dot
	// products cost 3p per triplet but read three random rows each, which
	// runs at a small fraction of GEMM speed (measured: 1M triplets over
	// 1,854 × 512 items take 6× longer as dot products). The gather reads
	// three entries per triplet.
	if n > gramLimit || float64(n)*float64(n) > 16*float64(len(ts)) {
		learner.TripletDots(t.Z, t.P, ts, out)
		return
	}
	g := learner.GramUpper(t.Z, n, t.P)
	parallel(len(ts), 8192, func(lo, hi int) {
		for a := lo; a < hi; a++ {
			tr := ts[a]
			i, j, k := int(tr.I), int(tr.J), int(tr.K)
			if i > j || j > k { // anchor heads come first, in any order
				out[a] = [3]float32{g[min(i, j)*n+max(i, j)], g[min(i, k)*n+max(i, k)], g[min(j, k)*n+max(j, k)]}
				continue
			}
			out[a] = [3]float32{g[i*n+j], g[i*n+k], g[j*n+k]}
		}
	})
}
