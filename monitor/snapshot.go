package monitor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/drift"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// scored is one judgment under a model: whether the model predicted the
// human choice, the log-loss and outcome probabilities (outcome 0 is the
// human choice), and the model's predicted outcome.
type scored struct {
	correct bool
	loss    float64
	probs   [3]float64
	argmax  int
}

// triplet returns the learner triplet of j over the rows of its items
// (pair kept together first, the human's odd one last; for anchor head,
// close, far), or false when the choice is not among the items.
func triplet(j alignet.Judgment, row func(string) int32) (learner.Triplet, bool) {
	if j.Task == alignet.TaskAnchor {
		return learner.Triplet{I: row(j.Items[0]), J: row(j.Items[1]), K: row(j.Items[2])}, true
	}
	var pair []int32
	odd := int32(-1)
	for _, it := range j.Items {
		if it == j.Odd {
			odd = row(it)
		} else {
			pair = append(pair, row(it))
		}
	}
	if odd < 0 || len(pair) != 2 {
		return learner.Triplet{}, false
	}
	return learner.Triplet{I: pair[0], J: pair[1], K: odd}, true
}

// model is a representation of some items: z holds p values per row.
type model struct {
	task learner.Task
	z    []float32
	p    int
	tau  float64
	rows map[string]int32
}

// represent loads the embeddings of items in space and maps them through
// transform; items without an embedding get no row.
func represent(ctx context.Context, s Store, space string, items []string, transform func([]float32, int) ([]float32, int)) (*model, error) {
	x, found, err := s.LoadEmbeddings(ctx, space, items)
	if err != nil {
		return nil, fmt.Errorf("embeddings of %q: %w", space, err)
	}
	d := 0
	if len(items) > 0 {
		d = len(x) / len(items)
	}
	m := &model{rows: map[string]int32{}}
	n := 0
	for i, it := range items {
		if found[i] {
			copy(x[n*d:(n+1)*d], x[i*d:(i+1)*d])
			m.rows[it] = int32(n)
			n++
		}
	}
	m.z, m.p = transform(x[:n*d], n)
	return m, nil
}

// score scores j, or reports false when an item has no row.
func (m *model) score(j alignet.Judgment) (scored, bool) {
	missing := false
	tr, ok := triplet(j, func(it string) int32 {
		r, ok := m.rows[it]
		missing = missing || !ok
		return r
	})
	if !ok || missing {
		return scored{}, false
	}
	l := learner.Logits(m.z, m.p, tr)
	pr := learner.TaskProbs(m.task, l, m.tau)
	best := 0
	if m.task == learner.TaskAnchor {
		if l[1] >= l[0] {
			best = 1
		}
	} else {
		for a := 1; a < 3; a++ {
			if l[a] > l[best] {
				best = a
			}
		}
	}
	return scored{correct: learner.Correct(m.task, l), loss: -math.Log(max(pr[0], 1e-300)), probs: pr, argmax: best}, true
}

