package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"sync"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/query"
)

// engineLoadTimeout bounds the first load of a study's engine (teacher,
// rescoring and repeat set).
const engineLoadTimeout = 30 * time.Second

// engineSlot holds one study's query engine once it is loaded.
type engineSlot struct {
	ready chan struct{} // closed when e or err is set
	e     *query.Engine
	err   error

	mu       sync.Mutex
	entry    *studyEntry // the study cache entry last applied
	settings alignet.StudySettings
	scored   teacherKey // the teacher the engine's scores come from
}

// teacherKey identifies a teacher view cheaply: views of one snapshot
// share their representation matrix.
type teacherKey struct {
	z       *float32
	n       int
	version int64
	tau     float64
}

func keyOf(t *query.Teacher) teacherKey {
	k := teacherKey{n: t.N(), version: t.Version, tau: t.Tau}
	if len(t.Z) > 0 {
		k.z = &t.Z[0]
	}
	return k
}

// selection is the API's query selection: one in-memory engine per study
// served by this replica, rescored when its teacher changes.
type selection struct {
	s        *Server
	teachers QueryTeachers

	mu      sync.Mutex
	engines map[string]*engineSlot
}

func newSelection(s *Server, teachers QueryTeachers) *selection {
	return &selection{s: s, teachers: teachers, engines: map[string]*engineSlot{}}
}

// newQueryID returns a random 128-bit query id in unpadded base64url.
func newQueryID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// studySeed derives the seed of a study's candidate pool and repeat set
// from its id, so every replica draws the same.
func studySeed(study string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("alignet-queries\x00" + study))
	return h.Sum64()
}

// errNoItems is returned for a study none of whose items has an embedding.
var errNoItems = errors.New("no items with embeddings")

// engine returns the loaded engine of the study, loading it on first use,
// and applies settings changed since.
func (sel *selection) engine(ctx context.Context, st *studyEntry) (*query.Engine, error) {
	id := st.study.ID
	sel.mu.Lock()
	slot, ok := sel.engines[id]
	if !ok {
		slot = &engineSlot{ready: make(chan struct{}), entry: st, settings: st.study.Settings}
		sel.engines[id] = slot
		go sel.load(slot, st.study)
	}
	sel.mu.Unlock()
	select {
	case <-slot.ready:
	case <-ctx.Done():
		return nil, unavailable(fmt.Errorf("load query engine of %q: %w", id, ctx.Err()))
	}
	if slot.err != nil {
		sel.mu.Lock()
		if sel.engines[id] == slot {
			delete(sel.engines, id) // the next request retries
		}
		sel.mu.Unlock()
		if errors.Is(slot.err, errNoItems) {
			return nil, newErr(409, CodeNotReady, "", "study %q has no items with embeddings to ask about", id)
		}
		return nil, storeErr(slot.err, "study", "")
	}
	sel.applySettings(slot, st)
	return slot.e, nil
}

// load builds a study's engine: its teacher, scores and repeat set.
func (sel *selection) load(slot *engineSlot, st alignet.Study) {
	defer close(slot.ready)
	ctx, cancel := context.WithTimeout(context.Background(), engineLoadTimeout)
	defer cancel()
	e, err := query.NewEngine(query.Config{Study: st.ID, Task: st.Task, Settings: st.Settings.Queries,
		Checks: st.Settings.Checks, Seed: studySeed(st.ID), NewID: newQueryID})
	if err != nil {
		slot.err = err
		return
	}
	t, err := sel.teachers.Teacher(ctx, st.ID)
	if err != nil {
		slot.err = err
		return
	}
	if t.N() < 3 {
		slot.err = errNoItems
		return
	}
	if err := sel.rescore(ctx, e, st.ID, st.Settings.Queries, t); err != nil {
		slot.err = err
		return
	}
	slot.scored = keyOf(t)
	if n := st.Settings.Queries.Repeats; n > 0 {
		set, err := sel.s.deps.Sessions.RepeatSet(ctx, st.ID)
		if err == nil && len(set) == 0 {
			set, err = sel.s.deps.Sessions.EnsureRepeatSet(ctx, st.ID, e.DrawRepeats(n))
		}
		if err != nil {
			slot.err = err
			return
		}
		e.SetRepeats(set)
	}
	slot.e = e
}

