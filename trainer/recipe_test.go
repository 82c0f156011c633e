package trainer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet/internal/offline"
	"github.com/alignet/alignet/learner"
)

// TestRecipeSweep is the documented sweep behind the student defaults of
// DefaultTrainerSettings: on THINGS it fits a CLIP teacher on 90% of the
// human triplets, generates AligNet data over the 1,854 items and
// distils word2vec heads with each configuration, scoring the held-out
// 10%. It runs only when ALIGNET_SWEEP lists configurations, ";"
// separated, each a "," list of key=value (strategy, n, clusters, epochs,
// lr, decay, loss, outdim, batch, tau, init, warmup):
//
//	ALIGNET_SWEEP='strategy=cluster_border,n=200000;strategy=random,n=200000' \
//	  go test ./trainer -run TestRecipeSweep -v -timeout 3h
//
// Each line of its log gives the configuration, the held-out accuracy
// before and after, the teacher agreement and the time taken.
func TestRecipeSweep(t *testing.T) {
	spec := os.Getenv("ALIGNET_SWEEP")
	if spec == "" {
		t.Skip("set ALIGNET_SWEEP to run the recipe sweep")
	}
	dir := thingsDir
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("THINGS data not found at %s", dir)
	}
	x, n, d, err := offline.ReadEmbeddings(filepath.Join(dir, "clip_vit_b32.npy"))
	if err != nil {
		t.Fatal(err)
	}
	w2v, wn, wd, err := offline.ReadEmbeddings(filepath.Join(dir, "word2vec.npy"))
	if err != nil || wn != n {
		t.Fatal(err, wn)
	}
	ts, err := offline.ReadTriplets(filepath.Join(dir, "triplets_train.txt"), offline.IndexRows(n), "")
	if err != nil {
		t.Fatal(err)
	}
	cats, err := offline.ReadCategories(filepath.Join(dir, "categories.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	train, val := offline.SplitTriplets(ts, 0.1, 1)
	fit, sel := offline.SplitTriplets(train, 0.1, 2)
	teacher, _, err := learner.SelectLambda(context.Background(), x, n, d, fit, nil, sel, nil, []float64{0.1},
		learner.TeacherConfig{MaxIter: 60, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	tz := teacher.Transform(x, n)
	t.Logf("teacher τ=%.3f held-out %.4f; raw word2vec %.4f", teacher.Tau,
		learner.Accuracy(learner.TaskOddOneOut, tz, teacher.P, val), learner.Accuracy(learner.TaskOddOneOut, w2v, wd, val))
	type dkey struct {
		strategy string
		n, k     int
	}
	datasets := map[dkey][2]any{}
	for _, c := range strings.Split(spec, ";") {
		kv := map[string]string{"strategy": "cluster_border", "n": "200000", "clusters": "50", "epochs": "4",
			"lr": "0.003", "decay": "0.01", "loss": "kl", "outdim": "0", "batch": "2048", "tau": "1", "init": "affine"}
		for _, f := range strings.Split(c, ",") {
			if k, v, ok := strings.Cut(strings.TrimSpace(f), "="); ok {
				kv[k] = v
			}
		}
		atoi := func(k string) int { v, _ := strconv.Atoi(kv[k]); return v }
		atof := func(k string) float64 { v, _ := strconv.ParseFloat(kv[k], 64); return v }
		key := dkey{kv["strategy"], atoi("n"), atoi("clusters")}
		if _, ok := datasets[key]; !ok {
			idx, sims, err := generateMix(context.Background(), tz, n, teacher.P, key.strategy, key.n, key.k, 3)
			if err != nil {
				t.Fatal(err)
			}
			datasets[key] = [2]any{idx, sims}
		}
		idx, sims := datasets[key][0].([]int32), datasets[key][1].([]float32)
		mean, std := learner.MeanStd(w2v)
		h, err := learner.NewStudentHead(wd, learner.HeadConfig{Init: kv["init"], OutDim: atoi("outdim"), Tau: atof("tau"), Mean: mean, Std: std, Seed: 2})
		if err != nil {
			t.Fatal(err)
		}
		dcfg := learner.DistillConfig{Loss: kv["loss"], TeacherTau: teacher.Tau, Epochs: atoi("epochs"), BatchSize: atoi("batch"),
			LR: atof("lr"), Decay: atof("decay"), Seed: 2}
		if h.Init == learner.InitAffine {
			if _, err := h.CalibrateScale(w2v, n, idx, sims, dcfg); err != nil {
				t.Fatal(err)
			}
		}
		before := learner.Accuracy(learner.TaskOddOneOut, h.Transform(w2v, n), h.P, val)
		start := time.Now()
		if _, err := learner.TrainStudent(context.Background(), h, w2v, n, idx, sims, dcfg); err != nil {
			t.Fatal(err)
		}
		z := h.Transform(w2v, n)
		after := learner.Accuracy(learner.TaskOddOneOut, z, h.P, val)
		lv := learner.LevelAccuracy(z, h.P, val, cats.Items)
		t.Logf("%s: held-out %.4f → %.4f (coarse %.4f fine %.4f) in %v", c, before, after, lv.Coarse, lv.Fine, time.Since(start).Round(time.Second))
		fmt.Fprintf(os.Stderr, "SWEEP %s\t%.4f\t%.4f\n", c, before, after)
	}
}

// thingsDir is the THINGS data folder, relative to this package.
const thingsDir = "../../shared/data/things"

// generateMix draws n triplets over the n×p teacher representations z
// with the mix spec "strategy[:weight]+strategy[:weight]...".
func generateMix(ctx context.Context, z []float32, items, p int, spec string, total, k int, seed uint64) ([]int32, []float32, error) {
	mix := map[string]float64{}
	for _, part := range strings.Split(spec, "+") {
		name, w, ok := strings.Cut(part, ":")
		weight := 1.0
		if ok {
			weight, _ = strconv.ParseFloat(w, 64)
		}
		mix[name] = weight
	}
	var idx []int32
	var sims []float32
	_, err := generate(ctx, z, items, p, genConfig{Triplets: int64(total), Clusters: k, MiniBatchAbove: 100000, Mix: mix, Seed: seed, Chunk: 1 << 16},
		func(i []int32, s []float32) error {
			idx = append(idx, i...)
			sims = append(sims, s...)
			return nil
		})
	return idx, sims, err
}
