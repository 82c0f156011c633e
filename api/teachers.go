package api

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/query"
)

// TeacherSource supplies query selection with each study's current
// teacher: the teacher representations of the study's items. The API's
// teacher cache implements it from the learner's published state; until
// one is wired in (Deps.Teachers nil), the raw embeddings serve.
type TeacherSource interface {
	// Teacher returns the study's current teacher, loading it if need be.
	Teacher(ctx context.Context, study string) (*query.Teacher, error)
	// Changes delivers the id of each study whose teacher changed (a new
	// version or state, or new items), so its candidates are rescored.
	Changes() <-chan string
}

// StudentSource supplies the registered student that a study's
// disagreement scorer compares the teacher with: the student's
// representation of the teacher's items, in the same order. Students come
// with the trainer; until a source is wired in (Deps.Students nil), or
// while a study has no such student, the disagreement scorer is not
// available: entropy scores the study instead, which is logged and counted
// in alignet_query_scorer_fallbacks_total.
type StudentSource interface {
	// Student returns the named student over the teacher's items, or an
	// error wrapping alignet.ErrNotFound.
	Student(ctx context.Context, study, name string, teacher *query.Teacher) (*query.Teacher, error)
}

// rawTeachers is the TeacherSource of studies without a learned teacher:
// the raw embeddings of the study's items with the identity transform and
// τ = 1. Items without an embedding are left out.
type rawTeachers struct {
	studies    StudyStore
	embeddings EmbeddingLoader
	changes    chan string
	loads      singleflight.Group

	mu    sync.Mutex
	cache map[string]*query.Teacher
}

func newRawTeachers(studies StudyStore, embeddings EmbeddingLoader) *rawTeachers {
	return &rawTeachers{studies: studies, embeddings: embeddings, changes: make(chan string, 1024), cache: map[string]*query.Teacher{}}
}

// Teacher returns the cached raw teacher of study or loads it.
func (r *rawTeachers) Teacher(ctx context.Context, study string) (*query.Teacher, error) {
	r.mu.Lock()
	t, ok := r.cache[study]
	r.mu.Unlock()
	if ok {
		return t, nil
	}
	v, err, _ := r.loads.Do(study, func() (any, error) {
		t, err := r.load(ctx, study)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.cache[study] = t
		r.mu.Unlock()
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*query.Teacher), nil
}

func (r *rawTeachers) load(ctx context.Context, study string) (*query.Teacher, error) {
	st, err := r.studies.GetStudy(ctx, study)
	if err != nil {
		return nil, fmt.Errorf("load raw teacher of %q: %w", study, err)
	}
	items, err := r.studies.StudyItems(ctx, study)
	if err != nil {
		return nil, fmt.Errorf("load raw teacher of %q: %w", study, err)
	}
	vecs, found, err := r.embeddings.LoadEmbeddings(ctx, st.Space, items)
	if err != nil {
		return nil, fmt.Errorf("load raw teacher of %q: %w", study, err)
	}
	t := &query.Teacher{Task: learner.Task(st.Task), Tau: 1}
	if len(items) > 0 {
		t.P = len(vecs) / len(items)
	}
	for i, it := range items {
		if found[i] {
			t.Items = append(t.Items, it)
			t.Z = append(t.Z, vecs[i*t.P:(i+1)*t.P]...)
		}
	}
	return t, nil
}

// Changes delivers studies whose items changed on this server.
func (r *rawTeachers) Changes() <-chan string { return r.changes }

// Invalidate drops the study's cached teacher and announces the change.
func (r *rawTeachers) Invalidate(study string) {
	r.mu.Lock()
	delete(r.cache, study)
	r.mu.Unlock()
	select {
	case r.changes <- study:
	default: // the consumer is far behind; the next load sees the items anyway
	}
}
