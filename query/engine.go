package query

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// Tuning of the engine that is not a study setting.
const (
	// ExposureCap bounds item exposure: an active candidate is passed over
	// while one of its items was handed out, since the last rescoring,
	// ExposureCap times the mean item exposure plus two times or more.
	ExposureCap = 2
	// MaxTeacherChecks is the most teacher-derived attention checks kept
	// per rescoring (the most confident candidates).
	MaxTeacherChecks = 1000
	// maxPops bounds the candidates one active pick examines (passing over
	// seen and over-exposed ones) before it gives up.
	maxPops = 256
	// idleSession is how long a session stays in memory after its last
	// use, beyond its queries' TTL.
	idleSession = 15 * time.Minute
)

// ErrUnknownSession is returned by Serve for a session that was not added
// with AddSession (or was evicted after being idle).
var ErrUnknownSession = errors.New("session not loaded")

// ErrNoTeacher is returned by Serve before the first SetTeacher.
var ErrNoTeacher = errors.New("no teacher yet")

// Config configures an Engine.
type Config struct {
	// Study is the study id, stamped on every query.
	Study string
	// Task is the study's task.
	Task alignet.Task
	// Settings are the study's query settings.
	Settings alignet.QuerySettings
	// Checks are the study-supplied attention checks.
	Checks []alignet.CheckTriplet
	// Seed seeds the candidate pool, the repeat set, display orders and the
	// mix schedule. Engines of the same study with the same seed (one per
	// API replica) draw the same pool and repeat set.
	Seed uint64
	// NewID returns a fresh query id. Required.
	NewID func() string
}

// Engine serves the queries of one study from memory. It is safe for
// concurrent use; SetTeacher rescores without blocking Serve except for
// the final swap.
type Engine struct {
	study string
	task  learner.Task
	seed  uint64
	newID func() string

	rescoreMu sync.Mutex // serialises SetTeacher

	mu       sync.Mutex
	cfg      alignet.QuerySettings
	supplied []alignet.CheckTriplet
	rng      *rand.Rand
	mix      mixer

	// The pool generation: replaced when the items change.
	gen     int
	teacher *Teacher
	sc      *scorer
	index   map[string]int32
	cands   []learner.Triplet
	candKey []uint64 // TripletKey of each candidate
	counts  []int32  // judgments seen per item, for the information-gain posterior

	// Scores of the current teacher.
	scores      []float32
	heap        *keyHeap
	outstanding []int32 // per candidate: handed out, unanswered, unexpired
	handed      []int32 // per candidate: outstanding plus answered since the scores
	exposure    []int32 // per item: active hand-outs since the scores
	exposed     int64   // item slots handed out in active queries since the scores
	scorerUsed  string
	scoreErr    error

	repeatSet     [][3]string
	repeats       []fixedQuery
	checks        []fixedQuery // supplied checks that fit the pool
	teacherChecks []fixedQuery

	sessions map[string]*session
	workers  map[string]*worker
	queries  map[string]*served // open queries, by id
	stats    Stats
}

// fixedQuery is a repeat triplet or an attention check.
type fixedQuery struct {
	items    [3]string
	tri      learner.Triplet
	key      uint64
	expected string
	uses     int
}

type session struct {
	s          alignet.Session
	w          *worker
	answered   int
	open       []*served // unanswered, in serve order
	lastActive time.Time
	complete   bool
}

type worker struct {
	seen     map[uint64]struct{}
	sessions int
}

type served struct {
	q        alignet.Query
	gen      int
	cand     int32 // candidate index in generation gen, −1 for none
	sess     *session
	answered bool
}

// Stats count what an engine served.
type Stats struct {
	// Served counts served queries by kind.
	Served map[alignet.QueryKind]int64
	// Substituted counts queries served as another kind because the
	// scheduled kind had nothing left for the worker.
	Substituted int64
	// Expired counts queries that expired unanswered.
	Expired int64
}

