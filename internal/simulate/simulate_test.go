package simulate

import (
	"bytes"
	"context"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// plantedData returns 60 items in 8 dimensions, a planted human model (a
// random transform of the embeddings at a sharp temperature) and real
// "held-out" judgments sampled from it.
func plantedData(t *testing.T) (*Data, *learner.Teacher) {
	t.Helper()
	const n, d = 60, 8
	rng := rand.New(rand.NewPCG(3, 4))
	data := &Data{N: n, D: d, Task: learner.TaskOddOneOut, X: make([]float32, n*d)}
	for i := range data.X {
		data.X[i] = float32(rng.NormFloat64())
	}
	for i := range n {
		data.Items = append(data.Items, "it"+strconv.Itoa(i))
	}
	crowd := &learner.Teacher{D: d, P: d, W: make([]float64, d*d), B: make([]float64, d), Std: 1, Tau: 0.5, Task: learner.TaskOddOneOut}
	for i := range crowd.W {
		crowd.W[i] = rng.NormFloat64()
	}
	z := crowd.Transform(data.X, n)
	for range 3000 {
		tr := randomTriplet(rng, n)
		p := learner.Softmax3(learner.Logits(z, d, tr), crowd.Tau)
		u := rng.Float64()
		switch {
		case u < p[0]:
		case u < p[0]+p[1]:
			tr = learner.Triplet{I: tr.I, J: tr.K, K: tr.J}
		default:
			tr = learner.Triplet{I: tr.J, J: tr.K, K: tr.I}
		}
		data.Eval = append(data.Eval, tr)
	}
	return data, crowd
}

func smallSettings() *alignet.StudySettings {
	s := alignet.DefaultStudySettings()
	s.Queries.PoolSize = 5000
	s.Queries.Repeats = 20
	s.Learner.MaxIter = 40
	return &s
}

// TestRandomPolicyLearns checks the loop end to end on planted data: the
// learner's refits on simulated answers climb well above the raw
// embeddings on the held-out judgments, and every judgment is trained on.
func TestRandomPolicyLearns(t *testing.T) {
	t.Parallel()
	data, crowd := plantedData(t)
	res, err := Run(context.Background(), data, crowd, Config{Policy: PolicyRandom, Settings: smallSettings(),
		Judgments: 1500, First: 300, Factor: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{300, 600, 1200, 1500}; len(res.Points) != len(want) {
		t.Fatalf("%d points, want checkpoints %v", len(res.Points), want)
	}
	last := res.Points[len(res.Points)-1]
	if last.Judgments != 1500 || last.Trained != 1500 {
		t.Fatalf("last point %+v: want 1500 judgments, all trained", last)
	}
	crowdAcc := learner.Accuracy(data.Task, crowd.Transform(data.X, data.N), crowd.P, data.Eval)
	if last.Accuracy < res.Raw.Accuracy+0.1 || last.Accuracy > crowdAcc+0.02 {
		t.Fatalf("accuracy %.3f after 1500 judgments; raw %.3f, crowd model %.3f", last.Accuracy, res.Raw.Accuracy, crowdAcc)
	}
}

// TestActivePolicyFollowsTheServer runs the active policy with the
// default mix: the kinds follow the mix, checks and random test queries
// are not trained on (the root rule), and a run is reproducible.
func TestActivePolicyFollowsTheServer(t *testing.T) {
	t.Parallel()
	data, crowd := plantedData(t)
	run := func() Result {
		res, err := Run(context.Background(), data, crowd, Config{Policy: PolicyActive, Settings: smallSettings(),
			Judgments: 1000, First: 400, Factor: 2, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := run()
	last := res.Points[len(res.Points)-1]
	mix := alignet.DefaultQuerySettings().Mix
	kinds := last.Kinds
	if kinds[alignet.QueryRandom] < 140 || kinds[alignet.QueryRandom] > 160 || kinds[alignet.QueryRepeat] < 40 || kinds[alignet.QueryRepeat] > 60 {
		t.Fatalf("kinds %v of 1000, want about %v", kinds, mix)
	}
	// Checks are served as active queries while the teacher is sure of no
	// triplet.
	if kinds[alignet.QueryActive]+kinds[alignet.QueryCheck] < 790 || kinds[alignet.QueryActive]+kinds[alignet.QueryCheck] > 810 {
		t.Fatalf("kinds %v", kinds)
	}
	flaggedOut := last.Trained < kinds[alignet.QueryActive]+kinds[alignet.QueryRepeat] && last.FlaggedWorkers > 0
	if last.Trained != kinds[alignet.QueryActive]+kinds[alignet.QueryRepeat] && !flaggedOut {
		t.Fatalf("trained on %d of %v: want the active and repeat judgments of unflagged workers", last.Trained, kinds)
	}
	if last.Accuracy < res.Raw.Accuracy+0.05 {
		t.Fatalf("active accuracy %.3f, raw %.3f", last.Accuracy, res.Raw.Accuracy)
	}
	again := run()
	for i := range res.Points {
		a, b := res.Points[i], again.Points[i]
		a.Seconds, b.Seconds = 0, 0
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("point %d differs between runs with one seed:\n%+v\n%+v", i, a, b)
		}
	}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, "test", []Result{res}); err != nil || !strings.HasPrefix(svg.String(), "<svg") || !strings.Contains(svg.String(), "polyline") {
		t.Fatalf("WriteSVG: %v\n%s", err, svg.String())
	}
}

func TestCheckpoints(t *testing.T) {
	if got := Checkpoints(500, 1.25, 1000); !reflect.DeepEqual(got, []int{500, 625, 782, 978, 1000}) {
		t.Fatalf("Checkpoints(500, 1.25, 1000) = %v", got)
	}
	if got := Checkpoints(500, 1.25, 500); !reflect.DeepEqual(got, []int{500}) {
		t.Fatalf("Checkpoints(500, 1.25, 500) = %v", got)
	}
}