// rescore gives e a new teacher (and the study's student, for the
// disagreement scorer) and records how it went.
func (sel *selection) rescore(ctx context.Context, e *query.Engine, study string, settings alignet.QuerySettings, t *query.Teacher) error {
	var student *query.Teacher
	if settings.Scorer == alignet.ScorerDisagreement && sel.s.deps.Students != nil {
		s, err := sel.s.deps.Students.Student(ctx, study, settings.Student, t)
		switch {
		case err == nil:
			student = s
		case !errors.Is(err, alignet.ErrNotFound):
			return fmt.Errorf("load student %q of %q: %w", settings.Student, study, err)
		}
	}
	st, err := e.SetTeacher(t, student)
	if err != nil {
		return fmt.Errorf("rescore queries of %q: %w", study, err)
	}
	m := sel.s.metrics
	m.rescore.Observe(st.Duration.Seconds())
	if st.Fallback != nil {
		m.scorerFallen.WithLabelValues(settings.Scorer).Inc()
		sel.s.log.Warn("query scorer not available; using entropy", "study", study, "reason", st.Fallback)
	}
	sel.s.log.Debug("rescored queries", "study", study, "teacher_version", t.Version, "candidates", st.Candidates,
		"new_pool", st.NewPool, "checks", st.Checks, "duration", st.Duration)
	return nil
}

// applySettings passes changed study settings to the engine, rescoring
// in the background when the scorer or pool changed.
func (sel *selection) applySettings(slot *engineSlot, st *studyEntry) {
	slot.mu.Lock()
	if slot.entry == st {
		slot.mu.Unlock()
		return
	}
	slot.entry = st
	changed := !reflect.DeepEqual(slot.settings, st.study.Settings)
	slot.settings = st.study.Settings
	slot.mu.Unlock()
	if !changed {
		return
	}
	if slot.e.SetSettings(st.study.Settings.Queries, st.study.Settings.Checks) {
		go sel.refresh(st.study.ID, true)
	}
}

// refresh rescores a loaded study under its current teacher: when the
// teacher changed, or always with force (the scorer or pool changed).
func (sel *selection) refresh(study string, force bool) {
	sel.mu.Lock()
	slot, ok := sel.engines[study]
	sel.mu.Unlock()
	if !ok {
		return
	}
	<-slot.ready
	if slot.e == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), engineLoadTimeout)
	defer cancel()
	slot.mu.Lock()
	settings, scored := slot.settings.Queries, slot.scored
	slot.mu.Unlock()
	t, err := sel.teachers.Teacher(ctx, study)
	if err == nil && !force && keyOf(t) == scored {
		return // a snapshot the engine was scored with (its first load)
	}
	if err == nil && t.N() >= 3 {
		if err = sel.rescore(ctx, slot.e, study, settings, t); err == nil {
			slot.mu.Lock()
			slot.scored = keyOf(t)
			slot.mu.Unlock()
		}
	}
	if err != nil {
		sel.s.log.Warn("rescoring queries failed", "study", study, "err", err)
	}
}

// loaded returns the engine of a study if it is loaded.
func (sel *selection) loaded(study string) (*query.Engine, bool) {
	sel.mu.Lock()
	slot, ok := sel.engines[study]
	sel.mu.Unlock()
	if !ok {
		return nil, false
	}
	select {
	case <-slot.ready:
		return slot.e, slot.e != nil
	default:
		return nil, false
	}
}

// run rescores studies whose teacher changed and expires queries once a
// second, until ctx ends.
func (sel *selection) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case study := <-sel.teachers.Changes():
			sel.refresh(study, false)
		case <-t.C:
			now := sel.s.cfg.Now()
			sel.mu.Lock()
			slots := make([]*engineSlot, 0, len(sel.engines))
			for _, slot := range sel.engines {
				slots = append(slots, slot)
			}
			sel.mu.Unlock()
			for _, slot := range slots {
				select {
				case <-slot.ready:
					if slot.e != nil {
						slot.e.Sweep(now)
					}
				default:
				}
			}
		}
	}
}
