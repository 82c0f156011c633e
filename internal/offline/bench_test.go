package offline

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/alignet/alignet/learner"
)

// BenchmarkFitTeacherTHINGS fits the teacher on 90% of the THINGS triplets
// (CLIP ViT-B/32, 1,854×512) at the λ chosen by "alignet fit" and reports
// the held-out accuracy and the wall time of one fit.
//
//	go test ./internal/offline/ -run '^$' -bench FitTeacherTHINGS -benchtime 1x
func BenchmarkFitTeacherTHINGS(b *testing.B) {
	x, n, d, fit, held := thingsHoldout(b)
	b.ResetTimer()
	var acc float64
	var iters int
	start := time.Now()
	for i := 0; i < b.N; i++ {
		tc, st, err := learner.FitTeacher(x, n, d, fit, nil, learner.TeacherConfig{Lambda: thingsLambda, MaxIter: 60})
		if err != nil {
			b.Fatal(err)
		}
		iters = st.Iterations
		acc = learner.Accuracy(learner.TaskOddOneOut, tc.Transform(x, n), tc.P, held)
	}
	b.ReportMetric(acc, "heldout_acc")
	b.ReportMetric(float64(iters), "iters")
	b.ReportMetric(time.Since(start).Seconds()/float64(b.N), "s/fit")
}

// BenchmarkOnlineUpdate measures one online Adam step of the THINGS
// teacher on 256 fresh and 1,024 replayed judgments.
//
//	go test ./internal/offline/ -run '^$' -bench OnlineUpdate
func BenchmarkOnlineUpdate(b *testing.B) {
	x, n, d, fit, _ := thingsHoldout(b)
	mean, std := learner.MeanStd(x)
	w := make([]float64, d*d)
	for a := 0; a < d; a++ {
		w[a*d+a] = 0.15
	}
	tc := &learner.Teacher{W: w, B: make([]float64, d), D: d, P: d, Mean: mean, Std: std, Tau: 1, Lambda: thingsLambda, Task: learner.TaskOddOneOut}
	fresh, replay := fit[:256], fit[256:256+1024]
	var state learner.AdamState
	cfg := learner.OnlineConfig{LR: 1e-4, Steps: 1, BatchSize: 1280, ReplayFraction: 0.8}
	b.ResetTimer()
	var rows int
	for i := 0; i < b.N; i++ {
		cfg.Seed = uint64(i)
		st, err := tc.Update(x, n, fresh, nil, replay, nil, cfg, &state)
		if err != nil {
			b.Fatal(err)
		}
		rows = st.Rows
	}
	b.ReportMetric(float64(rows), "rows")
}

// TestReferenceComparison writes the THINGS fit/held-out split used by the
// Go tests to $ALIGNET_COMPARE_DIR (fit.txt, held.txt) for
// scripts/reference_fit.py, then fits the Go teacher with the same
// objective, recording held-out accuracy every 5 iterations and the fit
// time to reach 57% (checks excluded). It runs only when the variable is
// set, since it measures time.
func TestReferenceComparison(t *testing.T) {
	dir := os.Getenv("ALIGNET_COMPARE_DIR")
	if dir == "" {
		t.Skip("set ALIGNET_COMPARE_DIR to run the reference comparison")
	}
	x, n, d, fit, held := thingsHoldout(t)
	writeTriplets(t, filepath.Join(dir, "fit.txt"), fit)
	writeTriplets(t, filepath.Join(dir, "held.txt"), held)
	var fitTime, checkTime, checkCPU time.Duration
	var reached, reachedCPU time.Duration
	reachedIter := 0
	start, cpu0 := time.Now(), cpuTime()
	cfg := learner.TeacherConfig{Lambda: thingsLambda, MaxIter: 60}
	cfg.ProgressTeacher = func(iter int, f float64, tc *learner.Teacher) {
		c0, u0 := time.Now(), cpuTime()
		fitTime = c0.Sub(start) - checkTime
		fitCPU := u0 - cpu0 - checkCPU
		if iter%5 == 0 {
			acc := learner.Accuracy(learner.TaskOddOneOut, tc.Transform(x, n), d, held)
			t.Logf("iter %d fit wall %.2fs cpu %.2fs held-out %.4f objective %.5f", iter, fitTime.Seconds(), fitCPU.Seconds(), acc, f)
			if reachedIter == 0 && acc >= 0.57 {
				reachedIter, reached, reachedCPU = iter, fitTime, fitCPU
			}
		}
		checkTime += time.Since(c0)
		checkCPU += cpuTime() - u0
	}
	tc, st, err := learner.FitTeacher(x, n, d, fit, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	acc := learner.Accuracy(learner.TaskOddOneOut, tc.Transform(x, n), d, held)
	t.Logf("go: final held-out %.4f after %d iterations, fit wall %.2fs cpu %.2fs; reached 0.57 at iteration %d after wall %.2fs cpu %.2fs",
		acc, st.Iterations, (time.Since(start) - checkTime).Seconds(), (cpuTime() - cpu0 - checkCPU).Seconds(), reachedIter, reached.Seconds(), reachedCPU.Seconds())
}

// cpuTime returns the CPU time (user plus system) used by this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