// NewEngine returns an engine for one study. It serves once SetTeacher
// gave it the items and their representations.
func NewEngine(cfg Config) (*Engine, error) {
	task := learner.Task(cfg.Task)
	if err := task.Valid(); err != nil {
		return nil, fmt.Errorf("query engine: %w", err)
	}
	if cfg.NewID == nil {
		return nil, errors.New("query engine: NewID is required")
	}
	e := &Engine{
		study:    cfg.Study,
		task:     task,
		seed:     cfg.Seed,
		newID:    cfg.NewID,
		cfg:      cfg.Settings,
		supplied: slices.Clone(cfg.Checks),
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x5e551)),
		mix:      newMixer(cfg.Settings.Mix, cfg.Seed),
		sessions: map[string]*session{},
		workers:  map[string]*worker{},
		queries:  map[string]*served{},
		stats:    Stats{Served: map[alignet.QueryKind]int64{}},
	}
	return e, nil
}

// SetSettings applies changed study settings. It reports whether the
// candidates must be rescored (the scorer, pool size or check confidence
// changed), which the caller does with SetTeacher.
func (e *Engine) SetSettings(s alignet.QuerySettings, checks []alignet.CheckTriplet) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.cfg
	e.cfg = s
	e.mix.setMix(s.Mix)
	e.supplied = slices.Clone(checks)
	e.resolveChecks()
	return old.Scorer != s.Scorer || old.Student != s.Student || old.PoolSize != s.PoolSize ||
		old.CheckConfidence != s.CheckConfidence
}

// RescoreStats describe a SetTeacher call.
type RescoreStats struct {
	// Candidates is the pool size and NewPool whether it was drawn anew
	// (the first teacher, or the items changed).
	Candidates int
	// NewPool is described with Candidates.
	NewPool bool
	// Scorer is the scorer used; Fallback says why it is not the study's.
	Scorer string
	// Fallback is described with Scorer.
	Fallback error
	// Checks is the number of teacher-derived attention checks.
	Checks int
	// Duration is the time spent scoring.
	Duration time.Duration
}

// SetTeacher rescores the candidate pool under t and serves from the new
// scores from then on. The pool is drawn anew when t's items differ from
// the previous teacher's. The scoring runs without the engine's lock.
// When the study's scorer is not available (disagreement without a
// student), entropy is used and RescoreStats.Fallback says why.
func (e *Engine) SetTeacher(t *Teacher, student *Teacher) (RescoreStats, error) {
	if err := t.Validate(); err != nil {
		return RescoreStats{}, err
	}
	if learner.Task(t.Task) != e.task {
		return RescoreStats{}, fmt.Errorf("teacher task %q, study task %q", t.Task, e.task)
	}
	e.rescoreMu.Lock()
	defer e.rescoreMu.Unlock()

	e.mu.Lock()
	cfg := e.cfg
	useTeacherChecks := len(e.checks) == 0 && len(e.supplied) == 0
	cands, candKey := e.cands, e.candKey
	same := e.teacher != nil && slices.Equal(e.teacher.Items, t.Items) && len(e.cands) == min(cfg.PoolSize, int(distinctTriplets(e.task, t.N())))
	counts := e.remapCounts(t.Items)
	e.mu.Unlock()

	var st RescoreStats
	start := time.Now()
	if !same {
		cands = Candidates(e.task, t.N(), cfg.PoolSize, e.seed)
		candKey = make([]uint64, len(cands))
		parallel(len(cands), block, func(lo, hi int) {
			for a := lo; a < hi; a++ {
				c := cands[a]
				candKey[a] = TripletKey(e.task, [3]string{t.Items[c.I], t.Items[c.J], t.Items[c.K]})
			}
		})
		st.NewPool = true
	}
	scoring := Scoring{Scorer: cfg.Scorer, Teacher: t, Counts: counts, Student: student}
	sc, err := scoring.prepare()
	if errors.Is(err, ErrNoStudent) {
		st.Fallback = err
		scoring.Scorer, scoring.Student = alignet.ScorerEntropy, nil
		sc, err = scoring.prepare()
	}
	if err != nil {
		return RescoreStats{}, err
	}
	minConf := 2.0
	if useTeacherChecks {
		minConf = cfg.CheckConfidence
	}
	scores, conf := sc.batch(cands, minConf, MaxTeacherChecks)
	keys := slices.Clone(scores)
	h := newKeyHeap(keys)
	tchecks := make([]fixedQuery, len(conf))
	for i, c := range conf {
		tr := cands[c.Index]
		items := [3]string{t.Items[tr.I], t.Items[tr.J], t.Items[tr.K]}
		tchecks[i] = fixedQuery{items: items, tri: tr, key: candKey[c.Index], expected: items[expectedSlot(e.task, c.Slot)]}
	}
	st.Candidates, st.Scorer, st.Checks, st.Duration = len(cands), scoring.Scorer, len(tchecks), time.Since(start)

	e.mu.Lock()
	defer e.mu.Unlock()
	if !same {
		e.counts = e.remapCounts(t.Items) // before the index changes
		e.gen++
		e.cands, e.candKey = cands, candKey
		e.outstanding = make([]int32, len(cands))
		e.index = make(map[string]int32, t.N())
		for i, it := range t.Items {
			e.index[it] = int32(i)
		}
		e.exposure = make([]int32, t.N())
	} else {
		clear(e.exposure)
	}
	e.exposed = 0
	e.teacher, e.sc = t, sc
	e.scores, e.heap = scores, h
	e.handed = slices.Clone(e.outstanding)
	e.scorerUsed, e.scoreErr = st.Scorer, st.Fallback
	e.teacherChecks = tchecks
	e.resolveRepeats()
	e.resolveChecks()
	return st, nil
}

