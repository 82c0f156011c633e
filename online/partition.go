package online

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/stream"
)

// committer commits offsets to the consumer group (a kafka.Generation).
type committer interface {
	CommitOffsets(offsets map[string]map[int]int64) error
}

// absentRetry is how long a study that does not exist is not looked up
// again.
const absentRetry = 30 * time.Second

// errUnknownStudy is returned by partition.study for a missing study.
var errUnknownStudy = errors.New("unknown study")

// fetched is a message with the result of decoding it.
type fetched struct {
	msg kafka.Message
	js  []alignet.Judgment
	err error
}

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

// partition is the actor that owns the studies of one partition: one
// goroutine runs every step, flush and state change, so no state is
// shared. Database writes, refits, polls and embedding look-ups run on
// helper goroutines that report back on channels.
type partition struct {
	l       *Learner
	id      int32
	gen     committer
	ctx     context.Context
	next    int64 // next offset to consume
	saved   int64 // next offset last stored
	studies map[string]*study
	absent  map[string]time.Time
	owned   atomic.Pointer[[]string]

	dbq    chan dbJob
	dbDone chan dbResult
	jobs   chan jobResult
	polls  chan pollResult
	embs   chan embResult

	flushing  bool
	lastFlush time.Time
	versions  []versionReq
	urgent    bool // a version waits: flush without waiting for the interval
	nextIdle  time.Time
	idleNext  int
}

func newPartition(l *Learner, id int32, gen committer) *partition {
	p := &partition{
		l: l, id: id, gen: gen, saved: -1,
		studies: map[string]*study{},
		absent:  map[string]time.Time{},
		dbq:     make(chan dbJob),
		dbDone:  make(chan dbResult, 1),
		jobs:    make(chan jobResult),
		polls:   make(chan pollResult),
		embs:    make(chan embResult),
	}
	p.owned.Store(&[]string{})
	return p
}

// run consumes the partition from its stored offset until ctx ends, then
// steps what is pending and stores the final progress.
func (p *partition) run(ctx context.Context) error {
	// Merge the generation's context into one that carries no deadline
	// surprises for helper goroutines.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.ctx = ctx
	start, err := p.startOffset(ctx)
	if err != nil {
		return nil // ctx ended
	}
	p.next, p.saved = start, start
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   p.l.cfg.Brokers,
		Topic:     p.l.cfg.Topic,
		Partition: int(p.id),
		MinBytes:  1,
		MaxBytes:  16 << 20,
		MaxWait:   250 * time.Millisecond,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			p.l.log.Debug("kafka reader: "+fmt.Sprintf(msg, args...), "partition", p.id)
		}),
	})
	defer func() {
		if err := r.Close(); err != nil {
			p.l.log.Warn("close reader", "partition", p.id, "err", err)
		}
	}()
	off := start
	if off < 0 {
		off = kafka.FirstOffset
	}
	if err := r.SetOffset(off); err != nil {
		return fmt.Errorf("set offset %d: %w", off, err)
	}
	fetchCtx, stopFetch := context.WithCancel(ctx)
	msgs := make(chan fetched, 64)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); p.fetch(fetchCtx, r, msgs) }()
	go func() { defer wg.Done(); p.poll(fetchCtx) }()
	go func() { defer wg.Done(); p.writer() }()
	p.l.log.Info("partition acquired", "partition", p.id, "offset", start)
	p.loop(ctx, msgs)
	stopFetch()
	p.finish()
	close(p.dbq)
	wg.Wait()
	p.l.log.Info("partition released", "partition", p.id, "offset", p.next, "studies", len(p.studies))
	return nil
}

