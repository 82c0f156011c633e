package online

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// kindOf gives judgment i of a test stream a query kind: active, random,
// repeat, check, or none (posted without a query).
func kindOf(i int) alignet.QueryKind {
	return [5]alignet.QueryKind{alignet.QueryActive, alignet.QueryRandom, alignet.QueryRepeat, alignet.QueryCheck, ""}[i%5]
}

// withKinds stamps the judgments with kindOf and a query id for kinded ones.
func withKinds(js []alignet.Judgment) []alignet.Judgment {
	for i := range js {
		js[i].QueryKind = kindOf(i)
		if js[i].QueryKind != "" {
			js[i].QueryID = "q-" + js[i].ID
		}
	}
	return js
}

// wantRole is the role a judgment must get, spelled out in the test's own
// words rather than by calling the rule: checks and flagged workers are
// excluded; with random queries in the mix, random queries are held out and
// other served ones trained on; the rest follow the hash split.
func wantRole(j alignet.Judgment, mixRandom, share float64, flagged bool) alignet.Role {
	switch {
	case flagged || j.QueryKind == alignet.QueryCheck:
		return alignet.RoleExcluded
	case mixRandom > 0 && j.QueryKind == alignet.QueryRandom:
		return alignet.RoleHeldOut
	case mixRandom > 0 && j.QueryKind != "":
		return alignet.RoleTrain
	case share > 0 && alignet.HeldOutScore(j.Study, j.ID) < share:
		return alignet.RoleHeldOut
	}
	return alignet.RoleTrain
}

// TestRolesDecideTraining feeds judgments of every query kind, from
// workers of whom one is flagged from the start and one midway, and
// checks at the batch boundary and in the counts that attention checks and
// flagged workers' judgments are never trained on nor scored, that random
// queries are held out exactly when the mix asks them, and that served
// active and repeat queries are trained on.
func TestRolesDecideTraining(t *testing.T) {
	for _, c := range []struct {
		name  string
		patch string
		mix   float64
	}{
		{"random in the mix", `{"learner":{"held_out_share":0.2}}`, 0.15},
		{"no random queries", `{"learner":{"held_out_share":0.2},"queries":{"mix":{"active":0.9,"random":0,"repeat":0.05,"check":0.05}}}`, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := memLearner(t, Config{MaxFresh: 64, ReplayBatch: 64})
			s := newSynth(30, 6, 21)
			p, st := memStudy(t, l, s, "k", alignet.TaskOddOneOut, c.patch)
			if st.meta.Settings.Queries.Mix.Random != c.mix {
				t.Fatalf("mix.random %v, want %v", st.meta.Settings.Queries.Mix.Random, c.mix)
			}
			js := withKinds(s.judgments("k", alignet.TaskOddOneOut, "k", 4000, 22))
			byHash := map[uint64]alignet.Judgment{}
			for _, j := range js {
				byHash[alignet.IDHash(j.ID)] = j
			}
			// w3 is flagged before anything arrives, w5 after the first half.
			p.polled(pollResult{flags: []alignet.WorkerFlags{{Study: "k", Worker: "w3", Flagged: true}}})
			late := false
			flagged := func(j alignet.Judgment) bool { return j.Worker == "w3" || (late && j.Worker == "w5") }
			trainedKinds := map[alignet.QueryKind]int{}
			l.hooks.batch = func(_ string, batch []sample) {
				for _, b := range batch {
					j, ok := byHash[b.hash]
					if !ok {
						t.Fatalf("batch holds an unknown id hash %x", b.hash)
					}
					if r := wantRole(j, c.mix, 0.2, flagged(j)); r != alignet.RoleTrain {
						t.Fatalf("judgment %s (%q query, worker %s, w5 flagged %v) of role %s reached a training batch",
							j.ID, j.QueryKind, j.Worker, late, r)
					}
					trainedKinds[j.QueryKind]++
				}
			}
			half := len(js) / 2
			feed(t, p, js[:half], 10)
			p.stepAll()
			for range 10 {
				p.idleStep()
			}
			p.polled(pollResult{flags: []alignet.WorkerFlags{{Study: "k", Worker: "w5", Flagged: true, Reasons: []string{alignet.FlagFailedChecks}}}})
			late = true
			// The flag reaches the buffers at once: nothing of w5 is left
			// to replay or to score versions with.
			for _, smp := range slices.Concat(st.replay.items, st.held.items) {
				if j := byHash[smp.hash]; j.Worker == "w5" || j.Worker == "w3" {
					t.Fatalf("flagged worker's judgment %s still buffered", j.ID)
				}
			}
			feed(t, p, js[half:], 10)
			p.stepAll()
			for range 10 {
				p.idleStep()
			}

			want := map[alignet.Role]int64{}
			for i, j := range js {
				want[wantRole(j, c.mix, 0.2, j.Worker == "w3" || (i >= half && j.Worker == "w5"))]++
			}
			if st.st.JudgmentsTrained != want[alignet.RoleTrain] || st.st.Skipped[reasonHeldOut] != want[alignet.RoleHeldOut] ||
				st.st.Skipped[reasonExcluded] != want[alignet.RoleExcluded] {
				t.Fatalf("trained %d, held out %d, excluded %d; want %d, %d, %d", st.st.JudgmentsTrained,
					st.st.Skipped[reasonHeldOut], st.st.Skipped[reasonExcluded], want[alignet.RoleTrain], want[alignet.RoleHeldOut], want[alignet.RoleExcluded])
			}
			if st.st.JudgmentsSeen != int64(len(js)) {
				t.Fatalf("seen %d, want %d", st.st.JudgmentsSeen, len(js))
			}
			// Excluded judgments are not scored: the prequential window holds
			// the others.
			if n := st.windows[1].n; int64(n) != want[alignet.RoleTrain]+want[alignet.RoleHeldOut] {
				t.Fatalf("prequential window scored %d judgments, want %d (excluded ones are not scored)", n, want[alignet.RoleTrain]+want[alignet.RoleHeldOut])
			}
			if trainedKinds[alignet.QueryActive] == 0 || trainedKinds[alignet.QueryRepeat] == 0 {
				t.Fatalf("trained kinds %v: served active and repeat queries must be trained on", trainedKinds)
			}
			if c.mix == 0 && trainedKinds[alignet.QueryRandom] == 0 {
				t.Fatalf("trained kinds %v: without random queries in the mix, random judgments follow the hash split", trainedKinds)
			}
			for _, smp := range st.held.items {
				j := byHash[smp.hash]
				if r := wantRole(j, c.mix, 0.2, flagged(j)); r != alignet.RoleHeldOut {
					t.Fatalf("held-out buffer holds %s of role %s", j.ID, r)
				}
			}
			if len(st.held.items) == 0 {
				t.Fatal("nothing held out")
			}
		})
	}
}