// expectedSlot maps a TaskProbs slot of a canonical triplet (I, J, K) to
// the index of the item that is the expected answer: for odd-one-out the
// odd item (slot 0: K, 1: J, 2: I), for anchor the closer one (0: J, 1: K).
func expectedSlot(task learner.Task, slot int) int {
	if task == learner.TaskAnchor {
		return 1 + slot
	}
	return 2 - slot
}

// remapCounts returns the engine's per-item counts in the order of items.
func (e *Engine) remapCounts(items []string) []int32 {
	out := make([]int32, len(items))
	if e.teacher == nil {
		return out
	}
	for i, it := range items {
		if j, ok := e.index[it]; ok && int(j) < len(e.counts) {
			out[i] = e.counts[j]
		}
	}
	return out
}

// DrawRepeats returns n distinct uniform triplets over the current items
// (display order), drawn from the study's seed so that every replica draws
// the same set; fewer when the items form fewer triplets.
func (e *Engine) DrawRepeats(n int) [][3]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.teacher == nil {
		return nil
	}
	items := e.teacher.Items
	ts := Candidates(e.task, len(items), n, e.seed^0x7e9ea7)
	out := make([][3]string, len(ts))
	for i, tr := range ts {
		out[i] = [3]string{items[tr.I], items[tr.J], items[tr.K]}
	}
	return out
}

// SetRepeats sets the study's fixed repeat triplets (as stored). Repeats
// with items the teacher does not know are skipped.
func (e *Engine) SetRepeats(ts [][3]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.repeatSet = slices.Clone(ts)
	e.resolveRepeats()
}

// HasRepeats reports whether SetRepeats was called.
func (e *Engine) HasRepeats() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.repeatSet != nil
}

// resolveRepeats maps the repeat set onto the current items, keeping the
// use counts of repeats that stay.
func (e *Engine) resolveRepeats() {
	uses := map[uint64]int{}
	for _, r := range e.repeats {
		uses[r.key] = r.uses
	}
	e.repeats = e.repeats[:0]
	for _, items := range e.repeatSet {
		tr, ok := e.resolve(items)
		if !ok {
			continue
		}
		k := TripletKey(e.task, items)
		e.repeats = append(e.repeats, fixedQuery{items: items, tri: tr, key: k, uses: uses[k]})
	}
}

