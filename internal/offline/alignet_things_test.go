package offline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/alignet/alignet/internal/testenv"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// envInt returns the integer environment variable name, or def.
func alignetEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestAligNetTHINGSStudent is the end-to-end proof on real data (THINGS;
// Hebart et al. 2023, CC-BY 4.0, see ../shared/data/README.md): a
// surrogate teacher is fitted on CLIP ViT-B/32 embeddings and 90% of the
// human triplets, "alignet generate" labels AligNet triplets over the 1,854
// THINGS items with it, and "alignet distill" fits an affine head on the
// word2vec embeddings. The student's accuracy on the held-out 10% of human
// triplets must rise clearly above its raw starting point.
//
// The CI version is small (smaller still with -short). The reported
// figures come from
//
//	ALIGNET_THINGS_TEACHER_ITER=60 ALIGNET_THINGS_N=200000 ALIGNET_THINGS_EPOCHS=5 \
//	  go test ./internal/offline -run TestAligNetTHINGSStudent -v -timeout 1h
//
// (ALIGNET_THINGS_LAMBDA, _LR, _BATCH and _DECAY override the teacher λ
// (default 0.1) and the distillation step size, batch and decay.)
func TestAligNetTHINGSStudent(t *testing.T) {
	alignetThingsDir := testenv.SharedData(t, "things")
	defIter, defN := 20, 20000
	if testing.Short() {
		defIter, defN = 15, 10000
	}
	teacherIter := alignetEnvInt("ALIGNET_THINGS_TEACHER_ITER", defIter)
	nTriplets := alignetEnvInt("ALIGNET_THINGS_N", defN)
	epochs := alignetEnvInt("ALIGNET_THINGS_EPOCHS", 4)
	batch := alignetEnvInt("ALIGNET_THINGS_BATCH", 2048)
	lr, decay := "0.003", "0.01"
	if v := os.Getenv("ALIGNET_THINGS_LR"); v != "" {
		lr = v
	}
	if v := os.Getenv("ALIGNET_THINGS_DECAY"); v != "" {
		decay = v
	}
	clip := filepath.Join(alignetThingsDir, "clip_vit_b32.npy")
	w2v := filepath.Join(alignetThingsDir, "word2vec.npy")
	x, n, d, err := ReadEmbeddings(clip)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := ReadTriplets(filepath.Join(alignetThingsDir, "triplets_train.txt"), IndexRows(n), "")
	if err != nil {
		t.Fatal(err)
	}
	train, val := SplitTriplets(ts, 0.1, 1)
	lambda := 0.1 // the λ "alignet fit" selects on THINGS (see things_test.go)
	if v, err := strconv.ParseFloat(os.Getenv("ALIGNET_THINGS_LAMBDA"), 64); err == nil {
		lambda = v
	}
	teacher, st, err := learner.FitTeacher(x, n, d, train, nil, learner.TeacherConfig{Lambda: lambda, MaxIter: teacherIter, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	tz := teacher.Transform(x, n)
	t.Logf("teacher: %d L-BFGS iterations in %v, held-out human accuracy %.4f (raw CLIP %.4f)", st.Iterations, st.Duration,
		learner.Accuracy(learner.TaskOddOneOut, tz, teacher.P, val), learner.Accuracy(learner.TaskOddOneOut, x, d, val))
	dir := t.TempDir()
	teacherPath := filepath.Join(dir, "teacher.npz")
	if err := modelfile.SaveTeacher(teacherPath, teacher, modelfile.Provenance{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	valPath := filepath.Join(dir, "val.txt")
	var buf bytes.Buffer
	for _, tr := range val {
		fmt.Fprintf(&buf, "%d %d %d\n", tr.I, tr.J, tr.K)
	}
	if err := os.WriteFile(valPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	dataset := filepath.Join(dir, "dataset.npz")
	var out bytes.Buffer
	if err := RunGenerate(context.Background(), []string{"--teacher", teacherPath, "--embeddings", clip,
		"--n", strconv.Itoa(nTriplets), "--clusters", "50", "--seed", "3", "--out", dataset, "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var gs GenerateSummary
	if err := json.Unmarshal(out.Bytes(), &gs); err != nil {
		t.Fatal(err)
	}
	if gs.Triplets != int64(nTriplets) || gs.Clusters != 50 || gs.EmptyGroups != 0 {
		t.Errorf("generate summary %+v", gs)
	}
	idx, sims, prov, err := readDataset(t, dataset)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx) != 3*nTriplets || prov.Kind != "dataset" || prov.Extra["order"] != modelfile.DatasetOrder {
		t.Fatalf("dataset has %d indices, provenance %+v", len(idx), prov)
	}
	for r := 0; r < nTriplets; r += 997 {
		l := learner.Logits(tz, teacher.P, learner.Triplet{I: idx[3*r], J: idx[3*r+1], K: idx[3*r+2]})
		if sims[3*r] < sims[3*r+1] || sims[3*r] < sims[3*r+2] || alignetAbs(l[0]-float64(sims[3*r])) > 1e-3*(1+alignetAbs(l[0])) {
			t.Fatalf("triplet %d: sims %v, teacher logits %v", r, sims[3*r:3*r+3], l)
		}
	}
	out.Reset()
	studentPath := filepath.Join(dir, "student.npz")
	if err := RunDistill(context.Background(), []string{"--student", w2v, "--dataset", dataset,
		"--epochs", strconv.Itoa(epochs), "--lr", lr, "--batch", strconv.Itoa(batch), "--decay", decay, "--seed", "2",
		"--triplets", valPath, "--categories", filepath.Join(alignetThingsDir, "categories.tsv"),
		"--out", studentPath, "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var ds DistillSummary
	if err := json.Unmarshal(out.Bytes(), &ds); err != nil {
		t.Fatal(err)
	}
	before, after := *ds.HumanBefore, *ds.HumanAfter
	t.Logf("word2vec student on %d held-out human triplets: accuracy %.4f → %.4f; coarse %.4f → %.4f (n=%d); fine %.4f → %.4f (n=%d); teacher agreement %.4f → %.4f; %.0f triplets/s",
		len(val), before, after, distillDeref(ds.LevelsBefore.Coarse), distillDeref(ds.LevelsAfter.Coarse), ds.LevelsBefore.NCoarse,
		distillDeref(ds.LevelsBefore.Fine), distillDeref(ds.LevelsAfter.Fine), ds.LevelsBefore.NFine,
		distillDeref(ds.AgreeBefore), distillDeref(ds.AgreeAfter), ds.PerSecond)
	if after < before+0.03 {
		t.Errorf("held-out human accuracy %.4f → %.4f: want a rise of at least 3 points", before, after)
	}
	if ds.TrainAfter >= ds.TrainBefore {
		t.Errorf("train loss %.4f → %.4f did not fall", ds.TrainBefore, ds.TrainAfter)
	}
	// The saved student reproduces the reported accuracy.
	h, p, err := modelfile.LoadStudent(studentPath)
	if err != nil {
		t.Fatal(err)
	}
	wx, wn, _, err := ReadEmbeddings(w2v)
	if err != nil {
		t.Fatal(err)
	}
	if got := learner.Accuracy(learner.TaskOddOneOut, h.Transform(wx, wn), h.P, val); got != after || p.Kind != "student" {
		t.Errorf("loaded student accuracy %.4f, reported %.4f (kind %q)", got, after, p.Kind)
	}
}

func alignetAbs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}
