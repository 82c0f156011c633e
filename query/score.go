package query

import (
	"fmt"
	"math"
	"slices"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// Scoring holds what a scorer needs besides the candidates.
type Scoring struct {
	// Scorer is alignet.ScorerEntropy, ScorerInfoGain or
	// ScorerDisagreement.
	Scorer string
	// Teacher is the current teacher.
	Teacher *Teacher
	// Counts are the judgments seen per item of Teacher (same order); the
	// information-gain scorer's posterior narrows with them. Nil means
	// none.
	Counts []int32
	// Student is the registered student's representation of the same items
	// (same order as Teacher.Items) for the disagreement scorer; nil while
	// there is none.
	Student *Teacher
}

// Confident is a triplet on which the teacher is near-certain.
type Confident struct {
	// Index is the triplet's index in the scored slice.
	Index int
	// Slot is the most probable outcome in the TaskProbs layout: for
	// odd-one-out 0 means K is odd, 1 J, 2 I; for anchor 0 means J is
	// closer to the head, 1 K.
	Slot int
	// Prob is its probability.
	Prob float64
}

// scorer is a Scoring prepared for repeated use: the information-gain
// posterior is computed once.
type scorer struct {
	s    Scoring
	post posterior
}

// prepare validates s and precomputes what its scorer needs.
func (s Scoring) prepare() (*scorer, error) {
	if err := s.Teacher.Validate(); err != nil {
		return nil, err
	}
	sc := &scorer{s: s}
	switch s.Scorer {
	case alignet.ScorerEntropy:
	case alignet.ScorerInfoGain:
		sc.post = newPosterior(s.Teacher, s.Counts)
	case alignet.ScorerDisagreement:
		if s.Student == nil {
			return nil, ErrNoStudent
		}
		if err := s.Student.Validate(); err != nil {
			return nil, fmt.Errorf("student: %w", err)
		}
		if s.Student.N() != s.Teacher.N() {
			return nil, fmt.Errorf("student has %d items, teacher %d", s.Student.N(), s.Teacher.N())
		}
	default:
		return nil, fmt.Errorf("unknown scorer %q", s.Scorer)
	}
	return sc, nil
}

// value scores triplet tr from its teacher logits l and, for the
// disagreement scorer, its student logits ls.
func (sc *scorer) value(tr learner.Triplet, l, ls [3]float32) float64 {
	t := sc.s.Teacher
	switch sc.s.Scorer {
	case alignet.ScorerInfoGain:
		return sc.post.infoGain(tr, l)
	case alignet.ScorerDisagreement:
		return jsDivergence(probs(t.Task, l, t.Tau), probs(t.Task, ls, sc.s.Student.Tau))
	}
	return entropy(t.Task, l, t.Tau)
}

// one scores a single triplet exactly as Score does among many.
func (sc *scorer) one(tr learner.Triplet) float64 {
	var l, ls [1][3]float32
	ts := []learner.Triplet{tr}
	learner.TripletDots(sc.s.Teacher.Z, sc.s.Teacher.P, ts, l[:])
	if sc.s.Student != nil {
		learner.TripletDots(sc.s.Student.Z, sc.s.Student.P, ts, ls[:])
	}
	return float64(float32(sc.value(tr, l[0], ls[0])))
}

// Score returns the scores of ts and, when minConf is at most 1, the
// triplets on which the teacher's most probable outcome has probability at
// least minConf, at most maxConfident of them, most confident first.
//
// Scores are non-negative; larger means more informative:
//
//   - entropy: the teacher's predictive entropy H(p) in nats;
//   - infogain: BALD, the mutual information H(E p) − E H(p) between the
//     outcome and the teacher under a posterior over item representations
//     (see posterior);
//   - disagreement: the Jensen–Shannon divergence between the teacher's and
//     the student's outcome distributions; ErrNoStudent without a student.
func (s Scoring) Score(ts []learner.Triplet, minConf float64, maxConfident int) ([]float32, []Confident, error) {
	sc, err := s.prepare()
	if err != nil {
		return nil, nil, err
	}
	scores, conf := sc.batch(ts, minConf, maxConfident)
	return scores, conf, nil
}

// ScoreOne scores one triplet exactly as Score scores it among many.
func (s Scoring) ScoreOne(tr learner.Triplet) (float64, error) {
	sc, err := s.prepare()
	if err != nil {
		return 0, err
	}
	return sc.one(tr), nil
}

// block is the number of triplets scored by one task of a parallel pass.
const block = 4096

func (sc *scorer) batch(ts []learner.Triplet, minConf float64, maxConfident int) ([]float32, []Confident) {
	t := sc.s.Teacher
	logits := make([][3]float32, len(ts))
	logitsOf(t, ts, logits)
	var student [][3]float32
	if sc.s.Scorer == alignet.ScorerDisagreement {
		student = make([][3]float32, len(ts))
		logitsOf(sc.s.Student, ts, student)
	}
	scores := make([]float32, len(ts))
	want := minConf <= 1 && maxConfident > 0
	blocks := make([][]Confident, (len(ts)+block-1)/block)
	parallel(len(ts), block, func(lo, hi int) {
		var mine []Confident
		var ls [3]float32
		for a := lo; a < hi; a++ {
			if student != nil {
				ls = student[a]
			}
			var slot int
			var p float64
			switch {
			case !want:
				scores[a] = float32(sc.value(ts[a], logits[a], ls))
				continue
			case sc.s.Scorer == alignet.ScorerEntropy:
				var h float64
				h, slot, p = entropyTop(t.Task, logits[a], t.Tau)
				scores[a] = float32(h)
			default:
				scores[a] = float32(sc.value(ts[a], logits[a], ls))
				slot, p = topOutcome(t.Task, logits[a], t.Tau)
			}
			if p >= minConf {
				mine = append(mine, Confident{Index: a, Slot: slot, Prob: p})
			}
		}
		blocks[lo/block] = mine
	})
	if !want {
		return scores, nil
	}
	var conf []Confident
	for _, b := range blocks {
		conf = append(conf, b...)
	}
	slices.SortFunc(conf, func(a, b Confident) int {
		switch {
		case a.Prob > b.Prob:
			return -1
		case a.Prob < b.Prob:
			return 1
		}
		return a.Index - b.Index
	})
	return scores, conf[:min(len(conf), maxConfident)]
}

// probs returns the outcome distribution of the logits l at temperature
// tau in the TaskProbs layout.
func probs(task learner.Task, l [3]float32, tau float64) [3]float64 {
	return learner.TaskProbs(task, [3]float64{float64(l[0]), float64(l[1]), float64(l[2])}, tau)
}

// topOutcome returns the most probable outcome's slot (TaskProbs layout)
// and probability at logits l and temperature tau.
func topOutcome(task learner.Task, l [3]float32, tau float64) (int, float64) {
	if task == learner.TaskAnchor {
		d := (float64(l[0]) - float64(l[1])) / tau
		if d >= 0 {
			return 0, 1 / (1 + math.Exp(-d))
		}
		return 1, 1 / (1 + math.Exp(d))
	}
	best := 0
	for c := 1; c < 3; c++ {
		if l[c] > l[best] {
			best = c
		}
	}
	m := float64(l[best])
	s := 0.0
	for _, v := range l {
		s += expOrOne((float64(v) - m) / tau)
	}
	return best, 1 / s
}

// entropyTop returns entropy(task, l, tau) and topOutcome(task, l, tau)
// from one set of exponentials.
func entropyTop(task learner.Task, l [3]float32, tau float64) (float64, int, float64) {
	if task == learner.TaskAnchor {
		d := (float64(l[0]) - float64(l[1])) / tau
		e := math.Exp(-math.Abs(d))
		h := math.Log1p(e) + math.Abs(d)*e/(1+e)
		if d >= 0 {
			return h, 0, 1 / (1 + e)
		}
		return h, 1, 1 / (1 + e)
	}
	best := 0
	for c := 1; c < 3; c++ {
		if l[c] > l[best] {
			best = c
		}
	}
	m := float64(l[best]) / tau
	var s, dot float64
	for _, v := range l {
		x := float64(v)/tau - m
		e := expOrOne(x)
		s += e
		dot += x * e
	}
	return math.Log(s) - dot/s, best, 1 / s
}

// entropy returns the entropy in nats of the task's outcome distribution
// at logits l and temperature tau, with one logarithm and at most two
// exponentials.
func entropy(task learner.Task, l [3]float32, tau float64) float64 {
	if task == learner.TaskAnchor {
		// p = 1/(1+e^−d), H = log(1+e^−d) + d·e^−d/(1+e^−d).
		d := math.Abs(float64(l[0])-float64(l[1])) / tau
		e := math.Exp(-d)
		return math.Log1p(e) + d*e/(1+e)
	}
	a, b, c := float64(l[0])/tau, float64(l[1])/tau, float64(l[2])/tau
	m := math.Max(a, math.Max(b, c))
	a, b, c = a-m, b-m, c-m // one of them is 0
	ea, eb, ec := expOrOne(a), expOrOne(b), expOrOne(c)
	s := ea + eb + ec
	return math.Log(s) - (a*ea+b*eb+c*ec)/s
}

// expOrOne is math.Exp that skips the call for 0.
func expOrOne(x float64) float64 {
	if x == 0 {
		return 1
	}
	return math.Exp(x)
}

// entropyOf returns the entropy of a distribution over three outcomes.
func entropyOf(p [3]float64) float64 {
	var h float64
	for _, v := range p {
		if v > 0 {
			h -= v * math.Log(v)
		}
	}
	return h
}

// jsDivergence returns the Jensen–Shannon divergence in nats.
func jsDivergence(p, q [3]float64) float64 {
	var m [3]float64
	for c := range m {
		m[c] = (p[c] + q[c]) / 2
	}
	return math.Max(0, entropyOf(m)-(entropyOf(p)+entropyOf(q))/2)
}
