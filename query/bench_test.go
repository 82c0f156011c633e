package query

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// cpuTime returns the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRescore scores candidate pools of 100k and 1M triplets over
// THINGS-sized items (1,854 × 512 float32) with each scorer, reporting
// wall time and CPU time per rescoring (on a busy machine the CPU time
// divided by the cores is the better estimate of the wall time on an idle
// one):
//
//	go test ./query -run '^$' -bench Rescore -benchtime 10x
func BenchmarkRescore(b *testing.B) {
	teacher := randomTeacher(1854, 512, 0.05, 1, 0)
	for _, size := range []int{100_000, 1_000_000} {
		cands := Candidates(learner.TaskOddOneOut, teacher.N(), size, 1)
		for _, scorer := range []string{alignet.ScorerEntropy, alignet.ScorerInfoGain} {
			b.Run(fmt.Sprintf("%s/%dk", scorer, size/1000), func(b *testing.B) {
				s := Scoring{Scorer: scorer, Teacher: teacher}
				cpu := cpuTime()
				for b.Loop() {
					if _, _, err := s.Score(cands, 0.95, MaxTeacherChecks); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/rescore")
				b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/rescore")
			})
		}
	}
}

// BenchmarkServe measures one active query handed to a fresh session
// (the in-memory part of GET .../next).
func BenchmarkServe(b *testing.B) {
	e, err := NewEngine(Config{Study: "s", Task: alignet.TaskOddOneOut, Settings: alignet.DefaultQuerySettings(), Seed: 1, NewID: counterIDs()})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.SetTeacher(randomTeacher(1854, 64, 0.2, 1, 0), nil); err != nil {
		b.Fatal(err)
	}
	e.SetRepeats(e.DrawRepeats(200))
	i := 0
	for b.Loop() {
		id := fmt.Sprint(i)
		i++
		e.AddSession(testSession(id, "w"+id, 50), nil, t0)
		if _, err := e.Serve(id, 1, t0); err != nil {
			b.Fatal(err)
		}
	}
}
