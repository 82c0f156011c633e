package modelfile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/npy"
)

// WriteStudent writes a distilled student head and p to w as an .npz
// archive with arrays W (P×D float64), b (P), mean, std and tau (scalars)
// and meta (the JSON of p, Kind KindStudent, Task odd-one-out unless set,
// and Hyper["init"] the head's initialisation unless set).
func WriteStudent(w io.Writer, h *learner.StudentHead, p Provenance) error {
	if len(h.W) != h.P*h.D || len(h.B) != h.P {
		return fmt.Errorf("write student: W has %d values and b %d for P=%d D=%d", len(h.W), len(h.B), h.P, h.D)
	}
	p.Kind = KindStudent
	p = p.withDefaults(KindStudent)
	if p.Task == "" {
		p.Task = learner.TaskOddOneOut
	}
	if h.Init != "" {
		if _, ok := p.Hyper["init"]; !ok {
			hyper := map[string]any{"init": h.Init}
			for k, v := range p.Hyper {
				hyper[k] = v
			}
			p.Hyper = hyper
		}
	}
	meta, err := metaArray(p)
	if err != nil {
		return err
	}
	return writeNPZ(w, []namedArray{
		{"W", npy.FromFloat64(h.W, h.P, h.D)},
		{"b", npy.FromFloat64(h.B, h.P)},
		{"mean", npy.FromFloat64([]float64{h.Mean})},
		{"std", npy.FromFloat64([]float64{h.Std})},
		{"tau", npy.FromFloat64([]float64{h.Tau})},
		{"meta", meta},
	})
}

// ReadStudent reads a student head written by WriteStudent from the size
// bytes of r.
func ReadStudent(r io.ReaderAt, size int64) (*learner.StudentHead, Provenance, error) {
	z, p, err := openNPZ(r, size, KindStudent)
	if err != nil {
		return nil, p, err
	}
	a, err := readAffine(z)
	if err != nil {
		return nil, p, err
	}
	h := &learner.StudentHead{W: a.w, B: a.b, P: a.p, D: a.d, Mean: a.mean, Std: a.std}
	if init, ok := p.Hyper["init"].(string); ok {
		h.Init = init
	}
	if h.Tau, err = readScalar(z, "tau"); err != nil {
		return nil, p, err
	}
	if !(h.Tau > 0) {
		return nil, p, errors.New("tau must be positive")
	}
	return h, p, nil
}

// SaveStudent writes h and p to path with WriteStudent, atomically.
func SaveStudent(path string, h *learner.StudentHead, p Provenance) error {
	return save(path, func(f *os.File) error {
		bw := bufio.NewWriter(f)
		if err := WriteStudent(bw, h, p); err != nil {
			return err
		}
		return bw.Flush()
	})
}

// LoadStudent reads the student file at path with ReadStudent.
func LoadStudent(path string) (h *learner.StudentHead, p Provenance, err error) {
	err = load(path, func(r io.ReaderAt, size int64) error {
		h, p, err = ReadStudent(r, size)
		return err
	})
	if err != nil {
		return nil, p, fmt.Errorf("load student: %w", err)
	}
	return h, p, nil
}

// ErrUnreadable marks a stored artifact whose bytes are not the model file
// they should be.
var ErrUnreadable = errors.New("unreadable model file")

// Artifacts reads stored artifacts, as *db.DB does.
type Artifacts interface {
	GetArtifact(ctx context.Context, id int64) (alignet.Artifact, error)
	ReadArtifact(ctx context.Context, id, off, n int64, w io.Writer) error
}

// ReadStudentArtifact reads the student head stored as artifact id. A
// head that does not decode is an error wrapping ErrUnreadable; the
// store's errors are returned as they are.
func ReadStudentArtifact(ctx context.Context, src Artifacts, id int64) (*learner.StudentHead, error) {
	a, err := src.GetArtifact(ctx, id)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := src.ReadArtifact(ctx, id, 0, a.Size, &buf); err != nil {
		return nil, err
	}
	h, _, err := ReadStudent(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		return nil, fmt.Errorf("student head artifact %d: %w: %w", id, ErrUnreadable, err)
	}
	return h, nil
}
