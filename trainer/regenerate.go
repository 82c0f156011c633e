package trainer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/stream"
)

// regeneration is a dataset just made, kept in memory for the students.
type regeneration struct {
	ds      alignet.Dataset
	ids     []string // pool items, in index order
	idx     []int32
	sims    []float32
	teacher alignet.TeacherVersion
}

// stage starts timing a stage and returns the function that records its
// duration in stages and the stage metric.
func (t *Trainer) stage(name string, stages map[string]float64) func() {
	start := time.Now()
	return func() {
		d := time.Since(start).Seconds()
		stages[name] += d
		t.m.stage.WithLabelValues(name).Observe(d)
	}
}

// loadPool returns the ids and embeddings of a study's generation pool, in
// pool order: the listed items, or every item of the space sorted by id.
// Listed items that lost their embedding are dropped.
func (t *Trainer) loadPool(ctx context.Context, study string) (string, []string, []float32, int, error) {
	p, err := t.store.GetPool(ctx, study)
	if err != nil {
		return "", nil, nil, 0, err
	}
	sp, err := t.store.GetSpace(ctx, p.Space)
	if err != nil {
		return "", nil, nil, 0, err
	}
	if p.Items == nil {
		ids, x, err := t.store.PoolEmbeddings(ctx, p.Space, max(2, runtime.GOMAXPROCS(0)))
		return p.Space, ids, x, sp.Dim, err
	}
	x, found, err := t.store.LoadEmbeddings(ctx, p.Space, p.Items)
	if err != nil {
		return "", nil, nil, 0, err
	}
	ids := make([]string, 0, len(p.Items))
	k := 0
	for i, id := range p.Items {
		if !found[i] {
			continue
		}
		ids = append(ids, id)
		copy(x[k*sp.Dim:(k+1)*sp.Dim], x[i*sp.Dim:(i+1)*sp.Dim])
		k++
	}
	return p.Space, ids, x[:k*sp.Dim], sp.Dim, nil
}

// classLabels returns each pool item's class (the index of its first
// label, -1 for none), or nil when no pool item has a label.
func classLabels(ids []string, labels map[string][]string) []int32 {
	names := map[string]int32{}
	out := make([]int32, len(ids))
	labelled := false
	for i, id := range ids {
		out[i] = -1
		if ls := labels[id]; len(ls) > 0 {
			c, ok := names[ls[0]]
			if !ok {
				c = int32(len(names))
				names[ls[0]] = c
			}
			out[i] = c
			labelled = true
		}
	}
	if !labelled {
		return nil
	}
	return out
}

// transformBlock is the number of rows transformInPlace maps at once.
const transformBlock = 16384

// transformInPlace returns the teacher representations of the n×D
// embeddings x (n×P), computed block by block into x's own memory, which
// it overwrites: a pool of 1.28M × 768 floats then needs no second 3.9 GB
// copy. Block b's output [r0·P, r1·P) never reaches the input rows of
// later blocks, which start at r1·D ≥ r1·P.
func transformInPlace(t *learner.Teacher, x []float32, n int) []float32 {
	rows := make([]int32, transformBlock)
	for r0 := 0; r0 < n; r0 += transformBlock {
		r1 := min(r0+transformBlock, n)
		rs := rows[:r1-r0]
		for i := range rs {
			rs[i] = int32(r0 + i)
		}
		z := t.TransformRows(x, rs)
		copy(x[r0*t.P:r1*t.P], z)
	}
	return x[:n*t.P]
}

// inputHash digests the pool ids, their embeddings and the teacher.
func inputHash(space string, ids []string, x []float32, p alignet.TeacherParams) string {
	h := sha256.New()
	var b [8]byte
	put := func(s string) {
		binary.LittleEndian.PutUint64(b[:], uint64(len(s)))
		h.Write(b[:])
		h.Write([]byte(s))
	}
	put(space)
	for _, id := range ids {
		put(id)
	}
	floats := func(v []float32) {
		buf := make([]byte, 0, 1<<16)
		for _, f := range v {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(f))
			if len(buf) == cap(buf) {
				h.Write(buf)
				buf = buf[:0]
			}
		}
		h.Write(buf)
	}
	floats(x)
	floats(p.W)
	floats(p.B)
	binary.LittleEndian.PutUint64(b[:], math.Float64bits(p.Mean))
	h.Write(b[:])
	binary.LittleEndian.PutUint64(b[:], math.Float64bits(p.Std))
	h.Write(b[:])
	return hex.EncodeToString(h.Sum(nil))
}

