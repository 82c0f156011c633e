package online

import (
	"context"
	"slices"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// pollResult carries taken refit requests and re-read study definitions.
type pollResult struct {
	refits  []string
	studies []alignet.Study
}

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

// poll takes the refit requests of the owned studies every PollInterval
// and re-reads their definitions every SettingsInterval.
func (p *partition) poll(ctx context.Context) {
	t := time.NewTicker(p.l.cfg.PollInterval)
	defer t.Stop()
	lastSettings := time.Now()
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
		if len(r.refits) == 0 && len(r.studies) == 0 {
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

// polled applies refit requests and refreshed settings.
func (p *partition) polled(r pollResult) {
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
		old := s.meta.Settings.Learner
		s.meta.Settings = st.Settings
		ls := st.Settings.Learner
		if ls.HeldOutShare != old.HeldOutShare {
			s.applyShare()
		}
		if s.st.Status != alignet.TeacherFitted && !slices.Equal(ls.Lambdas, old.Lambdas) {
			s.served.Lambda = onlineLambda(ls.Lambdas)
		}
		s.st.Hyper.LearningRate = ls.LearningRate
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