// resolveChecks maps the supplied checks onto the current items, skipping
// those with unknown items and, for anchor studies, those whose answer is
// the head.
func (e *Engine) resolveChecks() {
	uses := map[uint64]int{}
	for _, c := range e.checks {
		uses[c.key] = c.uses
	}
	e.checks = e.checks[:0]
	for _, c := range e.supplied {
		tr, ok := e.resolve(c.Items)
		if !ok || (e.task == learner.TaskAnchor && c.Answer == c.Items[0]) {
			continue
		}
		k := TripletKey(e.task, c.Items)
		e.checks = append(e.checks, fixedQuery{items: c.Items, tri: tr, key: k, expected: c.Answer, uses: uses[k]})
	}
}

// resolve maps item ids to indices of the current teacher.
func (e *Engine) resolve(items [3]string) (learner.Triplet, bool) {
	var v [3]int32
	for a, it := range items {
		i, ok := e.index[it]
		if !ok {
			return learner.Triplet{}, false
		}
		v[a] = i
	}
	return learner.Triplet{I: v[0], J: v[1], K: v[2]}, true
}

// AddSession makes a session servable. history holds every stored query
// of the session's worker in this study (from all their sessions): they
// are never shown to the worker again, and the session's own answered and
// open queries restore its progress. Adding a session that is loaded
// already does nothing.
func (e *Engine) AddSession(s alignet.Session, history []alignet.Query, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.sessions[s.ID]; ok {
		return
	}
	w := e.workers[s.Worker]
	if w == nil {
		w = &worker{seen: map[uint64]struct{}{}}
		e.workers[s.Worker] = w
	}
	w.sessions++
	sess := &session{s: s, w: w, lastActive: now, complete: s.CompletedAt != nil}
	e.sessions[s.ID] = sess
	for _, q := range history {
		w.seen[TripletKey(e.task, q.Items)] = struct{}{}
		if q.Session != s.ID {
			continue
		}
		if q.AnsweredBy != "" {
			sess.answered++
			continue
		}
		if !q.ExpiresAt.After(now) {
			continue
		}
		if _, ok := e.queries[q.ID]; ok {
			continue
		}
		sv := &served{q: q, cand: -1, sess: sess}
		e.queries[q.ID] = sv
		sess.open = append(sess.open, sv)
	}
}

// Session returns a loaded session as it was added.
func (e *Engine) Session(id string) (alignet.Session, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	sess, ok := e.sessions[id]
	if !ok {
		return alignet.Session{}, false
	}
	return sess.s, true
}

// HasSession reports whether the session is loaded.
func (e *Engine) HasSession(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.sessions[id]
	return ok
}

// Result is what Serve handed to a session.
type Result struct {
	// Queries are the queries to show: the session's open ones first, then
	// new ones.
	Queries []alignet.Query
	// New are the queries served for the first time by this call, to be
	// logged.
	New []alignet.Query
	// Trials, Answered and Open are the session's budget, answered
	// queries and queries handed out but not answered.
	Trials int
	// Answered is described with Trials.
	Answered int
	// Open is described with Trials.
	Open int
	// Complete reports a spent budget, or a worker who has seen every
	// triplet the study can form.
	Complete bool
	// JustCompleted is set on the call that completed the session.
	JustCompleted bool
}

