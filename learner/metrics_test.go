package learner

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestCollapsedRepresentationScoresZero checks that a representation with
// identical rows (all logits tied) is never credited.
func TestCollapsedRepresentationScoresZero(t *testing.T) {
	const n, p = 10, 3
	z := make([]float32, n*p)
	for i := range z {
		z[i] = 0.5
	}
	ts := []Triplet{{0, 1, 2}, {3, 4, 5}, {6, 7, 8}, {9, 0, 1}}
	for _, task := range []Task{TaskOddOneOut, TaskAnchor} {
		if acc := Accuracy(task, z, p, ts); acc != 0 {
			t.Fatalf("%s: collapsed accuracy %v, want 0", task, acc)
		}
	}
	zero := make([]float32, n*p)
	if acc := Accuracy(TaskOddOneOut, zero, p, ts); acc > 1.0/3 {
		t.Fatalf("zero representation accuracy %v above chance", acc)
	}
}

// TestAccuracyByHand checks accuracy on items placed on a line.
func TestAccuracyByHand(t *testing.T) {
	// 1-d representation: item values 1, 2, −3. Dot products: s01=2, s02=−3, s12=−6.
	z := []float32{1, 2, -3}
	cases := []struct {
		tr   Triplet
		want bool
	}{
		{Triplet{0, 1, 2}, true},  // pair (0,1) has the largest dot product
		{Triplet{0, 2, 1}, false}, // claims (0,2) most similar
		{Triplet{2, 1, 0}, false},
		{Triplet{1, 0, 2}, true},
	}
	for _, c := range cases {
		if got := Correct(TaskOddOneOut, Logits(z, 1, c.tr)); got != c.want {
			t.Fatalf("%v: correct=%v want %v", c.tr, got, c.want)
		}
	}
	ts := []Triplet{cases[0].tr, cases[1].tr, cases[2].tr, cases[3].tr}
	if acc := Accuracy(TaskOddOneOut, z, 1, ts); acc != 0.5 {
		t.Fatalf("accuracy %v, want 0.5", acc)
	}
	// Anchor: head 0, close 1 (s=2), far 2 (s=−3): correct; reversed: wrong.
	if acc := Accuracy(TaskAnchor, z, 1, []Triplet{{0, 1, 2}, {0, 2, 1}}); acc != 0.5 {
		t.Fatalf("anchor accuracy %v, want 0.5", acc)
	}
}

// TestNLLAndECEByHand checks NLL and ECE on logits with known
// probabilities.
func TestNLLAndECEByHand(t *testing.T) {
	// softmax(ln 6, ln 3, ln 1) = (0.6, 0.3, 0.1); softmax(ln 1, ln 8, ln 1) = (0.1, 0.8, 0.1).
	ls := [][3]float64{{math.Log(6), math.Log(3), 0}, {0, math.Log(8), 0}}
	want := -(math.Log(0.6) + math.Log(0.1)) / 2
	if got := NLL(TaskOddOneOut, ls, 1); math.Abs(got-want) > 1e-12 {
		t.Fatalf("NLL %v, want %v", got, want)
	}
	// Confidence 0.6 (correct) and 0.8 (wrong) fall in different bins:
	// ECE = ½|0.6 − 1| + ½|0.8 − 0| = 0.6.
	ece, bins := ECE(TaskOddOneOut, ls, 1, 10)
	if math.Abs(ece-0.6) > 1e-12 {
		t.Fatalf("ECE %v, want 0.6", ece)
	}
	total := 0
	for _, b := range bins {
		total += b.Count
	}
	if total != 2 || len(bins) != 10 {
		t.Fatalf("bins %+v", bins)
	}
}

