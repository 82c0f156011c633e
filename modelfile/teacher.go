package modelfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/npy"
)

// WriteTeacher writes t and p to w as an .npz archive with arrays W (P×D
// float64), b (P), mean, std, tau and lambda (scalars) and meta (the JSON
// of p). Unset Version, Kind, Created and Task in p are filled in.
func WriteTeacher(w io.Writer, t *learner.Teacher, p Provenance) error {
	if len(t.W) != t.P*t.D || len(t.B) != t.P {
		return fmt.Errorf("write teacher: W has %d values and b %d for P=%d D=%d", len(t.W), len(t.B), t.P, t.D)
	}
	p = p.withDefaults(KindTeacher)
	if p.Task == "" {
		p.Task = t.Task
	}
	meta, err := metaArray(p)
	if err != nil {
		return err
	}
	return writeNPZ(w, []namedArray{
		{"W", npy.FromFloat64(t.W, t.P, t.D)},
		{"b", npy.FromFloat64(t.B, t.P)},
		{"mean", npy.FromFloat64([]float64{t.Mean})},
		{"std", npy.FromFloat64([]float64{t.Std})},
		{"tau", npy.FromFloat64([]float64{t.Tau})},
		{"lambda", npy.FromFloat64([]float64{t.Lambda})},
		{"meta", meta},
	})
}

// ReadTeacher reads a teacher written by WriteTeacher from the size bytes
// of r. A file without a task is an odd-one-out teacher.
func ReadTeacher(r io.ReaderAt, size int64) (*learner.Teacher, Provenance, error) {
	z, p, err := openNPZ(r, size, KindTeacher)
	if err != nil {
		return nil, p, err
	}
	a, err := readAffine(z)
	if err != nil {
		return nil, p, err
	}
	t := &learner.Teacher{W: a.w, B: a.b, P: a.p, D: a.d, Mean: a.mean, Std: a.std, Task: p.Task}
	if t.Tau, err = readScalar(z, "tau"); err != nil {
		return nil, p, err
	}
	if t.Lambda, err = readScalar(z, "lambda"); err != nil {
		return nil, p, err
	}
	if !(t.Tau > 0) {
		return nil, p, errors.New("tau must be positive")
	}
	if t.Task == "" {
		t.Task = learner.TaskOddOneOut
	}
	if err := t.Task.Valid(); err != nil {
		return nil, p, err
	}
	return t, p, nil
}

// SaveTeacher writes t and p to path with WriteTeacher, atomically.
func SaveTeacher(path string, t *learner.Teacher, p Provenance) error {
	return save(path, func(f *os.File) error {
		bw := bufio.NewWriter(f)
		if err := WriteTeacher(bw, t, p); err != nil {
			return err
		}
		return bw.Flush()
	})
}

// LoadTeacher reads the teacher file at path with ReadTeacher.
func LoadTeacher(path string) (t *learner.Teacher, p Provenance, err error) {
	err = load(path, func(r io.ReaderAt, size int64) error {
		t, p, err = ReadTeacher(r, size)
		return err
	})
	if err != nil {
		return nil, p, fmt.Errorf("load teacher: %w", err)
	}
	return t, p, nil
}
