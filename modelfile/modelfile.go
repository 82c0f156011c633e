// Package modelfile reads and writes the files of the AligNet pipeline:
// surrogate teachers and distilled students (affine heads on frozen
// embeddings) and AligNet triplet datasets. Each is a NumPy .npz archive,
// so Python can load it with numpy.load, and each carries its Provenance
// as JSON in a uint8 array named "meta".
//
// The functions work on io.Writer and io.ReaderAt, so a server can stream a
// model to an HTTP client or read an upload without a file; Save* and Load*
// are the same on paths, writing through a temporary file that is renamed
// into place. TeacherOf and ParamsOf convert a teacher to and from the
// float32 parameters Postgres stores.
package modelfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/npy"
)

// ProvenanceVersion is the current version of the file layout.
const ProvenanceVersion = 1

// Kinds of file, stored in Provenance.Kind.
const (
	KindTeacher = "teacher"
	KindStudent = "student"
	KindDataset = "dataset"
)

// Provenance records where a saved model or dataset came from. It is stored
// as JSON in the "meta" array of the .npz file.
type Provenance struct {
	// Version is the file layout version (ProvenanceVersion when written).
	Version int `json:"version"`
	// Kind names the content: KindTeacher, KindStudent or KindDataset.
	Kind string `json:"kind"`
	// Created is when the file was written.
	Created time.Time `json:"created"`
	// Seed is the seed of every random choice made while producing it.
	Seed uint64 `json:"seed"`
	// Task is the judgment task the model was fitted on.
	Task learner.Task `json:"task,omitempty"`
	// Embeddings and Triplets are the input file paths as given.
	Embeddings string `json:"embeddings,omitempty"`
	Triplets   string `json:"triplets,omitempty"`
	// EmbeddingsSHA256 and TripletsSHA256 are digests of the input files.
	EmbeddingsSHA256 string `json:"embeddings_sha256,omitempty"`
	TripletsSHA256   string `json:"triplets_sha256,omitempty"`
	// Hyper holds the hyper-parameters used, by name.
	Hyper map[string]any `json:"hyper,omitempty"`
	// Extra holds any further producer-specific information.
	Extra map[string]any `json:"extra,omitempty"`
}

// withDefaults fills the version, kind and creation time when unset.
func (p Provenance) withDefaults(kind string) Provenance {
	if p.Version == 0 {
		p.Version = ProvenanceVersion
	}
	if p.Kind == "" {
		p.Kind = kind
	}
	if p.Created.IsZero() {
		p.Created = time.Now().UTC()
	}
	return p
}

// metaArray encodes p as the uint8 "meta" array.
func metaArray(p Provenance) (*npy.Array, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode provenance: %w", err)
	}
	return &npy.Array{Dtype: npy.Uint8, Shape: []int{len(b)}, Data: b}, nil
}

// readProvenance decodes the "meta" array of an opened archive.
func readProvenance(z *npy.NPZ) (Provenance, error) {
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

// namedArray is one member of an .npz file.
type namedArray struct {
	name string
	a    *npy.Array
}

// writeNPZ writes arrays, in order, as an .npz archive to w.
func writeNPZ(w io.Writer, arrays []namedArray) error {
	zw := npy.NewNPZWriter(w)
	for _, a := range arrays {
		if err := zw.Add(a.name, a.a); err != nil {
			return err
		}
	}
	return zw.Close()
}

// readFloat64s reads a float member as float64.
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

// readScalar reads a one-element float member.
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

// affine is the shared layout of teachers and students: W (P×D), b (P),
// and the input standardisation.
type affine struct {
	w, b      []float64
	p, d      int
	mean, std float64
}

// readAffine reads W, b, mean and std and checks their shapes.
func readAffine(z *npy.NPZ) (affine, error) {
	var a affine
	w, shape, err := readFloat64s(z, "W")
	if err != nil {
		return a, err
	}
	if len(shape) != 2 {
		return a, fmt.Errorf("weight matrix W has shape %v, want 2-d", shape)
	}
	b, bshape, err := readFloat64s(z, "b")
	if err != nil {
		return a, err
	}
	if len(bshape) != 1 || bshape[0] != shape[0] {
		return a, fmt.Errorf("b has shape %v, want (%d,)", bshape, shape[0])
	}
	a = affine{w: w, b: b, p: shape[0], d: shape[1]}
	if a.mean, err = readScalar(z, "mean"); err != nil {
		return a, err
	}
	if a.std, err = readScalar(z, "std"); err != nil {
		return a, err
	}
	if !(a.std > 0) {
		return a, errors.New("std must be positive")
	}
	return a, nil
}

// openNPZ opens the archive in r and checks that it holds kind.
func openNPZ(r io.ReaderAt, size int64, kind string) (*npy.NPZ, Provenance, error) {
	z, err := npy.OpenNPZ(r, size)
	if err != nil {
		return nil, Provenance{}, err
	}
	p, err := readProvenance(z)
	if err != nil {
		return nil, p, err
	}
	if p.Kind != kind && !(kind == KindTeacher && p.Kind == "") {
		return nil, p, fmt.Errorf("file holds a %q, not a %s", p.Kind, kind)
	}
	return z, p, nil
}

// load opens path and calls read on its contents.
func load(path string, read func(r io.ReaderAt, size int64) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := read(f, st.Size()); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// save writes a file through a temporary sibling and renames it into place,
// so a reader never sees a partial file.
func save(path string, write func(f *os.File) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
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
	return os.Rename(f.Name(), path)
}
