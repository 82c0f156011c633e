package offline

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/alignet/alignet/learner"
)

// TestRunFitDistilledSynthetic runs "alignet fit --targets distilled" on
// clustered synthetic embeddings with choices planted by the clusters and
// a repeats file, and checks that the distilled teacher learns the planted
// structure.
func TestRunFitDistilledSynthetic(t *testing.T) {
	dir := t.TempDir()
	const n, d = 60, 8
	emb, _ := writeAlignetSynthetic(t, dir, n, d)
	rng := rand.New(rand.NewPCG(3, 4))
	var ts []learner.Triplet
	for len(ts) < 3000 {
		i, j, k := int32(rng.IntN(n)), int32(rng.IntN(n)), int32(rng.IntN(n))
		// Keep i and j in one cluster (item mod 6) and k in another.
		if i == j || i%6 != j%6 || k%6 == i%6 {
			continue
		}
		if rng.Float64() < 0.15 { // some noise: a wrong odd one
			i, k = k, i
		}
		ts = append(ts, learner.Triplet{I: i, J: j, K: k})
	}
	trip := filepath.Join(dir, "triplets.txt")
	writeTriplets(t, trip, ts)
	reps := filepath.Join(dir, "repeats.csv")
	if err := os.WriteFile(reps, []byte("id0,id1,id2,n_odd_id0,n_odd_id1,n_odd_id2\n0,6,1,2,3,25\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := RunFit(context.Background(), []string{"--embeddings", emb, "--triplets", trip, "--repeats", reps,
		"--targets", "distilled", "--json", "--lambdas", "0.01", "--max-iter", "30", "--out-dim", "4"}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var rep FitReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if rep.Targets != "distilled" {
		t.Errorf("report targets %q", rep.Targets)
	}
	if acc := deref(rep.Val.Accuracy); !(acc > 0.75) || math.IsNaN(acc) {
		t.Errorf("distilled teacher validation accuracy %.3f, want above 0.75 (planted 0.85)", acc)
	}
}
