package online

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// Refit constants.
const (
	// valShare is the share of a refit's training judgments used to choose
	// λ and calibrate τ.
	valShare = 0.1
	// minRefit is the fewest trainable judgments a refit fits on.
	minRefit = 20
)

// errTooFew is the error of a refit with too few trainable judgments.
var errTooFew = errors.New("too few trainable judgments")

// job is the work of a refit (fit) or of a warm-up (read only) of a study.
type job struct {
	study string
	task  alignet.Task
	// roles are the study's settings and flagged workers when the job
	// started; the job owns them.
	roles roles
	sp    *space
	fit   bool
	// seen is the learner's judgment count of the study when the job
	// started.
	seen int64
}

// jobResult is what a job hands back to the study's actor.
type jobResult struct {
	study string
	fit   bool
	err   error
	// teacher is the refitted teacher; targets is "hard" or "distilled".
	teacher *learner.Teacher
	targets string
	scores  []learner.LambdaScore
	// train and held are the study's stored judgments of those roles,
	// mapped to rows of the job's space.
	train []sample
	held  []sample
	// excluded counts the excluded judgments read.
	excluded int64
	// read holds the id hashes of every judgment read.
	read *idSet
	// count is the number of judgments read.
	count    int64
	duration time.Duration
}

// record is a study's stored judgments, split by their roles.
type record struct {
	train, held []sample
	// excluded counts the judgments of role alignet.RoleExcluded.
	excluded int64
	read     *idSet
	count    int64
}

