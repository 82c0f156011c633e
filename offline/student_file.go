package offline

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/npy"
)

// SaveStudent writes a distilled student head and its provenance to path as
// a .npz archive with arrays W (P×D float64), b (P), mean, std, tau
// (scalars) and meta (the JSON of p as uint8 bytes, Kind "student"). The
// file is written to a temporary name and renamed.
func SaveStudent(path string, h *learner.StudentHead, p Provenance) error {
	if len(h.W) != h.P*h.D || len(h.B) != h.P {
		return fmt.Errorf("save student: W has %d values and b %d for P=%d D=%d", len(h.W), len(h.B), h.P, h.D)
	}
	if p.Version == 0 {
		p.Version = ProvenanceVersion
	}
	p.Kind = "student"
	if p.Created.IsZero() {
		p.Created = time.Now().UTC()
	}
	if p.Task == "" {
		p.Task = learner.TaskOddOneOut
	}
	if h.Init != "" {
		if p.Hyper == nil {
			p.Hyper = map[string]any{}
		}
		if _, ok := p.Hyper["init"]; !ok {
			p.Hyper["init"] = h.Init
		}
	}
	meta, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("save student: %w", err)
	}
	arrays := []namedArray{
		{"W", npy.FromFloat64(h.W, h.P, h.D)},
		{"b", npy.FromFloat64(h.B, h.P)},
		{"mean", npy.FromFloat64([]float64{h.Mean})},
		{"std", npy.FromFloat64([]float64{h.Std})},
		{"tau", npy.FromFloat64([]float64{h.Tau})},
		{"meta", &npy.Array{Dtype: npy.Uint8, Shape: []int{len(meta)}, Data: meta}},
	}
	return writeNPZ(path, arrays)
}

// LoadStudent reads a student head written by SaveStudent.
func LoadStudent(path string) (*learner.StudentHead, Provenance, error) {
	z, f, err := OpenNPZFile(path)
	if err != nil {
		return nil, Provenance{}, fmt.Errorf("load student: %w", err)
	}
	defer f.Close()
	p, err := ReadProvenance(z)
	if err != nil {
		return nil, p, fmt.Errorf("load student %s: %w", path, err)
	}
	if p.Kind != "student" {
		return nil, p, fmt.Errorf("load student %s: file holds a %q, not a student", path, p.Kind)
	}
	w, shape, err := readFloat64s(z, "W")
	if err != nil {
		return nil, p, fmt.Errorf("load student %s: %w", path, err)
	}
	if len(shape) != 2 {
		return nil, p, fmt.Errorf("load student %s: W has shape %v, want 2-d", path, shape)
	}
	b, bshape, err := readFloat64s(z, "b")
	if err != nil {
		return nil, p, fmt.Errorf("load student %s: %w", path, err)
	}
	if len(bshape) != 1 || bshape[0] != shape[0] {
		return nil, p, fmt.Errorf("load student %s: b has shape %v, want (%d,)", path, bshape, shape[0])
	}
	h := &learner.StudentHead{W: w, B: b, P: shape[0], D: shape[1]}
	if init, ok := p.Hyper["init"].(string); ok {
		h.Init = init
	}
	for _, s := range []struct {
		name string
		dst  *float64
	}{{"mean", &h.Mean}, {"std", &h.Std}, {"tau", &h.Tau}} {
		if *s.dst, err = readScalar(z, s.name); err != nil {
			return nil, p, fmt.Errorf("load student %s: %w", path, err)
		}
	}
	if !(h.Std > 0) || !(h.Tau > 0) {
		return nil, p, fmt.Errorf("load student %s: %w", path, errors.New("std and tau must be positive"))
	}
	return h, p, nil
}
