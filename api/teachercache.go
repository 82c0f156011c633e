package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// DefaultTeacherPollInterval is how often the teacher cache asks the store
// by default whether a cached study's teacher or inputs changed.
const DefaultTeacherPollInterval = 500 * time.Millisecond

// teacherLoadTimeout bounds one load of a study's snapshot.
const teacherLoadTimeout = time.Minute

// TeacherSnapshot is an immutable in-memory copy of a study's teacher: the
// teacher representation z of every item of the study's pool, computed
// once per change of the teacher or of its inputs. Before the learner has
// stored a state, the teacher is the raw embedding space: Z holds the
// embeddings themselves and Tau is 1 (Status alignet.TeacherEmpty, zero
// UpdatedAt). Nothing in a snapshot may be modified.
type TeacherSnapshot struct {
	// Study is the study id, Task its task and Space its embedding space.
	Study string
	// Task is described with Study.
	Task alignet.Task
	// Space is described with Study.
	Space string
	// Status is the teacher state's status; alignet.TeacherEmpty for the
	// raw embeddings.
	Status alignet.TeacherStatus
	// Version is the teacher state's version (0 for the raw embeddings or
	// before the first version).
	Version int64
	// UpdatedAt is when the learner stored the teacher state; zero for the
	// raw embeddings.
	UpdatedAt time.Time
	// JudgmentsSeen is the teacher state's count of applied judgments.
	JudgmentsSeen int64
	// Tau is the softmax temperature of the teacher's probabilities.
	Tau float64
	// Items are the study's items in ascending order; Index maps each to
	// its row.
	Items []string
	// Index is described with Items.
	Index map[string]int32
	// Embedded reports, by row, whether the item has an embedding; the
	// rows of Z of items without one are meaningless.
	Embedded []bool
	// Missing is the number of items without an embedding.
	Missing int
	// Z is the len(Items)×P row-major matrix of teacher representations,
	// float32; the model's similarity of two items is the dot product of
	// their rows.
	Z []float32
	// P is the dimension of the teacher representations.
	P int
	// BuiltAt is when the snapshot was built.
	BuiltAt time.Time

	stamp   alignet.StudyStamp
	inputs  *teacherInputs
	teacher *learner.Teacher // nil for the raw embeddings
}

// Raw reports whether the snapshot is the raw embedding space, the teacher
// before the learner stored any state.
func (s *TeacherSnapshot) Raw() bool { return s.teacher == nil }

// Row returns the teacher representation of an item and whether the item
// is in the study's pool with an embedding.
func (s *TeacherSnapshot) Row(item string) ([]float32, bool) {
	r, ok := s.Index[item]
	if !ok || !s.Embedded[r] {
		return nil, false
	}
	return s.Z[int(r)*s.P : int(r+1)*s.P], true
}

// teacherInputs are what the teacher representations are computed from:
// the study's items and their embeddings, shared by the snapshots built on
// them.
type teacherInputs struct {
	space    string
	task     alignet.Task
	dim      int
	items    []string
	index    map[string]int32
	x        []float32
	embedded []bool
	missing  int
}

// TeacherCacheConfig configures a TeacherCache.
type TeacherCacheConfig struct {
	// PollInterval is how often Run compares the stamps of the cached
	// studies with the store's. Default 500ms.
	PollInterval time.Duration
	// Registerer receives the cache's metrics. Default: none.
	Registerer prometheus.Registerer
	// Logger receives reload failures. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock of BuiltAt and of the age metric. Default time.Now.
	Now func() time.Time
}

