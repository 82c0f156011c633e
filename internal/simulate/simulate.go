// Package simulate runs a study against a simulated crowd, so labs can plan
// how many judgments they need and see what active query selection buys
// them. The crowd answers by sampling from a human model fitted on real
// judgments; the learner refits the teacher as the server's learner does,
// and every refit is scored on real held-out human judgments that neither
// the crowd model nor the learner ever saw.
//
// The active policy serves queries exactly as the API does: a
// query.Engine with the study's mix, scorer, pool, discount and checks,
// rescored after every refit, and the trained judgments are those
// alignet.TrainingRole gives the train role (checks, random test queries
// and flagged workers' judgments are not trained on). The random policy
// asks uniform random triplets, as a study without active selection does,
// and trains on all of them.
package simulate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/query"
)

// Policies of Config.Policy.
const (
	// PolicyRandom asks uniform random triplets and trains on all of them.
	PolicyRandom = "random"
	// PolicyActive serves the study's mix with the query engine.
	PolicyActive = "active"
)

// Defaults of Config.
const (
	// DefaultFirst is the judgment count of the first refit (the learner's
	// min_judgments).
	DefaultFirst = 500
	// DefaultFactor is the growth factor between refits (the learner's
	// refit_factor).
	DefaultFactor = 1.25
	// DefaultMaxIter bounds the L-BFGS iterations per λ (the learner's
	// max_iter).
	DefaultMaxIter = 60
	// DefaultValShare is the share of trained judgments each refit
	// validates λ and τ on.
	DefaultValShare = 0.1
	// lambdaExtensions is how many ten-fold stronger values a refit tries
	// when the strongest of the grid wins (as the learner does).
	lambdaExtensions = 4
)

// Data is what a simulation runs on: the items' embeddings, the judgments
// the crowd model is fitted on and the real held-out judgments every refit
// is scored on.
type Data struct {
	// X holds N×D row-major embeddings of the items.
	X []float32
	// N and D are the shape of X.
	N, D int
	// Items are the item ids, row by row.
	Items []string
	// Task is the judgment task.
	Task learner.Task
	// CrowdTrain are the judgments the crowd model is fitted on.
	CrowdTrain []learner.Triplet
	// Eval are the real held-out judgments, never used for fitting.
	Eval []learner.Triplet
}

// Config configures Run. Zero fields take the documented defaults.
type Config struct {
	// Policy is PolicyRandom or PolicyActive. Required.
	Policy string
	// Settings are the simulated study's query and learner settings
	// (mix, scorer, pool size, trials per worker, discount, checks, λ grid,
	// iterations). Default alignet.DefaultStudySettings().
	Settings *alignet.StudySettings
	// Judgments is the budget of simulated judgments. Required.
	Judgments int
	// First is the judgment count of the first refit; earlier queries are
	// scored by the raw embeddings. Default DefaultFirst.
	First int
	// Factor is the growth of the judgment count between refits. Default
	// DefaultFactor.
	Factor float64
	// Seed seeds the crowd's answers, the random queries, the validation
	// splits and the engine.
	Seed uint64
	// Progress, when set, is called after every refit.
	Progress func(Point)
}

// Point is the learner's state at one refit.
type Point struct {
	// Judgments is the number of simulated judgments collected.
	Judgments int `json:"judgments"`
	// Trained is how many of them the refit trained on (validation
	// included); the rest are checks, random test queries or flagged
	// workers' judgments.
	Trained int `json:"trained"`
	// Accuracy and NLL score the refitted teacher on the real held-out
	// judgments.
	Accuracy float64 `json:"accuracy"`
	// NLL is described with Accuracy.
	NLL float64 `json:"nll"`
	// Lambda and Tau are the refit's chosen λ and τ.
	Lambda float64 `json:"lambda"`
	// Tau is described with Lambda.
	Tau float64 `json:"tau"`
	// Kinds counts the collected judgments by query kind ("" for the
	// random policy's).
	Kinds map[alignet.QueryKind]int `json:"kinds,omitempty"`
	// FlaggedWorkers is the number of simulated workers flagged so far.
	FlaggedWorkers int `json:"flagged_workers"`
	// Seconds is the wall time since the start of the run.
	Seconds float64 `json:"seconds"`
}