// TestRolesFollowSettings switches random queries on in a study that had
// none: the buffered random-query judgments move from the replay buffer
// to the held-out buffer, and are never trained on again.
func TestRolesFollowSettings(t *testing.T) {
	l := memLearner(t, Config{MaxFresh: 64, ReplayBatch: 64})
	s := newSynth(30, 6, 23)
	p, st := memStudy(t, l, s, "m", alignet.TaskOddOneOut,
		`{"learner":{"held_out_share":0},"queries":{"mix":{"active":0.9,"random":0,"repeat":0.05,"check":0.05}}}`)
	js := withKinds(s.judgments("m", alignet.TaskOddOneOut, "m", 1000, 24))
	random := map[uint64]bool{}
	for _, j := range js {
		if j.QueryKind == alignet.QueryRandom {
			random[alignet.IDHash(j.ID)] = true
		}
	}
	feed(t, p, js, 20)
	p.stepAll()
	inReplay := 0
	for _, smp := range st.replay.items {
		if random[smp.hash] {
			inReplay++
		}
	}
	if inReplay == 0 || len(st.held.items) != 0 {
		t.Fatalf("before: %d random judgments in the replay buffer, %d held out; want some, none", inReplay, len(st.held.items))
	}
	next := st.meta
	next.Settings.Queries.Mix = alignet.QueryMix{Active: 0.75, Random: 0.15, Repeat: 0.05, Check: 0.05}
	p.polled(pollResult{studies: []alignet.Study{next}})
	for _, smp := range st.replay.items {
		if random[smp.hash] {
			t.Fatal("a random-query judgment stayed in the replay buffer")
		}
	}
	if len(st.held.items) != inReplay {
		t.Fatalf("held-out buffer holds %d judgments, want the %d random ones moved from the replay buffer", len(st.held.items), inReplay)
	}
	l.hooks.batch = func(_ string, batch []sample) {
		for _, b := range batch {
			if random[b.hash] {
				t.Fatal("a random-query judgment reached a training batch after random queries were switched on")
			}
		}
	}
	for range 20 {
		p.idleStep()
	}
}

