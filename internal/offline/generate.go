package offline

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/alignet/alignet/internal/cmdline"
	"github.com/alignet/alignet/internal/progress"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/npy"
)

// miniBatchThreshold is the item count above which generate clusters with
// mini-batch k-means when --kmeans is auto.
const miniBatchThreshold = 100_000

// GenerateSummary is the report of RunGenerate.
type GenerateSummary struct {
	// Out is the dataset path, Triplets the number written.
	Out      string `json:"out"`
	Triplets int64  `json:"triplets"`
	// Items and Dim describe the teacher representations.
	Items int `json:"items"`
	Dim   int `json:"dim"`
	// Strategy is the sampling strategy.
	Strategy string `json:"strategy"`
	// Clusters, KMeans, Inertia and EmptyGroups describe the clustering
	// (zero for strategies that need none).
	Clusters    int     `json:"clusters"`
	KMeans      string  `json:"kmeans"`
	Inertia     float64 `json:"inertia"`
	EmptyGroups int     `json:"empty_clusters"`
	// Seed is the random seed.
	Seed uint64 `json:"seed"`
	// ClusterSecs and GenSecs time the two phases; PerSecond is the
	// generation rate.
	ClusterSecs float64 `json:"cluster_seconds"`
	GenSecs     float64 `json:"generate_seconds"`
	PerSecond   float64 `json:"triplets_per_second"`
}

// RunGenerate implements "alignet generate": it maps the embeddings
// through the teacher, clusters the teacher representations with k-means,
// draws N triplets with the chosen strategy, labels each with the
// teacher's similarity logits (odd one out last, see DatasetOrder) and
// streams them into a .npz with arrays "similarities" (N×3 float32),
// "indices" (N×3 int32) and "meta" (provenance JSON as uint8).
func RunGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("generate", "Generate an AligNet triplet dataset: cluster the teacher's representations with k-means, draw triplets and label each with the teacher's similarities.", stdout)
	teacherPath := fs.String("teacher", "", "teacher .npz `FILE` written by alignet fit")
	embPath := fs.String("embeddings", "", usageEmbeddings)
	total := fs.Int64("n", 0, "number of triplets to generate")
	clusters := fs.Int("clusters", 500, "number of k-means clusters")
	strategy := fs.String("strategy", learner.StrategyClusterBorder, "sampling `STRATEGY`: "+strings.Join(learner.Strategies(), ", "))
	labelsPath := fs.String("labels", "", "class labels `FILE`: .npy of n integers, a text file with one integer per line, or a categories .tsv (first category of each item; none = unlabelled)")
	seed := fs.Uint64("seed", 1, "random seed")
	chunk := fs.Int("chunk", 1<<16, "triplets generated per chunk")
	kmeans := fs.String("kmeans", "auto", "clustering `MODE`: lloyd, minibatch or auto (minibatch above 100,000 items)")
	iters := fs.Int("kmeans-iter", 0, "k-means iterations or mini-batches (default 100)")
	batch := fs.Int("kmeans-batch", 0, "mini-batch size (default 4096)")
	out := fs.String("out", "", "output dataset .npz `FILE`")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	fs.Require("teacher", "embeddings", "n", "out")
	fs.Example("alignet generate --teacher teacher.npz --embeddings clip.npy --n 200000 --clusters 50 --out alignet.npz")
	fs.Note("The dataset holds \"indices\" (N×3 int32, the odd one out last), \"similarities\" (N×3 float32) and \"meta\" (provenance JSON); numpy.load reads it.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *total <= 0:
		return errors.New("--n must be positive")
	case *chunk <= 0:
		return errors.New("--chunk must be positive")
	case *total > modelfile.MaxDatasetTriplets:
		return fmt.Errorf("--n must be at most %d", int64(modelfile.MaxDatasetTriplets))
	}
	teacher, tprov, err := modelfile.LoadTeacher(*teacherPath)
	if err != nil {
		return err
	}
	x, n, d, err := ReadEmbeddings(*embPath)
	if err != nil {
		return err
	}
	if d != teacher.D {
		return fmt.Errorf("embeddings have %d dimensions, teacher expects %d", d, teacher.D)
	}
	tsha, err := FileSHA256(*teacherPath)
	if err != nil {
		return err
	}
	esha, err := FileSHA256(*embPath)
	if err != nil {
		return err
	}
	z := teacher.Transform(x, n)
	x = nil
	p := teacher.P
	sum := GenerateSummary{Out: *out, Triplets: *total, Items: n, Dim: p, Strategy: *strategy, Seed: *seed}
	gcfg := learner.GeneratorConfig{Strategy: *strategy, Seed: *seed}
	needClusters := *strategy == learner.StrategyClusterBorder || *strategy == learner.StrategyWithinCluster
	needLabels := strings.Contains(*strategy, "class")
	if needLabels {
		if *labelsPath == "" {
			return fmt.Errorf("strategy %s needs --labels", *strategy)
		}
		if gcfg.Labels, err = ReadLabels(*labelsPath, n); err != nil {
			return err
		}
	}
	if needClusters {
		k := min(*clusters, n)
		mode := *kmeans
		if mode == "auto" {
			mode = "lloyd"
			if n > miniBatchThreshold {
				mode = "minibatch"
			}
		}
		fmt.Fprintf(stderr, "clustering %d teacher representations (%d-d) into %d clusters (%s k-means)\n", n, p, k, mode)
		kcfg := learner.KMeansConfig{K: k, Seed: *seed, MaxIter: *iters, BatchSize: *batch}
		start := time.Now()
		var res *learner.KMeansResult
		switch mode {
		case "lloyd":
			res, err = learner.KMeans(ctx, z, n, p, kcfg)
		case "minibatch":
			res, err = learner.MiniBatchKMeans(ctx, z, n, p, kcfg)
		default:
			return fmt.Errorf("unknown --kmeans %q (want lloyd, minibatch or auto)", *kmeans)
		}
		if err != nil {
			return err
		}
		sum.ClusterSecs = time.Since(start).Seconds()
		sum.Clusters, sum.KMeans, sum.Inertia = k, mode, res.Inertia
		for _, s := range res.Sizes {
			if s == 0 {
				sum.EmptyGroups++
			}
		}
		gcfg.Clusters = res.Assign
	}
	gen, err := learner.NewGenerator(z, n, p, gcfg)
	if err != nil {
		return err
	}
	prov := modelfile.Provenance{
		Version: modelfile.ProvenanceVersion, Kind: modelfile.KindDataset, Created: time.Now().UTC(), Seed: *seed,
		Task: learner.TaskOddOneOut, Embeddings: *embPath, EmbeddingsSHA256: esha,
		Hyper: map[string]any{"n": *total, "strategy": *strategy, "clusters": sum.Clusters,
			"kmeans": sum.KMeans, "chunk": *chunk},
		Extra: map[string]any{"teacher": *teacherPath, "teacher_sha256": tsha,
			"teacher_tau": teacher.Tau, "teacher_seed": tprov.Seed, "order": modelfile.DatasetOrder,
			"items": n, "inertia": sum.Inertia},
	}
	if *labelsPath != "" {
		prov.Extra["labels"] = *labelsPath
	}
	bar := progress.New(stderr, "generate", *total)
	start := time.Now()
	err = modelfile.SaveDataset(*out, *total, nil, prov, func(dw *modelfile.DatasetWriter) error {
		return fillDataset(ctx, dw, gen, *total, *chunk, bar)
	})
	bar.Finish()
	if err != nil {
		return err
	}
	sum.GenSecs = time.Since(start).Seconds()
	if sum.GenSecs > 0 {
		sum.PerSecond = float64(*total) / sum.GenSecs
	}
	if *asJSON {
		return WriteJSON(stdout, sum)
	}
	t := NewTable("field", "value")
	t.Title = "AligNet dataset"
	t.AddRow("out", sum.Out)
	t.AddRow("triplets", sum.Triplets)
	t.AddRow("items", sum.Items)
	t.AddRow("teacher dim", sum.Dim)
	t.AddRow("strategy", sum.Strategy)
	if needClusters {
		t.AddRow("clusters", sum.Clusters)
		t.AddRow("k-means", sum.KMeans)
		t.AddRow("inertia", sum.Inertia)
		t.AddRow("empty clusters", sum.EmptyGroups)
		t.AddRow("cluster time", time.Duration(sum.ClusterSecs*float64(time.Second)))
	}
	t.AddRow("seed", strconv.FormatUint(sum.Seed, 10))
	t.AddRow("generate time", time.Duration(sum.GenSecs*float64(time.Second)))
	t.AddRow("triplets/s", sum.PerSecond)
	return t.Write(stdout)
}

