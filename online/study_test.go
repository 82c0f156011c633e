package online

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// memLearner returns a learner for in-memory tests (no Kafka, no store).
func memLearner(t testing.TB, cfg Config) *Learner {
	t.Helper()
	cfg.Brokers = []string{"unused:9092"}
	cfg.Registerer = prometheus.NewRegistry()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	l, err := New(cfg, nilStore{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// memStudy returns a partition owning one study over the items of s, all
// embedded, with the settings patch applied.
func memStudy(t testing.TB, l *Learner, s *synth, id string, task alignet.Task, patch string) (*partition, *study) {
	t.Helper()
	sp := &space{dim: s.d, index: map[string]int32{}, x: slices.Clone(s.x), has: make([]bool, s.n)}
	for r, it := range s.items {
		sp.items = append(sp.items, it)
		sp.index[it] = int32(r)
		sp.has[r] = true
	}
	meta := alignet.Study{ID: id, Task: task, Space: "s", Settings: alignet.DefaultStudySettings()}
	if patch != "" {
		var err error
		if meta.Settings, err = meta.Settings.Patch([]byte(patch)); err != nil {
			t.Fatal(err)
		}
	}
	st := newStudy(meta, sp, nil, nil, l.cfg)
	p := newPartition(l, 0, nil)
	p.ctx = context.Background()
	p.studies[id] = st
	p.publishOwned()
	return p, st
}

// feed hands js to the partition as messages of per judgments.
func feed(t testing.TB, p *partition, js []alignet.Judgment, per int) {
	t.Helper()
	for lo := 0; lo < len(js); lo += per {
		m := kafka.Message{Offset: p.next + 1, HighWaterMark: p.next + 2}
		if err := p.handle(context.Background(), fetched{msg: m, js: js[lo:min(lo+per, len(js))]}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHeldOutNeverReachesATrainingBatch records every training batch,
// fresh, replayed and idle, and checks that none holds a held-out id, also
// after the held-out share grows (the replay buffer then holds judgments
// that are held out under the new share).
func TestHeldOutNeverReachesATrainingBatch(t *testing.T) {
	l := memLearner(t, Config{MaxFresh: 64, ReplayBatch: 64})
	s := newSynth(30, 6, 1)
	p, st := memStudy(t, l, s, "h", alignet.TaskOddOneOut, `{"learner":{"held_out_share":0.2}}`)
	js := s.judgments("h", alignet.TaskOddOneOut, "h", 3000, 2)
	ids := map[uint64]string{}
	for _, j := range js {
		ids[alignet.IDHash(j.ID)] = j.ID
	}
	share := 0.2
	batches, trained := 0, 0
	l.hooks.batch = func(study string, batch []sample) {
		batches++
		for _, b := range batch {
			trained++
			id, ok := ids[b.hash]
			if !ok {
				t.Fatalf("batch holds an unknown id hash %x", b.hash)
			}
			if alignet.HeldOut(study, id, share) {
				t.Fatalf("held-out judgment %s (share %v) reached a training batch", id, share)
			}
		}
	}
	feed(t, p, js[:1500], 10)
	p.stepAll()
	for range 20 {
		p.idleStep()
	}
	// A PATCH of the share takes effect: nothing held out under the new
	// share is trained on from now on.
	grown := st.meta
	grown.Settings.Learner.HeldOutShare = 0.5
	p.polled(pollResult{studies: []alignet.Study{grown}})
	share = 0.5
	feed(t, p, js[1500:], 10)
	p.stepAll()
	for range 20 {
		p.idleStep()
	}
	if batches < 40 || trained == 0 {
		t.Fatalf("only %d batches (%d samples) recorded", batches, trained)
	}
	held := st.st.Skipped[reasonHeldOut]
	if held < 600 || st.st.JudgmentsTrained+held != 3000 {
		t.Fatalf("held out %d, trained %d of 3000", held, st.st.JudgmentsTrained)
	}
	for _, j := range js {
		got := st.roles().of(newSample(&j, learner.Triplet{})) == alignet.RoleHeldOut
		if want := alignet.HeldOut("h", j.ID, 0.5); got != want {
			t.Fatalf("judgment %s held out %v by the gate, want %v", j.ID, got, want)
		}
	}
}

// TestPrequentialScoresBeforeTraining checks that each judgment is scored
// by the teacher as it was before the step that trains on it.
func TestPrequentialScoresBeforeTraining(t *testing.T) {
	l := memLearner(t, Config{})
	s := newSynth(30, 6, 2)
	p, st := memStudy(t, l, s, "p", alignet.TaskAnchor, `{"learner":{"held_out_share":0}}`)
	warm := s.judgments("p", alignet.TaskAnchor, "w", 500, 3)
	feed(t, p, warm, 50)
	p.stepAll()
	before := st.served.Clone()
	js := s.judgments("p", alignet.TaskAnchor, "q", 200, 4)
	var ts []learner.Triplet
	for i := range js {
		tr, _, _ := st.sp.triplet(&js[i])
		ts = append(ts, tr)
	}
	var wantLoss, wantAcc float64
	for _, lg := range logitsOf(before, st.sp.x, ts) {
		ce, _ := learner.TaskCrossEntropy(learner.TaskAnchor, lg, before.Tau, learner.HardTarget)
		wantLoss += ce
		if learner.Correct(learner.TaskAnchor, lg) {
			wantAcc++
		}
	}
	feed(t, p, js, 200)
	p.stepAll()
	// The 1,000-judgment window now holds the 500 warm-up and the 200 new
	// judgments; recover the new ones' means.
	w := st.windows[0]
	if w.n != 700 {
		t.Fatalf("window holds %d judgments, want 700", w.n)
	}
	var gotLoss, gotAcc float64
	for i := 500; i < 700; i++ {
		gotLoss += float64(w.loss[i])
		gotAcc += float64(w.acc[i])
	}
	if math.Abs(gotLoss-wantLoss) > 1e-3*wantLoss || gotAcc != wantAcc {
		t.Fatalf("prequential loss %v acc %v, want %v %v (scored by the teacher before the step)", gotLoss, gotAcc, wantLoss, wantAcc)
	}
	if slices.Equal(before.W, st.served.W) {
		t.Fatal("the step did not train")
	}
}

// TestAdaptiveBatching checks that a step takes every queued judgment up
// to MaxFresh, mixed with four replayed judgments per fresh one (at least
// 256, at most ReplayBatch), and that idle steps replay ReplayBatch.
func TestAdaptiveBatching(t *testing.T) {
	l := memLearner(t, Config{MaxFresh: 100, ReplayBatch: 300})
	s := newSynth(30, 6, 3)
	p, _ := memStudy(t, l, s, "b", alignet.TaskOddOneOut, `{"learner":{"held_out_share":0}}`)
	var sizes []int
	l.hooks.batch = func(_ string, batch []sample) { sizes = append(sizes, len(batch)) }
	js := s.judgments("b", alignet.TaskOddOneOut, "b", 350, 5)
	feed(t, p, js, 350) // one message of 350: steps of 100 as the queue fills
	if !slices.Equal(sizes, []int{100, 400, 400}) {
		t.Fatalf("batches %v while handling the message, want 100 (nothing to replay yet), then 100 + 300 replayed twice", sizes)
	}
	p.stepAll() // the remaining 50, as the quiet partition's step timer would
	if !slices.Equal(sizes, []int{100, 400, 400, 50 + 256}) {
		t.Fatalf("batches %v, want a last one of 50 fresh + 256 replayed", sizes)
	}
	for range 2 {
		p.idleStep()
	}
	if !slices.Equal(sizes[4:], []int{300, 300}) {
		t.Fatalf("idle batches %v, want ReplayBatch", sizes[4:])
	}
}

// TestDuplicatesAreAppliedOnce applies the same ids twice.
func TestDuplicatesAreAppliedOnce(t *testing.T) {
	l := memLearner(t, Config{})
	s := newSynth(30, 6, 4)
	p, st := memStudy(t, l, s, "d", alignet.TaskOddOneOut, "")
	js := s.judgments("d", alignet.TaskOddOneOut, "d", 300, 6)
	feed(t, p, js, 30)
	feed(t, p, js[100:200], 25)
	p.stepAll()
	if st.st.JudgmentsSeen != 300 || st.seen.len() != 300 || len(st.newSeen) != 300 {
		t.Fatalf("seen %d (set %d, new %d), want 300", st.st.JudgmentsSeen, st.seen.len(), len(st.newSeen))
	}
	if got := st.st.JudgmentsTrained + st.st.Skipped[reasonHeldOut]; got != 300 {
		t.Fatalf("trained + held out = %d, want 300", got)
	}
}

// TestRestoreFromStoredState builds a study from a stored state: the
// teacher, the counts, the windows and the refit bookkeeping continue.
func TestRestoreFromStoredState(t *testing.T) {
	l := memLearner(t, Config{})
	s := newSynth(30, 6, 5)
	p, st := memStudy(t, l, s, "r", alignet.TaskOddOneOut, "")
	feed(t, p, s.judgments("r", alignet.TaskOddOneOut, "r", 800, 7), 40)
	p.stepAll()
	stored := st.snapshot(st.st.UpdatedAt)
	stored.LastRefitJudgments = 640
	again := newStudy(st.meta, st.sp, &stored, slices.Clone(st.newSeen), l.cfg)
	if again.st.JudgmentsSeen != 800 || again.seen.len() != 800 || again.refitBase != 640 {
		t.Fatalf("restored seen %d (set %d), refit base %d", again.st.JudgmentsSeen, again.seen.len(), again.refitBase)
	}
	for i, v := range again.served.W {
		if float32(v) != float32(st.served.W[i]) {
			t.Fatal("restored teacher differs from the stored one")
		}
	}
	a, b := again.windows[0].means()
	c, d := st.windows[0].means()
	if math.Abs(a-c) > 1e-6 || math.Abs(b-d) > 1e-6 || again.windows[0].n != st.windows[0].n {
		t.Fatalf("restored window %v %v n=%d, stored %v %v n=%d", a, b, again.windows[0].n, c, d, st.windows[0].n)
	}
	// A stored id is not applied again.
	js := s.judgments("r", alignet.TaskOddOneOut, "r", 10, 7)
	m, _ := newMetrics(nil)
	for i := range js {
		again.accept(&js[i], m)
	}
	if again.st.JudgmentsSeen != 800 {
		t.Fatalf("re-applied stored ids: seen %d", again.st.JudgmentsSeen)
	}
}
