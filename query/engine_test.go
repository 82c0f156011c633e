package query

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// randomTeacher returns a teacher over n items "i0".."i{n-1}" with
// Gaussian representations of dimension p scaled by scale.
func randomTeacher(n, p int, scale float64, seed uint64, version int64) *Teacher {
	rng := rand.New(rand.NewPCG(seed, 1))
	t := &Teacher{Version: version, Task: learner.TaskOddOneOut, Tau: 1, P: p, Z: make([]float32, n*p)}
	for i := range n {
		t.Items = append(t.Items, "i"+strconv.Itoa(i))
	}
	for i := range t.Z {
		t.Z[i] = float32(scale * rng.NormFloat64())
	}
	return t
}

func counterIDs() func() string {
	n := 0
	return func() string { n++; return "q" + strconv.Itoa(n) }
}

func newTestEngine(t *testing.T, mod func(*Config)) *Engine {
	t.Helper()
	cfg := Config{Study: "s", Task: alignet.TaskOddOneOut, Settings: alignet.DefaultQuerySettings(), Seed: 7, NewID: counterIDs()}
	cfg.Settings.PoolSize = 5000
	if mod != nil {
		mod(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func testSession(id, worker string, trials int) alignet.Session {
	return alignet.Session{ID: id, Study: "s", Worker: worker, Platform: alignet.PlatformGeneric, Trials: trials, CreatedAt: t0}
}

// TestMixHoldsOver10000Queries serves 10,000 queries to 200 workers in
// interleaved sessions, answering each, and checks the kinds against the
// configured shares within a tolerance far tighter than independent draws
// would allow (binomial sd of the random share alone is 36 queries).
func TestMixHoldsOver10000Queries(t *testing.T) {
	e := newTestEngine(t, func(c *Config) {
		for i := range 40 {
			c.Checks = append(c.Checks, alignet.CheckTriplet{
				Items: [3]string{"i" + strconv.Itoa(3*i), "i" + strconv.Itoa(3*i+1), "i" + strconv.Itoa(3*i+2)}, Answer: "i" + strconv.Itoa(3*i+2)})
		}
	})
	if _, err := e.SetTeacher(randomTeacher(300, 16, 0.5, 1, 1), nil); err != nil {
		t.Fatal(err)
	}
	e.SetRepeats(e.DrawRepeats(200))
	const workers, trials = 200, 50
	for w := range workers {
		e.AddSession(testSession("sess"+strconv.Itoa(w), "w"+strconv.Itoa(w), trials), nil, t0)
	}
	count := map[alignet.QueryKind]int{}
	seen := map[string]map[uint64]bool{}
	now := t0
	for round := 0; round < trials; round++ {
		for w := range workers {
			now = now.Add(time.Millisecond)
			res, err := e.Serve("sess"+strconv.Itoa(w), 1, now)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.New) != 1 {
				t.Fatalf("round %d worker %d: %d new queries, want 1 (%+v)", round, w, len(res.New), res)
			}
			q := res.New[0]
			count[q.Kind]++
			k := TripletKey(learner.TaskOddOneOut, q.Items)
			if seen[q.Worker] == nil {
				seen[q.Worker] = map[uint64]bool{}
			}
			if seen[q.Worker][k] {
				t.Fatalf("worker %s was shown %v twice", q.Worker, q.Items)
			}
			seen[q.Worker][k] = true
			e.Answer(q.ID, "j-"+q.ID, now)
		}
	}
	total := workers * trials
	mix := alignet.DefaultQuerySettings().Mix
	for _, k := range alignet.QueryKinds() {
		want := mix.Share(k) * float64(total)
		if math.Abs(float64(count[k])-want) > 5 {
			t.Errorf("%s: %d of %d queries, want %.0f ± 5", k, count[k], total, want)
		}
	}
	if s := e.Snapshot(); s.Stats.Substituted != 0 {
		t.Errorf("%d queries were substituted", s.Stats.Substituted)
	}
	for w := range workers {
		res, _ := e.Serve("sess"+strconv.Itoa(w), 5, now)
		if !res.Complete || len(res.Queries) != 0 || res.Answered != trials {
			t.Fatalf("session of worker %d after %d answers: %+v, want complete", w, trials, res)
		}
	}
}

// TestNoWorkerSeesATripletTwice exhausts a tiny item pool: 8 items form
// 56 triplets; a worker in two sessions of 40 trials each sees each at
// most once, and the second session completes early when none is left.
func TestNoWorkerSeesATripletTwice(t *testing.T) {
	e := newTestEngine(t, nil)
	if _, err := e.SetTeacher(randomTeacher(8, 4, 1, 2, 0), nil); err != nil {
		t.Fatal(err)
	}
	e.SetRepeats(e.DrawRepeats(10))
	seen := map[uint64]bool{}
	var history []alignet.Query
	now := t0
	serveAll := func(id string) int {
		served := 0
		for {
			now = now.Add(time.Second)
			res, err := e.Serve(id, 3, now)
			if err != nil {
				t.Fatal(err)
			}
			if res.Complete {
				return served
			}
			for _, q := range res.Queries {
				k := TripletKey(learner.TaskOddOneOut, q.Items)
				if seen[k] {
					t.Fatalf("triplet %v shown twice", q.Items)
				}
				seen[k] = true
				served++
				e.Answer(q.ID, "j"+q.ID, now)
				q.AnsweredBy = "j" + q.ID
				history = append(history, q)
			}
		}
	}
	e.AddSession(testSession("a", "w", 40), nil, now)
	if n := serveAll("a"); n != 40 {
		t.Fatalf("first session answered %d, want 40", n)
	}
	// A second session on a fresh engine (another replica, or after a
	// restart) restored from the stored history.
	e2 := newTestEngine(t, nil)
	if _, err := e2.SetTeacher(randomTeacher(8, 4, 1, 2, 0), nil); err != nil {
		t.Fatal(err)
	}
	e2.SetRepeats(e2.DrawRepeats(10))
	e = e2
	e.AddSession(testSession("b", "w", 40), history, now)
	if n := serveAll("b"); n != 16 {
		t.Fatalf("second session answered %d, want the 16 triplets left", n)
	}
}

func TestBudgetOpenQueriesAndExpiry(t *testing.T) {
	e := newTestEngine(t, func(c *Config) { c.Settings.TTL = alignet.Duration(time.Minute) })
	if _, err := e.SetTeacher(randomTeacher(100, 8, 1, 3, 0), nil); err != nil {
		t.Fatal(err)
	}
	e.SetRepeats(e.DrawRepeats(20))
	e.AddSession(testSession("s1", "w", 5), nil, t0)
	r1, err := e.Serve("s1", 3, t0)
	if err != nil || len(r1.Queries) != 3 || len(r1.New) != 3 || r1.Open != 3 {
		t.Fatalf("first serve = %+v, %v", r1, err)
	}
	// A reload gets the same open queries back, and no more than the budget.
	r2, _ := e.Serve("s1", 10, t0.Add(time.Second))
	if len(r2.Queries) != 5 || len(r2.New) != 2 || r2.Queries[0].ID != r1.Queries[0].ID {
		t.Fatalf("second serve = %+v", r2)
	}
	if q, ok := e.Lookup(r2.Queries[0].ID); !ok || q.ID != r2.Queries[0].ID {
		t.Fatalf("Lookup of an open query = %+v, %v", q, ok)
	}
	e.Answer(r2.Queries[0].ID, "j1", t0.Add(2*time.Second))
	if q, ok := e.Lookup(r2.Queries[0].ID); ok {
		t.Fatalf("an answered query is still held: %+v", q)
	}
	// After the TTL the four unanswered queries expire and new ones fill
	// the budget.
	r3, _ := e.Serve("s1", 10, t0.Add(2*time.Minute))
	if r3.Answered != 1 || len(r3.Queries) != 4 || len(r3.New) != 4 {
		t.Fatalf("serve after expiry = %+v", r3)
	}
	for _, q := range r2.Queries[1:] {
		if _, ok := e.Lookup(q.ID); ok {
			t.Fatalf("expired query %s still held", q.ID)
		}
		for _, n := range r3.New {
			if n.ID == q.ID || TripletKey(learner.TaskOddOneOut, n.Items) == TripletKey(learner.TaskOddOneOut, q.Items) {
				t.Fatalf("expired query %v served again to the same worker", q.Items)
			}
		}
	}
	if s := e.Snapshot(); s.Stats.Expired != 4 {
		t.Fatalf("expired count %d, want 4", s.Stats.Expired)
	}
	now := t0.Add(3 * time.Minute)
	for _, q := range r3.Queries {
		e.Answer(q.ID, "j"+q.ID, now)
	}
	r4, _ := e.Serve("s1", 10, now)
	if !r4.Complete || !r4.JustCompleted || r4.Answered != 5 {
		t.Fatalf("serve after the budget = %+v", r4)
	}
	if r5, _ := e.Serve("s1", 10, now); !r5.Complete || r5.JustCompleted {
		t.Fatalf("serve of a completed session = %+v", r5)
	}
	if _, err := e.Serve("nope", 1, now); err != ErrUnknownSession {
		t.Fatalf("Serve(unknown) = %v", err)
	}
}

// TestActiveScoresMatchTeacherAndFollowRescoring checks that served active
// scores are the teacher's predictive entropy recomputed from learner's
// probabilities, that the top-scored candidates are served first, and
// that a new teacher changes what is served.
func TestActiveScoresMatchTeacherAndFollowRescoring(t *testing.T) {
	e := newTestEngine(t, func(c *Config) {
		c.Settings.Mix = alignet.QueryMix{Active: 1}
		c.Settings.Repeats = 0
	})
	check := func(teacher *Teacher, qs []alignet.Query) {
		t.Helper()
		idx := map[string]int32{}
		for i, it := range teacher.Items {
			idx[it] = int32(i)
		}
		for _, q := range qs {
			if q.Kind != alignet.QueryActive || q.TeacherVersion != teacher.Version {
				t.Fatalf("query %+v, want active from version %d", q, teacher.Version)
			}
			tr := learner.Triplet{I: idx[q.Items[0]], J: idx[q.Items[1]], K: idx[q.Items[2]]}
			p := learner.TaskProbs(learner.TaskOddOneOut, learner.Logits(teacher.Z, teacher.P, tr), teacher.Tau)
			h := 0.0
			for _, v := range p {
				h -= v * math.Log(v)
			}
			if math.Abs(h-q.Score) > 1e-4 {
				t.Fatalf("served score %g, entropy of the teacher's probabilities %g", q.Score, h)
			}
		}
	}
	serveFresh := func(tag string, n int) []alignet.Query {
		var out []alignet.Query
		for i := range n {
			id := tag + strconv.Itoa(i)
			e.AddSession(testSession(id, "w-"+id, 1), nil, t0)
			res, err := e.Serve(id, 1, t0)
			if err != nil || len(res.New) != 1 {
				t.Fatalf("serve %s: %+v, %v", id, res, err)
			}
			out = append(out, res.New[0])
		}
		return out
	}
	ta := randomTeacher(60, 8, 0.6, 11, 1)
	if _, err := e.SetTeacher(ta, nil); err != nil {
		t.Fatal(err)
	}
	a := serveFresh("a", 20)
	check(ta, a)
	// The first query is the pool's highest score.
	scores, _, err := Scoring{Scorer: alignet.ScorerEntropy, Teacher: ta}.Score(e.cands, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	top := float32(0)
	for _, s := range scores {
		top = max(top, s)
	}
	if math.Abs(a[0].Score-float64(top)) > 1e-6 {
		t.Fatalf("first active query scores %g, pool maximum %g", a[0].Score, top)
	}
	tb := randomTeacher(60, 8, 0.6, 12, 2)
	if _, err := e.SetTeacher(tb, nil); err != nil {
		t.Fatal(err)
	}
	b := serveFresh("b", 20)
	check(tb, b)
	same := 0
	for i := range a {
		if TripletKey(learner.TaskOddOneOut, a[i].Items) == TripletKey(learner.TaskOddOneOut, b[i].Items) {
			same++
		}
	}
	if same > 2 {
		t.Fatalf("%d of 20 queries unchanged after rescoring with another teacher", same)
	}
}

// TestDiscountSpreadsConcurrentWorkers hands out the top of a pool to 100
// workers at once: no triplet goes to more than a few of them, and item
// exposure stays balanced.
func TestDiscountSpreadsConcurrentWorkers(t *testing.T) {
	e := newTestEngine(t, func(c *Config) {
		c.Settings.Mix = alignet.QueryMix{Active: 1}
		c.Settings.Repeats = 0
	})
	if _, err := e.SetTeacher(randomTeacher(200, 8, 0.5, 5, 0), nil); err != nil {
		t.Fatal(err)
	}
	times := map[uint64]int{}
	exposure := map[string]int{}
	for i := range 100 {
		id := "s" + strconv.Itoa(i)
		e.AddSession(testSession(id, "w"+strconv.Itoa(i), 5), nil, t0)
		res, err := e.Serve(id, 5, t0)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range res.New {
			times[TripletKey(learner.TaskOddOneOut, q.Items)]++
			for _, it := range q.Items {
				exposure[it]++
			}
		}
	}
	most := 0
	for _, n := range times {
		most = max(most, n)
	}
	if most > 3 {
		t.Fatalf("a triplet went to %d of 100 concurrent workers", most)
	}
	top := 0
	for _, n := range exposure {
		top = max(top, n)
	}
	// 1,500 item slots over 200 items: 7.5 on average.
	if top > 30 {
		t.Fatalf("an item was shown %d times (mean 7.5)", top)
	}
}

func TestTeacherChecksAreConfident(t *testing.T) {
	e := newTestEngine(t, func(c *Config) {
		c.Settings.Mix = alignet.QueryMix{Active: 0.5, Check: 0.5}
		c.Settings.Repeats = 0
	})
	teacher := randomTeacher(100, 8, 1.5, 9, 3)
	st, err := e.SetTeacher(teacher, nil)
	if err != nil || st.Checks == 0 {
		t.Fatalf("SetTeacher = %+v, %v; want teacher checks", st, err)
	}
	idx := map[string]int32{}
	for i, it := range teacher.Items {
		idx[it] = int32(i)
	}
	e.AddSession(testSession("s", "w", 40), nil, t0)
	res, err := e.Serve("s", 40, t0)
	if err != nil {
		t.Fatal(err)
	}
	checks := 0
	for _, q := range res.New {
		if q.Kind != alignet.QueryCheck {
			if q.Expected != "" {
				t.Fatalf("%s query with an expected answer: %+v", q.Kind, q)
			}
			continue
		}
		checks++
		tr := learner.Triplet{I: idx[q.Items[0]], J: idx[q.Items[1]], K: idx[q.Items[2]]}
		p := learner.Softmax3(learner.Logits(teacher.Z, teacher.P, tr), teacher.Tau)
		// p[0]: Items[2] odd, p[1]: Items[1] odd, p[2]: Items[0] odd.
		odd := [3]string{q.Items[2], q.Items[1], q.Items[0]}
		best := 0
		for c := 1; c < 3; c++ {
			if p[c] > p[best] {
				best = c
			}
		}
		if odd[best] != q.Expected || p[best] < 0.95 {
			t.Fatalf("check %v expects %q; teacher says %q with p=%.3f", q.Items, q.Expected, odd[best], p[best])
		}
	}
	if checks < 18 || checks > 22 {
		t.Fatalf("%d checks of 40, want 20 ± 2", checks)
	}
}

func TestSubstitutesWhenAKindRunsOut(t *testing.T) {
	e := newTestEngine(t, func(c *Config) {
		c.Settings.Mix = alignet.QueryMix{Active: 0.5, Repeat: 0.5}
		c.Settings.Repeats = 3
	})
	if _, err := e.SetTeacher(randomTeacher(50, 4, 1, 4, 0), nil); err != nil {
		t.Fatal(err)
	}
	e.SetRepeats(e.DrawRepeats(3))
	e.AddSession(testSession("s", "w", 20), nil, t0)
	res, err := e.Serve("s", 20, t0)
	if err != nil || len(res.New) != 20 {
		t.Fatalf("Serve = %+v, %v", res, err)
	}
	n := map[alignet.QueryKind]int{}
	for _, q := range res.New {
		n[q.Kind]++
	}
	if n[alignet.QueryRepeat] != 3 || n[alignet.QueryActive] != 17 {
		t.Fatalf("kinds %v; want the 3 repeats once each and active for the rest", n)
	}
}

func TestCandidatesDistinctAndCanonical(t *testing.T) {
	for _, task := range []learner.Task{learner.TaskOddOneOut, learner.TaskAnchor} {
		for _, c := range []struct{ n, size int }{{5, 1000}, {30, 2000}, {2000, 50000}} {
			ts := Candidates(task, c.n, c.size, 1)
			want := min(c.size, int(distinctTriplets(task, c.n)))
			if len(ts) != want {
				t.Fatalf("%s n=%d: %d candidates, want %d", task, c.n, len(ts), want)
			}
			keys := map[uint64]bool{}
			uses := make([]int, c.n)
			for _, tr := range ts {
				if tr != canonical(task, tr) || tr.I == tr.J || tr.I == tr.K || tr.J == tr.K {
					t.Fatalf("%s: candidate %v is not a canonical triplet", task, tr)
				}
				k := packKey(tr)
				if keys[k] {
					t.Fatalf("%s: candidate %v twice", task, tr)
				}
				keys[k] = true
				uses[tr.I]++
				uses[tr.J]++
				uses[tr.K]++
			}
			if c.n == 2000 {
				// 150,000 item slots over 2,000 items: 75 ± 8.7 each.
				for i, u := range uses {
					if u < 30 || u > 130 {
						t.Fatalf("%s: item %d in %d candidates, want about 75", task, i, u)
					}
				}
			}
		}
	}
	if a, b := TripletKey(learner.TaskOddOneOut, [3]string{"a", "b", "c"}), TripletKey(learner.TaskOddOneOut, [3]string{"c", "a", "b"}); a != b {
		t.Fatal("odd-one-out key depends on the display order")
	}
	if a, b := TripletKey(learner.TaskAnchor, [3]string{"a", "b", "c"}), TripletKey(learner.TaskAnchor, [3]string{"a", "c", "b"}); a != b {
		t.Fatal("anchor key depends on the order of close and far")
	}
	if a, b := TripletKey(learner.TaskAnchor, [3]string{"a", "b", "c"}), TripletKey(learner.TaskAnchor, [3]string{"b", "a", "c"}); a == b {
		t.Fatal("anchor key ignores the head")
	}
}

func TestHeapOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([]float32, 500)
	for i := range keys {
		keys[i] = rng.Float32()
	}
	h := newKeyHeap(keys)
	for range 2000 {
		c := int32(rng.IntN(500))
		if h.pos[c] >= 0 {
			h.set(c, rng.Float32())
		}
		if rng.IntN(3) == 0 && h.len() > 0 {
			h.pop()
		}
	}
	prev := float32(math.Inf(1))
	for h.len() > 0 {
		c := h.pop()
		if h.key[c] > prev {
			t.Fatalf("heap popped %g after %g", h.key[c], prev)
		}
		prev = h.key[c]
	}
}

func TestMixerShares(t *testing.T) {
	m := newMixer(alignet.QueryMix{Active: 0.7, Random: 0.2, Check: 0.1}, 99)
	count := map[alignet.QueryKind]int{}
	for i := 1; i <= 100000; i++ {
		count[m.next()]++
		if i%1000 == 0 {
			for k, share := range map[alignet.QueryKind]float64{alignet.QueryActive: 0.7, alignet.QueryRandom: 0.2, alignet.QueryCheck: 0.1} {
				if d := math.Abs(float64(count[k]) - share*float64(i)); d > 4 {
					t.Fatalf("after %d queries %s has %d, want %.0f", i, k, count[k], share*float64(i))
				}
			}
		}
	}
	if count[alignet.QueryRepeat] != 0 {
		t.Fatal("a kind with share 0 was scheduled")
	}
}

func TestEngineRejectsBadInput(t *testing.T) {
	if _, err := NewEngine(Config{Task: "x", NewID: counterIDs()}); err == nil {
		t.Fatal("NewEngine with an unknown task succeeded")
	}
	e := newTestEngine(t, nil)
	if _, err := e.Serve("s", 1, t0); err != ErrUnknownSession {
		t.Fatalf("Serve before AddSession = %v", err)
	}
	e.AddSession(testSession("s", "w", 1), nil, t0)
	if _, err := e.Serve("s", 1, t0); err != ErrNoTeacher {
		t.Fatalf("Serve before SetTeacher = %v", err)
	}
	bad := randomTeacher(10, 4, 1, 1, 0)
	bad.Z = bad.Z[:5]
	if _, err := e.SetTeacher(bad, nil); err == nil {
		t.Fatal("SetTeacher with a short Z succeeded")
	}
	anchor := randomTeacher(10, 4, 1, 1, 0)
	anchor.Task = learner.TaskAnchor
	if _, err := e.SetTeacher(anchor, nil); err == nil {
		t.Fatal("SetTeacher with another task succeeded")
	}
}
