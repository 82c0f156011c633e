package api

import (
	"context"
	"fmt"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/query"
)

// storedStudents is the StudentSource of the trainer's stored students:
// the promoted head of a student applied to its space's embeddings of the
// teacher's items.
type storedStudents struct{ st TrainerStore }

// NewStoredStudents returns the StudentSource that reads the trainer's
// promoted student heads and their spaces' embeddings from st.
func NewStoredStudents(st TrainerStore) StudentSource { return storedStudents{st} }

// Student implements StudentSource. A student that is not registered, has
// no promoted version or lacks an embedding of one of the teacher's items
// is an error wrapping alignet.ErrNotFound, so the scorer falls back.
func (s storedStudents) Student(ctx context.Context, study, name string, teacher *query.Teacher) (*query.Teacher, error) {
	stu, err := s.st.GetStudent(ctx, study, name)
	if err != nil {
		return nil, err
	}
	if stu.Current == 0 {
		return nil, fmt.Errorf("student %q has no promoted version yet: %w", name, alignet.ErrNotFound)
	}
	v, err := s.st.StudentVersion(ctx, study, name, stu.Current)
	if err != nil {
		return nil, err
	}
	h, err := modelfile.ReadStudentArtifact(ctx, s.st, v.Artifact)
	if err != nil {
		return nil, fmt.Errorf("student %q version %d: %w", name, v.Version, err)
	}
	x, found, err := s.st.LoadEmbeddings(ctx, stu.Space, teacher.Items)
	if err != nil {
		return nil, err
	}
	missing := 0
	for _, ok := range found {
		if !ok {
			missing++
		}
	}
	if missing > 0 {
		return nil, fmt.Errorf("space %q of student %q lacks embeddings of %d of the %d items: %w",
			stu.Space, name, missing, len(found), alignet.ErrNotFound)
	}
	if len(x) != len(teacher.Items)*h.D {
		return nil, fmt.Errorf("student %q takes %d-dimensional inputs, space %q has %d", name, h.D, stu.Space, len(x)/max(len(teacher.Items), 1))
	}
	tau := h.Tau
	if tau <= 0 {
		tau = 1
	}
	return &query.Teacher{Version: v.Version, Task: teacher.Task, Tau: tau, Items: teacher.Items, P: h.P,
		Z: h.Transform(x, len(teacher.Items))}, nil
}
