package online

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/alignet/alignet"
)

// versionReq is a version waiting to be stored.
type versionReq struct {
	v        alignet.TeacherVersion
	keep     int
	attempts int
}

// dbJob is work for the partition's writer: the progress, then the
// versions, in that order.
type dbJob struct {
	progress alignet.LearnerProgress
	versions []versionReq
}

// dbResult reports a dbJob.
type dbResult struct {
	job  dbJob
	err  error
	done time.Time
	// gone are studies that no longer exist (dropped from the progress).
	gone []string
	// stored are the versions stored, failed those to retry.
	stored []alignet.TeacherVersion
	failed []versionReq
}

// queueVersion snapshots the study's served teacher as a version stored
// with the next flush, which is made urgent.
func (p *partition) queueVersion(s *study, kind string, eval alignet.TeacherEval) {
	v := s.version(kind, eval, map[int32]int64{p.id: p.next})
	p.versions = append(p.versions, versionReq{v: v, keep: s.meta.Settings.Learner.KeepVersions})
	s.lastVersion, s.changed = time.Now(), false
	p.urgent = true
}

// flush hands the dirty states, the new applied ids, the offset and the
// queued versions to the writer, unless a flush is in flight.
func (p *partition) flush() {
	if p.flushing || !p.dirty() {
		return
	}
	now := time.Now()
	job := dbJob{
		progress: alignet.LearnerProgress{
			Group: p.l.cfg.Group, Topic: p.l.cfg.Topic,
			Offsets: map[int32]int64{}, Seen: map[string][]uint64{},
		},
		versions: p.versions,
	}
	if p.next >= 0 {
		job.progress.Offsets[p.id] = p.next
	}
	for _, s := range p.studies {
		if !s.dirty {
			continue
		}
		job.progress.States = append(job.progress.States, s.snapshot(now))
		if len(s.newSeen) > 0 {
			job.progress.Seen[s.id] = s.newSeen
			s.newSeen = nil
		}
		s.dirty = false
	}
	p.versions, p.urgent = nil, false
	p.flushing, p.lastFlush = true, now
	p.dbq <- job
}

// writer stores the jobs of the actor in order.
func (p *partition) writer() {
	for j := range p.dbq {
		p.dbDone <- p.write(j)
	}
}

// write stores a job's progress, commits the offset to the consumer group
// (best effort, so that lag is visible with Kafka tools), then stores its
// versions.
func (p *partition) write(j dbJob) dbResult {
	st := p.l.store
	ctx, cancel := context.WithTimeout(context.Background(), p.l.cfg.ShutdownTimeout)
	defer cancel()
	res := dbResult{job: j}
	start := time.Now()
	err := st.SaveLearnerProgress(ctx, j.progress)
	if errors.Is(err, alignet.ErrNotFound) {
		// A study was deleted: drop it and store the rest.
		res.gone, j.progress = dropGone(ctx, st, j.progress)
		res.job = j
		err = st.SaveLearnerProgress(ctx, j.progress)
	}
	p.l.m.flushTime.Observe(time.Since(start).Seconds())
	res.err, res.done = err, time.Now()
	if err != nil {
		res.failed = j.versions
		return res
	}
	if off, ok := j.progress.Offsets[p.id]; ok && p.gen != nil {
		if err := p.gen.CommitOffsets(map[string]map[int]int64{p.l.cfg.Topic: {int(p.id): off}}); err != nil {
			p.l.log.Debug("commit offset to the consumer group", "partition", p.id, "err", err)
		}
	}
	last := map[string]int64{}
	for _, vr := range j.versions {
		if slices.Contains(res.gone, vr.v.Study) {
			continue
		}
		if pv := last[vr.v.Study]; pv > vr.v.Parent {
			vr.v.Parent = pv
		}
		v, err := st.InsertTeacherVersion(ctx, vr.v, vr.keep)
		if err != nil {
			vr.attempts++
			if errors.Is(err, alignet.ErrNotFound) || vr.attempts >= 5 {
				p.l.log.Error("dropping teacher version", "study", vr.v.Study, "kind", vr.v.Kind, "err", err)
			} else {
				p.l.log.Warn("store teacher version; retrying", "study", vr.v.Study, "kind", vr.v.Kind, "err", err)
				res.failed = append(res.failed, vr)
			}
			continue
		}
		last[v.Study] = v.Version
		res.stored = append(res.stored, v)
	}
	return res
}

// dropGone removes from pr the studies that no longer exist.
func dropGone(ctx context.Context, st Store, pr alignet.LearnerProgress) ([]string, alignet.LearnerProgress) {
	var gone []string
	kept := pr.States[:0:0]
	for _, s := range pr.States {
		if _, err := st.GetStudy(ctx, s.Study); errors.Is(err, alignet.ErrNotFound) {
			gone = append(gone, s.Study)
			delete(pr.Seen, s.Study)
			continue
		}
		kept = append(kept, s)
	}
	pr.States = kept
	return gone, pr
}

// flushed applies the writer's result: on failure the states are marked
// dirty again and their ids and versions go with the next flush.
func (p *partition) flushed(r dbResult) {
	p.flushing = false
	for _, id := range r.gone {
		if s := p.studies[id]; s != nil {
			p.l.log.Warn("study deleted; dropping its learner state", "study", id)
			p.drop(s)
			p.absent[id] = time.Now()
		}
	}
	p.versions = append(r.failed, p.versions...)
	p.urgent = p.urgent || len(r.failed) > 0
	if r.err != nil {
		p.l.m.flushErrors.Inc()
		p.l.log.Warn("store learner progress; retrying at the next flush", "partition", p.id, "err", r.err)
		for _, st := range r.job.progress.States {
			if s := p.studies[st.Study]; s != nil {
				s.dirty = true
				s.newSeen = append(r.job.progress.Seen[st.Study], s.newSeen...)
			}
		}
		return
	}
	if off, ok := r.job.progress.Offsets[p.id]; ok {
		p.saved = off
	}
	for _, st := range r.job.progress.States {
		if !st.NewestAcceptedAt.IsZero() {
			p.l.m.freshness.WithLabelValues(st.Study).Set(r.done.Sub(st.NewestAcceptedAt).Seconds())
		}
	}
	for _, v := range r.stored {
		s := p.studies[v.Study]
		p.l.m.versions.WithLabelValues(v.Study, v.Kind).Inc()
		if s == nil {
			continue
		}
		if v.Version > s.st.Version {
			s.st.Version = v.Version
			e := v.Eval
			s.st.Eval = &e
			p.l.m.observeEval(v.Study, v.Eval)
		}
		s.dirty = true
	}
}
