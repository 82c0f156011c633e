package online

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// recordStore serves a fixed record of judgments.
type recordStore struct {
	Store
	js []alignet.Judgment
}

func (r recordStore) CountJudgments(context.Context, string) (int64, error) {
	return int64(len(r.js)), nil
}

func (r recordStore) ExportJudgments(_ context.Context, _ alignet.JudgmentFilter, fn func(alignet.Judgment) error) error {
	for _, j := range r.js {
		if err := fn(j); err != nil {
			return err
		}
	}
	return nil
}

// TestRefitSplitsAndDistils runs refits on a record: held-out judgments
// are kept for evaluation only, and the teacher is uncertainty-distilled
// exactly when the study has item sets answered by several workers and
// distillation is on (odd-one-out only).
func TestRefitSplitsAndDistils(t *testing.T) {
	s := newSynth(25, 6, 9)
	js := s.judgments("r", alignet.TaskOddOneOut, "r", 1200, 10)
	// Repeated triplets: the first 40 item sets answered again by others.
	for i := range 40 {
		for w := range 3 {
			j := js[i]
			j.ID, j.Worker = fmt.Sprintf("rep-%d-%d", i, w), fmt.Sprintf("other%d", w)
			js = append(js, j)
		}
	}
	// One worker only: item sets drawn twice are not repeated triplets.
	single := append([]alignet.Judgment(nil), js[:1200]...)
	for i := range single {
		single[i].Worker = "w0"
	}
	anchor := s.judgments("a", alignet.TaskAnchor, "a", 600, 11)
	for _, c := range []struct {
		name, study string
		task        alignet.Task
		js          []alignet.Judgment
		distill     bool
		want        string
	}{
		{"repeats distilled", "r", alignet.TaskOddOneOut, js, true, "distilled"},
		{"distill off", "r", alignet.TaskOddOneOut, js, false, "hard"},
		{"no repeats", "r", alignet.TaskOddOneOut, single, true, "hard"},
		{"anchor", "a", alignet.TaskAnchor, anchor, true, "hard"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := memLearner(t, Config{})
			l.store = recordStore{js: c.js}
			_, st := memStudy(t, l, s, c.study, c.task, "")
			set := st.meta.Settings
			set.Learner.Distill, set.Learner.MaxIter = c.distill, 30
			res := l.runJob(context.Background(), job{study: c.study, task: c.task, roles: roles{settings: set}, sp: st.sp, fit: true, seen: int64(len(c.js))})
			if res.err != nil {
				t.Fatal(res.err)
			}
			if res.targets != c.want {
				t.Errorf("targets %q, want %q", res.targets, c.want)
			}
			if res.count != int64(len(c.js)) || res.read.len() != len(c.js) {
				t.Errorf("read %d (%d ids), want %d", res.count, res.read.len(), len(c.js))
			}
			train := map[uint64]bool{}
			for _, smp := range res.train {
				train[smp.hash] = true
			}
			held := 0
			for _, j := range c.js {
				h := alignet.HeldOut(c.study, j.ID, set.Learner.HeldOutShare)
				if h {
					held++
				}
				if train[alignet.IDHash(j.ID)] == h {
					t.Fatalf("judgment %s: held out %v, in the training set %v", j.ID, h, !h)
				}
			}
			if len(res.held) != held || len(res.train)+held != len(c.js) {
				t.Errorf("%d training + %d held-out judgments of %d (want %d held out)", len(res.train), len(res.held), len(c.js), held)
			}
			e := evaluate(res.teacher, st.sp.x, st.sp.dim, c.task, res.held)
			if !(e.Teacher.NLL < e.Raw.NLL) {
				t.Errorf("held-out NLL %v of the refit is not below the raw embeddings' %v", e.Teacher.NLL, e.Raw.NLL)
			}
		})
	}
}