// readRecord reads the deduplicated judgments of a study from Postgres
// (with their query kinds) and splits them by the job's roles. Judgments
// of another task or with items lacking embeddings in sp are counted in
// read but not kept, and so are excluded ones.
func readRecord(ctx context.Context, store Store, j job) (*record, error) {
	rec := &record{read: newIDSet(1024)}
	err := store.ExportJudgments(ctx, alignet.JudgmentFilter{Study: j.study}, func(jg alignet.Judgment) error {
		rec.count++
		rec.read.add(alignet.IDHash(jg.ID))
		if jg.Task != j.task {
			return nil
		}
		t, _, embedded := j.sp.triplet(&jg)
		if !embedded {
			return nil
		}
		smp := newSample(&jg, t)
		switch j.roles.of(smp) {
		case alignet.RoleTrain:
			rec.train = append(rec.train, smp)
		case alignet.RoleHeldOut:
			rec.held = append(rec.held, smp)
		default:
			rec.excluded++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read judgments: %w", err)
	}
	return rec, nil
}

// runJob reads the study's record and, for a refit, fits the teacher.
func (l *Learner) runJob(ctx context.Context, j job) jobResult {
	start := time.Now()
	res := jobResult{study: j.study, fit: j.fit}
	if j.fit {
		l.awaitRecord(ctx, j)
	}
	rec, err := readRecord(ctx, l.store, j)
	if err != nil {
		res.err = err
		return res
	}
	res.train, res.held, res.excluded, res.read, res.count = rec.train, rec.held, rec.excluded, rec.read, rec.count
	if j.fit {
		res.teacher, res.targets, res.scores, res.err = l.fit(ctx, j, rec)
	}
	res.duration = time.Since(start)
	return res
}

// awaitRecord waits, up to RefitWait, until Postgres holds at least as
// many of the study's judgments as the learner had seen.
func (l *Learner) awaitRecord(ctx context.Context, j job) {
	deadline := time.Now().Add(l.cfg.RefitWait)
	for time.Now().Before(deadline) {
		n, err := l.store.CountJudgments(ctx, j.study)
		if err == nil && n >= j.seen {
			return
		}
		if !sleep(ctx, 250*time.Millisecond) {
			return
		}
	}
	l.log.Warn("refit reads an incomplete record: the persister lags", "study", j.study, "seen", j.seen)
}

// fit is the exact path: it splits the training judgments into training
// and validation sets (seeded), chooses λ on validation data with L-BFGS
// fits, distils the ensemble of the human model (VICE) and a hard-label
// teacher into soft targets where the study has repeated triplets, and
// calibrates τ on the validation choices.
func (l *Learner) fit(ctx context.Context, j job, rec *record) (*learner.Teacher, string, []learner.LambdaScore, error) {
	if len(rec.train) < minRefit {
		return nil, "", nil, fmt.Errorf("%w: %d (need %d)", errTooFew, len(rec.train), minRefit)
	}
	rng := rand.New(rand.NewPCG(l.cfg.Seed, 0x5e1ec7))
	perm := rng.Perm(len(rec.train))
	nVal := max(1, int(float64(len(perm))*valShare+0.5))
	var train, val []learner.Triplet
	var trainWorkers []uint64
	for a, i := range perm {
		if a < nVal {
			val = append(val, rec.train[i].t)
			continue
		}
		train = append(train, rec.train[i].t)
		trainWorkers = append(trainWorkers, rec.train[i].worker)
	}
	// Fit on the rows the judgments use, so that items without judgments
	// neither cost time nor shift the standardisation.
	rows, local := learner.Compact(append(append([]learner.Triplet(nil), train...), val...))
	lt, lv := local[:len(train)], local[len(train):]
	d, ls := j.sp.dim, j.roles.settings.Learner
	x := make([]float32, len(rows)*d)
	for i, r := range rows {
		copy(x[i*d:(i+1)*d], j.sp.x[int(r)*d:int(r+1)*d])
	}
	n := len(rows)
	cfg := learner.TeacherConfig{
		Task: learner.Task(j.task), OutDim: ls.OutDim, MaxIter: ls.MaxIter,
		Seed: l.cfg.Seed, Workers: l.cfg.RefitWorkers,
	}
	if cfg.OutDim > d {
		cfg.OutDim = 0
	}
	var reps []learner.RepeatedTriplet
	if ls.Distill && j.task == alignet.TaskOddOneOut {
		reps = repeatsOf(lt, trainWorkers)
	}
	targets := "hard"
	var soft [][3]float32
	if len(reps) > 0 {
		hard, _, err := selectLambda(ctx, x, n, d, lt, nil, lv, ls.Lambdas, cfg)
		if err != nil {
			return nil, "", nil, fmt.Errorf("hard-label teacher: %w", err)
		}
		hm := learner.HumanModelConfig{Seed: int64(l.cfg.Seed), OneHotMix: learner.EnsembleOneHotMix, Workers: l.cfg.RefitWorkers}
		if soft, err = learner.EnsembleDistilledTargets(x, n, lt, reps, hard, hm); err != nil {
			return nil, "", nil, fmt.Errorf("distilled targets: %w", err)
		}
		targets = "distilled"
	}
	t, scores, err := selectLambda(ctx, x, n, d, lt, soft, lv, ls.Lambdas, cfg)
	if err != nil {
		return nil, "", nil, fmt.Errorf("select λ: %w", err)
	}
	return t, targets, scores, nil
}

// lambdaExtensions is how many values, each 10 times the previous,
// selectLambda adds above a grid whose strongest value wins.
const lambdaExtensions = 4

// selectLambda is learner.SelectLambda over the study's grid, extended
// upward by lambdaExtensions values (10, 100, ... times its strongest)
// when its strongest value wins on validation data: the grid suits the
// data sizes it was chosen for, and with few judgments (the first refits
// of a study) a 512×512 transform needs far stronger regularisation than
// 10⁵ judgments do, or it fits worse than the raw embeddings. It returns
// the best teacher and every score.
func selectLambda(ctx context.Context, x []float32, n, d int, train []learner.Triplet, targets [][3]float32, val []learner.Triplet, grid []float64, cfg learner.TeacherConfig) (*learner.Teacher, []learner.LambdaScore, error) {
	best, scores, err := learner.SelectLambda(ctx, x, n, d, train, targets, val, nil, grid, cfg)
	if err != nil {
		return nil, scores, err
	}
	top := slices.Max(grid)
	if best.Lambda < top || top <= 0 {
		return best, scores, nil
	}
	up := make([]float64, lambdaExtensions)
	for i := range up {
		top *= 10
		up[i] = top
	}
	strong, more, err := learner.SelectLambda(ctx, x, n, d, train, targets, val, nil, up, cfg)
	if err != nil {
		return nil, scores, err
	}
	if minNLL(more) < minNLL(scores) {
		best = strong
	}
	return best, append(scores, more...), nil
}

func minNLL(scores []learner.LambdaScore) float64 {
	m := math.Inf(1)
	for _, s := range scores {
		m = min(m, s.ValNLL)
	}
	return m
}
