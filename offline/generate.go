package offline

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/alignet/alignet/internal/progress"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/npy"
)

// DatasetOrder documents the triplet convention of AligNet dataset files
// (the odd-one-last layout of the official AligNet release; see
// learner.Generator), and is stored in their metadata.
const DatasetOrder = "indices (a,b,c) with c the teacher's odd one out, i.e. (a,b) the most similar pair; similarities (s_ab, s_ac, s_bc), so similarities[:,0] is the largest"

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
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	teacherPath := fs.String("teacher", "", "teacher model .npz (from alignet fit)")
	embPath := fs.String("embeddings", "", "embeddings .npy (n×D float)")
	total := fs.Int64("n", 0, "number of triplets to generate")
	clusters := fs.Int("clusters", 500, "number of k-means clusters")
	strategy := fs.String("strategy", learner.StrategyClusterBorder, "sampling strategy: "+strings.Join(learner.Strategies(), "|"))
	labelsPath := fs.String("labels", "", "class labels: .npy of n integers, a text file with one integer per line, or a categories .tsv (first category of each item; none = unlabelled)")
	seed := fs.Uint64("seed", 1, "random seed")
	chunk := fs.Int("chunk", 1<<16, "triplets generated per chunk")
	kmeans := fs.String("kmeans", "auto", "clustering: lloyd, minibatch or auto (minibatch above 100,000 items)")
	iters := fs.Int("kmeans-iter", 0, "k-means iterations or mini-batches (default 100)")
	batch := fs.Int("kmeans-batch", 0, "mini-batch size (default 4096)")
	out := fs.String("out", "", "output dataset .npz")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *teacherPath == "":
		return errors.New("generate: --teacher is required")
	case *embPath == "":
		return errors.New("generate: --embeddings is required")
	case *out == "":
		return errors.New("generate: --out is required")
	case *total <= 0:
		return errors.New("generate: --n must be positive")
	case *chunk <= 0:
		return errors.New("generate: --chunk must be positive")
	case *total > npy.MaxElements/3:
		return fmt.Errorf("generate: --n must be at most %d (npy.MaxElements/3)", npy.MaxElements/3)
	}
	teacher, tprov, err := LoadTeacher(*teacherPath)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	x, n, d, err := ReadEmbeddings(*embPath)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	if d != teacher.D {
		return fmt.Errorf("generate: embeddings have %d dimensions, teacher expects %d", d, teacher.D)
	}
	tsha, err := FileSHA256(*teacherPath)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	esha, err := FileSHA256(*embPath)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
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
			return fmt.Errorf("generate: strategy %s needs --labels", *strategy)
		}
		if gcfg.Labels, err = ReadLabels(*labelsPath, n); err != nil {
			return fmt.Errorf("generate: %w", err)
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
			return fmt.Errorf("generate: unknown --kmeans %q (want lloyd, minibatch or auto)", *kmeans)
		}
		if err != nil {
			return fmt.Errorf("generate: %w", err)
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
		return fmt.Errorf("generate: %w", err)
	}
	prov := Provenance{
		Version: ProvenanceVersion, Kind: "dataset", Created: time.Now().UTC(), Seed: *seed,
		Task: learner.TaskOddOneOut, Embeddings: *embPath, EmbeddingsSHA256: esha,
		Hyper: map[string]any{"n": *total, "strategy": *strategy, "clusters": sum.Clusters,
			"kmeans": sum.KMeans, "chunk": *chunk},
		Extra: map[string]any{"teacher": *teacherPath, "teacher_sha256": tsha,
			"teacher_tau": teacher.Tau, "teacher_seed": tprov.Seed, "order": DatasetOrder,
			"items": n, "inertia": sum.Inertia},
	}
	if *labelsPath != "" {
		prov.Extra["labels"] = *labelsPath
	}
	bar := progress.New(stderr, "generate", *total)
	start := time.Now()
	err = writeAtomic(*out, func(f *os.File) error {
		return writeDataset(ctx, f, gen, *total, *chunk, prov, bar)
	})
	bar.Finish()
	if err != nil {
		return fmt.Errorf("generate: %w", err)
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

// writeDataset streams total triplets from gen into an .npz on f. The
// similarities member is written directly while the indices are spooled
// to a temporary file next to f and copied in afterwards, since zip
// members are written one at a time.
func writeDataset(ctx context.Context, f *os.File, gen *learner.Generator, total int64, chunk int, prov Provenance, bar *progress.Bar) error {
	spool, err := os.CreateTemp(filepath.Dir(f.Name()), ".indices.tmp*")
	if err != nil {
		return fmt.Errorf("spool indices: %w", err)
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw := npy.NewNPZWriter(bw)
	sw, err := zw.Create("similarities", npy.Header{Dtype: npy.Float32, Shape: []int{int(total), 3}})
	if err != nil {
		return err
	}
	iw := bufio.NewWriterSize(spool, 1<<20)
	c := min(int64(chunk), total)
	idx := make([]int32, 3*c)
	sims := make([]float32, 3*c)
	for done := int64(0); done < total; {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := min(c, total-done)
		gen.NextInto(idx[:3*m], sims[:3*m])
		if err := npy.WriteData(sw, sims[:3*m]); err != nil {
			return fmt.Errorf("write similarities: %w", err)
		}
		if err := npy.WriteData(iw, idx[:3*m]); err != nil {
			return fmt.Errorf("spool indices: %w", err)
		}
		done += m
		bar.Add(m)
	}
	if err := iw.Flush(); err != nil {
		return fmt.Errorf("spool indices: %w", err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spool indices: %w", err)
	}
	iwz, err := zw.Create("indices", npy.Header{Dtype: npy.Int32, Shape: []int{int(total), 3}})
	if err != nil {
		return err
	}
	if _, err := io.Copy(iwz, bufio.NewReaderSize(spool, 1<<20)); err != nil {
		return fmt.Errorf("copy indices: %w", err)
	}
	meta, err := json.Marshal(prov)
	if err != nil {
		return fmt.Errorf("encode meta: %w", err)
	}
	if err := zw.Add("meta", &npy.Array{Dtype: npy.Uint8, Shape: []int{len(meta)}, Data: meta}); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("close archive: %w", err)
	}
	return bw.Flush()
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
			return nil, fmt.Errorf("open labels: %w", err)
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
			return nil, fmt.Errorf("open labels: %w", err)
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

// ReadDataset reads an AligNet dataset .npz: indices (N×3, int32 or int64,
// odd one out last) and similarities (N×3 float) as flat row-major slices,
// and its provenance when a meta member is present.
func ReadDataset(path string) (idx []int32, sims []float32, prov Provenance, err error) {
	z, f, err := OpenNPZFile(path)
	if err != nil {
		return nil, nil, prov, fmt.Errorf("read dataset: %w", err)
	}
	defer f.Close()
	ia, err := z.Read("indices")
	if err != nil {
		return nil, nil, prov, fmt.Errorf("read dataset %s: %w", path, err)
	}
	sa, err := z.Read("similarities")
	if err != nil {
		return nil, nil, prov, fmt.Errorf("read dataset %s: %w", path, err)
	}
	if len(ia.Shape) != 2 || ia.Shape[1] != 3 || len(sa.Shape) != 2 || sa.Shape[1] != 3 || ia.Shape[0] != sa.Shape[0] {
		return nil, nil, prov, fmt.Errorf("read dataset %s: indices %v and similarities %v must both be N×3", path, ia.Shape, sa.Shape)
	}
	switch v := ia.Data.(type) {
	case []int32:
		idx = v
	default:
		w, err := ia.Int64()
		if err != nil {
			return nil, nil, prov, fmt.Errorf("read dataset %s: %w", path, err)
		}
		idx = make([]int32, len(w))
		for i, x := range w {
			if x < 0 || x > 1<<31-1 {
				return nil, nil, prov, fmt.Errorf("read dataset %s: index %d out of range", path, x)
			}
			idx[i] = int32(x)
		}
	}
	if sims, err = sa.Float32(); err != nil {
		return nil, nil, prov, fmt.Errorf("read dataset %s: %w", path, err)
	}
	for _, name := range z.Names() {
		if name == "meta" {
			if prov, err = ReadProvenance(z); err != nil {
				return nil, nil, prov, fmt.Errorf("read dataset %s: %w", path, err)
			}
		}
	}
	return idx, sims, prov, nil
}