// TestSelectLambdaExtendsTheGrid fits few judgments with a grid that is
// far too weak for them: the grid is extended upward, and the chosen
// teacher predicts held-out judgments better than the grid's best.
func TestSelectLambdaExtendsTheGrid(t *testing.T) {
	// The raw embeddings are the human representation: with few judgments
	// the identity is hard to beat.
	s := newSynthWith(40, 24, 13, 0)
	js := s.judgments("x", alignet.TaskOddOneOut, "x", 2600, 14)
	l := memLearner(t, Config{})
	_, st := memStudy(t, l, s, "x", alignet.TaskOddOneOut, "")
	var train, val, test []learner.Triplet
	for i := range js {
		tr, _, _ := st.sp.triplet(&js[i])
		switch {
		case i < 200:
			train = append(train, tr)
		case i < 600:
			val = append(val, tr)
		default:
			test = append(test, tr)
		}
	}
	cfg := learner.TeacherConfig{Task: learner.TaskOddOneOut, MaxIter: 50, Workers: 1}
	grid := []float64{1e-3}
	narrow, _, err := learner.SelectLambda(context.Background(), s.x, s.n, s.d, train, nil, val, nil, grid, cfg)
	if err != nil {
		t.Fatal(err)
	}
	wide, scores, err := selectLambda(context.Background(), s.x, s.n, s.d, train, nil, val, grid, cfg)
	if err != nil {
		t.Fatal(err)
	}
	nll := func(tc *learner.Teacher) float64 {
		return learner.NLL(learner.TaskOddOneOut, learner.AllLogits(tc.Transform(s.x, s.n), tc.P, test), tc.Tau)
	}
	t.Logf("grid %v: λ %g, test NLL %.4f; extended to %d values: λ %g, test NLL %.4f", grid, narrow.Lambda, nll(narrow), len(scores), wide.Lambda, nll(wide))
	if wide.Lambda <= grid[0] || len(scores) < 2 {
		t.Fatalf("the grid was not extended: λ %g from %d scores", wide.Lambda, len(scores))
	}
	if nll(wide) >= nll(narrow) {
		t.Fatalf("extended grid: test NLL %.4f, not below the narrow grid's %.4f", nll(wide), nll(narrow))
	}
}

// TestRefitSwapsOnlyWhenBetter hands the actor two refit results: one
// whose teacher predicts the held-out judgments worse than the serving
// teacher (it stays, and no version is stored), and one that predicts
// them better (it is swapped in and versioned).
func TestRefitSwapsOnlyWhenBetter(t *testing.T) {
	s := newSynthWith(30, 8, 15, 0) // the raw embeddings are the truth
	l := memLearner(t, Config{})
	p, st := memStudy(t, l, s, "w", alignet.TaskOddOneOut, "")
	js := s.judgments("w", alignet.TaskOddOneOut, "w", 2000, 16)
	var held []sample
	for i := range js {
		tr, _, _ := st.sp.triplet(&js[i])
		held = append(held, sample{t: tr, hash: alignet.IDHash(js[i].ID), worker: uint64(i)})
	}
	good := st.served.Clone() // the calibrated identity: close to the truth
	good.Tau = learner.CalibrateTemperature(learner.TaskOddOneOut, logitsOf(good, st.sp.x, tripletsOf(held)), nil)
	bad := good.Clone()
	for i := range bad.W {
		bad.W[i] = float64(i%7) - 3 // a scrambled transform
	}
	result := func(tc *learner.Teacher) jobResult {
		st.job = &jobRun{seenAtStart: 1}
		return jobResult{study: "w", fit: true, teacher: tc, targets: "hard", held: held, read: newIDSet(0), count: 2000}
	}
	st.served = good.Clone()
	p.finishJob(result(bad))
	if !slices.Equal(st.served.W, good.W) || len(p.versions) != 0 || st.st.Status == alignet.TeacherFitted {
		t.Fatal("a refit worse on the held-out judgments replaced the serving teacher")
	}
	st.served = bad.Clone()
	p.finishJob(result(good))
	if !slices.Equal(st.served.W, good.W) || len(p.versions) != 1 || st.st.Status != alignet.TeacherFitted {
		t.Fatalf("a better refit was not swapped in: %d versions, status %s", len(p.versions), st.st.Status)
	}
}

func tripletsOf(hs []sample) []learner.Triplet {
	out := make([]learner.Triplet, len(hs))
	for i, h := range hs {
		out[i] = h.t
	}
	return out
}