// Serve hands up to n queries to the session: its open queries first,
// then new ones while the budget (trials − answered − open) lasts. New
// queries follow the study's mix; a kind with nothing left for the worker
// (every repeat or check seen, no teacher scores) is served as active, and
// active as random.
func (e *Engine) Serve(sessionID string, n int, now time.Time) (Result, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	sess, ok := e.sessions[sessionID]
	if !ok {
		return Result{}, ErrUnknownSession
	}
	if e.teacher == nil {
		return Result{}, ErrNoTeacher
	}
	e.expireSession(sess, now)
	sess.lastActive = now
	trials := sess.s.Trials
	var res Result
	for _, sv := range sess.open {
		if len(res.Queries) < n {
			res.Queries = append(res.Queries, sv.q)
		}
	}
	exhausted := false
	for !sess.complete && len(res.Queries) < n && sess.answered+len(sess.open) < trials {
		sv, ok := e.serveOne(sess, now)
		if !ok {
			exhausted = true
			break
		}
		res.Queries = append(res.Queries, sv.q)
		res.New = append(res.New, sv.q)
	}
	if !sess.complete && (sess.answered >= trials || exhausted && len(sess.open) == 0) {
		sess.complete = true
		res.JustCompleted = true
	}
	res.Trials, res.Answered, res.Open, res.Complete = trials, sess.answered, len(sess.open), sess.complete
	if res.Complete {
		res.Queries = nil
	}
	return res, nil
}

// serveOne serves one new query of the next scheduled kind, substituting
// active and then random when that kind has nothing for the worker.
func (e *Engine) serveOne(sess *session, now time.Time) (*served, bool) {
	kind := e.mix.next()
	order := [3]alignet.QueryKind{kind, alignet.QueryActive, alignet.QueryRandom}
	for i, k := range order {
		if i > 0 && k == kind {
			continue
		}
		sv, ok := e.tryKind(k, sess, now)
		if !ok {
			continue
		}
		if i > 0 {
			e.stats.Substituted++
		}
		e.stats.Served[k]++
		return sv, true
	}
	return nil, false
}

func (e *Engine) tryKind(kind alignet.QueryKind, sess *session, now time.Time) (*served, bool) {
	w := sess.w
	switch kind {
	case alignet.QueryActive:
		c, ok := e.popActive(w)
		if !ok {
			return nil, false
		}
		tr := e.cands[c]
		items := [3]string{e.teacher.Items[tr.I], e.teacher.Items[tr.J], e.teacher.Items[tr.K]}
		return e.hand(sess, kind, items, "", float64(e.scores[c]), c, e.candKey[c], now), true
	case alignet.QueryRandom:
		tr, key, ok := e.randomUnseen(w)
		if !ok {
			return nil, false
		}
		items := [3]string{e.teacher.Items[tr.I], e.teacher.Items[tr.J], e.teacher.Items[tr.K]}
		return e.hand(sess, kind, items, "", e.sc.one(tr), -1, key, now), true
	case alignet.QueryRepeat, alignet.QueryCheck:
		list := e.repeats
		if kind == alignet.QueryCheck {
			list = e.checks
			if len(list) == 0 && len(e.supplied) == 0 {
				list = e.teacherChecks
			}
		}
		f := pickFixed(list, w, e.rng)
		if f == nil {
			return nil, false
		}
		f.uses++
		return e.hand(sess, kind, f.items, f.expected, e.sc.one(f.tri), -1, f.key, now), true
	}
	return nil, false
}

// pickFixed returns the least-used entry the worker has not seen, ties
// broken from a random starting point, or nil.
func pickFixed(list []fixedQuery, w *worker, rng *rand.Rand) *fixedQuery {
	if len(list) == 0 {
		return nil
	}
	start := rng.IntN(len(list))
	var best *fixedQuery
	for i := range list {
		f := &list[(start+i)%len(list)]
		if _, seen := w.seen[f.key]; seen {
			continue
		}
		if best == nil || f.uses < best.uses {
			best = f
		}
	}
	return best
}

