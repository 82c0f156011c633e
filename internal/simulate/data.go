package simulate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/alignet/alignet/internal/offline"
	"github.com/alignet/alignet/learner"
)

// LoadTHINGS reads the THINGS data set from dir: the CLIP ViT-B/32
// embeddings, the concept ids and the odd-one-out triplets of
// triplets_train.txt. Every tenth triplet (lines 10, 20, ..., the
// README's held.txt) is the real held-out set; the rest fit the crowd
// model.
func LoadTHINGS(dir string) (*Data, error) {
	x, n, d, err := offline.ReadEmbeddings(filepath.Join(dir, "clip_vit_b32.npy"))
	if err != nil {
		return nil, err
	}
	ids, err := offline.ReadIDs(filepath.Join(dir, "concepts.txt"))
	if err != nil {
		return nil, err
	}
	if len(ids) != n {
		return nil, fmt.Errorf("%s has %d concepts for %d embeddings", filepath.Join(dir, "concepts.txt"), len(ids), n)
	}
	path := filepath.Join(dir, "triplets_train.txt")
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ts, _, err := offline.ParseTriplets(f, n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	data := &Data{X: x, N: n, D: d, Items: ids, Task: learner.TaskOddOneOut}
	for i, t := range ts {
		if i%10 == 9 {
			data.Eval = append(data.Eval, t)
		} else {
			data.CrowdTrain = append(data.CrowdTrain, t)
		}
	}
	return data, nil
}

// FitCrowd fits the crowd's human model on data.CrowdTrain the way a refit
// fits the teacher (λ from grid on a seeded validation split, extended
// upward when its strongest value wins; τ calibrated), with hard targets.
func FitCrowd(ctx context.Context, data *Data, grid []float64, maxIter int, seed uint64) (*learner.Teacher, error) {
	rng := rand.New(rand.NewPCG(seed, 0xc40d))
	perm := rng.Perm(len(data.CrowdTrain))
	nVal := max(1, len(perm)/10)
	var train, val []learner.Triplet
	for a, i := range perm {
		if a < nVal {
			val = append(val, data.CrowdTrain[i])
		} else {
			train = append(train, data.CrowdTrain[i])
		}
	}
	t, err := selectLambda(ctx, data.X, data.N, data.D, train, val, grid,
		learner.TeacherConfig{Task: data.Task, MaxIter: maxIter, Seed: seed})
	if err != nil {
		return nil, fmt.Errorf("fit the crowd model: %w", err)
	}
	return t, nil
}
