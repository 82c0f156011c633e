package offline

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/alignet/alignet/learner"
)

func TestScratchTHINGS(t *testing.T) {
	if os.Getenv("SCRATCH") == "" {
		t.Skip()
	}
	x, n, d, err := ReadEmbeddings("../../shared/data/things/clip_vit_b32.npy")
	if err != nil {
		t.Fatal(err)
	}
	ts, _, err := ReadTriplets("../../shared/data/things/triplets_train.txt", n)
	if err != nil {
		t.Fatal(err)
	}
	train, val := SplitTriplets(ts, 0.1, 1)
	mean, std := learner.MeanStd(x)
	raw := &learner.Teacher{W: make([]float64, d*d), B: make([]float64, d), D: d, P: d, Mean: 0, Std: 1, Tau: 1}
	for a := 0; a < d; a++ {
		raw.W[a*d+a] = 1
	}
	t.Logf("raw acc %.4f mean %v std %v", learner.Accuracy("odd-one-out", raw.Transform(x, n), d, val), mean, std)
	lam, _ := strconv.ParseFloat(os.Getenv("LAMBDA"), 64)
	it, _ := strconv.Atoi(os.Getenv("ITER"))
	start := time.Now()
	tc, st, err := learner.FitTeacher(x, n, d, train, nil, learner.TeacherConfig{Lambda: lam, MaxIter: it, Progress: func(i int, f float64) {
		if i%10 == 0 {
			t.Logf("iter %d f %.5f %v", i, f, time.Since(start))
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	z := tc.Transform(x, n)
	t.Logf("stats %+v", st)
	t.Logf("train acc %.4f val acc %.4f val nll %.4f", learner.Accuracy("odd-one-out", z, d, train), learner.Accuracy("odd-one-out", z, d, val), learner.NLL("odd-one-out", learner.AllLogits(z, d, val), 1))
}