// Result is a learning curve.
type Result struct {
	// Policy and Scorer say how queries were chosen (Scorer is empty for
	// the random policy).
	Policy string `json:"policy"`
	// Scorer is described with Policy.
	Scorer string `json:"scorer,omitempty"`
	// Raw scores the raw embeddings (identity transform, τ = 1) on the
	// held-out judgments: the curve's starting point.
	Raw Point `json:"raw"`
	// Points are the refits in order.
	Points []Point `json:"points"`
}

// Checkpoints returns the judgment counts at which the learner refits:
// first, then growing by factor (at least by one), and the budget.
func Checkpoints(first int, factor float64, budget int) []int {
	var out []int
	for c := first; c < budget; {
		out = append(out, c)
		c = max(c+1, int(math.Ceil(float64(c)*factor)))
	}
	return append(out, budget)
}

// sample is one simulated judgment: the triplet as answered (I and J kept
// together, K odd), the query's kind and the worker.
type sample struct {
	t      learner.Triplet
	kind   alignet.QueryKind
	worker int
}

// simWorker counts a simulated worker's answers for the flag rule.
type simWorker struct {
	flags alignet.WorkerFlags
}

// Run simulates the study and returns its learning curve. The crowd
// model is crowd (its τ included); answers are sampled from its outcome
// distribution.
func Run(ctx context.Context, data *Data, crowd *learner.Teacher, cfg Config) (Result, error) {
	settings := alignet.DefaultStudySettings()
	if cfg.Settings != nil {
		settings = *cfg.Settings
	}
	// The simulation's held-out set is the real one: no simulated judgment
	// is held out by the hash split.
	settings.Learner.HeldOutShare = 0
	if err := settings.Validate(); err != nil {
		return Result{}, fmt.Errorf("simulate: settings: %w", err)
	}
	switch {
	case cfg.Policy != PolicyRandom && cfg.Policy != PolicyActive:
		return Result{}, fmt.Errorf("simulate: policy %q (want %q or %q)", cfg.Policy, PolicyRandom, PolicyActive)
	case cfg.Judgments < 1:
		return Result{}, errors.New("simulate: the judgment budget must be positive")
	case data.N < 3 || len(data.X) != data.N*data.D || len(data.Items) != data.N:
		return Result{}, errors.New("simulate: data shapes disagree")
	case crowd == nil || crowd.D != data.D:
		return Result{}, errors.New("simulate: the crowd model does not fit the embeddings")
	}
	if cfg.First <= 0 {
		cfg.First = DefaultFirst
	}
	if cfg.Factor <= 1 {
		cfg.Factor = DefaultFactor
	}
	start := time.Now()
	res := Result{Policy: cfg.Policy}
	if cfg.Policy == PolicyActive {
		res.Scorer = settings.Queries.Scorer
	}
	s := &sim{data: data, cfg: cfg, settings: settings, rng: rand.New(rand.NewPCG(cfg.Seed, 0x51a))}
	s.crowdZ = crowd.Transform(data.X, data.N)
	s.crowd = crowd
	raw := &query.Teacher{Task: data.Task, Tau: 1, Items: data.Items, P: data.D, Z: data.X}
	res.Raw = s.score(raw.Z, raw.P, 1)
	res.Raw.Lambda = 0
	if cfg.Policy == PolicyActive {
		if err := s.startEngine(raw); err != nil {
			return Result{}, err
		}
	}
	for k, c := range Checkpoints(cfg.First, cfg.Factor, cfg.Judgments) {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := s.collect(c); err != nil {
			return res, err
		}
		t, trained, err := s.refit(ctx)
		if err != nil {
			return res, err
		}
		z := t.Transform(data.X, data.N)
		p := s.score(z, t.P, t.Tau)
		p.Judgments, p.Trained, p.Lambda, p.Tau = len(s.samples), trained, t.Lambda, t.Tau
		p.Kinds = map[alignet.QueryKind]int{}
		for _, sm := range s.samples {
			p.Kinds[sm.kind]++
		}
		for _, w := range s.workers {
			if w.flags.Flagged {
				p.FlaggedWorkers++
			}
		}
		p.Seconds = time.Since(start).Seconds()
		res.Points = append(res.Points, p)
		if cfg.Progress != nil {
			cfg.Progress(p)
		}
		if s.engine != nil {
			if _, err := s.engine.SetTeacher(&query.Teacher{Version: int64(k + 1), Task: data.Task, Tau: t.Tau,
				Items: data.Items, P: t.P, Z: z}, nil); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// sim is one running simulation.
type sim struct {
	data     *Data
	cfg      Config
	settings alignet.StudySettings
	rng      *rand.Rand
	crowd    *learner.Teacher
	crowdZ   []float32

	engine    *query.Engine
	itemIndex map[string]int32
	now       time.Time
	session   string
	samples   []sample
	workers   []*simWorker
	ids       int
}

func (s *sim) startEngine(raw *query.Teacher) error {
	e, err := query.NewEngine(query.Config{Study: "simulation", Task: alignet.Task(s.data.Task), Settings: s.settings.Queries,
		Checks: s.settings.Checks, Seed: s.cfg.Seed, NewID: func() string { s.ids++; return "q" + strconv.Itoa(s.ids) }})
	if err != nil {
		return err
	}
	if _, err := e.SetTeacher(raw, nil); err != nil {
		return err
	}
	if n := s.settings.Queries.Repeats; n > 0 {
		e.SetRepeats(e.DrawRepeats(n))
	}
	s.engine = e
	s.now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return nil
}

// collect gathers simulated judgments until there are n.
func (s *sim) collect(n int) error {
	for len(s.samples) < n {
		if s.engine == nil {
			tr := randomTriplet(s.rng, s.data.N)
			s.samples = append(s.samples, sample{t: s.answer([3]int32{tr.I, tr.J, tr.K}), worker: -1})
			continue
		}
		if err := s.serveOne(); err != nil {
			return err
		}
	}
	return nil
}

// serveOne asks the current worker's session for a query (opening a new
// worker when it is complete), samples the crowd's answer and reports it
// to the engine as the API would.
func (s *sim) serveOne() error {
	for {
		s.now = s.now.Add(time.Second)
		if s.session == "" {
			w := len(s.workers)
			s.workers = append(s.workers, &simWorker{flags: alignet.WorkerFlags{Worker: strconv.Itoa(w)}})
			s.session = "s" + strconv.Itoa(w)
			s.engine.AddSession(alignet.Session{ID: s.session, Study: "simulation", Worker: strconv.Itoa(w),
				Platform: alignet.PlatformGeneric, Trials: s.settings.Queries.Trials, CreatedAt: s.now}, nil, s.now)
		}
		res, err := s.engine.Serve(s.session, 1, s.now)
		if err != nil {
			return err
		}
		if res.Complete {
			s.session = ""
			continue
		}
		q := res.Queries[0]
		var idx [3]int32
		for a, it := range q.Items {
			i, ok := s.index(it)
			if !ok {
				return fmt.Errorf("simulate: served unknown item %q", it)
			}
			idx[a] = i
		}
		t := s.answer(idx)
		w := len(s.workers) - 1
		s.samples = append(s.samples, sample{t: t, kind: q.Kind, worker: w})
		s.engine.Answer(q.ID, "j"+q.ID, s.now)
		f := &s.workers[w].flags
		f.Trials++
		if q.Kind == alignet.QueryCheck {
			if s.data.Items[t.K] == q.Expected {
				f.ChecksPassed++
			} else {
				f.ChecksFailed++
			}
		}
		f.Reasons = s.settings.Queries.Flags.Reasons(*f)
		f.Flagged = f.Flagged || len(f.Reasons) > 0
		return nil
	}
}

func (s *sim) index(item string) (int32, bool) {
	if s.itemIndex == nil {
		s.itemIndex = make(map[string]int32, s.data.N)
		for i, it := range s.data.Items {
			s.itemIndex[it] = int32(i)
		}
	}
	i, ok := s.itemIndex[item]
	return i, ok
}

// answer samples the crowd's choice on the items shown (display order)
// and returns the triplet as answered: the kept pair, then the odd one.
func (s *sim) answer(items [3]int32) learner.Triplet {
	tr := learner.Triplet{I: items[0], J: items[1], K: items[2]}
	p := learner.TaskProbs(s.data.Task, learner.Logits(s.crowdZ, s.crowd.P, tr), s.crowd.Tau)
	u := s.rng.Float64()
	slot := 0
	for slot < 2 && u >= p[slot] {
		u -= p[slot]
		slot++
	}
	if s.data.Task == learner.TaskAnchor {
		if slot == 1 { // K judged closer
			return learner.Triplet{I: tr.I, J: tr.K, K: tr.J}
		}
		return tr
	}
	switch slot {
	case 1: // J odd
		return learner.Triplet{I: tr.I, J: tr.K, K: tr.J}
	case 2: // I odd
		return learner.Triplet{I: tr.J, J: tr.K, K: tr.I}
	}
	return tr
}

// trainable returns the collected judgments the root rule lets learning
// train on.
func (s *sim) trainable() []learner.Triplet {
	var out []learner.Triplet
	for i, sm := range s.samples {
		j := alignet.Judgment{ID: "j" + strconv.Itoa(i), Study: "simulation", QueryKind: sm.kind}
		if sm.kind != "" {
			j.QueryID = "q" + strconv.Itoa(i)
		}
		flagged := sm.worker >= 0 && s.workers[sm.worker].flags.Flagged
		if alignet.TrainingRole(j, s.settings, flagged) == alignet.RoleTrain {
			out = append(out, sm.t)
		}
	}
	return out
}

// refit fits the teacher on the trainable judgments as the learner's
// refit does: a seeded validation split, λ chosen on it from the study's
// grid (extended upward when its strongest value wins), τ calibrated, on
// the rows the judgments use.
func (s *sim) refit(ctx context.Context) (*learner.Teacher, int, error) {
	ts := s.trainable()
	if len(ts) < 10 {
		return nil, 0, fmt.Errorf("simulate: only %d trainable judgments", len(ts))
	}
	rng := rand.New(rand.NewPCG(s.cfg.Seed, uint64(len(s.samples))))
	perm := rng.Perm(len(ts))
	nVal := max(1, int(float64(len(ts))*DefaultValShare+0.5))
	var train, val []learner.Triplet
	for a, i := range perm {
		if a < nVal {
			val = append(val, ts[i])
		} else {
			train = append(train, ts[i])
		}
	}
	rows, local := learner.Compact(append(slices.Clone(train), val...))
	d := s.data.D
	x := make([]float32, len(rows)*d)
	for i, r := range rows {
		copy(x[i*d:(i+1)*d], s.data.X[int(r)*d:int(r+1)*d])
	}
	ls := s.settings.Learner
	cfg := learner.TeacherConfig{Task: s.data.Task, OutDim: ls.OutDim, MaxIter: ls.MaxIter, Seed: s.cfg.Seed}
	if cfg.MaxIter == 0 {
		cfg.MaxIter = DefaultMaxIter
	}
	t, err := selectLambda(ctx, x, len(rows), d, local[:len(train)], local[len(train):], ls.Lambdas, cfg)
	if err != nil {
		return nil, 0, fmt.Errorf("simulate: refit at %d judgments: %w", len(s.samples), err)
	}
	return t, len(ts), nil
}

// selectLambda is learner.SelectLambda over grid, extended upward by
// lambdaExtensions ten-fold steps when its strongest value wins.
func selectLambda(ctx context.Context, x []float32, n, d int, train, val []learner.Triplet, grid []float64, cfg learner.TeacherConfig) (*learner.Teacher, error) {
	best, scores, err := learner.SelectLambda(ctx, x, n, d, train, nil, val, nil, grid, cfg)
	if err != nil {
		return nil, err
	}
	top := slices.Max(grid)
	if best.Lambda < top || top <= 0 {
		return best, nil
	}
	up := make([]float64, lambdaExtensions)
	for i := range up {
		top *= 10
		up[i] = top
	}
	strong, more, err := learner.SelectLambda(ctx, x, n, d, train, nil, val, nil, up, cfg)
	if err != nil {
		return nil, err
	}
	if minNLL(more) < minNLL(scores) {
		return strong, nil
	}
	return best, nil
}

func minNLL(scores []learner.LambdaScore) float64 {
	m := math.Inf(1)
	for _, s := range scores {
		m = min(m, s.ValNLL)
	}
	return m
}

// score evaluates representation z (N×p) at temperature tau on the
// held-out judgments.
func (s *sim) score(z []float32, p int, tau float64) Point {
	logits := learner.AllLogits(z, p, s.data.Eval)
	return Point{Accuracy: learner.AccuracyFromLogits(s.data.Task, logits), NLL: learner.NLL(s.data.Task, logits, tau), Tau: tau}
}

// randomTriplet draws three distinct items uniformly.
func randomTriplet(rng *rand.Rand, n int) learner.Triplet {
	for {
		i, j, k := int32(rng.IntN(n)), int32(rng.IntN(n)), int32(rng.IntN(n))
		if i != j && i != k && j != k {
			return learner.Triplet{I: i, J: j, K: k}
		}
	}
}