// hand records a new query for the session, in a random display order.
func (e *Engine) hand(sess *session, kind alignet.QueryKind, items [3]string, expected string, score float64, cand int32, key uint64, now time.Time) *served {
	if e.task == learner.TaskAnchor {
		if e.rng.IntN(2) == 1 {
			items[1], items[2] = items[2], items[1]
		}
	} else {
		e.rng.Shuffle(3, func(a, b int) { items[a], items[b] = items[b], items[a] })
	}
	q := alignet.Query{
		ID: e.newID(), Study: e.study, Session: sess.s.ID, Worker: sess.s.Worker, Kind: kind,
		Items: items, Expected: expected, Score: score, TeacherVersion: e.teacher.Version,
		ServedAt: now, ExpiresAt: now.Add(time.Duration(e.cfg.TTL)),
	}
	sv := &served{q: q, gen: e.gen, cand: cand, sess: sess}
	sess.w.seen[key] = struct{}{}
	sess.open = append(sess.open, sv)
	e.queries[q.ID] = sv
	return sv
}

// trueKey is candidate c's current value: its score discounted for each
// hand-out since scoring. Keys change only through it, so the heap is
// exact.
func (e *Engine) trueKey(c int32) float32 {
	return float32(float64(e.scores[c]) * math.Pow(e.cfg.Discount, float64(e.handed[c])))
}

// overExposed reports whether one of c's items reached the exposure cap.
func (e *Engine) overExposed(c int32) bool {
	limit := int32(ExposureCap*float64(e.exposed)/float64(len(e.exposure))) + 2
	tr := e.cands[c]
	return e.exposure[tr.I] >= limit || e.exposure[tr.J] >= limit || e.exposure[tr.K] >= limit
}

// popActive hands out the candidate of largest current value that the
// worker has not seen and whose items are not over-exposed.
func (e *Engine) popActive(w *worker) (int32, bool) {
	h := e.heap
	if h == nil {
		return -1, false
	}
	var stash []int32
	best := int32(-1)
	for range maxPops {
		if h.len() == 0 {
			break
		}
		c := h.top()
		if _, seen := w.seen[e.candKey[c]]; !seen && !e.overExposed(c) {
			best = c
			break
		}
		stash = append(stash, h.pop())
	}
	for _, c := range stash {
		h.push(c, h.key[c])
	}
	if best < 0 {
		return -1, false
	}
	e.outstanding[best]++
	e.handed[best]++
	tr := e.cands[best]
	e.exposure[tr.I]++
	e.exposure[tr.J]++
	e.exposure[tr.K]++
	e.exposed += 3
	h.set(best, e.trueKey(best))
	return best, true
}

// randomUnseen draws a uniform triplet the worker has not seen: by
// rejection, then by enumeration when the items form few triplets.
func (e *Engine) randomUnseen(w *worker) (learner.Triplet, uint64, bool) {
	items := e.teacher.Items
	n := len(items)
	if n < 3 {
		return learner.Triplet{}, 0, false
	}
	key := func(tr learner.Triplet) uint64 {
		return TripletKey(e.task, [3]string{items[tr.I], items[tr.J], items[tr.K]})
	}
	for range 64 {
		tr := canonical(e.task, randomTriplet(e.rng, n))
		if k := key(tr); !seen(w, k) {
			return tr, k, true
		}
	}
	if distinctTriplets(e.task, n) > 200000 {
		return learner.Triplet{}, 0, false
	}
	var unseen []learner.Triplet
	for _, tr := range Candidates(e.task, n, math.MaxInt32, e.rng.Uint64()) {
		if !seen(w, key(tr)) {
			unseen = append(unseen, tr)
		}
	}
	if len(unseen) == 0 {
		return learner.Triplet{}, 0, false
	}
	tr := unseen[e.rng.IntN(len(unseen))]
	return tr, key(tr), true
}

func seen(w *worker, k uint64) bool { _, ok := w.seen[k]; return ok }

// Lookup returns an open query this engine served or restored. Answered
// and expired queries are left to the store.
func (e *Engine) Lookup(id string) (alignet.Query, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	sv, ok := e.queries[id]
	if !ok {
		return alignet.Query{}, false
	}
	return sv.q, true
}

