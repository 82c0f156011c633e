package offline

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/npy"
)

// writeSynthetic writes n×d clustered embeddings and an identity teacher
// into dir and returns their paths.
func writeAlignetSynthetic(t *testing.T, dir string, n, d int) (emb, teacher string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	centres := make([]float32, 6*d)
	for i := range centres {
		centres[i] = float32(rng.NormFloat64() * 3)
	}
	x := make([]float32, n*d)
	for i := 0; i < n; i++ {
		c := i % 6
		for p := 0; p < d; p++ {
			x[i*d+p] = centres[c*d+p] + float32(rng.NormFloat64())
		}
	}
	emb = filepath.Join(dir, "emb.npy")
	var buf bytes.Buffer
	if err := npy.Write(&buf, npy.FromFloat32(x, n, d)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(emb, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	tc := &learner.Teacher{W: make([]float64, d*d), B: make([]float64, d), D: d, P: d, Mean: 0, Std: 1, Tau: 0.5, Task: learner.TaskOddOneOut}
	for a := 0; a < d; a++ {
		tc.W[a*d+a] = 1
	}
	teacher = filepath.Join(dir, "teacher.npz")
	if err := modelfile.SaveTeacher(teacher, tc, modelfile.Provenance{Seed: 9}); err != nil {
		t.Fatal(err)
	}
	return emb, teacher
}

func TestRunGenerateChunkingAndProvenance(t *testing.T) {
	dir := t.TempDir()
	emb, teacher := writeAlignetSynthetic(t, dir, 120, 5)
	run := func(out string, extra ...string) GenerateSummary {
		var stdout bytes.Buffer
		args := append([]string{"--teacher", teacher, "--embeddings", emb, "--n", "1000", "--clusters", "6",
			"--seed", "4", "--out", filepath.Join(dir, out), "--json"}, extra...)
		if err := RunGenerate(context.Background(), args, &stdout, io.Discard); err != nil {
			t.Fatal(err)
		}
		var s GenerateSummary
		if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := run("a.npz", "--chunk", "1000")
	run("b.npz", "--chunk", "37")
	if s.Triplets != 1000 || s.Clusters != 6 || s.Strategy != learner.StrategyClusterBorder {
		t.Errorf("summary %+v", s)
	}
	ia, sa, pa, err := readDataset(t, filepath.Join(dir, "a.npz"))
	if err != nil {
		t.Fatal(err)
	}
	ib, sb, _, err := readDataset(t, filepath.Join(dir, "b.npz"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ia) != 3000 || !slices.Equal(ia, ib) || !slices.Equal(sa, sb) {
		t.Fatal("chunk size changed the dataset")
	}
	if pa.Kind != "dataset" || pa.Seed != 4 || pa.Extra["teacher_tau"] != 0.5 || pa.Hyper["strategy"] != learner.StrategyClusterBorder {
		t.Errorf("provenance %+v", pa)
	}
	if sha, _ := FileSHA256(teacher); pa.Extra["teacher_sha256"] != sha {
		t.Errorf("teacher hash %v, want %s", pa.Extra["teacher_sha256"], sha)
	}
	for r := 0; r < 1000; r++ {
		if sa[3*r] < sa[3*r+1] || sa[3*r] < sa[3*r+2] {
			t.Fatalf("triplet %d: similarities %v not odd-last", r, sa[3*r:3*r+3])
		}
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestRunGenerateClassStrategies(t *testing.T) {
	dir := t.TempDir()
	emb, teacher := writeAlignetSynthetic(t, dir, 60, 4)
	var lab strings.Builder
	for i := 0; i < 60; i++ {
		lab.WriteString([]string{"0\n", "1\n", "2\n", "-1\n"}[i%4])
	}
	labels := filepath.Join(dir, "labels.txt")
	if err := os.WriteFile(labels, []byte(lab.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{learner.StrategyWithinClass, learner.StrategyBetweenClass, learner.StrategyClassBorder} {
		out := filepath.Join(dir, s+".npz")
		if err := RunGenerate(context.Background(), []string{"--teacher", teacher, "--embeddings", emb, "--n", "200",
			"--strategy", s, "--labels", labels, "--out", out}, io.Discard, io.Discard); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		idx, _, _, err := readDataset(t, out)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range idx {
			if it%4 == 3 {
				t.Fatalf("%s drew unlabelled item %d", s, it)
			}
		}
	}
	if err := RunGenerate(context.Background(), []string{"--teacher", teacher, "--embeddings", emb, "--n", "10",
		"--strategy", learner.StrategyWithinClass, "--out", filepath.Join(dir, "x.npz")}, io.Discard, io.Discard); err == nil {
		t.Error("class strategy without --labels: no error")
	}
}

func TestRunDistillSynthetic(t *testing.T) {
	dir := t.TempDir()
	emb, teacher := writeAlignetSynthetic(t, dir, 150, 6)
	dataset := filepath.Join(dir, "d.npz")
	if err := RunGenerate(context.Background(), []string{"--teacher", teacher, "--embeddings", emb, "--n", "3000",
		"--strategy", "random", "--out", dataset}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, loss := range []string{"kl", "jsd"} {
		var stdout bytes.Buffer
		out := filepath.Join(dir, "s-"+loss+".npz")
		if err := RunDistill(context.Background(), []string{"--student", emb, "--dataset", dataset, "--loss", loss,
			"--init", "random", "--epochs", "15", "--lr", "0.02", "--batch", "256", "--out", out, "--json"}, &stdout, io.Discard); err != nil {
			t.Fatal(err)
		}
		var s DistillSummary
		if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		if s.TrainAfter >= 0.5*s.TrainBefore || *s.AgreeAfter <= *s.AgreeBefore || *s.AgreeAfter < 0.8 {
			t.Errorf("%s: loss %.4f → %.4f, teacher agreement %.3f → %.3f", loss, s.TrainBefore, s.TrainAfter, *s.AgreeBefore, *s.AgreeAfter)
		}
		if s.HumanBefore != nil {
			t.Error("human accuracy reported without --triplets")
		}
		if _, _, err := modelfile.LoadStudent(out); err != nil {
			t.Fatal(err)
		}
	}
	if err := RunDistill(context.Background(), []string{"--dataset", dataset, "--out", "x"}, io.Discard, io.Discard); err == nil {
		t.Error("missing --student: no error")
	}
}
