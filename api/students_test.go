package api

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net/http"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/query"
)

// TestStoredStudents reads the promoted head of a registered student and
// applies it to its space's embeddings of the teacher's items, and reports
// a student it cannot use as not found, so the scorer falls back.
func TestStoredStudents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.withEmbeddings()
	e.must(http.StatusCreated, "POST", "/v1/studies/s1/students", e.admin, `{"id":"w","space":"w2v"}`)
	src := NewStoredStudents(e.store)
	ctx := context.Background()
	teacher := &query.Teacher{Task: learner.TaskOddOneOut, Tau: 0.5, Items: []string{"c1", "c2", "c3"}, P: 2, Z: make([]float32, 6)}
	if _, err := src.Student(ctx, "s1", "w", teacher); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("student without a promoted version: %v, want ErrNotFound", err)
	}
	if _, err := src.Student(ctx, "s1", "ghost", teacher); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("unregistered student: %v, want ErrNotFound", err)
	}
	h := &learner.StudentHead{W: []float64{2, 0, 1, 0, 1, 0}, B: []float64{0.25, -1}, D: 3, P: 2, Mean: 0.5, Std: 2, Tau: 0.8}
	var buf bytes.Buffer
	if err := modelfile.WriteStudent(&buf, h, modelfile.Provenance{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.SeedStudentVersion(ctx, alignet.StudentVersion{Study: "s1", Student: "w", Dataset: 1, Promoted: true, D: 3, P: 2}, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	got, err := src.Student(ctx, "s1", "w", teacher)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 1 || got.Tau != 0.8 || got.P != 2 || got.Task != teacher.Task || len(got.Items) != 3 {
		t.Fatalf("student %+v", got)
	}
	// w2v holds the unit vectors e1, e2, e3 for c1, c2, c3.
	for i := range 3 {
		for p := range 2 {
			want := h.B[p]
			for d := range 3 {
				x := 0.0
				if d == i {
					x = 1
				}
				want += h.W[p*3+d] * (x - h.Mean) / h.Std
			}
			if g := float64(got.Z[i*2+p]); math.Abs(g-want) > 1e-6 {
				t.Errorf("z[%d][%d] = %v, want %v", i, p, g, want)
			}
		}
	}
	// c4 has no w2v embedding: the student cannot score the teacher's items.
	wide := &query.Teacher{Task: learner.TaskOddOneOut, Tau: 1, Items: []string{"c1", "c2", "c4"}, P: 2, Z: make([]float32, 6)}
	if _, err := src.Student(ctx, "s1", "w", wide); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("student missing an item's embedding: %v, want ErrNotFound", err)
	}
}
