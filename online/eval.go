package online

import (
	"math"
	"slices"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// evaluate scores teacher t and the raw embeddings (dot products at τ=1)
// on held-out judgments over the rows of x. For odd-one-out it adds
// KL(human‖model) and majority agreement on the item sets that several
// distinct workers answered.
func evaluate(t *learner.Teacher, x []float32, d int, task alignet.Task, held []sample) alignet.TeacherEval {
	ts := make([]learner.Triplet, len(held))
	for i, h := range held {
		ts[i] = h.t
	}
	var reps []learner.RepeatedTriplet
	if task == alignet.TaskOddOneOut {
		reps = repeats(held)
	}
	// One compact index over the held-out triplets and the repeated sets.
	all := append(slices.Clone(ts), make([]learner.Triplet, len(reps))...)
	for i, r := range reps {
		all[len(ts)+i] = learner.RepeatTriplet(r)
	}
	rows, local := learner.Compact(all)
	localReps := make([]learner.RepeatedTriplet, len(reps))
	for i, r := range reps {
		l := local[len(ts)+i]
		localReps[i] = learner.RepeatedTriplet{Items: [3]int32{l.I, l.J, l.K}, Counts: r.Counts}
	}
	raw := make([]float32, len(rows)*d)
	for i, r := range rows {
		copy(raw[i*d:(i+1)*d], x[int(r)*d:int(r+1)*d])
	}
	return alignet.TeacherEval{
		Teacher: scoreOn(learner.Task(task), t.Transform(raw, len(rows)), t.P, local[:len(ts)], localReps, t.Tau),
		Raw:     scoreOn(learner.Task(task), raw, d, local[:len(ts)], localReps, 1),
	}
}

// lossDiff returns the mean, over held-out judgments, of the log-loss of
// teacher a minus that of teacher b (each at its own temperature), and the
// standard error of that mean; 0, 0 without judgments.
func lossDiff(a, b *learner.Teacher, x []float32, task alignet.Task, held []sample) (mean, se float64) {
	if len(held) < 2 {
		return 0, 0
	}
	ts := make([]learner.Triplet, len(held))
	for i, h := range held {
		ts[i] = h.t
	}
	la, lb := logitsOf(a, x, ts), logitsOf(b, x, ts)
	var s, ss float64
	for i := range ts {
		ca, _ := learner.TaskCrossEntropy(learner.Task(task), la[i], a.Tau, learner.HardTarget)
		cb, _ := learner.TaskCrossEntropy(learner.Task(task), lb[i], b.Tau, learner.HardTarget)
		s += ca - cb
		ss += (ca - cb) * (ca - cb)
	}
	n := float64(len(ts))
	mean = s / n
	return mean, math.Sqrt(max(ss/n-mean*mean, 0) / (n - 1))
}

// scoreOn computes the held-out metrics of the representation z (rows×p).
func scoreOn(task learner.Task, z []float32, p int, ts []learner.Triplet, reps []learner.RepeatedTriplet, tau float64) alignet.TeacherMetrics {
	m := alignet.TeacherMetrics{N: len(ts)}
	if len(ts) == 0 {
		return m
	}
	ls := learner.AllLogits(z, p, ts)
	m.Accuracy = learner.AccuracyFromLogits(task, ls)
	m.NLL = learner.NLL(task, ls, tau)
	m.ECE, _ = learner.ECE(task, ls, tau, 10)
	if len(reps) > 0 {
		kl := learner.KLHuman(reps, z, p, tau)
		m.Repeats, m.KLHuman = len(reps), &kl
		if maj := learner.MajorityAgreement(reps, z, p); !math.IsNaN(maj) {
			m.Majority = &maj
		}
	}
	return m
}

// setKey is a triplet's unordered item set.
func setKey(t learner.Triplet) [3]int32 {
	k := [3]int32{t.I, t.J, t.K}
	slices.Sort(k[:])
	return k
}

// repeats returns the repeated triplets among held-out judgments.
func repeats(held []sample) []learner.RepeatedTriplet {
	ts := make([]learner.Triplet, len(held))
	ws := make([]uint64, len(held))
	for i, h := range held {
		ts[i], ws[i] = h.t, h.worker
	}
	return repeatsOf(ts, ws)
}

// repeatsOf groups odd-one-out judgments (ts, answered by workers) by item
// set and returns the sets answered by at least two distinct workers, with
// how often each item was chosen as the odd one, sorted by item set.
func repeatsOf(ts []learner.Triplet, workers []uint64) []learner.RepeatedTriplet {
	type group struct {
		counts [3]int32
		first  uint64 // the first worker
		multi  bool   // another worker answered too
	}
	groups := make(map[[3]int32]*group, len(ts))
	for i, t := range ts {
		k := setKey(t)
		g := groups[k]
		if g == nil {
			g = &group{first: workers[i]}
			groups[k] = g
		}
		g.counts[slices.Index(k[:], t.K)]++
		g.multi = g.multi || workers[i] != g.first
	}
	var out []learner.RepeatedTriplet
	for k, g := range groups {
		if g.multi {
			out = append(out, learner.RepeatedTriplet{Items: k, Counts: g.counts})
		}
	}
	slices.SortFunc(out, func(a, b learner.RepeatedTriplet) int {
		for i := range 3 {
			if a.Items[i] != b.Items[i] {
				return int(a.Items[i] - b.Items[i])
			}
		}
		return 0
	})
	return out
}
