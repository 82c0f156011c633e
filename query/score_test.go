package query

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

func TestEntropyMatchesLearnerProbabilities(t *testing.T) {
	for _, task := range []learner.Task{learner.TaskOddOneOut, learner.TaskAnchor} {
		teacher := randomTeacher(40, 6, 0.8, 3, 0)
		teacher.Task, teacher.Tau = task, 0.7
		ts := Candidates(task, 40, 3000, 2)
		scores, _, err := Scoring{Scorer: alignet.ScorerEntropy, Teacher: teacher}.Score(ts, 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		for a, tr := range ts {
			p := learner.TaskProbs(task, learner.Logits(teacher.Z, teacher.P, tr), teacher.Tau)
			if h := entropyOf(p); math.Abs(h-float64(scores[a])) > 1e-5 {
				t.Fatalf("%s %v: score %g, entropy %g", task, tr, scores[a], h)
			}
			one, _ := Scoring{Scorer: alignet.ScorerEntropy, Teacher: teacher}.ScoreOne(tr)
			if math.Abs(one-float64(scores[a])) > 1e-5 {
				t.Fatalf("%s %v: ScoreOne %g, Score %g", task, tr, one, scores[a])
			}
		}
	}
}

// TestInfoGain checks BALD's properties: it is non-negative, at most the
// entropy of a uniform outcome, shrinks as judgments narrow the posterior, and is
// largest where the teacher's items are uncertain.
func TestInfoGain(t *testing.T) {
	for _, task := range []learner.Task{learner.TaskOddOneOut, learner.TaskAnchor} {
		teacher := randomTeacher(30, 6, 0.8, 4, 0)
		teacher.Task = task
		ts := Candidates(task, 30, 2000, 3)
		none, _, err := Scoring{Scorer: alignet.ScorerInfoGain, Teacher: teacher}.Score(ts, 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		maxH := math.Log(3)
		if task == learner.TaskAnchor {
			maxH = math.Ln2
		}
		counts := make([]int32, 30)
		for i := range counts {
			counts[i] = 100
		}
		counts[0] = 0 // item 0 stays unknown
		many, _, _ := Scoring{Scorer: alignet.ScorerInfoGain, Teacher: teacher, Counts: counts}.Score(ts, 2, 0)
		var withItem0, without float64
		var nWith, nWithout int
		for a, tr := range ts {
			if none[a] < 0 || float64(none[a]) > maxH+1e-6 {
				t.Fatalf("%s %v: infogain %g outside [0, %g]", task, tr, none[a], maxH)
			}
			if tr.I == 0 || tr.J == 0 || tr.K == 0 {
				withItem0 += float64(many[a])
				nWith++
				continue
			}
			if many[a] > none[a]+1e-7 {
				t.Fatalf("%s %v: infogain grew from %g to %g with judgments", task, tr, none[a], many[a])
			}
			without += float64(many[a])
			nWithout++
		}
		if withItem0/float64(nWith) < 3*without/float64(nWithout) {
			t.Fatalf("%s: triplets with the unjudged item score %g on average, others %g", task, withItem0/float64(nWith), without/float64(nWithout))
		}
	}
}

func TestDisagreement(t *testing.T) {
	teacher := randomTeacher(20, 4, 1, 5, 0)
	ts := Candidates(learner.TaskOddOneOut, 20, 500, 1)
	if _, _, err := (Scoring{Scorer: alignet.ScorerDisagreement, Teacher: teacher}).Score(ts, 2, 0); !errors.Is(err, ErrNoStudent) {
		t.Fatalf("disagreement without a student: %v, want ErrNoStudent", err)
	}
	same, _, err := Scoring{Scorer: alignet.ScorerDisagreement, Teacher: teacher, Student: teacher}.Score(ts, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	other := randomTeacher(20, 4, 1, 6, 0)
	diff, _, _ := Scoring{Scorer: alignet.ScorerDisagreement, Teacher: teacher, Student: other}.Score(ts, 2, 0)
	sum := 0.0
	for a := range ts {
		if same[a] > 1e-6 {
			t.Fatalf("teacher disagrees with itself on %v: %g", ts[a], same[a])
		}
		if diff[a] < 0 || diff[a] > float32(math.Ln2)+1e-6 {
			t.Fatalf("JS divergence %g outside [0, ln 2]", diff[a])
		}
		sum += float64(diff[a])
	}
	if sum == 0 {
		t.Fatal("two different models never disagree")
	}
	// The engine falls back to entropy and says why.
	e := newTestEngine(t, func(c *Config) { c.Settings.Scorer, c.Settings.Student = alignet.ScorerDisagreement, "w2v" })
	st, err := e.SetTeacher(teacher, nil)
	if err != nil || !errors.Is(st.Fallback, ErrNoStudent) || st.Scorer != alignet.ScorerEntropy {
		t.Fatalf("SetTeacher without a student = %+v, %v", st, err)
	}
}

func TestTopOutcomeMatchesProbs(t *testing.T) {
	for _, task := range []learner.Task{learner.TaskOddOneOut, learner.TaskAnchor} {
		teacher := randomTeacher(25, 5, 1.2, 8, 0)
		for _, tr := range Candidates(task, 25, 1000, 4) {
			l := learner.Logits(teacher.Z, teacher.P, tr)
			l32 := [3]float32{float32(l[0]), float32(l[1]), float32(l[2])}
			p := probs(task, l32, 0.8)
			slot, pr := topOutcome(task, l32, 0.8)
			if math.Abs(pr-p[slot]) > 1e-9 || p[slot] < p[0] || p[slot] < p[1] || p[slot] < p[2] {
				t.Fatalf("%s: topOutcome = %d, %g; probabilities %v", task, slot, pr, p)
			}
		}
	}
}

// TestGramAndDotPathsAgree scores the same triplets through both logit
// paths (the Gram path is taken for many triplets over few items).
func TestGramAndDotPathsAgree(t *testing.T) {
	for _, task := range []learner.Task{learner.TaskOddOneOut, learner.TaskAnchor} {
		teacher := randomTeacher(40, 20, 0.5, 9, 0)
		teacher.Task = task
		many := Candidates(task, 40, 5000, 1) // 40² ≤ 3·5000: Gram
		gram := make([][3]float32, len(many))
		logitsOf(teacher, many, gram)
		for a, tr := range many {
			want := learner.Logits(teacher.Z, teacher.P, tr)
			for c := range want {
				if math.Abs(float64(gram[a][c])-want[c]) > 1e-4*(1+math.Abs(want[c])) {
					t.Fatalf("%s %v: Gram path logits %v, want %v", task, tr, gram[a], want)
				}
			}
		}
	}
}

// TestInfoGainMatchesMonteCarlo checks the posterior's closed-form logit
// covariance and cubature against Monte Carlo: item representations are
// drawn from the posterior itself (z_i + σ_i ε_i), their triplet
// distributions averaged, and BALD computed from the samples.
func TestInfoGainMatchesMonteCarlo(t *testing.T) {
	teacher := randomTeacher(12, 5, 0.9, 21, 0)
	counts := make([]int32, 12)
	for i := range counts {
		counts[i] = int32(4 + 3*i)
	}
	post := newPosterior(teacher, counts)
	rng := rand.New(rand.NewPCG(5, 6))
	p := teacher.P
	for _, tr := range Candidates(learner.TaskOddOneOut, 12, 6, 8) {
		var l [1][3]float32
		learner.TripletDots(teacher.Z, p, []learner.Triplet{tr}, l[:])
		got := post.infoGain(tr, l[0])
		const draws = 200000
		var pm [3]float64
		var eh float64
		zs := make([]float32, 3*p)
		for range draws {
			for a, it := range [3]int32{tr.I, tr.J, tr.K} {
				sd := math.Sqrt(post.sigma2[it])
				for k := 0; k < p; k++ {
					zs[a*p+k] = teacher.Z[int(it)*p+k] + float32(sd*rng.NormFloat64())
				}
			}
			pr := learner.Softmax3(learner.Logits(zs, p, learner.Triplet{I: 0, J: 1, K: 2}), teacher.Tau)
			for c := range pm {
				pm[c] += pr[c] / draws
			}
			eh += entropyOf(pr) / draws
		}
		want := entropyOf(pm) - eh
		if math.Abs(got-want) > 0.05*want+0.0005 {
			t.Errorf("%v: cubature BALD %.4f, Monte Carlo %.4f", tr, got, want)
		}
	}
}

func TestEntropyTopMatches(t *testing.T) {
	for _, task := range []learner.Task{learner.TaskOddOneOut, learner.TaskAnchor} {
		teacher := randomTeacher(25, 5, 1.2, 8, 0)
		for _, tr := range Candidates(task, 25, 1000, 4) {
			l := learner.Logits(teacher.Z, teacher.P, tr)
			l32 := [3]float32{float32(l[0]), float32(l[1]), float32(l[2])}
			h, slot, p := entropyTop(task, l32, 0.8)
			wslot, wp := topOutcome(task, l32, 0.8)
			if math.Abs(h-entropy(task, l32, 0.8)) > 1e-12 || slot != wslot || math.Abs(p-wp) > 1e-12 {
				t.Fatalf("%s: entropyTop = %g, %d, %g; want %g, %d, %g", task, h, slot, p, entropy(task, l32, 0.8), wslot, wp)
			}
		}
	}
}