func (c TeacherCacheConfig) withDefaults() TeacherCacheConfig {
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultTeacherPollInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// TeacherCache holds a TeacherSnapshot per study that was asked for, and
// keeps each one current: Run polls the stamps of the cached studies every
// PollInterval (one cheap query for all of them) and rebuilds the snapshot
// of a study whose teacher state, items or embeddings changed. Snapshots
// are published atomically, so readers never wait for a rebuild. Every API
// replica keeps its own cache.
type TeacherCache struct {
	src    TeacherSource
	cfg    TeacherCacheConfig
	log    *slog.Logger
	m      *teacherCacheMetrics
	ctx    context.Context // of first loads, cancelled by Close
	cancel context.CancelFunc

	mu      sync.Mutex
	entries map[string]*teacherEntry
	subs    map[int]func(*TeacherSnapshot)
	nextSub int
}

// teacherEntry is one cached study.
type teacherEntry struct {
	snap  atomic.Pointer[TeacherSnapshot]
	ready chan struct{} // closed when the first load ended
	err   error         // of the first load, set before ready is closed

	checked   atomic.Int64 // UnixNano of the last time the snapshot was found current
	build     sync.Mutex   // serialises the builds of the study
	lastErr   string       // last build error logged, guarded by build
	refreshed time.Time    // last forced refresh, guarded by build
}

// NewTeacherCache returns an empty cache over src and registers its
// metrics on cfg.Registerer.
func NewTeacherCache(cfg TeacherCacheConfig, src TeacherSource) (*TeacherCache, error) {
	if src == nil {
		return nil, errors.New("api: teacher cache needs a source")
	}
	cfg = cfg.withDefaults()
	c := &TeacherCache{src: src, cfg: cfg, log: cfg.Logger, entries: map[string]*teacherEntry{},
		subs: map[int]func(*TeacherSnapshot){}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	m, err := newTeacherCacheMetrics(cfg.Registerer, c)
	if err != nil {
		return nil, err
	}
	c.m = m
	return c, nil
}

// Close cancels the first loads in progress; snapshots already published
// stay readable.
func (c *TeacherCache) Close() { c.cancel() }

// Snapshot returns the current snapshot of study without waiting. A study
// not cached yet is loaded in the background and reported as absent until
// then.
func (c *TeacherCache) Snapshot(study string) (*TeacherSnapshot, bool) {
	e := c.entry(study)
	s := e.snap.Load()
	return s, s != nil
}

// Get returns the current snapshot of study, loading it first when it is
// not cached; concurrent first calls share one load. A missing study is
// alignet.ErrNotFound.
func (c *TeacherCache) Get(ctx context.Context, study string) (*TeacherSnapshot, error) {
	e := c.entry(study)
	if s := e.snap.Load(); s != nil {
		return s, nil
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s := e.snap.Load(); s != nil {
		return s, nil
	}
	return nil, e.err
}

// Subscribe calls fn with every snapshot the cache publishes, from the
// goroutine that built it, in order for each study, until the returned
// cancel is called. fn must not block: hand the work to a goroutine.
func (c *TeacherCache) Subscribe(fn func(*TeacherSnapshot)) (cancel func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.nextSub
	c.nextSub++
	c.subs[id] = fn
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.subs, id)
	}
}

// entry returns the entry of study, creating it and starting its first
// load in the background when there is none. An entry whose first load
// failed is replaced, so the next call tries again.
func (c *TeacherCache) entry(study string) *teacherEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[study]; ok {
		return e
	}
	e := &teacherEntry{ready: make(chan struct{})}
	c.entries[study] = e
	go c.firstLoad(study, e)
	return e
}

// firstLoad builds the first snapshot of a new entry, on its own context
// so that no single caller's cancellation fails the callers sharing it.
func (c *TeacherCache) firstLoad(study string, e *teacherEntry) {
	ctx, cancel := context.WithTimeout(c.ctx, teacherLoadTimeout)
	defer cancel()
	_, err := c.refresh(ctx, study, e)
	if err != nil {
		c.mu.Lock()
		if c.entries[study] == e {
			delete(c.entries, study)
		}
		c.mu.Unlock()
		e.err = err
	}
	close(e.ready)
}

