package learner

import (
	"bufio"
	"context"
	"encoding/csv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/alignet/alignet/internal/testenv"
	"github.com/alignet/alignet/npy"
)

// distillThingsData is the THINGS odd-one-out data used by the proof tests.
type distillThingsData struct {
	n, d    int
	x       []float32
	train   []Triplet
	repeats []RepeatedTriplet
}

// loadDistillThings reads the THINGS data or skips the test when the folder is
// missing.
func loadDistillThings(t testing.TB) *distillThingsData {
	t.Helper()
	distillThingsDir := testenv.SharedData(t, "things")
	f, err := os.Open(filepath.Join(distillThingsDir, "clip_vit_b32.npy"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	x, shape, err := npy.ReadFloat32(bufio.NewReader(f))
	if err != nil {
		t.Fatalf("read clip features: %v", err)
	}
	if len(shape) != 2 {
		t.Fatalf("clip features have shape %v", shape)
	}
	td := &distillThingsData{n: shape[0], d: shape[1], x: x}

	tf, err := os.Open(filepath.Join(distillThingsDir, "triplets_train.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	sc := bufio.NewScanner(tf)
	for line := 1; sc.Scan(); line++ {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		if len(fs) < 3 {
			t.Fatalf("triplets line %d: %q", line, sc.Text())
		}
		var v [3]int32
		for a := 0; a < 3; a++ {
			k, err := strconv.Atoi(fs[a])
			if err != nil || k < 0 || k >= td.n {
				t.Fatalf("triplets line %d: bad item %q", line, fs[a])
			}
			v[a] = int32(k)
		}
		td.train = append(td.train, Triplet{I: v[0], J: v[1], K: v[2]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	rf, err := os.Open(filepath.Join(distillThingsDir, "repeats_dev.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	rows, err := csv.NewReader(rf).ReadAll()
	if err != nil {
		t.Fatalf("read repeats: %v", err)
	}
	for i, row := range rows {
		if i == 0 {
			continue // header
		}
		if len(row) != 6 {
			t.Fatalf("repeats row %d has %d fields", i, len(row))
		}
		var r RepeatedTriplet
		for a := 0; a < 6; a++ {
			k, err := strconv.Atoi(strings.TrimSpace(row[a]))
			if err != nil || k < 0 {
				t.Fatalf("repeats row %d: bad field %q", i, row[a])
			}
			if a < 3 {
				r.Items[a] = int32(k)
			} else {
				r.Counts[a-3] = int32(k)
			}
		}
		td.repeats = append(td.repeats, r)
	}
	return td
}

// distillRaceEnabled reports whether the test binary was built with -race.
func distillRaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, st := range bi.Settings {
		if st.Key == "-race" {
			return st.Value == "true"
		}
	}
	return false
}

// distillItemSetKey identifies the unordered item set of a triplet.
func distillItemSetKey(a, b, c int32) [3]int32 {
	if a > b {
		a, b = b, a
	}
	if b > c {
		b, c = c, b
	}
	if a > b {
		a, b = b, a
	}
	return [3]int32{a, b, c}
}

// distillRepeatNLL returns the mean negative log-likelihood per human response of
// the repeated triplets under the model probabilities probs (Softmax3 order
// of RepeatTriplet).
func distillRepeatNLL(reps []RepeatedTriplet, probs [][3]float64) float64 {
	var s, c float64
	for a, r := range reps {
		h := [3]float64{float64(r.Counts[2]), float64(r.Counts[1]), float64(r.Counts[0])}
		for k := range h {
			if h[k] > 0 {
				s -= h[k] * math.Log(probs[a][k])
				c += h[k]
			}
		}
	}
	return s / c
}

// distillProofResult holds the figures of one teacher in the proof.
type distillProofResult struct {
	lambda, tau, acc, ece, repNLL, repKL float64
}

// distillProofSplits are the seeded splits of the THINGS proof.
type distillProofSplits struct {
	fit, val, test    []Triplet
	repFit, repEval   []RepeatedTriplet
	droppedForRepEval int
}

// distillSplitThings splits the repeated triplets in halves by triplet (repFit may
// feed the distilled targets, repEval is only measured), removes from the
// training triplets every triplet whose item set is in repEval, and splits
// the rest into 80% fit, 10% validation (temperature) and 10% test
// (accuracy).
func distillSplitThings(td *distillThingsData, seed uint64) distillProofSplits {
	var s distillProofSplits
	rng := rand.New(rand.NewPCG(seed, 0x7e57))
	held := map[[3]int32]bool{}
	for a, i := range rng.Perm(len(td.repeats)) {
		r := td.repeats[i]
		if a%2 == 0 {
			s.repFit = append(s.repFit, r)
		} else {
			s.repEval = append(s.repEval, r)
			held[distillItemSetKey(r.Items[0], r.Items[1], r.Items[2])] = true
		}
	}
	var rest []Triplet
	for _, t := range td.train {
		if held[distillItemSetKey(t.I, t.J, t.K)] {
			s.droppedForRepEval++
			continue
		}
		rest = append(rest, t)
	}
	perm := rng.Perm(len(rest))
	nTest, nVal := len(rest)/10, len(rest)/10
	for a, i := range perm {
		switch {
		case a < nTest:
			s.test = append(s.test, rest[i])
		case a < nTest+nVal:
			s.val = append(s.val, rest[i])
		default:
			s.fit = append(s.fit, rest[i])
		}
	}
	return s
}

// distillEvalTeacher scores a teacher whose temperature SelectLambda
// calibrated on the hard validation choices.
func distillEvalTeacher(td *distillThingsData, s distillProofSplits, th *Teacher) distillProofResult {
	z := th.Transform(td.x, td.n)
	tau := th.Tau
	r := distillProofResult{lambda: th.Lambda, tau: tau}
	lt := AllLogits(z, th.P, s.test)
	r.acc = AccuracyFromLogits(TaskOddOneOut, lt)
	r.ece, _ = ECE(TaskOddOneOut, lt, tau, 10)
	probs := make([][3]float64, len(s.repEval))
	for a, rep := range s.repEval {
		probs[a] = Softmax3(Logits(z, th.P, RepeatTriplet(rep)), tau)
	}
	r.repNLL = distillRepeatNLL(s.repEval, probs)
	r.repKL = KLHuman(s.repEval, z, th.P, tau)
	return r
}

// distillProofHumanConfig is the human-model configuration of the THINGS
// proof: the VICE defaults, spelled out, and the mixing weights of the
// ensemble targets.
func distillProofHumanConfig(seed int64) HumanModelConfig {
	return HumanModelConfig{Dim: 20, Epochs: 60, BatchSize: 2048, LR: 0.03, PredictSamples: 30,
		RepeatPseudoCount: 3, OneHotMix: 0.2, Seed: seed}
}

// distillProofTeacherConfig is the teacher configuration shared by both teachers
// of the THINGS proof: a 32-dimensional transform, 80 L-BFGS iterations.
func distillProofTeacherConfig() TeacherConfig {
	return TeacherConfig{OutDim: 32, MaxIter: 80}
}

// distillProofLambdas returns the grid from which each teacher's λ is chosen by
// its own validation NLL.
func distillProofLambdas() []float64 { return []float64{0.1, 0.03, 0.01, 0.003, 0.001} }

// distillProofSeeds returns the split and model seeds of the proof: 1, or
// the comma-separated list in ALIGNET_DISTILL_SEEDS.
func distillProofSeeds(t *testing.T) []int64 {
	e := os.Getenv("ALIGNET_DISTILL_SEEDS")
	if e == "" {
		return []int64{1}
	}
	var out []int64
	for _, f := range strings.Split(e, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || v <= 0 {
			t.Fatalf("ALIGNET_DISTILL_SEEDS: bad seed %q", f)
		}
		out = append(out, v)
	}
	return out
}

// TestDistillationOnThings tests uncertainty distillation on THINGS under a
// fair protocol. Two surrogate teachers are fitted on CLIP ViT-B/32
// features and the same 80% of the training triplets: A on the hard
// choices, B on ensemble-distilled targets (EnsembleSoftTargets): the
// average of the VICE posterior predictive (VICE fitted on the same
// triplets) and teacher A's own predictions at its validation-calibrated
// temperature, mixed with the observed choice at weight 0.2, and replaced
// by the smoothed human distribution where a triplet's item set has
// repeated responses in repFit. Each teacher's λ is chosen from
// distillProofLambdas and its temperature calibrated on the hard choices of
// a 10% validation split (SelectLambda); accuracy and ECE are measured on a
// 10% test split. The repeated triplets are split in halves by triplet:
// repFit feeds B's targets, repEval is only measured, and every training
// triplet whose item set is in repEval is removed from all splits, so
// neither teacher nor VICE has seen any response to a measured triplet.
// Both teachers use the same λ grid, output dimension and iteration budget.
//
// The recipe was chosen on seed 1 by B's NLL on the hard validation
// choices, never on repEval or test, among: VICE alone with one-hot weight
// 0.5 (the former recipe, validation NLL 0.9193 against A's 0.9159) or 0.2
// (0.9240); VICE averaged with A (0.9146 at weight 0.2); VICE averaged with
// two-fold cross-fitted hard teachers (0.9158 at 0.1, 0.9169 at 0); the
// cross-fitted teachers alone (0.9172 at 0.2); and, on top of some of
// these, the repFit triplets added as extra rows weighted by their
// response counts (0.9192 for VICE at 0.5, 0.9173 for VICE and A at 0.5,
// 0.9168 for VICE and the cross-fitted teachers at 0.2).
// With the wider λ grid the cross-fitted ensemble was within 0.0003 of the
// ensemble with A, which needs no extra fits.
//
// The test asserts the claim of uncertainty distillation: B has lower NLL
// per human response and lower KL(human‖model) on repEval than A, with test
// accuracy within one point. Figures (A → B): seed 1: accuracy 0.5698 →
// 0.5734, repEval NLL 0.9003 → 0.8983, KL 0.2030 → 0.2011, test ECE
// 0.0094 → 0.0112; seed 2: 0.5769 → 0.5794, 0.9069 → 0.9039, 0.1877 →
// 0.1846, ECE 0.0173 → 0.0185; seed 3: 0.5730 → 0.5721, 0.8880 → 0.8856,
// 0.1839 → 0.1814, ECE 0.0112 → 0.0101. The gains are small (0.002–0.003
// nats, about 1% of the KL; on seed 1 the paired KL difference over the 249
// repEval triplets is −0.0018 with a standard error of 0.0026, so one seed
// alone is not significant) but of the same sign on every seed tried and on
// validation NLL as well (seed 1: A 0.9173, B 0.9156); B picks a weaker λ
// (0.003 against A's 0.03), as the soft targets regularise. The test is
// deterministic, so the assertions are not flaky. VICE alone stays worse than A
// (KL 0.2136 on seed 1): the gain comes from averaging two different models.
//
// It is skipped under -short and -race (the race detector stretches it
// past ten minutes); reproduce with
//
//	go test ./learner/ -run DistillationOnThings -v -count=1
//
// and other seeds with ALIGNET_DISTILL_SEEDS=1,2.
func TestDistillationOnThings(t *testing.T) {
	td := loadDistillThings(t)
	if testing.Short() || distillRaceEnabled() {
		t.Skip("heavy THINGS measurement (minutes; far longer with -race); run without -short and -race")
	}
	for _, seed := range distillProofSeeds(t) {
		t.Run("seed"+strconv.FormatInt(seed, 10), func(t *testing.T) { distillProof(t, td, seed) })
	}
}

// distillProof runs the THINGS distillation proof with one seed.
func distillProof(t *testing.T, td *distillThingsData, seed int64) {
	s := distillSplitThings(td, uint64(seed))
	t.Logf("triplets: fit %d, validation %d, test %d (%d removed for sharing an item set with repEval); repeats: fit %d, eval %d",
		len(s.fit), len(s.val), len(s.test), s.droppedForRepEval, len(s.repFit), len(s.repEval))
	ctx := context.Background()
	thA, scA, err := SelectLambda(ctx, td.x, td.n, td.d, s.fit, nil, s.val, nil, distillProofLambdas(), distillProofTeacherConfig())
	if err != nil {
		t.Fatal(err)
	}
	hcfg := distillProofHumanConfig(seed)
	v, vst, err := FitVICE(td.n, s.fit, hcfg)
	if err != nil {
		t.Fatal(err)
	}
	vt, err := v.PredictBatch(s.test, hcfg.PredictSamples, hcfg.Seed)
	if err != nil {
		t.Fatal(err)
	}
	var vAcc float64
	for _, p := range vt {
		if p[0] > p[1] && p[0] > p[2] {
			vAcc++
		}
	}
	vAcc /= float64(len(vt))
	reps := make([]Triplet, len(s.repEval))
	for a, r := range s.repEval {
		reps[a] = RepeatTriplet(r)
	}
	vr, err := v.PredictBatch(reps, hcfg.PredictSamples, hcfg.Seed)
	if err != nil {
		t.Fatal(err)
	}
	var vKL, uKL float64
	for a, r := range s.repEval {
		vKL += KLProbs(HumanOddDistribution(r), vr[a])
		uKL += KLProbs(HumanOddDistribution(r), [3]float64{1.0 / 3, 1.0 / 3, 1.0 / 3})
	}
	vKL /= float64(len(vr))
	uKL /= float64(len(vr))
	t.Logf("VICE (fit %v): test accuracy %.4f, repEval NLL %.4f, KL(human‖VICE) %.4f (uniform %.4f)",
		vst.Duration, vAcc, distillRepeatNLL(s.repEval, vr), vKL, uKL)
	if vAcc < 0.52 {
		t.Errorf("VICE test accuracy %.4f, want at least 0.52 (chance 0.333)", vAcc)
	}
	if !(vKL < 0.7*uKL) {
		t.Errorf("VICE KL(human‖VICE) %.4f not well below uniform's %.4f", vKL, uKL)
	}
	vp, err := v.PredictBatch(s.fit, hcfg.PredictSamples, hcfg.Seed)
	if err != nil {
		t.Fatal(err)
	}
	q, err := EnsembleSoftTargets(s.fit, s.repFit, hcfg, vp, thA.Probs(td.x, td.n, s.fit))
	if err != nil {
		t.Fatal(err)
	}
	thB, scB, err := SelectLambda(ctx, td.x, td.n, td.d, s.fit, q, s.val, nil, distillProofLambdas(), distillProofTeacherConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("A λ scores %+v", scA)
	t.Logf("B λ scores %+v", scB)
	a, b := distillEvalTeacher(td, s, thA), distillEvalTeacher(td, s, thB)
	t.Logf("A (hard, λ %g): τ %.3f, test accuracy %.4f, test ECE %.4f, repEval NLL %.4f, KL(human‖model) %.4f", a.lambda, a.tau, a.acc, a.ece, a.repNLL, a.repKL)
	t.Logf("B (distilled, λ %g): τ %.3f, test accuracy %.4f, test ECE %.4f, repEval NLL %.4f, KL(human‖model) %.4f", b.lambda, b.tau, b.acc, b.ece, b.repNLL, b.repKL)
	t.Logf("B − A: accuracy %+.4f, ECE %+.4f, NLL %+.4f, KL %+.4f", b.acc-a.acc, b.ece-a.ece, b.repNLL-a.repNLL, b.repKL-a.repKL)
	zA, zB := thA.Transform(td.x, td.n), thB.Transform(td.x, td.n)
	var dm, dv float64
	for _, r := range s.repEval {
		h := HumanOddDistribution(r)
		d := KLProbs(h, Softmax3(Logits(zB, thB.P, RepeatTriplet(r)), b.tau)) - KLProbs(h, Softmax3(Logits(zA, thA.P, RepeatTriplet(r)), a.tau))
		dm += d
		dv += d * d
	}
	m := float64(len(s.repEval))
	dm /= m
	t.Logf("paired KL difference over repEval triplets: %+.4f ± %.4f (standard error)", dm, math.Sqrt((dv/m-dm*dm)/(m-1)))
	if !(b.repNLL < a.repNLL) {
		t.Errorf("distilled teacher repEval NLL %.4f not below hard teacher's %.4f", b.repNLL, a.repNLL)
	}
	if !(b.repKL < a.repKL) {
		t.Errorf("distilled teacher KL(human‖model) %.4f not below hard teacher's %.4f", b.repKL, a.repKL)
	}
	if math.Abs(b.acc-a.acc) > 0.01 {
		t.Errorf("distilled teacher accuracy %.4f more than one point from hard teacher's %.4f", b.acc, a.acc)
	}
}
