package learner

import (
	"strings"
	"testing"

	"github.com/alignet/alignet"
)

// TestTaskValuesMatchDomain checks that the learner's tasks are exactly the
// domain's, so a study's task converts with a plain conversion.
func TestTaskValuesMatchDomain(t *testing.T) {
	for _, c := range []struct {
		domain alignet.Task
		want   Task
	}{{alignet.TaskOddOneOut, TaskOddOneOut}, {alignet.TaskAnchor, TaskAnchor}} {
		if got := Task(c.domain); got != c.want {
			t.Errorf("Task(%q) = %q, want %q", c.domain, got, c.want)
		}
		if err := Task(c.domain).Valid(); err != nil {
			t.Errorf("%q: %v", c.domain, err)
		}
	}
}

// TestTaskValidRejectsUnknown checks that Valid names an unknown task.
func TestTaskValidRejectsUnknown(t *testing.T) {
	for _, bad := range []Task{"", "odd-one-0ut", "Anchor", "oddoneout"} {
		err := bad.Valid()
		if err == nil {
			t.Errorf("Valid(%q) = nil", bad)
			continue
		}
		if !strings.Contains(err.Error(), `"`+string(bad)+`"`) {
			t.Errorf("Valid(%q) = %q does not name the value", bad, err)
		}
	}
}

// TestTypoTaskPanics checks that every scoring function given a misspelt
// task panics instead of scoring it as odd-one-out, also for empty input.
func TestTypoTaskPanics(t *testing.T) {
	const typo Task = "odd-one-0ut"
	l := [3]float64{1, 0.5, -0.2}
	z := []float32{1, 0, 0, 1, 1, 1}
	ts := []Triplet{{0, 1, 2}}
	calls := map[string]func(){
		"TaskProbs":           func() { TaskProbs(typo, l, 1) },
		"TaskCrossEntropy":    func() { TaskCrossEntropy(typo, l, 1, HardTarget) },
		"TripletLoss":         func() { TripletLoss(typo, z, 2, ts[0], 1, HardTarget, nil) },
		"Correct":             func() { Correct(typo, l) },
		"AccuracyFromLogits":  func() { AccuracyFromLogits(typo, [][3]float64{l}) },
		"AccuracyFromLogits0": func() { AccuracyFromLogits(typo, nil) },
		"Accuracy":            func() { Accuracy(typo, z, 2, ts) },
		"NLL":                 func() { NLL(typo, [][3]float64{l}, 1) },
		"MeanCrossEntropy0":   func() { MeanCrossEntropy(typo, nil, nil, 1) },
		"ECE":                 func() { ECE(typo, [][3]float64{l}, 1, 10) },
		"ECE0":                func() { ECE(typo, nil, 1, 10) },
		"Calibrate":           func() { CalibrateTemperature(typo, [][3]float64{l}, nil) },
		"Calibrate0":          func() { CalibrateTemperature(typo, nil, nil) },
		"Teacher.Probs": func() {
			tc := &Teacher{W: identity(2, 2), B: make([]float64, 2), D: 2, P: 2, Std: 1, Tau: 1, Task: typo}
			tc.Probs(z, 3, ts)
		},
	}
	for name, call := range calls {
		func() {
			defer func() {
				r := recover()
				if r == nil {
					t.Errorf("%s with task %q did not panic", name, typo)
					return
				}
				if msg, _ := r.(string); !strings.Contains(msg, string(typo)) {
					t.Errorf("%s panicked with %v, which does not name the task", name, r)
				}
			}()
			call()
		}()
	}
}

// TestTypoTaskRejectedByFitAndUpdate checks that the functions returning
// errors reject an unknown task, and that an empty TeacherConfig.Task means
// odd-one-out.
func TestTypoTaskRejectedByFitAndUpdate(t *testing.T) {
	const n, d = 12, 3
	x, ts, _ := plantedProblem(3, n, d, d, 60, 1, TaskOddOneOut)
	if _, _, err := FitTeacher(x, n, d, ts, nil, TeacherConfig{Task: "anchr", MaxIter: 2}); err == nil || !strings.Contains(err.Error(), "anchr") {
		t.Errorf("FitTeacher with task \"anchr\": %v", err)
	}
	tc, _, err := FitTeacher(x, n, d, ts, nil, TeacherConfig{MaxIter: 2})
	if err != nil {
		t.Fatal(err)
	}
	if tc.Task != TaskOddOneOut {
		t.Errorf("default task %q, want %q", tc.Task, TaskOddOneOut)
	}
	if _, _, err := SelectLambda(t.Context(), x, n, d, ts[:50], nil, ts[50:], nil, []float64{0.1}, TeacherConfig{Task: "anchr", MaxIter: 2}); err == nil {
		t.Error("SelectLambda accepted task \"anchr\"")
	}
	tc.Task = "anchr"
	if _, err := tc.Update(x, n, ts, nil, nil, nil, OnlineConfig{}, nil); err == nil || !strings.Contains(err.Error(), "anchr") {
		t.Errorf("Update with task \"anchr\": %v", err)
	}
}