// TestRefitExcludesFromThePostgresRecord stores judgments of every kind in
// Postgres, flags a worker there by failed attention checks, and runs the
// learner's warm-up and refit paths against the database: the refit's
// record and the rebuilt buffers exclude the checks and the flagged
// worker's judgments, hold out the random queries and train on the rest.
// A second worker flagged later reaches the learner through the flag poll
// and is excluded from the next refit.
func TestRefitExcludesFromThePostgresRecord(t *testing.T) {
	t.Parallel()
	d := newDB(t)
	ctx := context.Background()
	s := newSynth(30, 6, 25)
	createStudy(t, d, s, "pg", alignet.TaskOddOneOut, `{"learner":{"max_iter":20}}`, nil)
	js := withKinds(s.judgments("pg", alignet.TaskOddOneOut, "pg", 2500, 26))
	if _, err := d.InsertJudgments(ctx, js); err != nil {
		t.Fatal(err)
	}
	flagSettings := alignet.DefaultQuerySettings().Flags
	failChecks := func(worker string) {
		t.Helper()
		now := time.Now()
		no := false
		var as []alignet.Answer
		for i := range flagSettings.MaxFailedChecks {
			q := alignet.Query{ID: fmt.Sprintf("fc-%s-%d", worker, i), Study: "pg", Session: "s-" + worker, Worker: worker,
				Kind: alignet.QueryCheck, Items: [3]string{s.items[0], s.items[1], s.items[2+i]}, Expected: s.items[0],
				ServedAt: now, ExpiresAt: now.Add(time.Hour)}
			as = append(as, alignet.Answer{Query: q, JudgmentID: "fcj-" + q.ID, At: now, RTMillis: 900, CheckPassed: &no})
		}
		if _, err := d.AnswerQueries(ctx, "pg", as, flagSettings); err != nil {
			t.Fatal(err)
		}
	}
	failChecks("w3")

	l, err := New(Config{Brokers: []string{"unused:9092"}, Logger: testLogger(t), PollInterval: 50 * time.Millisecond}, d)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := newPartition(l, 0, nil)
	p.ctx = pctx
	st, err := p.load(ctx, "pg")
	if err != nil {
		t.Fatal(err)
	}
	if !st.flagged[alignet.IDHash("w3")] || len(st.flagged) != 1 {
		t.Fatalf("loaded flagged workers %v, want w3 only", st.flagged)
	}
	p.studies["pg"] = st
	p.publishOwned()

	mix := st.meta.Settings.Queries.Mix.Random
	share := st.meta.Settings.Learner.HeldOutShare
	refit := func(flagged map[string]bool) {
		t.Helper()
		p.startJob(st, true)
		var r jobResult
		select {
		case r = <-p.jobs:
		case <-time.After(2 * time.Minute):
			t.Fatal("refit did not finish")
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		want := map[alignet.Role]int{}
		role := map[uint64]alignet.Role{}
		for _, j := range js {
			r := wantRole(j, mix, share, flagged[j.Worker])
			want[r]++
			role[alignet.IDHash(j.ID)] = r
		}
		for _, smp := range r.train {
			if role[smp.hash] != alignet.RoleTrain {
				t.Fatalf("the refit trains on a judgment of role %s", role[smp.hash])
			}
		}
		for _, smp := range r.held {
			if role[smp.hash] != alignet.RoleHeldOut {
				t.Fatalf("the refit holds out a judgment of role %s", role[smp.hash])
			}
		}
		if len(r.train) != want[alignet.RoleTrain] || len(r.held) != want[alignet.RoleHeldOut] || r.excluded != int64(want[alignet.RoleExcluded]) {
			t.Fatalf("refit read %d training, %d held-out, %d excluded judgments; want %v", len(r.train), len(r.held), r.excluded, want)
		}
		p.finishJob(r)
		for _, smp := range st.replay.items {
			if role[smp.hash] != alignet.RoleTrain {
				t.Fatalf("replay buffer holds a judgment of role %s after the refit", role[smp.hash])
			}
		}
		if len(st.held.items) != want[alignet.RoleHeldOut] {
			t.Fatalf("held-out buffer holds %d judgments, want %d", len(st.held.items), want[alignet.RoleHeldOut])
		}
	}
	refit(map[string]bool{"w3": true})

	// w5 is flagged in Postgres; the poll brings the change to the actor.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.poll(pctx) }()
	defer func() { cancel(); wg.Wait() }()
	failChecks("w5")
	deadline := time.After(time.Minute)
	for !st.flagged[alignet.IDHash("w5")] {
		select {
		case r := <-p.polls:
			p.polled(r)
		case <-deadline:
			t.Fatal("the flag of w5 was not polled")
		}
	}
	refit(map[string]bool{"w3": true, "w5": true})
}

// TestKindSurvivesTheSample checks that a sample keeps what the rule
// needs: the role of a sample equals TrainingRole of its judgment.
func TestKindSurvivesTheSample(t *testing.T) {
	r := roles{settings: alignet.DefaultStudySettings(), flagged: map[uint64]bool{alignet.IDHash("bad"): true}}
	for i := range 500 {
		j := alignet.Judgment{ID: fmt.Sprint("j", i), Study: "s", Worker: []string{"ok", "bad"}[i%7/6], QueryKind: kindOf(i)}
		if got, want := r.of(newSample(&j, learner.Triplet{})), alignet.TrainingRole(j, r.settings, j.Worker == "bad"); got != want {
			t.Fatalf("%+v: sample role %s, judgment role %s", j, got, want)
		}
	}
}