// Answer records that judgment judgmentID answered open query id at time
// at (after the answer was bound in the store). It advances the session,
// releases the candidate's hand-out and forgets the query; unknown queries
// are ignored.
func (e *Engine) Answer(id, judgmentID string, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	sv, ok := e.queries[id]
	if !ok {
		return
	}
	delete(e.queries, id)
	sv.answered = true
	sess := sv.sess
	sess.answered++
	sess.lastActive = at
	sess.open = slices.DeleteFunc(sess.open, func(o *served) bool { return o == sv })
	if sv.cand >= 0 && sv.gen == e.gen {
		e.outstanding[sv.cand]--
	}
	e.observeLocked(sv.q.Items)
}

// Observe counts a judgment on items for the information-gain posterior
// (judgments that answer no query included).
func (e *Engine) Observe(items [3]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.observeLocked(items)
}

func (e *Engine) observeLocked(items [3]string) {
	for _, it := range items {
		if i, ok := e.index[it]; ok {
			e.counts[i]++
		}
	}
}

// Sweep expires open queries past their TTL and evicts sessions idle for
// longer than their TTL plus 15 minutes (they are restored from the store
// when they come back). The API runs it once a second.
func (e *Engine) Sweep(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	idle := time.Duration(e.cfg.TTL) + idleSession
	for id, sess := range e.sessions {
		e.expireSession(sess, now)
		if now.Sub(sess.lastActive) <= idle {
			continue
		}
		for _, sv := range sess.open {
			e.release(sv)
			delete(e.queries, sv.q.ID)
		}
		delete(e.sessions, id)
		if sess.w.sessions--; sess.w.sessions <= 0 {
			delete(e.workers, sess.s.Worker)
		}
	}
}

// expireSession releases the session's open queries whose TTL passed.
func (e *Engine) expireSession(sess *session, now time.Time) {
	sess.open = slices.DeleteFunc(sess.open, func(sv *served) bool {
		if sv.q.ExpiresAt.After(now) {
			return false
		}
		e.release(sv)
		delete(e.queries, sv.q.ID)
		e.stats.Expired++
		return true
	})
}

// release takes back an unanswered hand-out of a candidate.
func (e *Engine) release(sv *served) {
	if sv.answered || sv.cand < 0 || sv.gen != e.gen {
		return
	}
	c := sv.cand
	e.outstanding[c]--
	if e.handed[c] > 0 {
		e.handed[c]--
	}
	e.heap.set(c, e.trueKey(c))
}

// Snapshot describes the engine's state for monitoring.
type Snapshot struct {
	// TeacherVersion is the version of the teacher the scores come from.
	TeacherVersion int64
	// Items and Candidates are the sizes of the item pool and candidate
	// pool.
	Items int
	// Candidates is described with Items.
	Candidates int
	// Scorer is the scorer in use and ScorerError why it is not the
	// study's, if it is not.
	Scorer string
	// ScorerError is described with Scorer.
	ScorerError error
	// Sessions and Open count loaded sessions and open queries.
	Sessions int
	// Open is described with Sessions.
	Open int
	// Repeats and Checks count the repeat triplets and available checks.
	Repeats int
	// Checks is described with Repeats.
	Checks int
	// Stats are the serving counters.
	Stats Stats
}

// Snapshot returns the engine's state.
func (e *Engine) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Snapshot{Candidates: len(e.cands), Scorer: e.scorerUsed, ScorerError: e.scoreErr,
		Sessions: len(e.sessions), Open: len(e.queries), Repeats: len(e.repeats), Checks: len(e.checks)}
	if len(e.checks) == 0 && len(e.supplied) == 0 {
		s.Checks = len(e.teacherChecks)
	}
	if e.teacher != nil {
		s.TeacherVersion, s.Items = e.teacher.Version, e.teacher.N()
	}
	s.Stats = Stats{Served: map[alignet.QueryKind]int64{}, Substituted: e.stats.Substituted, Expired: e.stats.Expired}
	for k, v := range e.stats.Served {
		s.Stats.Served[k] = v
	}
	return s
}
