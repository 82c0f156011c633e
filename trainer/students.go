package trainer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/internal/offline"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// flaggedWorkers returns the workers of study whose judgments learning
// must not use.
func (t *Trainer) flaggedWorkers(ctx context.Context, study string) (map[string]bool, error) {
	fs, err := t.store.WorkerFlags(ctx, study)
	if err != nil {
		return nil, fmt.Errorf("worker flags: %w", err)
	}
	flagged := map[string]bool{}
	for _, f := range fs {
		if f.Flagged {
			flagged[f.Worker] = true
		}
	}
	return flagged, nil
}

// evalSet is a study's held-out odd-one-out judgments over their items.
type evalSet struct {
	items []string
	ts    []learner.Triplet
	// cats lists each item's categories (indices, ascending), nil when no
	// item has labels.
	cats [][]int32
	// tz holds the teacher's representations of items (tp columns).
	tz []float32
	tp int
}

// loadEval reads the held-out judgments of st and the teacher's
// representations of their items. Judgments over items without an
// embedding in the study's space are left out.
func (t *Trainer) loadEval(ctx context.Context, st alignet.Study, tv alignet.TeacherVersion, labelSpaces []string) (*evalSet, error) {
	pos := map[string]int32{}
	var items []string
	var raw [][3]int32
	flagged, err := t.flaggedWorkers(ctx, st.ID)
	if err != nil {
		return nil, err
	}
	// Students are scored on what the learner holds out, by the one rule.
	err = t.store.ExportJudgments(ctx, alignet.JudgmentFilter{Study: st.ID}, func(j alignet.Judgment) error {
		if j.Task != alignet.TaskOddOneOut || alignet.TrainingRole(j, st.Settings, flagged[j.Worker]) != alignet.RoleHeldOut {
			return nil
		}
		var tr [3]int32
		k := 0
		for _, it := range j.Items {
			if it == j.Odd {
				continue
			}
			if k < 2 {
				tr[k] = index(pos, &items, it)
			}
			k++
		}
		tr[2] = index(pos, &items, j.Odd)
		if k == 2 {
			raw = append(raw, tr)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("held-out judgments: %w", err)
	}
	e := &evalSet{items: items, tp: tv.Params.P}
	if len(items) == 0 {
		return e, nil
	}
	x, found, err := t.store.LoadEmbeddings(ctx, st.Space, items)
	if err != nil {
		return nil, fmt.Errorf("held-out items: %w", err)
	}
	for _, r := range raw {
		if found[r[0]] && found[r[1]] && found[r[2]] {
			e.ts = append(e.ts, learner.Triplet{I: r[0], J: r[1], K: r[2]})
		}
	}
	e.tz = modelfile.TeacherOf(tv.Params).Transform(x, len(items))
	names := map[string]int32{}
	e.cats = make([][]int32, len(items))
	labelled := false
	for _, sp := range labelSpaces {
		labels, err := t.store.ItemLabels(ctx, sp)
		if err != nil {
			return nil, fmt.Errorf("labels: %w", err)
		}
		for i, it := range items {
			if e.cats[i] != nil {
				continue
			}
			for _, l := range labels[it] {
				c, ok := names[l]
				if !ok {
					c = int32(len(names))
					names[l] = c
				}
				e.cats[i] = append(e.cats[i], c)
				labelled = true
			}
			slices.Sort(e.cats[i])
			e.cats[i] = slices.Compact(e.cats[i])
		}
	}
	if !labelled {
		e.cats = nil
	}
	return e, nil
}

// index returns the position of id in items, appending it if new.
func index(pos map[string]int32, items *[]string, id string) int32 {
	if i, ok := pos[id]; ok {
		return i
	}
	i := int32(len(*items))
	pos[id] = i
	*items = append(*items, id)
	return i
}

// finite returns v, or 0 when it is NaN (JSON has no NaN).
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// score returns the metrics of the n×p representation z of the eval items
// at temperature tau.
func (e *evalSet) score(z []float32, p int, tau float64) alignet.TeacherMetrics {
	m := alignet.TeacherMetrics{N: len(e.ts)}
	if m.N == 0 {
		return m
	}
	logits := learner.AllLogits(z, p, e.ts)
	m.Accuracy = finite(learner.AccuracyFromLogits(learner.TaskOddOneOut, logits))
	m.NLL = finite(learner.NLL(learner.TaskOddOneOut, logits, tau))
	ece, _ := learner.ECE(learner.TaskOddOneOut, logits, tau, 10)
	m.ECE = finite(ece)
	return m
}

// levels returns the per-level accuracy of z, or nil without labels.
func (e *evalSet) levels(z []float32, p int) *alignet.LevelAccuracy {
	if e.cats == nil || len(e.ts) == 0 {
		return nil
	}
	lv := learner.LevelAccuracy(z, p, e.ts, e.cats)
	out := &alignet.LevelAccuracy{NCoarse: lv.NCoarse, NFine: lv.NFine}
	if lv.NCoarse > 0 {
		out.Coarse = &lv.Coarse
	}
	if lv.NFine > 0 {
		out.Fine = &lv.Fine
	}
	return out
}

// teacherAgreement is the share of held-out judgments on which z's most
// probable odd one is the teacher's.
func (e *evalSet) teacherAgreement(z []float32, p int) float64 {
	if len(e.ts) == 0 {
		return 0
	}
	agree := 0
	for _, tr := range e.ts {
		if argmax3(learner.Logits(z, p, tr)) == argmax3(learner.Logits(e.tz, e.tp, tr)) {
			agree++
		}
	}
	return float64(agree) / float64(len(e.ts))
}

func argmax3(l [3]float64) int {
	best := 0
	for a := 1; a < 3; a++ {
		if l[a] > l[best] {
			best = a
		}
	}
	return best
}

// trainStudents trains every student of st whose newest version predates
// dataset ds. run holds ds in memory when it was just made; otherwise it
// is read back from its artifact.
func (t *Trainer) trainStudents(ctx context.Context, st alignet.Study, ds alignet.Dataset, run *regeneration) error {
	students, err := t.store.ListStudents(ctx, st.ID)
	if err != nil {
		return err
	}
	var todo []alignet.Student
	for _, s := range students {
		vs, err := t.store.StudentVersions(ctx, st.ID, s.ID)
		if err != nil {
			return err
		}
		if len(vs) == 0 || vs[0].Dataset < ds.Version {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	defer t.stage("students", map[string]float64{})()
	if run == nil || run.ds.Version != ds.Version {
		if run, err = t.readDataset(ctx, ds); err != nil {
			return fmt.Errorf("read dataset %d: %w", ds.Version, err)
		}
	}
	pool, err := t.store.GetPool(ctx, st.ID)
	if err != nil {
		return err
	}
	spaces := []string{st.Space}
	if pool.Space != st.Space {
		spaces = append(spaces, pool.Space)
	}
	eval, err := t.loadEval(ctx, st, run.teacher, spaces)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range todo {
		if err := t.trainStudent(ctx, st, s, run, eval); err != nil {
			if ctx.Err() == nil {
				t.m.trainErrors.Inc()
			}
			errs = append(errs, fmt.Errorf("student %q: %w", s.ID, err))
		}
	}
	return errors.Join(errs...)
}

// readDataset reads a stored dataset back into memory, with the teacher
// version that labelled it (the newest one if that is gone).
func (t *Trainer) readDataset(ctx context.Context, ds alignet.Dataset) (*regeneration, error) {
	var buf bytes.Buffer
	if err := t.artifacts.ReadArtifact(ctx, ds.Artifact, 0, ds.Size, &buf); err != nil {
		return nil, err
	}
	d, err := modelfile.ReadDataset(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		return nil, err
	}
	if d.Filenames == nil {
		return nil, errors.New("the dataset has no filenames")
	}
	ids := make([]string, ds.Items)
	for i, v := range d.Indices {
		if int(v) >= len(ids) {
			return nil, fmt.Errorf("index %d beyond the pool's %d items", v, ds.Items)
		}
		ids[v] = d.Filenames[i]
	}
	tv, err := t.store.TeacherVersion(ctx, ds.Study, ds.TeacherVersion)
	if errors.Is(err, alignet.ErrNotFound) {
		tv, err = t.store.TeacherVersion(ctx, ds.Study, 0)
	}
	if err != nil {
		return nil, err
	}
	return &regeneration{ds: ds, ids: ids, idx: d.Indices, sims: d.Similarities, teacher: tv}, nil
}

// writeHead stores h as a student .npz artifact, not yet complete.
func (t *Trainer) writeHead(ctx context.Context, h *learner.StudentHead, p modelfile.Provenance) (ArtifactWriter, alignet.Artifact, error) {
	w, err := t.artifacts.CreateArtifact(ctx, "student")
	if err != nil {
		return nil, alignet.Artifact{}, err
	}
	if err := modelfile.WriteStudent(w, h, p); err != nil {
		_ = w.Abort(context.WithoutCancel(ctx))
		return nil, alignet.Artifact{}, err
	}
	a, err := w.Close()
	if err != nil {
		_ = w.Abort(context.WithoutCancel(ctx))
		return nil, alignet.Artifact{}, err
	}
	return w, a, nil
}

// studentData returns the student's embeddings of the dataset's items,
// compacted to those it has, and the dataset's triplets over them (those
// with an item the student lacks are dropped).
func (t *Trainer) studentData(ctx context.Context, s alignet.Student, run *regeneration) ([]float32, int, int, []int32, []float32, error) {
	sp, err := t.store.GetSpace(ctx, s.Space)
	if err != nil {
		return nil, 0, 0, nil, nil, err
	}
	d := sp.Dim
	x, found, err := t.store.LoadEmbeddings(ctx, s.Space, run.ids)
	if err != nil {
		return nil, 0, 0, nil, nil, err
	}
	row := make([]int32, len(run.ids))
	n := 0
	for i := range run.ids {
		row[i] = -1
		if found[i] {
			row[i] = int32(n)
			copy(x[n*d:(n+1)*d], x[i*d:(i+1)*d])
			n++
		}
	}
	x = x[:n*d]
	idx := make([]int32, 0, len(run.idx))
	sims := make([]float32, 0, len(run.sims))
	for r := 0; r+3 <= len(run.idx); r += 3 {
		a, b, c := row[run.idx[r]], row[run.idx[r+1]], row[run.idx[r+2]]
		if a < 0 || b < 0 || c < 0 {
			continue
		}
		idx = append(idx, a, b, c)
		sims = append(sims, run.sims[r:r+3]...)
	}
	if len(idx) == 0 {
		return nil, 0, 0, nil, nil, fmt.Errorf("space %q has embeddings for %d of the %d pool items and no whole triplet", s.Space, n, len(run.ids))
	}
	return x, n, d, idx, sims, nil
}

// trainStudent fine-tunes one student on the dataset of run and stores the
// version, promoted unless it is worse than the current version on the
// held-out judgments.
func (t *Trainer) trainStudent(ctx context.Context, st alignet.Study, s alignet.Student, run *regeneration, eval *evalSet) error {
	set := s.Settings
	log := t.log.With("study", st.ID, "student", s.ID, "dataset", run.ds.Version)
	x, n, d, idx, sims, err := t.studentData(ctx, s, run)
	if err != nil {
		return err
	}
	trIdx, trSims, vaIdx, _ := offline.SplitDataset(idx, sims, set.ValShare, set.Seed)
	dcfg := learner.DistillConfig{Loss: set.Loss, TeacherTau: run.ds.Info.TeacherTau, Epochs: set.Epochs,
		BatchSize: set.BatchSize, LR: set.LearningRate, Decay: set.Decay, Seed: set.Seed}
	if dcfg.TeacherTau <= 0 {
		dcfg.TeacherTau = 1
	}
	prov := modelfile.Provenance{Seed: set.Seed, Task: learner.TaskOddOneOut,
		Hyper: map[string]any{"loss": set.Loss, "epochs": set.Epochs, "lr": set.LearningRate, "decay": set.Decay,
			"init": set.Init, "batch": set.BatchSize, "tau": set.Temperature, "teacher_tau": dcfg.TeacherTau, "val": set.ValShare},
		Extra: map[string]any{"study": st.ID, "student": s.ID, "space": s.Space, "dataset": run.ds.Version,
			"teacher_version": run.ds.TeacherVersion}}
	// θ₀: made on the first dataset and kept, so that every later version
	// decays toward the same initial weights.
	var theta0 *learner.StudentHead
	if s.InitArtifact == 0 {
		h0, _, err := offline.InitialHead(x, n, d, trIdx, trSims, learner.HeadConfig{Init: set.Init, OutDim: set.OutDim,
			Tau: set.Temperature, Seed: set.Seed}, dcfg)
		if err != nil {
			return err
		}
		w, a, err := t.writeHead(ctx, h0, prov)
		if err != nil {
			return err
		}
		id, err := t.store.SetStudentInit(ctx, st.ID, s.ID, a)
		if err != nil {
			_ = w.Abort(context.WithoutCancel(ctx))
			return err
		}
		if id != a.ID {
			_ = w.Abort(context.WithoutCancel(ctx))
		}
		s.InitArtifact = id
	}
	if theta0, err = modelfile.ReadStudentArtifact(ctx, t.artifacts, s.InitArtifact); err != nil {
		return fmt.Errorf("initial head: %w", err)
	}
	if theta0.D != d {
		return fmt.Errorf("initial head takes %d-d embeddings, space %q has %d", theta0.D, s.Space, d)
	}
	h := &learner.StudentHead{W: slices.Clone(theta0.W), B: slices.Clone(theta0.B), D: theta0.D, P: theta0.P,
		Mean: theta0.Mean, Std: theta0.Std, Tau: theta0.Tau, Init: theta0.Init}
	var parent int64
	var curMetrics *alignet.TeacherMetrics
	ex, efound, err := t.store.LoadEmbeddings(ctx, s.Space, eval.items)
	if err != nil {
		return fmt.Errorf("held-out items: %w", err)
	}
	ev := eval.restrict(efound)
	cur, err := t.store.StudentVersion(ctx, st.ID, s.ID, 0)
	switch {
	case err == nil:
		if h, err = modelfile.ReadStudentArtifact(ctx, t.artifacts, cur.Artifact); err != nil {
			return fmt.Errorf("current head: %w", err)
		}
		parent = cur.Version
		m := ev.score(h.Transform(ex, len(eval.items)), h.P, h.Tau)
		curMetrics = &m
	case !errors.Is(err, alignet.ErrNotFound):
		return err
	}
	dcfg.Anchor = theta0
	start := time.Now()
	stats, err := learner.TrainStudent(ctx, h, x, n, trIdx, trSims, dcfg)
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	z := h.Transform(ex, len(eval.items))
	m := alignet.StudentMetrics{
		Held:            ev.score(z, h.P, h.Tau),
		Levels:          ev.levels(z, h.P),
		Raw:             ev.score(ex, d, 1),
		TrainLossBefore: finite(stats.InitialLoss),
		TrainLossAfter:  finite(stats.FinalLoss),
		Triplets:        stats.Triplets,
		Seconds:         secs,
	}
	m.HeldTeacherAgreement = ev.teacherAgreement(z, h.P)
	if len(vaIdx) > 0 {
		m.TeacherAgreement = finite(offline.TeacherAgreement(h.Transform(x, n), h.P, vaIdx))
	}
	v := alignet.StudentVersion{Study: st.ID, Student: s.ID, Dataset: run.ds.Version, TeacherVersion: run.ds.TeacherVersion,
		Parent: parent, Promoted: true, Settings: set, D: h.D, P: h.P, Metrics: m}
	if curMetrics != nil && curMetrics.N > 0 && m.Held.Accuracy < curMetrics.Accuracy {
		v.Promoted = false
		v.Reason = fmt.Sprintf("held-out human accuracy %.4f is below the current version %d's %.4f on the same %d judgments",
			m.Held.Accuracy, cur.Version, curMetrics.Accuracy, curMetrics.N)
	}
	prov.Extra["parent"] = parent
	w, a, err := t.writeHead(ctx, h, prov)
	if err != nil {
		return err
	}
	stored, err := t.store.InsertStudentVersion(ctx, v, a, st.Settings.Trainer.KeepStudentVersions)
	if err != nil {
		_ = w.Abort(context.WithoutCancel(ctx))
		return err
	}
	promoted := "false"
	if stored.Promoted {
		promoted = "true"
		t.m.accuracy.WithLabelValues(st.ID, s.ID).Set(m.Held.Accuracy)
	}
	t.m.versions.WithLabelValues(st.ID, s.ID, promoted).Inc()
	t.m.agreement.WithLabelValues(st.ID, s.ID).Set(m.TeacherAgreement)
	t.m.refresh.WithLabelValues(st.ID, s.ID).Set(stored.CreatedAt.Sub(run.teacher.CreatedAt).Seconds())
	if secs > 0 {
		t.m.throughput.Set(float64(stats.Triplets) / secs)
	}
	log.Info("student version stored", "version", stored.Version, "promoted", stored.Promoted, "reason", stored.Reason,
		"held_out_accuracy", m.Held.Accuracy, "raw_accuracy", m.Raw.Accuracy, "n", m.Held.N,
		"teacher_agreement", m.TeacherAgreement, "triplets_per_second", float64(stats.Triplets)/max(secs, 1e-9))
	return nil
}

// restrict returns e without the judgments over items that found marks
// missing (the student lacks their embeddings).
func (e *evalSet) restrict(found []bool) *evalSet {
	c := *e
	c.ts = nil
	for _, tr := range e.ts {
		if found[tr.I] && found[tr.J] && found[tr.K] {
			c.ts = append(c.ts, tr)
		}
	}
	return &c
}
