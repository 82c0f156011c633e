package online

import (
	"context"
	"slices"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// pollResult carries taken refit requests, re-read study definitions and
// the flag changes of owned studies' workers.
type pollResult struct {
	refits  []string
	studies []alignet.Study
	flags   []alignet.WorkerFlags
}

// flagMargin is how far before the store's clock of the last answer the
// next poll of flag changes starts, so that a change whose transaction
// was still committing (its time is its transaction's start) is not
// missed; changes seen twice are applied once. It also covers the local
// clock's offset from the store's for the first poll.
const flagMargin = 30 * time.Second

// embResult is a refreshed space of a study.
type embResult struct {
	study string
	sp    *space
	err   error
}

// tick runs the periodic work: looking again for missing embeddings.
func (p *partition) tick() {
	for _, s := range p.studies {
		if s.sp.missing > 0 {
			p.reloadEmbeddings(s, p.l.cfg.EmbeddingsInterval)
		}
	}
}

// reloadEmbeddings refreshes the study's items and embeddings in the
// background unless it did so less than every ago.
func (p *partition) reloadEmbeddings(s *study, every time.Duration) {
	if s.embLoading || time.Since(s.embAt) < every {
		return
	}
	s.embLoading, s.embAt = true, time.Now()
	sp, meta, ctx := s.sp, s.meta, p.ctx
	go func() {
		nsp, err := sp.refresh(ctx, p.l.store, meta)
		select {
		case p.embs <- embResult{study: meta.ID, sp: nsp, err: err}:
		case <-ctx.Done():
		}
	}()
}

// embedded swaps in a refreshed space.
func (p *partition) embedded(r embResult) {
	s := p.studies[r.study]
	if s == nil {
		return
	}
	s.embLoading = false
	if r.err != nil {
		p.l.log.Warn("refresh embeddings", "study", s.id, "err", r.err)
		return
	}
	if r.sp == s.sp {
		return
	}
	p.l.log.Info("embeddings refreshed", "study", s.id, "items", r.sp.n(), "missing", r.sp.missing)
	s.sp = r.sp
	if s.st.Status == alignet.TeacherEmpty && s.st.JudgmentsTrained == 0 {
		// Nothing learnt yet: start from the standardisation of the
		// embeddings that are there now.
		ls := s.meta.Settings.Learner
		s.served = initialTeacher(s.sp, s.meta.Task, ls.OutDim, onlineLambda(ls.Lambdas), p.l.cfg.Seed)
		s.iterate, s.adam = s.served.Clone(), learner.AdamState{}
	}
}

// poll takes the refit requests of the owned studies and the flag
// changes of their workers every PollInterval, and re-reads their
// definitions every SettingsInterval.
func (p *partition) poll(ctx context.Context) {
	t := time.NewTicker(p.l.cfg.PollInterval)
	defer t.Stop()
	lastSettings := time.Now()
	// A study loaded later reads its flagged workers itself; polls from
	// before its load on are enough.
	flagsSince := time.Now().Add(-flagMargin)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ids := *p.owned.Load()
		if len(ids) == 0 {
			continue
		}
		var r pollResult
		refits, err := p.l.store.TakeRefitRequests(ctx, ids)
		if err != nil && ctx.Err() == nil {
			p.l.log.Debug("take refit requests", "err", err)
		}
		r.refits = refits
		changes, asOf, err := p.l.store.FlagChangesSince(ctx, flagsSince)
		switch {
		case err == nil:
			flagsSince = asOf.Add(-flagMargin)
			for _, w := range changes {
				if _, owned := slices.BinarySearch(ids, w.Study); owned {
					r.flags = append(r.flags, w)
				}
			}
		case ctx.Err() == nil:
			p.l.log.Debug("poll flag changes", "err", err)
		}
		if time.Since(lastSettings) >= p.l.cfg.SettingsInterval {
			lastSettings = time.Now()
			for _, id := range ids {
				st, err := p.l.store.GetStudy(ctx, id)
				if err != nil {
					continue
				}
				r.studies = append(r.studies, st)
			}
		}
		if len(r.refits) == 0 && len(r.studies) == 0 && len(r.flags) == 0 {
			continue
		}
		select {
		case p.polls <- r:
		case <-ctx.Done():
			if len(r.refits) > 0 {
				p.requeueRefits(r.refits)
			}
			return
		}
	}
}

// polled applies refit requests, refreshed settings and flag changes.
func (p *partition) polled(r pollResult) {
	changed := map[*study]bool{}
	for _, id := range r.refits {
		if s := p.studies[id]; s != nil {
			p.l.log.Info("refit requested", "study", id)
			s.refitAsked = true
		}
	}
	for _, st := range r.studies {
		s := p.studies[st.ID]
		if s == nil {
			continue
		}
		prev := s.meta.Settings
		old := prev.Learner
		s.meta.Settings = st.Settings
		ls := st.Settings.Learner
		if rolesChanged(prev, st.Settings) {
			changed[s] = true
		}
		if s.st.Status != alignet.TeacherFitted && !slices.Equal(ls.Lambdas, old.Lambdas) {
			s.served.Lambda = onlineLambda(ls.Lambdas)
		}
		s.st.Hyper.LearningRate = ls.LearningRate
	}
	for _, w := range r.flags {
		s := p.studies[w.Study]
		if s == nil || !s.flag(w.Worker, w.Flagged) {
			continue
		}
		changed[s] = true
		p.l.log.Info("worker flag changed", "study", s.id, "worker", w.Worker, "flagged", w.Flagged, "reasons", w.Reasons)
	}
	for s := range changed {
		s.applyRoles()
	}
}

// requeueRefits records again refit requests taken but not carried out.
func (p *partition) requeueRefits(ids []string) {
	ctx, cancel := context.WithTimeout(context.Background(), p.l.cfg.ShutdownTimeout)
	defer cancel()
	for _, id := range ids {
		if err := p.l.store.RequestRefit(ctx, id); err != nil {
			p.l.log.Warn("keep refit request", "study", id, "err", err)
		}
	}
}
