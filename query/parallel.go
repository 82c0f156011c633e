package query

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// parallel runs fn over consecutive blocks [lo, hi) covering [0, n) on
// GOMAXPROCS goroutines. Blocks are independent, so results do not depend
// on scheduling.
func parallel(n, block int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	blocks := (n + block - 1) / block
	w := min(runtime.GOMAXPROCS(0), blocks)
	if w <= 1 {
		fn(0, n)
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Go(func() {
			for {
				b := int(next.Add(1) - 1)
				if b >= blocks {
					return
				}
				fn(b*block, min(b*block+block, n))
			}
		})
	}
	wg.Wait()
}