// itemsOf lists the distinct items of js.
func itemsOf(js []alignet.StoredJudgment) []string {
	seen := map[string]bool{}
	var out []string
	for _, j := range js {
		for _, it := range j.Items {
			if !seen[it] {
				seen[it] = true
				out = append(out, it)
			}
		}
	}
	sort.Strings(out)
	return out
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// rateSignal turns a drift.Result into a signal.
func rateSignal(name, student string, r drift.Result) alignet.DriftSignal {
	s := alignet.DriftSignal{Name: name, Student: student, Value: ptr(r.Recent.Rate()), N: r.Recent.Trials,
		Reference: ptr(r.Reference.Rate()), RefN: r.Reference.Trials, Z: ptr(r.Z), P: ptr(r.P), Enough: r.Enough, Change: r.Change}
	if r.H > 0 {
		s.CUSUM, s.Threshold = ptr(r.CUSUM), ptr(r.H)
	}
	return s
}

// Snapshot computes the current drift snapshot of st without storing it.
func (m *Monitor) Snapshot(ctx context.Context, st alignet.Study) (alignet.DriftSnapshot, error) {
	now := m.cfg.Now().UTC()
	snap := alignet.DriftSnapshot{Study: st.ID, TakenAt: now, QueryMix: map[string]int{}, Changes: []string{}, Signals: []alignet.DriftSignal{}}
	var err error
	if snap.Judgments, err = m.store.CountJudgments(ctx, st.ID); err != nil {
		return snap, err
	}
	recent, err := m.store.RecentJudgments(ctx, st.ID, m.cfg.Window)
	if err != nil {
		return snap, err
	}
	flags, err := m.store.WorkerFlags(ctx, st.ID)
	if err != nil {
		return snap, err
	}
	flagged := map[string][]string{}
	q := &snap.Quality
	q.Window = len(recent)
	q.Workers = len(flags)
	for _, f := range flags {
		q.ChecksAnswered += f.ChecksPassed + f.ChecksFailed
		q.ChecksFailed += f.ChecksFailed
		if f.Flagged {
			q.Flagged++
			flagged[f.Worker] = f.Reasons
		}
	}
	if q.ChecksAnswered > 0 {
		q.FailureRate = ptr(float64(q.ChecksFailed) / float64(q.ChecksAnswered))
	}
	if q.Workers > 0 {
		q.FlaggedShare = ptr(float64(q.Flagged) / float64(q.Workers))
	}
	rts := make([]float64, 0, len(recent))
	var persist []float64
	for _, j := range recent {
		rts = append(rts, float64(j.RTMillis))
		persist = append(persist, j.StoredAt.Sub(j.ReceivedAt).Seconds())
		kind := string(j.QueryKind)
		if kind == "" {
			kind = "none"
		}
		snap.QueryMix[kind]++
	}
	if len(rts) > 0 {
		v := drift.Quantiles(rts, 0.1, 0.5, 0.9, 0.99)
		q.RTMillis = &alignet.DriftQuantiles{P10: v[0], P50: v[1], P90: v[2], P99: v[3]}
		snap.Roles.PersisterLag = ptr(drift.Quantiles(persist, 0.5)[0])
		newest := recent[len(recent)-1].StoredAt
		for _, j := range recent {
			if j.StoredAt.After(newest) {
				newest = j.StoredAt
			}
		}
		snap.Roles.NewestStoredAt = &newest
	}
	if err := m.perMinute(ctx, &snap, now); err != nil {
		return snap, err
	}
	if ds, err := m.store.Datasets(ctx, st.ID); err != nil {
		return snap, err
	} else if len(ds) > 0 {
		at := ds[0].CreatedAt
		snap.Roles.DatasetAt = &at
	}

	state, err := m.store.TeacherState(ctx, st.ID)
	switch {
	case errors.Is(err, alignet.ErrNotFound):
		snap.TeacherStatus = alignet.TeacherEmpty
		return snap, m.students(ctx, st, &snap, nil, nil)
	case err != nil:
		return snap, err
	}
	snap.TeacherStatus, snap.TeacherVersion, snap.JudgmentsSeen = state.Status, state.Version, state.JudgmentsSeen
	updated := state.UpdatedAt
	snap.Roles.LearnerUpdatedAt = &updated
	snap.Roles.LearnerStaleness = ptr(now.Sub(state.UpdatedAt).Seconds())
	if !state.NewestAcceptedAt.IsZero() {
		snap.Roles.LearnerLag = ptr(state.UpdatedAt.Sub(state.NewestAcceptedAt).Seconds())
	}

	// The teacher on the window's judgments (attention checks aside).
	var usable []alignet.StoredJudgment
	for _, j := range recent {
		if j.QueryKind != alignet.QueryCheck && j.Task == st.Task {
			usable = append(usable, j)
		}
	}
	teacher := modelfile.TeacherOf(state.Params)
	tm, err := represent(ctx, m.store, st.Space, itemsOf(usable), func(x []float32, n int) ([]float32, int) {
		return teacher.Transform(x, n), teacher.P
	})
	if err != nil {
		return snap, err
	}
	tm.task, tm.tau = learner.Task(st.Task), state.Params.Tau
	var held []alignet.StoredJudgment
	var heldScores []scored
	workers := map[string]*drift.Worker{}
	var order []string
	for _, j := range usable {
		sc, ok := tm.score(j.Judgment)
		if !ok {
			continue
		}
		w := workers[j.Worker]
		if w == nil {
			w = &drift.Worker{ID: j.Worker}
			workers[j.Worker] = w
			order = append(order, j.Worker)
		}
		w.N++
		if sc.correct {
			w.Agree++
		}
		_, isFlagged := flagged[j.Worker]
		if alignet.TrainingRole(j.Judgment, st.Settings, isFlagged) == alignet.RoleHeldOut {
			held = append(held, j)
			heldScores = append(heldScores, sc)
		}
	}
	m.workerQuality(&snap, workers, order, flagged)
	m.teacherSignals(&snap, state, heldScores)
	k := 3
	if st.Task == alignet.TaskAnchor {
		k = 2
	}
	probs := make([][3]float64, len(heldScores))
	outcomes := make([]int, len(heldScores))
	for i, sc := range heldScores {
		probs[i] = sc.probs
	}
	for _, b := range drift.Reliability(probs, outcomes, k, DefaultBins) {
		snap.Reliability = append(snap.Reliability, alignet.ReliabilityBin{Lo: b.Lo, Hi: b.Hi, Count: b.Count,
			Predicted: ptr(b.Predicted), Observed: ptr(b.Observed)})
	}
	if err := m.students(ctx, st, &snap, held, heldScores); err != nil {
		return snap, err
	}
	for _, s := range snap.Signals {
		if s.Change {
			name := s.Name
			if s.Student != "" {
				name += ":" + s.Student
			}
			snap.Changes = append(snap.Changes, name)
		}
	}
	return snap, nil
}

// perMinute fills the judgments accepted in each of the last 60 minutes.
func (m *Monitor) perMinute(ctx context.Context, snap *alignet.DriftSnapshot, now time.Time) error {
	start := now.Truncate(time.Minute).Add(-59 * time.Minute)
	counts, err := m.store.JudgmentsPerMinute(ctx, snap.Study, start)
	if err != nil {
		return err
	}
	byMinute := map[int64]int64{}
	for _, c := range counts {
		byMinute[c.Minute.Unix()] = c.Count
	}
	for i := range 60 {
		t := start.Add(time.Duration(i) * time.Minute)
		snap.PerMinute = append(snap.PerMinute, alignet.MinuteCount{Minute: t, Count: byMinute[t.Unix()]})
	}
	return nil
}

// teacherSignals adds the alignment drift signals.
func (m *Monitor) teacherSignals(snap *alignet.DriftSnapshot, state alignet.TeacherState, held []scored) {
	var ref drift.Proportion
	refNLL := math.NaN()
	if state.Eval != nil && state.Eval.Teacher.N > 0 {
		ref = drift.FromRate(state.Eval.Teacher.Accuracy, state.Eval.Teacher.N)
		refNLL = state.Eval.Teacher.NLL
	}
	xs := make([]bool, len(held))
	losses := make([]float64, len(held))
	var mean float64
	for i, sc := range held {
		xs[i], losses[i] = sc.correct, sc.loss
		mean += sc.loss
	}
	snap.Signals = append(snap.Signals, rateSignal(alignet.SignalTeacherAccuracy, "", drift.Compare(xs, ref, m.cfg.Detector)))

	cfg := m.cfg.Detector
	minRecent, zAlarm := cfg.MinRecent, cfg.Z
	if minRecent <= 0 {
		minRecent = drift.DefaultMinRecent
	}
	if zAlarm == 0 {
		zAlarm = drift.DefaultZ
	}
	ll := alignet.DriftSignal{Name: alignet.SignalTeacherLogLoss, N: len(held), Reference: ptr(refNLL), RefN: ref.Trials,
		Enough: len(held) >= minRecent}
	if len(held) > 0 {
		ll.Value = ptr(mean / float64(len(held)))
	}
	if z, ok := drift.MeanShiftZ(losses, refNLL); ok {
		ll.Z, ll.P = ptr(z), ptr(1-drift.NormalCDF(z))
		// A loss that rose is the drop: z above −Z.
		ll.Change = ll.Enough && z > -zAlarm
	}
	snap.Signals = append(snap.Signals, ll)

	pq := alignet.DriftSignal{Name: alignet.SignalPrequentialAccuracy, Reference: ptr(ref.Rate()), RefN: ref.Trials}
	if len(state.Prequential) > 0 {
		w := state.Prequential[0]
		for _, o := range state.Prequential[1:] {
			if o.Window < w.Window {
				w = o
			}
		}
		if w.N > 0 {
			recent := drift.FromRate(w.Accuracy, w.N)
			pq.Value, pq.N, pq.Enough = ptr(w.Accuracy), w.N, w.N >= minRecent
			if z, p, ok := drift.TwoProportionZ(recent, ref); ok {
				pq.Z, pq.P = ptr(z), ptr(p)
				pq.Change = pq.Enough && z < zAlarm
			}
		}
	}
	snap.Signals = append(snap.Signals, pq)
}

// maxWorkerList bounds DriftQuality.WorkerList.
const maxWorkerList = 100

// workerQuality adds the per-worker agreement test.
func (m *Monitor) workerQuality(snap *alignet.DriftSnapshot, workers map[string]*drift.Worker, order []string, flagged map[string][]string) {
	ws := make([]drift.Worker, 0, len(order))
	for _, id := range order {
		ws = append(ws, *workers[id])
	}
	low, tested := drift.LowAgreement(ws, m.cfg.MinWorkerJudgments, m.cfg.WorkerAlpha)
	q := &snap.Quality
	q.TestedWorkers, q.LowAgreement = tested, len(low)
	var agree, n int
	for _, w := range ws {
		if w.N >= m.cfg.MinWorkerJudgments {
			agree += w.Agree
			n += w.N
		}
	}
	if n > 0 {
		q.PooledAgreement = ptr(float64(agree) / float64(n))
	}
	lowBy := map[string]drift.WorkerOutlier{}
	for _, o := range low {
		lowBy[o.ID] = o
	}
	var list []alignet.WorkerAgreement
	for _, w := range ws {
		a := alignet.WorkerAgreement{Worker: w.ID, N: w.N, Agreement: float64(w.Agree) / float64(w.N), Reasons: flagged[w.ID]}
		if o, ok := lowBy[w.ID]; ok {
			a.Low, a.Pooled, a.P = true, o.Pooled, o.P
		} else if w.N >= m.cfg.MinWorkerJudgments && n > w.N {
			a.Pooled = float64(agree-w.Agree) / float64(n-w.N)
			a.P = drift.BinomialCDF(w.Agree, w.N, a.Pooled)
		}
		list = append(list, a)
	}
	// Flagged workers without scored judgments in the window still show.
	for id, reasons := range flagged {
		if workers[id] == nil {
			list = append(list, alignet.WorkerAgreement{Worker: id, Reasons: reasons})
		}
	}
	rank := func(a alignet.WorkerAgreement) int {
		switch {
		case a.Low:
			return 0
		case len(a.Reasons) > 0:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(list, func(a, b alignet.WorkerAgreement) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		switch {
		case a.Agreement < b.Agreement:
			return -1
		case a.Agreement > b.Agreement:
			return 1
		}
		return 0
	})
	q.WorkerList = list[:min(len(list), maxWorkerList)]
}

// students adds the student drift signals of every promoted student of
// st, scored on the held-out judgments received since its version was
// stored (teacher scores tsc align with held; nil without a teacher).
func (m *Monitor) students(ctx context.Context, st alignet.Study, snap *alignet.DriftSnapshot, held []alignet.StoredJudgment, tsc []scored) error {
	students, err := m.store.ListStudents(ctx, st.ID)
	if err != nil {
		return err
	}
	for _, s := range students {
		vs, err := m.store.StudentVersions(ctx, st.ID, s.ID)
		if err != nil {
			if errors.Is(err, alignet.ErrNotFound) {
				continue
			}
			return err
		}
		if len(vs) > 0 && (snap.Roles.StudentAt == nil || vs[0].CreatedAt.After(*snap.Roles.StudentAt)) {
			at := vs[0].CreatedAt
			snap.Roles.StudentAt = &at
		}
		var cur *alignet.StudentVersion
		for i := range vs {
			if vs[i].Version == s.Current {
				cur = &vs[i]
			}
		}
		if cur == nil || st.Task != alignet.TaskOddOneOut {
			continue
		}
		var fresh []alignet.StoredJudgment
		var fteacher []scored
		for i, j := range held {
			if j.ReceivedAt.After(cur.CreatedAt) {
				fresh = append(fresh, j)
				fteacher = append(fteacher, tsc[i])
			}
		}
		head, err := m.heads.get(ctx, cur.Artifact)
		if err != nil {
			return fmt.Errorf("student %q: %w", s.ID, err)
		}
		sm, err := represent(ctx, m.store, s.Space, itemsOf(fresh), func(x []float32, n int) ([]float32, int) {
			return head.Transform(x, n), head.P
		})
		if err != nil {
			return fmt.Errorf("student %q: %w", s.ID, err)
		}
		sm.task, sm.tau = learner.TaskOddOneOut, head.Tau
		var acc, agree []bool
		for i, j := range fresh {
			sc, ok := sm.score(j.Judgment)
			if !ok {
				continue
			}
			acc = append(acc, sc.correct)
			agree = append(agree, sc.argmax == fteacher[i].argmax)
		}
		refN := cur.Metrics.Held.N
		snap.Signals = append(snap.Signals,
			rateSignal(alignet.SignalStudentAccuracy, s.ID, drift.Compare(acc, drift.FromRate(cur.Metrics.Held.Accuracy, refN), m.cfg.Detector)),
			rateSignal(alignet.SignalStudentAgreement, s.ID, drift.Compare(agree, drift.FromRate(cur.Metrics.HeldTeacherAgreement, refN), m.cfg.Detector)))
	}
	return nil
}