// Refresh rebuilds the snapshot of a cached study at once if its stamp
// changed, unless that was tried within the last minAge, and returns the
// current snapshot. Handlers call it when a request names an item the
// snapshot does not have, which may have been added a moment ago.
func (c *TeacherCache) Refresh(ctx context.Context, study string, minAge time.Duration) (*TeacherSnapshot, error) {
	s, err := c.Get(ctx, study)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	e := c.entries[study]
	c.mu.Unlock()
	if e == nil {
		return s, nil
	}
	e.build.Lock()
	now := c.cfg.Now()
	recent := now.Sub(e.refreshed) < minAge
	if !recent {
		e.refreshed = now
	}
	e.build.Unlock()
	if recent {
		return e.snap.Load(), nil
	}
	return c.refresh(ctx, study, e)
}

// refresh reads the stamp of study and rebuilds its snapshot if it
// differs from the published one.
func (c *TeacherCache) refresh(ctx context.Context, study string, e *teacherEntry) (*TeacherSnapshot, error) {
	stamps, err := c.src.StudyStamps(ctx, []string{study})
	if err != nil {
		return nil, fmt.Errorf("stamp of study %q: %w", study, err)
	}
	stamp, ok := stamps[study]
	if !ok {
		return nil, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	return c.rebuild(ctx, study, e, stamp)
}

// Run polls the stamps of the cached studies every PollInterval and
// rebuilds the snapshots that changed, until ctx is done. A failed poll or
// build keeps the old snapshot and is retried at the next poll.
func (c *TeacherCache) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.PollInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := c.poll(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			c.log.Warn("teacher cache: poll failed; serving the snapshots held", "err", err)
		case err == nil && failing:
			c.log.Info("teacher cache: polling again")
		}
		failing = err != nil
	}
}

// poll compares the stamps of every loaded study with the store's and
// rebuilds the changed snapshots. Studies that no longer exist are dropped.
func (c *TeacherCache) poll(ctx context.Context) error {
	c.mu.Lock()
	loaded := make(map[string]*teacherEntry, len(c.entries))
	for id, e := range c.entries {
		if e.snap.Load() != nil {
			loaded[id] = e
		}
	}
	c.mu.Unlock()
	if len(loaded) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(loaded))
	stamps, err := c.src.StudyStamps(ctx, ids)
	if err != nil {
		return fmt.Errorf("study stamps: %w", err)
	}
	for _, id := range ids {
		e := loaded[id]
		stamp, ok := stamps[id]
		if !ok {
			c.mu.Lock()
			if c.entries[id] == e {
				delete(c.entries, id)
			}
			c.mu.Unlock()
			continue
		}
		if e.snap.Load().stamp == stamp {
			e.checked.Store(c.cfg.Now().UnixNano())
			continue
		}
		if _, err := c.rebuild(ctx, id, e, stamp); err != nil && ctx.Err() != nil {
			return err
		}
	}
	return nil
}

// rebuild builds and publishes the snapshot of study for stamp, reusing
// the published snapshot's inputs or teacher where the stamp says they did
// not change. The stamp is read before the data, so data newer than the
// stamp only causes one more rebuild at the next poll.
func (c *TeacherCache) rebuild(ctx context.Context, study string, e *teacherEntry, stamp alignet.StudyStamp) (*TeacherSnapshot, error) {
	e.build.Lock()
	defer e.build.Unlock()
	old := e.snap.Load()
	if old != nil && old.stamp == stamp {
		e.checked.Store(c.cfg.Now().UnixNano())
		return old, nil
	}
	start := time.Now()
	s, err := c.build(ctx, study, stamp, old)
	c.m.build(err, time.Since(start))
	if err != nil {
		if msg := err.Error(); msg != e.lastErr {
			e.lastErr = msg
			level := slog.LevelWarn
			if old == nil {
				level = slog.LevelDebug // the caller reports it
			}
			c.log.Log(ctx, level, "teacher cache: rebuild failed", "study", study, "err", err)
		}
		return old, err
	}
	e.lastErr = ""
	e.snap.Store(s)
	e.checked.Store(s.BuiltAt.UnixNano())
	c.mu.Lock()
	subs := slices.Collect(maps.Values(c.subs))
	c.mu.Unlock()
	for _, fn := range subs {
		fn(s)
	}
	return s, nil
}

