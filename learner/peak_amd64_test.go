//go:build amd64 && !purego

package learner

import (
	"runtime"
	"sync"
	"testing"
)

// BenchmarkPeakFMA measures the machine's peak float32 rate with a loop of
// independent AVX2 fused multiply-adds, on one core and on all cores.
func BenchmarkPeakFMA(b *testing.B) {
	if !hasFMA() {
		b.Skip("no AVX2+FMA")
	}
	const iters = 1 << 20
	b.Run("1core", func(b *testing.B) {
		for b.Loop() {
			fmaPeak(iters)
		}
		reportGFLOPs(b, 192*iters)
	})
	b.Run("allcores", func(b *testing.B) {
		w := runtime.GOMAXPROCS(0)
		for b.Loop() {
			var wg sync.WaitGroup
			for range w {
				wg.Add(1)
				go func() { defer wg.Done(); fmaPeak(iters) }()
			}
			wg.Wait()
		}
		reportGFLOPs(b, float64(192*iters*w))
	})
}
