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
	// ctx ends with the generation; the helpers of jobs and look-ups stop
	// with it, or when run returns.
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
	owned := len(p.studies)
	p.finish()
	close(p.dbq)
	wg.Wait()
	p.l.log.Info("partition released", "partition", p.id, "offset", p.next, "studies", owned)
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
// state, applied ids and flagged workers.
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
	flags, err := st.WorkerFlags(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load study %q: %w", id, err)
	}
	s := newStudy(meta, sp, stored, seen, p.l.cfg)
	for _, w := range flags {
		if w.Flagged {
			s.flag(w.Worker, true)
		}
	}
	s.embAt = time.Now()
	p.l.log.Info("study loaded", "study", id, "items", sp.n(), "missing_embeddings", sp.missing,
		"judgments_seen", s.st.JudgmentsSeen, "version", s.st.Version, "status", s.st.Status, "flagged_workers", len(s.flagged))
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

// drop forgets a study.
func (p *partition) drop(s *study) {
	delete(p.studies, s.id)
	p.l.m.forget(s.id)
	p.l.m.studies.Dec()
	p.publishOwned()
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
	p.l.m.lag.DeleteLabelValues(strconv.Itoa(int(p.id)))
}
