package offline

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/npy"
)

// ProvenanceVersion is the current version of the model file layout.
const ProvenanceVersion = 1

// Provenance records where a saved model came from. It is stored as JSON in
// the "meta" array of the .npz file.
type Provenance struct {
	// Version is the file layout version (ProvenanceVersion when written).
	Version int `json:"version"`
	// Kind names the model: "teacher" or "student".
	Kind string `json:"kind"`
	// Created is when the model was written.
	Created time.Time `json:"created"`
	// Seed is the seed of every random choice made while fitting.
	Seed uint64 `json:"seed"`
	// Task is the judgment task the model was fitted on.
	Task learner.Task `json:"task,omitempty"`
	// Embeddings and Triplets are the input file paths as given (Triplets
	// is described here too).
	Embeddings string `json:"embeddings,omitempty"`
	Triplets   string `json:"triplets,omitempty"`
	// EmbeddingsSHA256 and TripletsSHA256 are digests of the input files.
	EmbeddingsSHA256 string `json:"embeddings_sha256,omitempty"`
	TripletsSHA256   string `json:"triplets_sha256,omitempty"`
	// Hyper holds the hyper-parameters used, by name.
	Hyper map[string]any `json:"hyper,omitempty"`
	// Extra holds any further command-specific information.
	Extra map[string]any `json:"extra,omitempty"`
}

// SaveTeacher writes t and p to path as a .npz archive with arrays W (P×D
// float64), b (P), mean, std, tau, lambda (scalars) and meta (the JSON of p
// as uint8 bytes). The file is written to a temporary name and renamed.
func SaveTeacher(path string, t *learner.Teacher, p Provenance) error {
	if len(t.W) != t.P*t.D || len(t.B) != t.P {
		return fmt.Errorf("save teacher: W has %d values and b %d for P=%d D=%d", len(t.W), len(t.B), t.P, t.D)
	}
	if p.Version == 0 {
		p.Version = ProvenanceVersion
	}
	if p.Kind == "" {
		p.Kind = "teacher"
	}
	if p.Created.IsZero() {
		p.Created = time.Now().UTC()
	}
	if p.Task == "" {
		p.Task = t.Task
	}
	meta, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("save teacher: %w", err)
	}
	arrays := []namedArray{
		{"W", npy.FromFloat64(t.W, t.P, t.D)},
		{"b", npy.FromFloat64(t.B, t.P)},
		{"mean", npy.FromFloat64([]float64{t.Mean})},
		{"std", npy.FromFloat64([]float64{t.Std})},
		{"tau", npy.FromFloat64([]float64{t.Tau})},
		{"lambda", npy.FromFloat64([]float64{t.Lambda})},
		{"meta", &npy.Array{Dtype: npy.Uint8, Shape: []int{len(meta)}, Data: meta}},
	}
	return writeNPZ(path, arrays)
}

// namedArray is one member of an .npz file.
type namedArray struct {
	name string
	a    *npy.Array
}

// writeNPZ writes arrays as an .npz archive at path, atomically.
func writeNPZ(path string, arrays []namedArray) error {
	return writeAtomic(path, func(f *os.File) error {
		bw := bufio.NewWriter(f)
		zw := npy.NewNPZWriter(bw)
		for _, a := range arrays {
			if err := zw.Add(a.name, a.a); err != nil {
				return err
			}
		}
		if err := zw.Close(); err != nil {
			return err
		}
		return bw.Flush()
	})
}

// writeAtomic writes a file through a temporary sibling and renames it.
func writeAtomic(path string, write func(*os.File) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = write(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// OpenNPZFile opens a .npz file for reading. The caller closes the returned
// file after reading.
func OpenNPZFile(path string) (*npy.NPZ, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	z, err := npy.OpenNPZ(f, st.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	return z, f, nil
}

// ReadProvenance decodes the "meta" array of an opened model archive.
func ReadProvenance(z *npy.NPZ) (Provenance, error) {
	var p Provenance
	a, err := z.Read("meta")
	if err != nil {
		return p, err
	}
	b, ok := a.Data.([]uint8)
	if !ok {
		return p, fmt.Errorf("meta has dtype %s, want uint8", a.Dtype)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("decode meta: %w", err)
	}
	return p, nil
}

func readFloat64s(z *npy.NPZ, name string) ([]float64, []int, error) {
	a, err := z.Read(name)
	if err != nil {
		return nil, nil, err
	}
	switch d := a.Data.(type) {
	case []float64:
		return d, a.Shape, nil
	case []float32:
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v)
		}
		return out, a.Shape, nil
	}
	return nil, nil, fmt.Errorf("array %s has dtype %s, want float", name, a.Dtype)
}

func readScalar(z *npy.NPZ, name string) (float64, error) {
	v, _, err := readFloat64s(z, name)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("array %s has %d values, want 1", name, len(v))
	}
	return v[0], nil
}

// LoadTeacher reads a teacher written by SaveTeacher.
func LoadTeacher(path string) (*learner.Teacher, Provenance, error) {
	z, f, err := OpenNPZFile(path)
	if err != nil {
		return nil, Provenance{}, fmt.Errorf("load teacher: %w", err)
	}
	defer f.Close()
	t, p, err := loadTeacher(z)
	if err != nil {
		return nil, Provenance{}, fmt.Errorf("load teacher %s: %w", path, err)
	}
	return t, p, nil
}

func loadTeacher(z *npy.NPZ) (*learner.Teacher, Provenance, error) {
	p, err := ReadProvenance(z)
	if err != nil {
		return nil, p, err
	}
	if p.Kind != "" && p.Kind != "teacher" {
		return nil, p, fmt.Errorf("file holds a %s, not a teacher", p.Kind)
	}
	w, shape, err := readFloat64s(z, "W")
	if err != nil {
		return nil, p, err
	}
	if len(shape) != 2 {
		return nil, p, fmt.Errorf("teacher weight W has shape %v, want 2-d", shape)
	}
	b, bshape, err := readFloat64s(z, "b")
	if err != nil {
		return nil, p, err
	}
	if len(bshape) != 1 || bshape[0] != shape[0] {
		return nil, p, fmt.Errorf("b has shape %v, want (%d,)", bshape, shape[0])
	}
	t := &learner.Teacher{W: w, B: b, P: shape[0], D: shape[1], Task: p.Task}
	for _, s := range []struct {
		name string
		dst  *float64
	}{{"mean", &t.Mean}, {"std", &t.Std}, {"tau", &t.Tau}, {"lambda", &t.Lambda}} {
		if *s.dst, err = readScalar(z, s.name); err != nil {
			return nil, p, err
		}
	}
	if !(t.Std > 0) || !(t.Tau > 0) {
		return nil, p, errors.New("std and tau must be positive")
	}
	if t.Task == "" {
		t.Task = learner.TaskOddOneOut
	}
	if err := t.Task.Valid(); err != nil {
		return nil, p, err
	}
	return t, p, nil
}
