package learner

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/alignet/alignet/npy"
)

// thingsDir is the THINGS data folder relative to the package directory.
const thingsDir = "../../shared/data/things"

// thingsData is the THINGS odd-one-out data used by the proof tests.
type thingsData struct {
	n, d    int
	x       []float32
	train   []Triplet
	repeats []RepeatedTriplet
}

// loadThings reads the THINGS data or skips the test when the folder is
// missing.
func loadThings(t testing.TB) *thingsData {
	t.Helper()
	if _, err := os.Stat(thingsDir); os.IsNotExist(err) {
		t.Skipf("THINGS data not found at %s", thingsDir)
	}
	f, err := os.Open(filepath.Join(thingsDir, "clip_vit_b32.npy"))
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
	td := &thingsData{n: shape[0], d: shape[1], x: x}

	tf, err := os.Open(filepath.Join(thingsDir, "triplets_train.txt"))
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

	rf, err := os.Open(filepath.Join(thingsDir, "repeats_dev.csv"))
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

// itemSetKey identifies the unordered item set of a triplet.
func itemSetKey(a, b, c int32) [3]int32 {
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

// repeatNLL returns the mean negative log-likelihood per human response of
// the repeated triplets under the model probabilities probs (Softmax3 order
// of RepeatTriplet).
func repeatNLL(reps []RepeatedTriplet, probs [][3]float64) float64 {
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

func TestVICEThingsScratch(t *testing.T) {
	if os.Getenv("ALIGNET_VICE_SCRATCH") == "" {
		t.Skip("scratch")
	}
	td := loadThings(t)
	rng := rand.New(rand.NewPCG(1, 2))
	perm := rng.Perm(len(td.train))
	nTest := len(td.train) / 10
	var tr, te []Triplet
	for a, i := range perm {
		if a < nTest {
			te = append(te, td.train[i])
		} else {
			tr = append(tr, td.train[i])
		}
	}
	var cfg HumanModelConfig
	fmt.Sscan(os.Getenv("VDIM"), &cfg.Dim)
	fmt.Sscan(os.Getenv("VEP"), &cfg.Epochs)
	fmt.Sscan(os.Getenv("VBS"), &cfg.BatchSize)
	fmt.Sscan(os.Getenv("VLR"), &cfg.LR)
	v, st, err := FitVICE(td.n, tr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fit %v steps %d", st.Duration, st.Steps)
	for e := range st.EpochLoss {
		if e%5 == 4 || e == len(st.EpochLoss)-1 {
			t.Logf("epoch %d loss %.4f nll %.4f", e, st.EpochLoss[e], st.EpochNLL[e])
		}
	}
	for _, set := range []struct {
		name string
		ts   []Triplet
	}{{"train", tr[:20000]}, {"test", te}} {
		pr, _ := v.PredictBatch(set.ts, 20, 7)
		var acc, nll float64
		for _, p := range pr {
			if p[0] > p[1] && p[0] > p[2] {
				acc++
			}
			nll -= math.Log(p[0])
		}
		t.Logf("%s acc %.4f nll %.4f", set.name, acc/float64(len(pr)), nll/float64(len(pr)))
	}
	reps := make([]Triplet, len(td.repeats))
	for a, r := range td.repeats {
		reps[a] = RepeatTriplet(r)
	}
	pr, _ := v.PredictBatch(reps, 20, 7)
	var kl float64
	for a, r := range td.repeats {
		kl += KLProbs(HumanOddDistribution(r), pr[a])
	}
	t.Logf("repeats nll %.4f kl %.4f", repeatNLL(td.repeats, pr), kl/float64(len(pr)))
}

// proofResult holds the figures of one teacher in the proof.
type proofResult struct {
	tau, acc, repNLL, repKL float64
}

// proofSplits are the seeded splits of the THINGS proof.
type proofSplits struct {
	fit, val, test    []Triplet
	repFit, repEval   []RepeatedTriplet
	droppedForRepEval int
}

// splitThings splits the repeated triplets in halves by triplet (repFit may
// feed the distilled targets, repEval is only measured), removes from the
// training triplets every triplet whose item set is in repEval, and splits
// the rest into 80% fit, 10% validation (temperature) and 10% test
// (accuracy).
func splitThings(td *thingsData, seed uint64) proofSplits {
	var s proofSplits
	rng := rand.New(rand.NewPCG(seed, 0x7e57))
	held := map[[3]int32]bool{}
	for a, i := range rng.Perm(len(td.repeats)) {
		r := td.repeats[i]
		if a%2 == 0 {
			s.repFit = append(s.repFit, r)
		} else {
			s.repEval = append(s.repEval, r)
			held[itemSetKey(r.Items[0], r.Items[1], r.Items[2])] = true
		}
	}
	var rest []Triplet
	for _, t := range td.train {
		if held[itemSetKey(t.I, t.J, t.K)] {
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

// evalTeacher calibrates the teacher's temperature on the hard validation
// choices and scores it.
func evalTeacher(td *thingsData, s proofSplits, th *Teacher) proofResult {
	z := th.Transform(td.x, td.n)
	tau := CalibrateTemperature(TaskOddOneOut, AllLogits(z, th.P, s.val), nil)
	var r proofResult
	r.tau = tau
	r.acc = Accuracy(TaskOddOneOut, z, th.P, s.test)
	probs := make([][3]float64, len(s.repEval))
	for a, rep := range s.repEval {
		probs[a] = Softmax3(Logits(z, th.P, RepeatTriplet(rep)), tau)
	}
	r.repNLL = repeatNLL(s.repEval, probs)
	r.repKL = KLHuman(s.repEval, z, th.P, tau)
	return r
}

func TestProofThingsScratch(t *testing.T) {
	if os.Getenv("ALIGNET_PROOF_SCRATCH") == "" {
		t.Skip("scratch")
	}
	td := loadThings(t)
	s := splitThings(td, 1)
	t.Logf("fit %d val %d test %d repFit %d repEval %d dropped %d", len(s.fit), len(s.val), len(s.test), len(s.repFit), len(s.repEval), s.droppedForRepEval)
	var vcfg HumanModelConfig
	fmt.Sscan(os.Getenv("VDIM"), &vcfg.Dim)
	fmt.Sscan(os.Getenv("VEP"), &vcfg.Epochs)
	fmt.Sscan(os.Getenv("VBS"), &vcfg.BatchSize)
	fmt.Sscan(os.Getenv("VLR"), &vcfg.LR)
	var tcfg TeacherConfig
	fmt.Sscan(os.Getenv("TDIM"), &tcfg.OutDim)
	fmt.Sscan(os.Getenv("TIT"), &tcfg.MaxIter)
	v, vst, err := FitVICE(td.n, s.fit, vcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vice %v", vst.Duration)
	for _, ls := range strings.Fields(os.Getenv("TLAMS")) {
		fmt.Sscan(ls, &tcfg.Lambda)
		if os.Getenv("SKIPA") == "" {
			thA, stA, err := FitTeacher(td.x, td.n, td.d, s.fit, nil, tcfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("lambda %v A fit %v iters %d: %+v", tcfg.Lambda, stA.Duration, stA.Iterations, evalTeacher(td, s, thA))
		}
		for _, as := range strings.Fields(os.Getenv("ALPHAS")) {
			vc := vcfg
			fmt.Sscan(as, &vc.OneHotMix)
			var q [][3]float32
			var err error
			fmt.Sscan(os.Getenv("CROSS"), &vc.CrossFitFolds)
			if vc.CrossFitFolds > 1 {
				q, err = DistilledTargets(td.n, s.fit, s.repFit, vc)
			} else {
				q, err = v.SoftTargets(s.fit, s.repFit, vc)
			}
			if err != nil {
				t.Fatal(err)
			}
			thB, stB, err := FitTeacher(td.x, td.n, td.d, s.fit, q, tcfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("lambda %v alpha %v B fit %v iters %d: %+v", tcfg.Lambda, vc.OneHotMix, stB.Duration, stB.Iterations, evalTeacher(td, s, thB))
		}
	}
}
