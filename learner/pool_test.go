package learner

import (
	"sync/atomic"
	"testing"
)

// TestPoolRunsEveryTaskOnce checks each, blocks and split for several pool
// sizes and task counts: every index is covered exactly once, worker ids
// stay below size, blocks have the requested size and split makes at most
// one range per goroutine.
func TestPoolRunsEveryTaskOnce(t *testing.T) {
	for _, p := range []pool{allProcs, 1, 2, 3, 8} {
		for _, count := range []int{0, 1, 2, 7, 100, 1001} {
			size := p.size(count)
			if count > 0 && (size < 1 || size > count) {
				t.Fatalf("pool %d: size %d for %d tasks", p, size, count)
			}
			hits := make([]atomic.Int32, count)
			p.each(count, func(w, i int) {
				if w < 0 || w >= size {
					t.Errorf("pool %d, %d tasks: worker %d outside [0,%d)", p, count, w, size)
				}
				hits[i].Add(1)
			})
			for i := range hits {
				if h := hits[i].Load(); h != 1 {
					t.Fatalf("pool %d, each over %d: index %d ran %d times", p, count, i, h)
				}
			}
			const block = 16
			covered := make([]atomic.Int32, count)
			p.blocks(count, block, func(lo, hi int) {
				if lo%block != 0 || hi-lo > block || (hi-lo < block && hi != count) || lo >= hi {
					t.Errorf("pool %d, blocks over %d: range [%d,%d)", p, count, lo, hi)
				}
				for i := lo; i < hi; i++ {
					covered[i].Add(1)
				}
			})
			var ranges atomic.Int32
			split := make([]atomic.Int32, count)
			p.split(count, func(lo, hi int) {
				ranges.Add(1)
				for i := lo; i < hi; i++ {
					split[i].Add(1)
				}
			})
			for i := 0; i < count; i++ {
				if covered[i].Load() != 1 || split[i].Load() != 1 {
					t.Fatalf("pool %d over %d: index %d covered %d times by blocks, %d by split", p, count, i, covered[i].Load(), split[i].Load())
				}
			}
			if int(ranges.Load()) > size {
				t.Fatalf("pool %d over %d: split made %d ranges for %d goroutines", p, count, ranges.Load(), size)
			}
		}
	}
}
