package api

import (
	"context"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/query"
)

// QueryTeachers supply query selection with each study's current teacher:
// the teacher representations of the study's items. The server's teacher
// cache implements it (cacheTeachers) unless Deps.QueryTeachers sets
// another source.
type QueryTeachers interface {
	// Teacher returns the study's current teacher, loading it if need be.
	Teacher(ctx context.Context, study string) (*query.Teacher, error)
	// Changes delivers the id of each study whose teacher changed (a new
	// version or state, new items or embeddings), so that its candidates
	// are rescored.
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

// cacheTeachers is the QueryTeachers of the server's TeacherCache: its
// snapshots as query teachers (the learner's teacher, or the raw
// embeddings at τ = 1 before the learner stored one), and a change for
// every snapshot it publishes.
type cacheTeachers struct {
	cache   *TeacherCache
	changes chan string
	cancel  func()
}

func newCacheTeachers(c *TeacherCache) *cacheTeachers {
	t := &cacheTeachers{cache: c, changes: make(chan string, 1024)}
	t.cancel = c.Subscribe(func(s *TeacherSnapshot) {
		select {
		case t.changes <- s.Study:
		default: // the selection loop is far behind; it reads the newest snapshot anyway
		}
	})
	return t
}

// Teacher returns the cached snapshot of study as a query teacher.
func (t *cacheTeachers) Teacher(ctx context.Context, study string) (*query.Teacher, error) {
	s, err := t.cache.Get(ctx, study)
	if err != nil {
		return nil, err
	}
	return queryTeacher(s), nil
}

// Changes delivers the studies whose snapshot the cache rebuilt.
func (t *cacheTeachers) Changes() <-chan string { return t.changes }

// queryTeacher views a snapshot as a query teacher over the items that
// have an embedding (the others cannot be scored, so they are not asked).
func queryTeacher(s *TeacherSnapshot) *query.Teacher {
	t := &query.Teacher{Version: s.Version, Task: learner.Task(s.Task), Tau: s.Tau, P: s.P, Items: s.Items, Z: s.Z}
	if s.Missing == 0 {
		return t
	}
	t.Items, t.Z = nil, make([]float32, 0, (len(s.Items)-s.Missing)*s.P)
	for i, it := range s.Items {
		if s.Embedded[i] {
			t.Items = append(t.Items, it)
			t.Z = append(t.Z, s.Z[i*s.P:(i+1)*s.P]...)
		}
	}
	return t
}
