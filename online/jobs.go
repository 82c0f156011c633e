package online

import (
	"maps"
	"slices"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// maybeRefits starts the refits that are due.
func (p *partition) maybeRefits() {
	for _, s := range p.studies {
		if s.wantsRefit() {
			p.startJob(s, true)
		}
	}
}

// startJob reads the study's record in the background and, for a refit,
// fits the teacher; refits wait for a free refit slot.
func (p *partition) startJob(s *study, fit bool) {
	r := roles{settings: s.meta.Settings, flagged: maps.Clone(s.flagged)}
	j := job{study: s.id, task: s.meta.Task, roles: r, sp: s.sp, fit: fit, seen: s.st.JudgmentsSeen}
	s.job = &jobRun{seenAtStart: s.st.JudgmentsSeen}
	if fit {
		s.job.asked, s.refitAsked = s.refitAsked, false
		p.l.log.Info("refit started", "study", s.id, "judgments_seen", s.st.JudgmentsSeen)
	}
	ctx := p.ctx
	go func() {
		if fit {
			select {
			case p.l.refits <- struct{}{}:
				defer func() { <-p.l.refits }()
			case <-ctx.Done():
				return
			}
		}
		res := p.l.runJob(ctx, j)
		select {
		case p.jobs <- res:
		case <-ctx.Done():
		}
	}()
}

// finishJob applies a finished refit or warm-up.
func (p *partition) finishJob(r jobResult) {
	s := p.studies[r.study]
	if s == nil || s.job == nil {
		return
	}
	if r.fit && r.err == nil {
		// Step what is queued while the job still collects the judgments
		// trained during it, so that the version covers every judgment
		// counted.
		p.step(s)
	}
	run := s.job
	s.job = nil
	if r.err != nil {
		if r.fit {
			p.l.m.refits.WithLabelValues(s.id, "error").Inc()
			p.l.log.Warn("refit failed", "study", s.id, "err", r.err)
			s.refitBase = max(run.seenAtStart, 1)
		} else {
			p.l.log.Warn("refill buffers from the record", "study", s.id, "err", r.err)
		}
		return
	}
	p.refill(s, r)
	if !r.fit {
		return
	}
	prev, prevIter, prevAdam, prevIdle, prevOff := s.served, s.iterate, s.adam, s.idleSteps, s.idleOff
	s.served, s.iterate, s.adam = r.teacher.Clone(), r.teacher.Clone(), learner.AdamState{}
	var onTop []sample
	for _, smp := range run.during {
		if !r.read.has(smp.hash) {
			onTop = append(onTop, smp)
		}
	}
	if s.meta.Settings.Learner.Online {
		for lo := 0; lo < len(onTop); lo += p.l.cfg.MaxFresh {
			start := time.Now()
			s.train(p.l, onTop[lo:min(lo+p.l.cfg.MaxFresh, len(onTop))], "on_top")
			p.l.m.step.WithLabelValues(s.id, "on_top").Observe(time.Since(start).Seconds())
		}
	}
	s.idleSteps, s.idleOff = 0, len(onTop) == 0
	now := time.Now()
	s.st.LastRefitAt = &now
	s.st.LastRefitJudgments = r.count
	s.refitBase = max(run.seenAtStart, 1)
	s.dirty = true
	p.l.m.refitTime.WithLabelValues(s.id).Observe(r.duration.Seconds())
	// The held-out judgments under the roles of now: flags polled or
	// settings read while the job ran apply to its record too.
	gate := s.roles()
	var held []sample
	for _, h := range r.held {
		if gate.of(h) == alignet.RoleHeldOut {
			held = append(held, h)
		}
	}
	for _, h := range run.heldDuring {
		if !r.read.has(h.hash) && gate.of(h) == alignet.RoleHeldOut {
			held = append(held, h)
		}
	}
	eval := evaluate(s.served, s.sp.x, s.sp.dim, s.meta.Task, held)
	// Never serve a teacher that predicts the held-out people clearly
	// worse than the one it would replace (as after a refit of a small
	// record, or of one far behind the stream): both are scored on the same
	// held-out judgments, which neither trained on.
	if worse, se := lossDiff(s.served, prev, s.sp.x, s.meta.Task, held); worse > 2*se {
		s.served, s.iterate, s.adam, s.idleSteps, s.idleOff = prev, prevIter, prevAdam, prevIdle, prevOff
		p.l.m.refits.WithLabelValues(s.id, "kept").Inc()
		p.l.log.Info("refit done; the current teacher predicts held-out judgments better and stays", "study", s.id,
			"judgments", r.count, "nll_increase", worse, "standard_error", se, "took", r.duration)
		return
	}
	ls := s.meta.Settings.Learner
	s.st.Status = alignet.TeacherFitted
	var grid []float64
	for _, sc := range r.scores {
		grid = append(grid, sc.Lambda)
	}
	s.st.Hyper = alignet.TeacherHyper{Targets: r.targets, Lambdas: grid, LearningRate: ls.LearningRate, Seed: p.l.cfg.Seed}
	p.queueVersion(s, alignet.VersionRefit, eval)
	p.l.m.refits.WithLabelValues(s.id, "ok").Inc()
	p.l.log.Info("refit done", "study", s.id, "judgments", r.count, "train", len(r.train), "held_out", len(r.held), "excluded", r.excluded,
		"targets", r.targets, "lambda", r.teacher.Lambda, "tau", r.teacher.Tau, "on_top", len(onTop), "took", r.duration)
}

// refill rebuilds the replay and held-out buffers from the record a job
// read, keeping the buffered judgments it did not include, each in the
// buffer of its role under the settings and flags of now.
func (p *partition) refill(s *study, r jobResult) {
	old, oldHeld := slices.Clone(s.replay.items), slices.Clone(s.held.items)
	s.replay.reset()
	s.held = &heldRing{cap: p.l.cfg.HeldOutCap}
	gate := s.roles()
	for _, smp := range slices.Concat(r.train, r.held) {
		s.keep(gate, smp)
	}
	for _, smp := range slices.Concat(old, oldHeld) {
		if !r.read.has(smp.hash) {
			s.keep(gate, smp)
		}
	}
}
