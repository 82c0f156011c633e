package learner

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// pool is the package's one worker pool. Its value is the number of
// goroutines a call may use (GOMAXPROCS when it is not positive); the
// goroutines are started by each call and have finished when it returns,
// so a pool holds no state and needs no closing.
//
// Every task of a call runs exactly once. Callers make a task's result
// depend on its index alone, never on the goroutine that ran it or on the
// order tasks ran in, and reduce per-task results in index order, so
// results do not depend on the number of workers or on scheduling.
type pool int

// allProcs is the pool of GOMAXPROCS goroutines.
const allProcs pool = 0

// size returns the number of goroutines a call with count tasks starts.
func (p pool) size(count int) int {
	w := int(p)
	if w <= 0 {
		w = runtime.GOMAXPROCS(0)
	}
	return min(w, count)
}

// each runs fn(worker, i) for every i in [0, count), handing out indices in
// ascending order to whichever goroutine is free. worker, in
// [0, p.size(count)), names the goroutine running the task; use it only to
// pick per-goroutine scratch space.
func (p pool) each(count int, fn func(worker, i int)) {
	w := p.size(count)
	if w <= 1 {
		for i := 0; i < count; i++ {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < w; g++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				fn(g, i)
			}
		})
	}
	wg.Wait()
}

// blocks runs fn(lo, hi) for each of the consecutive ranges [lo, hi) of
// block indices (the last one shorter) that cover [0, n). The block size is
// the caller's, so the partition does not depend on the number of workers.
func (p pool) blocks(n, block int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	p.each((n+block-1)/block, func(_, b int) {
		fn(b*block, min(b*block+block, n))
	})
}

// split runs fn(lo, hi) over [0, n) cut into one contiguous range per
// goroutine. It is for work on independent indices, where the partition
// cannot change a result.
func (p pool) split(n int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	w := p.size(n)
	p.blocks(n, (n+w-1)/w, fn)
}