// build computes a new snapshot.
func (c *TeacherCache) build(ctx context.Context, study string, stamp alignet.StudyStamp, old *TeacherSnapshot) (*TeacherSnapshot, error) {
	var in *teacherInputs
	if old != nil && old.stamp.Inputs == stamp.Inputs {
		in = old.inputs
	} else {
		var err error
		if in, err = c.loadInputs(ctx, study); err != nil {
			return nil, err
		}
	}
	s := &TeacherSnapshot{
		Study: study, Task: in.task, Space: in.space, Status: alignet.TeacherEmpty, Tau: 1,
		Items: in.items, Index: in.index, Embedded: in.embedded, Missing: in.missing,
		Z: in.x, P: in.dim, BuiltAt: c.cfg.Now(), stamp: stamp, inputs: in,
	}
	switch {
	case stamp.TeacherUpdatedAt.IsZero():
		return s, nil
	case old != nil && old.teacher != nil && old.stamp.TeacherUpdatedAt.Equal(stamp.TeacherUpdatedAt) &&
		old.stamp.TeacherVersion == stamp.TeacherVersion:
		s.Status, s.Version, s.UpdatedAt, s.JudgmentsSeen = old.Status, old.Version, old.UpdatedAt, old.JudgmentsSeen
		s.teacher = old.teacher
	default:
		st, err := c.src.TeacherState(ctx, study)
		if errors.Is(err, alignet.ErrNotFound) {
			return s, nil
		}
		if err != nil {
			return nil, fmt.Errorf("teacher of study %q: %w", study, err)
		}
		if st.Params.D != in.dim {
			return nil, fmt.Errorf("teacher of study %q takes %d-d inputs, its space %q has dimension %d", study, st.Params.D, in.space, in.dim)
		}
		s.Status, s.Version, s.UpdatedAt, s.JudgmentsSeen = st.Status, st.Version, st.UpdatedAt, st.JudgmentsSeen
		s.teacher = modelfile.TeacherOf(st.Params)
	}
	s.Task, s.Tau, s.P = alignet.Task(s.teacher.Task), s.teacher.Tau, s.teacher.P
	s.Z = s.teacher.Transform(in.x, len(in.items))
	return s, nil
}

// loadInputs reads a study's items and their embeddings.
func (c *TeacherCache) loadInputs(ctx context.Context, study string) (*teacherInputs, error) {
	st, err := c.src.GetStudy(ctx, study)
	if err != nil {
		return nil, fmt.Errorf("load study %q: %w", study, err)
	}
	sp, err := c.src.GetSpace(ctx, st.Space)
	if err != nil {
		return nil, fmt.Errorf("load space %q of study %q: %w", st.Space, study, err)
	}
	items, err := c.src.StudyItems(ctx, study)
	if err != nil {
		return nil, fmt.Errorf("load items of study %q: %w", study, err)
	}
	x, found, err := c.src.LoadEmbeddings(ctx, st.Space, items)
	if err != nil {
		return nil, fmt.Errorf("load embeddings of study %q: %w", study, err)
	}
	if len(x) != len(items)*sp.Dim || len(found) != len(items) {
		return nil, fmt.Errorf("load embeddings of study %q: %d values for %d items of dimension %d", study, len(x), len(items), sp.Dim)
	}
	in := &teacherInputs{space: st.Space, task: st.Task, dim: sp.Dim, items: items, x: x, embedded: found,
		index: make(map[string]int32, len(items))}
	for r, it := range items {
		in.index[it] = int32(r)
		if !found[r] {
			in.missing++
		}
	}
	return in, nil
}

// ages returns, for each cached study, how long ago its snapshot was last
// found current.
func (c *TeacherCache) ages() map[string]time.Duration {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]time.Duration, len(c.entries))
	for id, e := range c.entries {
		if e.snap.Load() != nil {
			out[id] = now.Sub(time.Unix(0, e.checked.Load()))
		}
	}
	return out
}
