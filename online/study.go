package online

import (
	"maps"
	"math"
	"math/rand/v2"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// Reasons a judgment is not trained on, as counted in
// alignet.TeacherState.Skipped and the skipped metric.
const (
	// reasonHeldOut: the judgment's role is alignet.RoleHeldOut (a random
	// query, or the hash split): it scores the teacher only.
	reasonHeldOut = "held_out"
	// reasonExcluded: the judgment's role is alignet.RoleExcluded (an
	// attention check, or a flagged worker's): neither trained nor scored
	// on.
	reasonExcluded = "excluded"
	// reasonNoEmbedding: an item has no embedding (yet); the next refit
	// reads the judgment again from Postgres.
	reasonNoEmbedding = "no_embedding"
	// reasonTaskMismatch: the judgment's task is not the study's.
	reasonTaskMismatch = "task_mismatch"
	// reasonOnlineOff: the study's online learning is switched off; the
	// judgment is kept for replay and refits.
	reasonOnlineOff = "online_disabled"
	// reasonDuplicate: the id was applied before (not counted in the state).
	reasonDuplicate = "duplicate"
	// reasonUnknownStudy: the study does not exist (not counted in a state).
	reasonUnknownStudy = "unknown_study"
)

// Replayed judgments per step with fresh ones: replayPerFresh for each
// fresh judgment (the mix of learner.OnlineConfig's defaults), at least
// minReplay so that a step on a few judgments is still averaged over
// many, and at most Config.ReplayBatch.
const (
	replayPerFresh = 4
	minReplay      = 256
)

// roles is the one gate into training data, for the online path (every
// step and batch, the replay and held-out buffers, warm-ups) and for
// refits alike: alignet.TrainingRole under the study's settings and the
// workers flagged in it.
type roles struct {
	settings alignet.StudySettings
	// flagged holds the id hashes of the study's flagged workers.
	flagged map[uint64]bool
}

// of returns the role of a sample.
func (r roles) of(smp sample) alignet.Role {
	return alignet.TrainingRoleOf(smp.kind.kind(), smp.score, r.settings, r.flagged[smp.worker])
}

// rolesChanged reports whether the roles of judgments may differ under
// settings b from those under a.
func rolesChanged(a, b alignet.StudySettings) bool {
	return a.Learner.HeldOutShare != b.Learner.HeldOutShare || (a.Queries.Mix.Random > 0) != (b.Queries.Mix.Random > 0)
}

// jobRun is a running refit or warm-up of a study.
type jobRun struct {
	// asked is set when the refit was requested (so that a released
	// partition records the request again).
	asked       bool
	seenAtStart int64
	// during are the samples trained on while the job ran; those its read
	// of Postgres did not include are replayed on top of a refit.
	during []sample
	// heldDuring are the held-out judgments applied while the job ran.
	heldDuring []sample
}

// study is the learner's state of one study. It is owned by the actor of
// the study's partition and never shared.
type study struct {
	id   string
	meta alignet.Study
	sp   *space
	// served is the averaged teacher: scored, stored and versioned.
	// iterate is the Adam iterate it averages.
	served, iterate *learner.Teacher
	adam            learner.AdamState
	// st holds the bookkeeping of the stored state; Params, Prequential
	// and UpdatedAt are filled in by snapshot.
	st      alignet.TeacherState
	seen    *idSet
	newSeen []uint64
	// flagged holds the id hashes of the study's flagged workers (read at
	// load, then polled): their judgments are excluded.
	flagged map[uint64]bool
	replay  *reservoir
	held    *heldRing
	windows [2]*window
	pending []sample
	dirty   bool

	idleSteps int
	// idleOff stops idle steps until the next fresh judgment (after a
	// refit nothing is left to learn from the replay buffer).
	idleOff bool

	job        *jobRun
	refitAsked bool
	// refitBase is the judgment count the last refit started at.
	refitBase int64

	lastVersion time.Time
	changed     bool // trained since the last version

	embLoading bool
	embAt      time.Time

	rng *rand.Rand
}

// prequentialWindows are the sizes of the rolling prequential windows.
var prequentialWindows = [2]int{1000, 10000}

// newStudy builds the state of a study from its definition, its items and
// embeddings, the stored teacher state (nil for none) and the stored
// applied ids.
func newStudy(meta alignet.Study, sp *space, stored *alignet.TeacherState, seen []uint64, cfg Config) *study {
	s := &study{
		id: meta.ID, meta: meta, sp: sp,
		seen:        newIDSet(len(seen)),
		flagged:     map[uint64]bool{},
		replay:      newReservoir(cfg.ReplayCap, cfg.Seed^alignet.IDHash(meta.ID)),
		held:        &heldRing{cap: cfg.HeldOutCap},
		rng:         rand.New(rand.NewPCG(cfg.Seed, alignet.IDHash(meta.ID))),
		lastVersion: time.Now(),
	}
	for i, w := range prequentialWindows {
		s.windows[i] = newWindow(w)
	}
	for _, h := range seen {
		s.seen.add(h)
	}
	ls := meta.Settings.Learner
	s.st = alignet.TeacherState{
		Study: meta.ID, Status: alignet.TeacherEmpty, Skipped: map[string]int64{},
		Hyper: alignet.TeacherHyper{Targets: "hard", LearningRate: ls.LearningRate, Seed: cfg.Seed},
	}
	if stored != nil && stored.Params.D == sp.dim && stored.Params.Task == meta.Task {
		s.st = *stored
		s.st.Skipped = maps.Clone(stored.Skipped)
		if s.st.Skipped == nil {
			s.st.Skipped = map[string]int64{}
		}
		s.served = modelfile.TeacherOf(stored.Params)
		for _, pq := range stored.Prequential {
			for i, w := range prequentialWindows {
				if pq.Window == w {
					s.windows[i].restore(pq.N, pq.Accuracy, pq.LogLoss)
				}
			}
		}
		s.refitBase = stored.LastRefitJudgments
	} else {
		if stored != nil {
			// The space or task changed: keep the counts, start the teacher
			// again.
			s.st.JudgmentsSeen, s.st.JudgmentsTrained = stored.JudgmentsSeen, stored.JudgmentsTrained
			s.st.Version, s.st.NewestAcceptedAt = stored.Version, stored.NewestAcceptedAt
		}
		s.served = initialTeacher(sp, meta.Task, ls.OutDim, onlineLambda(ls.Lambdas), cfg.Seed)
	}
	s.iterate = s.served.Clone()
	return s
}

// roles returns the gate under the study's current settings and flags.
func (s *study) roles() roles { return roles{settings: s.meta.Settings, flagged: s.flagged} }

// flag records that worker (a pseudonym) is flagged or not and reports
// whether that changed anything.
func (s *study) flag(worker string, on bool) bool {
	h := alignet.IDHash(worker)
	if s.flagged[h] == on {
		return false
	}
	if on {
		s.flagged[h] = true
	} else {
		delete(s.flagged, h)
	}
	return true
}

// skip counts a judgment that is not trained on.
func (s *study) skip(m *metrics, reason string) {
	s.st.Skipped[reason]++
	m.skipped.WithLabelValues(s.id, reason).Inc()
}

// accept applies one judgment of the study: a new id is counted once and
// queued for the next step; a repeated id is ignored. It reports whether
// an item lacked an embedding (so that the caller looks for it).
func (s *study) accept(j *alignet.Judgment, m *metrics) (missing bool) {
	h := alignet.IDHash(j.ID)
	if !s.seen.add(h) {
		m.skipped.WithLabelValues(s.id, reasonDuplicate).Inc()
		return false
	}
	s.newSeen = append(s.newSeen, h)
	s.st.JudgmentsSeen++
	if j.ReceivedAt.After(s.st.NewestAcceptedAt) {
		s.st.NewestAcceptedAt = j.ReceivedAt
	}
	s.dirty = true
	m.applied.WithLabelValues(s.id).Inc()
	if j.Task != s.meta.Task {
		s.skip(m, reasonTaskMismatch)
		return false
	}
	smp := newSample(j, learner.Triplet{})
	if s.roles().of(smp) == alignet.RoleExcluded {
		s.skip(m, reasonExcluded)
		return false
	}
	t, _, embedded := s.sp.triplet(j)
	if !embedded {
		s.skip(m, reasonNoEmbedding)
		return true
	}
	smp.t = t
	s.pending = append(s.pending, smp)
	return false
}

// step scores the pending judgments with the current teacher
// (prequential evaluation), keeps the held-out ones for evaluation, and
// takes one Adam step on those it may train on mixed with replayed ones.
// Roles are decided again here, under the settings and flags of now;
// excluded judgments are neither scored nor trained on.
func (s *study) step(l *Learner) {
	if len(s.pending) == 0 {
		return
	}
	start := time.Now()
	queued := s.pending
	s.pending = nil
	r := s.roles()
	ps := make([]sample, 0, len(queued))
	rs := make([]alignet.Role, 0, len(queued))
	for _, p := range queued {
		role := r.of(p)
		if role == alignet.RoleExcluded {
			s.skip(l.m, reasonExcluded)
			continue
		}
		ps, rs = append(ps, p), append(rs, role)
	}
	task := learner.Task(s.meta.Task)
	ts := make([]learner.Triplet, len(ps))
	for i, p := range ps {
		ts[i] = p.t
	}
	for _, lg := range logitsOf(s.served, s.sp.x, ts) {
		acc := 0.0
		if learner.Correct(task, lg) {
			acc = 1
		}
		loss, _ := learner.TaskCrossEntropy(task, lg, s.served.Tau, learner.HardTarget)
		for _, w := range s.windows {
			w.add(acc, loss)
		}
	}
	s.observePrequential(l.m)
	fresh := make([]sample, 0, len(ps))
	for i, p := range ps {
		if rs[i] == alignet.RoleHeldOut {
			s.held.add(p)
			if s.job != nil {
				s.job.heldDuring = append(s.job.heldDuring, p)
			}
			s.skip(l.m, reasonHeldOut)
			continue
		}
		fresh = append(fresh, p)
	}
	if len(fresh) > 0 {
		if s.meta.Settings.Learner.Online {
			s.train(l, fresh, "fresh")
			s.st.JudgmentsTrained += int64(len(fresh))
		} else {
			for range fresh {
				s.skip(l.m, reasonOnlineOff)
			}
		}
		for _, smp := range fresh {
			s.replay.add(smp)
		}
		if s.job != nil && len(s.job.during) < l.cfg.ReplayCap {
			s.job.during = append(s.job.during, fresh...)
		}
		s.idleSteps, s.idleOff = 0, false
	}
	s.dirty = true
	l.m.step.WithLabelValues(s.id, "fresh").Observe(time.Since(start).Seconds())
}

// train takes one Adam step of the iterate on the fresh samples and a
// draw from the replay buffer, and moves the served average toward it.
// Every sample passed the roles gate; the check below guards the boundary
// again, under the settings and flags of now, so that no held-out or
// excluded judgment can ever reach a batch.
func (s *study) train(l *Learner, fresh []sample, kind string) {
	k := l.cfg.ReplayBatch
	if len(fresh) > 0 {
		k = min(k, max(replayPerFresh*len(fresh), minReplay))
	}
	batch := make([]sample, 0, len(fresh)+k)
	batch = append(batch, fresh...)
	batch = s.replay.draw(k, batch)
	if len(batch) == 0 {
		return
	}
	r := s.roles()
	kept := batch[:0]
	for _, b := range batch {
		if r.of(b) == alignet.RoleTrain {
			kept = append(kept, b)
		}
	}
	if len(kept) == 0 {
		return
	}
	if l.hooks.batch != nil {
		l.hooks.batch(s.id, kept)
	}
	ts := make([]learner.Triplet, len(kept))
	for i, b := range kept {
		ts[i] = b.t
	}
	s.iterate.Lambda, s.iterate.Tau = s.served.Lambda, s.served.Tau
	cfg := learner.OnlineConfig{
		LR: s.meta.Settings.Learner.LearningRate, BatchSize: len(ts), ReplayFraction: -1, Seed: s.rng.Uint64(),
	}
	if _, err := s.iterate.Update(s.sp.x, s.sp.n(), ts, nil, nil, nil, cfg, &s.adam); err != nil {
		l.log.Error("online step failed", "study", s.id, "kind", kind, "err", err)
		return
	}
	if !finite(s.iterate.W) || !finite(s.iterate.B) {
		l.log.Error("online step diverged; restarting the iterate from the served teacher", "study", s.id)
		s.iterate, s.adam = s.served.Clone(), learner.AdamState{}
		return
	}
	beta := l.cfg.Averaging
	for i, v := range s.iterate.W {
		s.served.W[i] = beta*s.served.W[i] + (1-beta)*v
	}
	for i, v := range s.iterate.B {
		s.served.B[i] = beta*s.served.B[i] + (1-beta)*v
	}
	if s.st.Status == alignet.TeacherEmpty {
		s.st.Status = alignet.TeacherOnline
	}
	s.changed, s.dirty = true, true
}

func finite(v []float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

// wantsIdle reports whether an idle replay step would still help.
func (s *study) wantsIdle(cfg Config) bool {
	if s.idleOff || !s.meta.Settings.Learner.Online || s.replay.len() == 0 || len(s.pending) > 0 {
		return false
	}
	bound := int(math.Ceil(cfg.IdleEpochs * float64(s.replay.len()) / float64(cfg.ReplayBatch)))
	return s.idleSteps < bound
}

// idle takes one replay-only step.
func (s *study) idle(l *Learner) {
	start := time.Now()
	s.train(l, nil, "idle")
	s.idleSteps++
	l.m.step.WithLabelValues(s.id, "idle").Observe(time.Since(start).Seconds())
}

// applyRoles moves the buffered judgments whose role changed with the
// settings or flags: out of the replay buffer what is no longer trained
// on, out of the held-out buffer what no longer scores the teacher, each
// into the other buffer when its new role belongs there.
func (s *study) applyRoles() {
	r := s.roles()
	outOfReplay := s.replay.remove(func(smp sample) bool { return r.of(smp) != alignet.RoleTrain })
	outOfHeld := s.held.remove(func(smp sample) bool { return r.of(smp) != alignet.RoleHeldOut })
	for _, smp := range outOfReplay {
		s.keep(r, smp)
	}
	for _, smp := range outOfHeld {
		s.keep(r, smp)
	}
}

// keep puts a judgment read or trained before into the buffer of its
// role: the replay buffer, the held-out buffer, or none.
func (s *study) keep(r roles, smp sample) {
	switch r.of(smp) {
	case alignet.RoleTrain:
		s.replay.add(smp)
	case alignet.RoleHeldOut:
		s.held.add(smp)
	}
}

// observePrequential publishes the prequential windows.
func (s *study) observePrequential(m *metrics) {
	for i, w := range s.windows {
		acc, loss := w.means()
		win := windowLabel(prequentialWindows[i])
		m.preqAcc.WithLabelValues(s.id, win).Set(acc)
		m.preqLoss.WithLabelValues(s.id, win).Set(loss)
	}
}

// snapshot returns the state to store now.
func (s *study) snapshot(now time.Time) alignet.TeacherState {
	st := s.st
	st.UpdatedAt = now
	st.Params = modelfile.ParamsOf(s.served, s.meta.Task)
	st.Skipped = maps.Clone(s.st.Skipped)
	st.Prequential = make([]alignet.Prequential, len(s.windows))
	for i, w := range s.windows {
		acc, loss := w.means()
		st.Prequential[i] = alignet.Prequential{Window: w.size, N: w.n, Accuracy: acc, LogLoss: loss}
	}
	return st
}

// version returns a snapshot of the served teacher as a new version.
func (s *study) version(kind string, eval alignet.TeacherEval, offsets map[int32]int64) alignet.TeacherVersion {
	return alignet.TeacherVersion{
		Study: s.id, Kind: kind, Parent: s.st.Version, JudgmentsSeen: s.st.JudgmentsSeen,
		Offsets: maps.Clone(offsets), Params: modelfile.ParamsOf(s.served, s.meta.Task), Hyper: s.st.Hyper, Eval: eval,
	}
}

// wantsRefit reports whether a refit should start now.
func (s *study) wantsRefit() bool {
	if s.job != nil {
		return false
	}
	if s.refitAsked {
		return true
	}
	ls := s.meta.Settings.Learner
	if !ls.Refits {
		return false
	}
	if s.refitBase == 0 {
		return s.st.JudgmentsSeen >= int64(ls.MinJudgments)
	}
	return float64(s.st.JudgmentsSeen) >= ls.RefitFactor*float64(s.refitBase)
}