// fillDataset writes total triplets from gen to dw, chunk at a time.
func fillDataset(ctx context.Context, dw *modelfile.DatasetWriter, gen *learner.Generator, total int64, chunk int, bar *progress.Bar) error {
	c := min(int64(chunk), total)
	idx := make([]int32, 3*c)
	sims := make([]float32, 3*c)
	for done := int64(0); done < total; {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := min(c, total-done)
		gen.NextInto(idx[:3*m], sims[:3*m])
		if err := dw.Write(idx[:3*m], sims[:3*m]); err != nil {
			return err
		}
		done += m
		bar.Add(m)
	}
	return nil
}

// ReadLabels reads one integer class label per item from a .npy array of n
// integers, a categories .tsv (see ReadCategories; each item's first
// category, −1 when it has none) or a text file with one integer per line.
// Negative labels mark unlabelled items.
func ReadLabels(path string, n int) ([]int32, error) {
	var labels []int32
	switch {
	case strings.HasSuffix(path, ".npy"):
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read labels: %w", err)
		}
		defer f.Close()
		a, err := npy.Read(bufio.NewReader(f))
		if err != nil {
			return nil, fmt.Errorf("read labels %s: %w", path, err)
		}
		v, err := a.Int64()
		if err != nil {
			return nil, fmt.Errorf("read labels %s: %w", path, err)
		}
		for _, l := range v {
			labels = append(labels, int32(l))
		}
	case strings.HasSuffix(path, ".tsv"):
		c, err := ReadCategories(path)
		if err != nil {
			return nil, err
		}
		for _, cs := range c.Items {
			l := int32(-1)
			if len(cs) > 0 {
				l = cs[0]
			}
			labels = append(labels, l)
		}
	default:
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read labels: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		line := 0
		for sc.Scan() {
			line++
			s := strings.TrimSpace(sc.Text())
			if s == "" || s[0] == '#' {
				continue
			}
			v, err := strconv.ParseInt(s, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("read labels %s line %d: %w", path, line, err)
			}
			labels = append(labels, int32(v))
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read labels %s: %w", path, err)
		}
	}
	if len(labels) != n {
		return nil, fmt.Errorf("read labels %s: %d labels for %d items", path, len(labels), n)
	}
	return labels, nil
}