// startOffset returns the partition's stored next offset, or -1 for none,
// retrying until ctx ends.
func (p *partition) startOffset(ctx context.Context) (int64, error) {
	backoff := 250 * time.Millisecond
	for {
		offs, err := p.l.store.LearnerOffsets(ctx, p.l.cfg.Group, p.l.cfg.Topic)
		if err == nil {
			if off, ok := offs[p.id]; ok {
				return off, nil
			}
			return -1, nil
		}
		p.l.log.Warn("read stored offsets; retrying", "partition", p.id, "err", err)
		if !sleep(ctx, backoff) {
			return 0, ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// fetch reads and decodes messages until ctx ends, retrying failed
// fetches with capped backoff.
func (p *partition) fetch(ctx context.Context, r *kafka.Reader, out chan<- fetched) {
	backoff := 100 * time.Millisecond
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.l.log.Warn("fetch failed; retrying", "partition", p.id, "err", err, "backoff", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		js, err := stream.DecodeBatch(m)
		select {
		case out <- fetched{msg: m, js: js, err: err}:
		case <-ctx.Done():
			return
		}
	}
}

// alarm is a timer that knows whether it is armed.
type alarm struct {
	t     *time.Timer
	armed bool
}

func newAlarm() *alarm {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &alarm{t: t}
}

func (a *alarm) set(d time.Duration) {
	if !a.armed {
		a.t.Reset(max(d, 0))
		a.armed = true
	}
}

// loop is the actor's event loop.
func (p *partition) loop(ctx context.Context, msgs <-chan fetched) {
	stepA, flushA, idleA := newAlarm(), newAlarm(), newAlarm()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-msgs:
			if err := p.handle(ctx, f); err != nil {
				return
			}
		case <-stepA.t.C:
			stepA.armed = false
			p.stepAll()
		case <-flushA.t.C:
			flushA.armed = false
			p.stepAll()
			p.flush()
		case <-idleA.t.C:
			idleA.armed = false
			if len(msgs) == 0 {
				p.idleStep()
			}
		case r := <-p.dbDone:
			p.flushed(r)
		case r := <-p.jobs:
			p.finishJob(r)
		case r := <-p.polls:
			p.polled(r)
		case r := <-p.embs:
			p.embedded(r)
		case <-tick.C:
			p.tick()
		}
		queued, pend := len(msgs), p.pendingCount()
		switch {
		case pend >= p.l.cfg.MaxFresh:
			p.stepAll()
		case pend > 0 && queued == 0:
			stepA.set(p.l.cfg.StepDelay)
		}
		p.maybeRefits()
		if !p.flushing && (p.urgent || p.dirty()) {
			d := time.Until(p.lastFlush.Add(p.l.cfg.FlushInterval))
			if p.urgent {
				d = 0
			}
			flushA.set(d)
		}
		if pend == 0 && queued == 0 && p.idleCandidate() != nil {
			idleA.set(time.Until(p.nextIdle))
		}
	}
}

// handle applies one fetched message and advances the partition's
// position past it. It returns an error only when ctx ended first.
func (p *partition) handle(ctx context.Context, f fetched) error {
	defer func() {
		p.l.m.lag.WithLabelValues(strconv.Itoa(int(p.id))).Set(float64(max(f.msg.HighWaterMark-f.msg.Offset-1, 0)))
	}()
	if f.err != nil {
		p.l.m.undecodable.Inc()
		p.l.log.Debug("skipping undecodable message", "partition", p.id, "offset", f.msg.Offset, "err", f.err)
		p.next = f.msg.Offset + 1
		return nil
	}
	if len(f.js) == 0 {
		p.next = f.msg.Offset + 1
		return nil
	}
	s, err := p.study(ctx, f.js[0].Study)
	switch {
	case errors.Is(err, errUnknownStudy):
		p.l.m.skipped.WithLabelValues(f.js[0].Study, reasonUnknownStudy).Add(float64(len(f.js)))
		p.next = f.msg.Offset + 1
		return nil
	case err != nil:
		return err
	}
	missing := false
	for i := range f.js {
		if s.accept(&f.js[i], p.l.m) {
			missing = true
		}
		if len(s.pending) >= p.l.cfg.MaxFresh {
			p.step(s)
		}
	}
	if missing {
		p.reloadEmbeddings(s, p.l.cfg.EmbeddingsRetry)
	}
	p.next = f.msg.Offset + 1
	return nil
}

// study returns the loaded state of a study, loading it on first use. It
// returns errUnknownStudy for a study that does not exist, and retries
// other failures until ctx ends.
func (p *partition) study(ctx context.Context, id string) (*study, error) {
	if s := p.studies[id]; s != nil {
		return s, nil
	}
	if t, ok := p.absent[id]; ok && time.Since(t) < absentRetry {
		return nil, errUnknownStudy
	}
	backoff := 250 * time.Millisecond
	for {
		s, err := p.load(ctx, id)
		if err == nil {
			delete(p.absent, id)
			p.studies[id] = s
			p.l.m.studies.Inc()
			p.publishOwned()
			if s.wantsRefit() {
				p.startJob(s, true)
			} else if s.st.JudgmentsSeen > 0 {
				p.startJob(s, false) // refill the replay and held-out buffers
			}
			return s, nil
		}
		if errors.Is(err, alignet.ErrNotFound) {
			p.absent[id] = time.Now()
			return nil, errUnknownStudy
		}
		p.l.log.Warn("load study; retrying", "study", id, "err", err, "backoff", backoff)
		if !sleep(ctx, backoff) {
			return nil, ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// load reads a study's definition, items, embeddings, stored teacher
// state and applied ids.
func (p *partition) load(ctx context.Context, id string) (*study, error) {
	st := p.l.store
	meta, err := st.GetStudy(ctx, id)
	if err != nil {
		return nil, err
	}
	sp, err := loadSpace(ctx, st, meta)
	if err != nil {
		return nil, fmt.Errorf("load study %q: %w", id, err)
	}
	var stored *alignet.TeacherState
	ts, err := st.TeacherState(ctx, id)
	switch {
	case err == nil:
		stored = &ts
	case !errors.Is(err, alignet.ErrNotFound):
		return nil, fmt.Errorf("load study %q: %w", id, err)
	}
	seen, err := st.LearnerSeen(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load study %q: %w", id, err)
	}
	s := newStudy(meta, sp, stored, seen, p.l.cfg)
	s.embAt = time.Now()
	p.l.log.Info("study loaded", "study", id, "items", sp.n(), "missing_embeddings", sp.missing,
		"judgments_seen", s.st.JudgmentsSeen, "version", s.st.Version, "status", s.st.Status)
	return s, nil
}

func (p *partition) publishOwned() {
	ids := make([]string, 0, len(p.studies))
	for id := range p.studies {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	p.owned.Store(&ids)
}

func (p *partition) pendingCount() int {
	n := 0
	for _, s := range p.studies {
		n += len(s.pending)
	}
	return n
}

func (p *partition) dirty() bool {
	if p.next != p.saved || len(p.versions) > 0 {
		return true
	}
	for _, s := range p.studies {
		if s.dirty {
			return true
		}
	}
	return false
}

// step steps one study until nothing is pending, in steps of at most
// MaxFresh judgments, then stores an online version when one is due.
func (p *partition) step(s *study) {
	for len(s.pending) > 0 {
		n := min(len(s.pending), p.l.cfg.MaxFresh)
		rest := s.pending[n:]
		s.pending = s.pending[:n]
		s.step(p.l)
		s.pending = rest
	}
	iv := time.Duration(s.meta.Settings.Learner.VersionInterval)
	if s.changed && time.Since(s.lastVersion) >= iv {
		p.queueVersion(s, alignet.VersionOnline, evaluate(s.served, s.sp.x, s.sp.dim, s.meta.Task, s.held.items))
	}
}

func (p *partition) stepAll() {
	for _, s := range p.studies {
		if len(s.pending) > 0 {
			p.step(s)
		}
	}
}

// idleCandidate returns the next study, in turn, that wants an idle step.
func (p *partition) idleCandidate() *study {
	if len(p.studies) == 0 {
		return nil
	}
	ids := *p.owned.Load()
	for k := range ids {
		id := ids[(p.idleNext+k)%len(ids)]
		if s := p.studies[id]; s != nil && s.wantsIdle(p.l.cfg) {
			p.idleNext = (p.idleNext + k) % len(ids)
			return s
		}
	}
	return nil
}

// idleStep takes one replay-only step and spaces the next one so that
// idle steps use at most IdleShare of the partition's time.
func (p *partition) idleStep() {
	s := p.idleCandidate()
	if s == nil {
		return
	}
	p.idleNext++
	start := time.Now()
	s.idle(p.l)
	took := time.Since(start)
	share := p.l.cfg.IdleShare
	p.nextIdle = time.Now().Add(time.Duration(float64(took) * (1 - share) / share))
	iv := time.Duration(s.meta.Settings.Learner.VersionInterval)
	if s.changed && time.Since(s.lastVersion) >= iv {
		p.queueVersion(s, alignet.VersionOnline, evaluate(s.served, s.sp.x, s.sp.dim, s.meta.Task, s.held.items))
	}
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

// drop forgets a study.
func (p *partition) drop(s *study) {
	delete(p.studies, s.id)
	p.l.m.forget(s.id)
	p.l.m.studies.Dec()
	p.publishOwned()
}

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
	j := job{study: s.id, task: s.meta.Task, settings: s.meta.Settings.Learner, sp: s.sp, fit: fit, seen: s.st.JudgmentsSeen}
	s.job = &jobRun{fit: fit, seenAtStart: s.st.JudgmentsSeen}
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
	ls := s.meta.Settings.Learner
	s.st.Status = alignet.TeacherFitted
	s.st.LastRefitAt = &now
	s.st.LastRefitJudgments = r.count
	s.st.Hyper = alignet.TeacherHyper{Targets: r.targets, Lambdas: slices.Clone(ls.Lambdas), LearningRate: ls.LearningRate, Seed: p.l.cfg.Seed}
	s.refitBase = max(run.seenAtStart, 1)
	held := append([]heldSample(nil), r.held...)
	for _, h := range run.heldDuring {
		if !r.read.has(h.hash) {
			held = append(held, h)
		}
	}
	p.queueVersion(s, alignet.VersionRefit, evaluate(s.served, s.sp.x, s.sp.dim, s.meta.Task, held))
	s.dirty = true
	p.l.m.refits.WithLabelValues(s.id, "ok").Inc()
	p.l.m.refitTime.WithLabelValues(s.id).Observe(r.duration.Seconds())
	p.l.log.Info("refit done", "study", s.id, "judgments", r.count, "train", len(r.train), "held_out", len(r.held),
		"targets", r.targets, "lambda", r.teacher.Lambda, "tau", r.teacher.Tau, "on_top", len(onTop), "took", r.duration)
}

// refill rebuilds the replay and held-out buffers from the record a job
// read, keeping the buffered judgments it did not include.
func (p *partition) refill(s *study, r jobResult) {
	old := slices.Clone(s.replay.items)
	s.replay.reset()
	for _, smp := range r.train {
		s.replay.add(smp)
	}
	for _, smp := range old {
		if !r.read.has(smp.hash) {
			s.replay.add(smp)
		}
	}
	oldHeld := slices.Clone(s.held.items)
	s.held = &heldRing{cap: p.l.cfg.HeldOutCap}
	for _, h := range r.held {
		s.held.add(h)
	}
	for _, h := range oldHeld {
		if !r.read.has(h.hash) {
			s.held.add(h)
		}
	}
	s.applyShare()
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

// finish steps what is pending and stores the final progress when the
// partition is released.
func (p *partition) finish() {
	p.stepAll()
	if p.flushing {
		p.flushed(<-p.dbDone)
	}
	p.flush()
	if p.flushing {
		p.flushed(<-p.dbDone)
	}
	var asked []string
	for _, s := range p.studies {
		if s.refitAsked || (s.job != nil && s.job.asked) {
			asked = append(asked, s.id)
		}
	}
	// Requests taken but not yet delivered to the actor.
drain:
	for {
		select {
		case r := <-p.polls:
			asked = append(asked, r.refits...)
		default:
			break drain
		}
	}
	if len(asked) > 0 {
		p.requeueRefits(asked)
	}
	for _, s := range p.studies {
		p.drop(s)
	}
}