// regenerate makes, stores and publishes one dataset of st for teacher
// version tv.
func (t *Trainer) regenerate(ctx context.Context, st alignet.Study, tv alignet.TeacherVersion, why string) (*regeneration, error) {
	ts := st.Settings.Trainer
	stages := map[string]float64{}
	log := t.log.With("study", st.ID, "teacher_version", tv.Version)
	log.Info("regenerating AligNet data", "why", why, "triplets", ts.Triplets)

	done := t.stage("load", stages)
	space, ids, x, d, err := t.loadPool(ctx, st.ID)
	if err != nil {
		return nil, fmt.Errorf("load pool: %w", err)
	}
	n := len(ids)
	if n < 3 {
		return nil, fmt.Errorf("the generation pool has %d items with embeddings, at least 3 are needed", n)
	}
	if d != tv.Params.D {
		return nil, fmt.Errorf("pool space %q has dim %d, the teacher takes %d", space, d, tv.Params.D)
	}
	labels, err := t.store.ItemLabels(ctx, space)
	if err != nil {
		return nil, fmt.Errorf("load labels: %w", err)
	}
	hash := inputHash(space, ids, x, tv.Params)
	done()

	done = t.stage("transform", stages)
	teacher := modelfile.TeacherOf(tv.Params)
	z := transformInPlace(teacher, x, n)
	x = nil
	done()

	// The version InsertDataset will give it: no other trainer inserts
	// while this one holds the study's lock.
	next := int64(1)
	switch prev, err := t.store.GetDataset(ctx, st.ID, 0); {
	case err == nil:
		next = prev.Version + 1
	case !errors.Is(err, alignet.ErrNotFound):
		return nil, err
	}
	seed := ts.Seed + uint64(next-1)
	cfg := genConfig{Triplets: ts.Triplets, Clusters: ts.Clusters, MiniBatchAbove: t.cfg.MiniBatchAbove,
		Mix: ts.Strategies, Labels: classLabels(ids, labels), Seed: seed, Chunk: 1 << 16}
	done = t.stage("generate", stages)
	idx := make([]int32, 0, 3*ts.Triplets)
	sims := make([]float32, 0, 3*ts.Triplets)
	info, err := generate(ctx, z, n, teacher.P, cfg, func(i []int32, s []float32) error {
		idx = append(idx, i...)
		sims = append(sims, s...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	z = nil
	done()
	stages["cluster"], stages["sample"] = info.ClusterTime.Seconds(), info.SampleTime.Seconds()

	ds := alignet.Dataset{Study: st.ID, TeacherVersion: tv.Version, Seed: seed, Triplets: ts.Triplets, Items: n,
		Space: space, InputHash: hash, Info: alignet.DatasetInfo{Clusters: info.Clusters, KMeans: info.KMeans,
			Inertia: info.Inertia, TeacherTau: tv.Params.Tau, Stages: stages}}
	for _, p := range info.Parts {
		ds.Info.Strategies = append(ds.Info.Strategies, alignet.StrategyCount{Strategy: p.Strategy, Triplets: p.Triplets})
	}
	done = t.stage("store", stages)
	if ds, err = t.storeDataset(ctx, ds, ids, idx, sims, st, done); err != nil {
		return nil, err
	}
	t.m.triplets.WithLabelValues(st.ID).Set(float64(ds.Triplets))
	t.m.bytes.WithLabelValues(st.ID).Set(float64(ds.Size))

	done = t.stage("publish", stages)
	if err := t.publish(ctx, ds, idx, sims); err != nil {
		// The dataset is stored; consumers of the topic miss it, but a
		// failed publish must not hold back the students.
		log.Warn("publish triplets failed", "dataset", ds.Version, "err", err)
	}
	done()
	log.Info("dataset stored", "dataset", ds.Version, "triplets", ds.Triplets, "items", n, "bytes", ds.Size,
		"clusters", ds.Info.Clusters, "stages", stageSummary(stages))
	return &regeneration{ds: ds, ids: ids, idx: idx, sims: sims, teacher: tv}, nil
}

// stageSummary renders stage timings in a stable order for logs.
func stageSummary(stages map[string]float64) string {
	names := make([]string, 0, len(stages))
	for k := range stages {
		names = append(names, k)
	}
	sort.Strings(names)
	out := ""
	for _, k := range names {
		out += fmt.Sprintf("%s=%.2fs ", k, stages[k])
	}
	return out
}

// storeDataset writes the dataset's .npz as an artifact, calls written,
// and inserts the dataset row, completing the artifact in the same
// transaction.
func (t *Trainer) storeDataset(ctx context.Context, ds alignet.Dataset, ids []string, idx []int32, sims []float32, st alignet.Study, written func()) (alignet.Dataset, error) {
	w, err := t.artifacts.CreateArtifact(ctx, "dataset")
	if err != nil {
		return ds, err
	}
	abort := func(err error) (alignet.Dataset, error) {
		if aerr := w.Abort(context.WithoutCancel(ctx)); aerr != nil {
			t.log.Warn("abort dataset artifact", "err", aerr)
		}
		return ds, err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	dw, err := modelfile.NewDatasetWriter(bw, ds.Triplets, nil, ids)
	if err != nil {
		return abort(err)
	}
	const step = 3 << 16
	for lo := 0; lo < len(idx); lo += step {
		if err := ctx.Err(); err != nil {
			return abort(err)
		}
		hi := min(lo+step, len(idx))
		if err := dw.Write(idx[lo:hi], sims[lo:hi]); err != nil {
			return abort(err)
		}
	}
	strategies := map[string]any{}
	for _, s := range ds.Info.Strategies {
		strategies[s.Strategy] = s.Triplets
	}
	prov := modelfile.Provenance{Seed: ds.Seed, Task: learner.TaskOddOneOut, EmbeddingsSHA256: ds.InputHash,
		Hyper: map[string]any{"n": ds.Triplets, "strategies": strategies, "clusters": ds.Info.Clusters, "kmeans": ds.Info.KMeans},
		Extra: map[string]any{"study": st.ID, "teacher_version": ds.TeacherVersion, "teacher_tau": ds.Info.TeacherTau,
			"order": modelfile.DatasetOrder, "items": ds.Items, "space": ds.Space, "inertia": ds.Info.Inertia, "input_hash": ds.InputHash}}
	if err := dw.Close(prov); err != nil {
		return abort(err)
	}
	if err := bw.Flush(); err != nil {
		return abort(err)
	}
	a, err := w.Close()
	if err != nil {
		return abort(err)
	}
	ds.Artifact, ds.Size, ds.SHA256 = a.ID, a.Size, a.SHA256
	written() // the store stage's time goes into ds.Info.Stages
	stored, err := t.store.InsertDataset(ctx, ds, st.Settings.Trainer.KeepDatasets)
	if err != nil {
		return abort(fmt.Errorf("insert dataset: %w", err))
	}
	return stored, nil
}

// publish sends the dataset to the triplets topic in chunks.
func (t *Trainer) publish(ctx context.Context, ds alignet.Dataset, idx []int32, sims []float32) error {
	chunk := 3 * t.cfg.PublishChunk
	var batch []stream.TripletChunk
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := t.pub.Publish(ctx, batch); err != nil {
			return err
		}
		for _, c := range batch {
			t.m.published.Add(float64(len(c.Indices) / 3))
		}
		batch = batch[:0]
		return nil
	}
	for lo := 0; lo < len(idx); lo += chunk {
		hi := min(lo+chunk, len(idx))
		batch = append(batch, stream.TripletChunk{Study: ds.Study, Dataset: ds.Version, TeacherVersion: ds.TeacherVersion,
			Offset: int64(lo / 3), Total: ds.Triplets, Indices: slices.Clip(idx[lo:hi]), Similarities: slices.Clip(sims[lo:hi])})
		if len(batch) == 32 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}
