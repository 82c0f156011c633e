package modelfile

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// memArtifacts holds artifacts in memory by id.
type memArtifacts map[int64][]byte

func (m memArtifacts) GetArtifact(_ context.Context, id int64) (alignet.Artifact, error) {
	b, ok := m[id]
	if !ok {
		return alignet.Artifact{}, alignet.ErrNotFound
	}
	return alignet.Artifact{ID: id, Size: int64(len(b))}, nil
}

func (m memArtifacts) ReadArtifact(_ context.Context, id, off, n int64, w io.Writer) error {
	_, err := w.Write(m[id][off : off+n])
	return err
}

func TestReadStudentArtifact(t *testing.T) {
	h := &learner.StudentHead{W: []float64{1, 2, 3, 4}, B: []float64{0.5, -1}, D: 2, P: 2, Std: 1, Tau: 2}
	var buf bytes.Buffer
	if err := WriteStudent(&buf, h, Provenance{}); err != nil {
		t.Fatal(err)
	}
	src := memArtifacts{1: buf.Bytes(), 2: []byte("not an npz")}
	got, err := ReadStudentArtifact(context.Background(), src, 1)
	if err != nil || got.D != 2 || got.P != 2 || got.Tau != 2 || got.W[3] != 4 || got.B[1] != -1 {
		t.Fatalf("ReadStudentArtifact = %+v, %v", got, err)
	}
	if _, err := ReadStudentArtifact(context.Background(), src, 2); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("garbage artifact: %v, want ErrUnreadable", err)
	}
	if _, err := ReadStudentArtifact(context.Background(), src, 3); !errors.Is(err, alignet.ErrNotFound) || errors.Is(err, ErrUnreadable) {
		t.Fatalf("missing artifact: %v, want the store's ErrNotFound", err)
	}
}