// TestRepeatMetricsByHand checks KLHuman and MajorityAgreement.
func TestRepeatMetricsByHand(t *testing.T) {
	// Items 0 and 1 similar, 2 far: the model says item 2 is odd.
	z := []float32{1, 0, 0.9, 0.1, -1, 0}
	reps := []RepeatedTriplet{
		{Items: [3]int32{0, 1, 2}, Counts: [3]int32{0, 0, 10}}, // humans: 2 odd (agree)
		{Items: [3]int32{2, 0, 1}, Counts: [3]int32{6, 2, 2}},  // humans: 2 odd (agree)
		{Items: [3]int32{0, 1, 2}, Counts: [3]int32{8, 1, 1}},  // humans: 0 odd (disagree)
		{Items: [3]int32{0, 1, 2}, Counts: [3]int32{5, 5, 0}},  // no strict majority: skipped
	}
	if got := MajorityAgreement(reps, z, 2); math.Abs(got-2.0/3) > 1e-12 {
		t.Fatalf("majority agreement %v, want 2/3", got)
	}
	// KL of a human distribution equal to the model's is zero.
	pm := Softmax3(Logits(z, 2, Triplet{0, 1, 2}), 1) // (2 odd, 1 odd, 0 odd)
	c := [3]int32{int32(math.Round(pm[2] * 1e6)), int32(math.Round(pm[1] * 1e6)), int32(math.Round(pm[0] * 1e6))}
	if kl := KLHuman([]RepeatedTriplet{{Items: [3]int32{0, 1, 2}, Counts: c}}, z, 2, 1); math.Abs(kl) > 1e-9 {
		t.Fatalf("KL of matching distributions %v", kl)
	}
	// One-hot humans: KL = −log p_model(item 2 odd).
	kl := KLHuman(reps[:1], z, 2, 1)
	if math.Abs(kl+math.Log(pm[0])) > 1e-12 {
		t.Fatalf("KL %v, want %v", kl, -math.Log(pm[0]))
	}
}

// TestLevelsByHand checks the multi-label level rules.
func TestLevelsByHand(t *testing.T) {
	cats := [][]int32{{0}, {0, 3}, {1}, {0, 1}, {2}}
	if l := TripletLevel(Triplet{0, 1, 2}, cats); l != "coarse" {
		t.Fatalf("pair shares 0, odd has 1: %q", l)
	}
	if l := TripletLevel(Triplet{0, 1, 3}, cats); l != "fine" {
		t.Fatalf("all share 0: %q", l)
	}
	if l := TripletLevel(Triplet{0, 2, 1}, cats); l != "" {
		t.Fatalf("pair shares nothing: %q", l)
	}
	// 1-d representation: the coarse triplet (0,1,2) is predicted, the fine one (0,1,3) is not (s13 is largest).
	z := []float32{1, 1.1, -1, 2, -2}
	lv := LevelAccuracy(z, 1, []Triplet{{0, 1, 2}, {0, 1, 3}, {2, 4, 0}}, cats)
	if lv.NCoarse != 1 || lv.NFine != 1 || lv.Coarse != 1 || lv.Fine != 0 {
		t.Fatalf("levels %+v", lv)
	}
}

// TestSpearmanTies checks Spearman with tied ranks against a value computed
// by hand: ranks (1, 2.5, 2.5, 4) and (1, 2, 3, 4) give 4.5/√22.5.
func TestSpearmanTies(t *testing.T) {
	got := SpearmanRSA([]float64{1, 2, 2, 3}, []float64{10, 20, 30, 40})
	if want := 4.5 / math.Sqrt(22.5); math.Abs(got-want) > 1e-12 {
		t.Fatalf("Spearman %v, want %v", got, want)
	}
	if r := SpearmanRSA([]float64{3, 1, 2}, []float64{30, 10, 20}); math.Abs(r-1) > 1e-12 {
		t.Fatalf("monotone Spearman %v", r)
	}
	if u := UpperTriangle([]float64{0, 1, 2, 1, 0, 3, 2, 3, 0}, 3); len(u) != 3 || u[0] != 1 || u[1] != 2 || u[2] != 3 {
		t.Fatalf("upper triangle %v", u)
	}
}

// TestCalibrateTemperatureRecoversTau samples choices from softmax(l/τ) and
// checks that the calibrated temperature is close to τ.
func TestCalibrateTemperatureRecoversTau(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, tau := range []float64{0.25, 1, 4} {
		var ls [][3]float64
		for len(ls) < 20000 {
			l := randLogits(rng, 2)
			pr := Softmax3(l, tau)
			u := rng.Float64()
			// Reorder the logits so that the sampled outcome sits at index 0
			// (the observed choice), as for real triplets.
			switch {
			case u < pr[0]:
			case u < pr[0]+pr[1]:
				l = [3]float64{l[1], l[0], l[2]}
			default:
				l = [3]float64{l[2], l[1], l[0]}
			}
			ls = append(ls, l)
		}
		got := CalibrateTemperature(TaskOddOneOut, ls, nil)
		if math.Abs(math.Log(got/tau)) > 0.08 {
			t.Fatalf("calibrated τ %v, want about %v", got, tau)
		}
	}
}
