package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/alignet/alignet"
)

// fakeTrainer is the trainer part of fakeStore's state.
type fakeTrainer struct {
	pools     map[string]alignet.Pool
	labels    map[string]map[string][]string
	students  map[[2]string]alignet.Student
	versions  map[[2]string][]alignet.StudentVersion // oldest first
	datasets  map[string][]alignet.Dataset           // oldest first
	artifacts map[int64]fakeArtifact
	nextArt   int64
}

type fakeArtifact struct {
	meta alignet.Artifact
	data []byte
}

func (f *fakeStore) tr() *fakeTrainer {
	if f.trainer == nil {
		f.trainer = &fakeTrainer{pools: map[string]alignet.Pool{}, labels: map[string]map[string][]string{},
			students: map[[2]string]alignet.Student{}, versions: map[[2]string][]alignet.StudentVersion{},
			datasets: map[string][]alignet.Dataset{}, artifacts: map[int64]fakeArtifact{}}
	}
	return f.trainer
}

func (f *fakeStore) PutPool(ctx context.Context, p alignet.Pool) (alignet.Pool, error) {
	done, err := f.enter(ctx, "PutPool")
	if err != nil {
		return alignet.Pool{}, err
	}
	defer done()
	if err := pgText(append([]string{p.Study, p.Space}, p.Items...)...); err != nil {
		return alignet.Pool{}, err
	}
	st, ok := f.studies[p.Study]
	if !ok {
		return alignet.Pool{}, fmt.Errorf("study %q: %w", p.Study, alignet.ErrNotFound)
	}
	sp, ok := f.spaces[p.Space]
	if !ok {
		return alignet.Pool{}, fmt.Errorf("space %q: %w", p.Space, alignet.ErrNotFound)
	}
	if sp.Dim != f.spaces[st.Space].Dim {
		return alignet.Pool{}, alignet.Invalid("space", "space %q has dim %d, the study's space %d", p.Space, sp.Dim, f.spaces[st.Space].Dim)
	}
	for i, it := range p.Items {
		if _, ok := f.embeddings[p.Space][it]; !ok {
			return alignet.Pool{}, alignet.Invalid(fmt.Sprintf("items[%d]", i), "item %q has no embedding in space %q", it, p.Space)
		}
	}
	p.Items = slices.Clone(p.Items)
	p.UpdatedAt = time.Now().UTC()
	f.tr().pools[p.Study] = p
	return p, nil
}

func (f *fakeStore) GetPool(ctx context.Context, study string) (alignet.Pool, error) {
	done, err := f.enter(ctx, "GetPool")
	if err != nil {
		return alignet.Pool{}, err
	}
	defer done()
	if err := pgText(study); err != nil {
		return alignet.Pool{}, err
	}
	p, ok := f.tr().pools[study]
	if !ok {
		return alignet.Pool{}, fmt.Errorf("pool of %q: %w", study, alignet.ErrNotFound)
	}
	p.Items = slices.Clone(p.Items)
	return p, nil
}

func (f *fakeStore) PutItemLabels(ctx context.Context, space string, labels []alignet.ItemLabels) (int64, error) {
	done, err := f.enter(ctx, "PutItemLabels")
	if err != nil {
		return 0, err
	}
	defer done()
	if err := pgText(space); err != nil {
		return 0, err
	}
	if _, ok := f.spaces[space]; !ok {
		return 0, fmt.Errorf("space %q: %w", space, alignet.ErrNotFound)
	}
	for _, l := range labels {
		if l.Item == "" {
			return 0, fmt.Errorf("fake: empty item")
		}
		if err := pgText(append([]string{l.Item}, l.Labels...)...); err != nil {
			return 0, err
		}
	}
	m := f.tr().labels[space]
	if m == nil {
		m = map[string][]string{}
		f.tr().labels[space] = m
	}
	for _, l := range labels {
		m[l.Item] = slices.Clone(l.Labels)
	}
	return int64(len(labels)), nil
}

func (f *fakeStore) ItemLabels(ctx context.Context, space string) (map[string][]string, error) {
	done, err := f.enter(ctx, "ItemLabels")
	if err != nil {
		return nil, err
	}
	defer done()
	if _, ok := f.spaces[space]; !ok {
		return nil, fmt.Errorf("space %q: %w", space, alignet.ErrNotFound)
	}
	out := map[string][]string{}
	for k, v := range f.tr().labels[space] {
		out[k] = slices.Clone(v)
	}
	return out, nil
}

func (f *fakeStore) CreateStudent(ctx context.Context, s alignet.Student) (alignet.Student, bool, error) {
	done, err := f.enter(ctx, "CreateStudent")
	if err != nil {
		return alignet.Student{}, false, err
	}
	defer done()
	if err := pgText(s.Study, s.ID, s.Space); err != nil {
		return alignet.Student{}, false, err
	}
	if _, ok := f.studies[s.Study]; !ok {
		return alignet.Student{}, false, fmt.Errorf("study %q: %w", s.Study, alignet.ErrNotFound)
	}
	if _, ok := f.spaces[s.Space]; !ok {
		return alignet.Student{}, false, fmt.Errorf("space %q: %w", s.Space, alignet.ErrNotFound)
	}
	k := [2]string{s.Study, s.ID}
	if got, ok := f.tr().students[k]; ok {
		if got.Space != s.Space {
			return alignet.Student{}, false, fmt.Errorf("student %q: %w", s.ID, alignet.ErrConflict)
		}
		return got, false, nil
	}
	s.CreatedAt, s.Current, s.InitArtifact = time.Now().UTC(), 0, 0
	f.tr().students[k] = s
	return s, true, nil
}

func (f *fakeStore) GetStudent(ctx context.Context, study, id string) (alignet.Student, error) {
	done, err := f.enter(ctx, "GetStudent")
	if err != nil {
		return alignet.Student{}, err
	}
	defer done()
	if err := pgText(study, id); err != nil {
		return alignet.Student{}, err
	}
	s, ok := f.tr().students[[2]string{study, id}]
	if !ok {
		return alignet.Student{}, fmt.Errorf("student %q: %w", id, alignet.ErrNotFound)
	}
	return s, nil
}

func (f *fakeStore) ListStudents(ctx context.Context, study string) ([]alignet.Student, error) {
	done, err := f.enter(ctx, "ListStudents")
	if err != nil {
		return nil, err
	}
	defer done()
	if err := pgText(study); err != nil {
		return nil, err
	}
	if _, ok := f.studies[study]; !ok {
		return nil, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	out := []alignet.Student{}
	for k, s := range f.tr().students {
		if k[0] == study {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out, nil
}

func (f *fakeStore) DeleteStudent(ctx context.Context, study, id string) error {
	done, err := f.enter(ctx, "DeleteStudent")
	if err != nil {
		return err
	}
	defer done()
	if err := pgText(study, id); err != nil {
		return err
	}
	k := [2]string{study, id}
	s, ok := f.tr().students[k]
	if !ok {
		return fmt.Errorf("student %q: %w", id, alignet.ErrNotFound)
	}
	for _, v := range f.tr().versions[k] {
		delete(f.tr().artifacts, v.Artifact)
	}
	delete(f.tr().artifacts, s.InitArtifact)
	delete(f.tr().versions, k)
	delete(f.tr().students, k)
	return nil
}

func (f *fakeStore) StudentVersions(ctx context.Context, study, id string) ([]alignet.StudentVersion, error) {
	done, err := f.enter(ctx, "StudentVersions")
	if err != nil {
		return nil, err
	}
	defer done()
	if err := pgText(study, id); err != nil {
		return nil, err
	}
	k := [2]string{study, id}
	if _, ok := f.tr().students[k]; !ok {
		return nil, fmt.Errorf("student %q: %w", id, alignet.ErrNotFound)
	}
	out := slices.Clone(f.tr().versions[k])
	slices.Reverse(out)
	if out == nil {
		out = []alignet.StudentVersion{}
	}
	return out, nil
}

func (f *fakeStore) StudentVersion(ctx context.Context, study, id string, n int64) (alignet.StudentVersion, error) {
	done, err := f.enter(ctx, "StudentVersion")
	if err != nil {
		return alignet.StudentVersion{}, err
	}
	defer done()
	if err := pgText(study, id); err != nil {
		return alignet.StudentVersion{}, err
	}
	k := [2]string{study, id}
	s, ok := f.tr().students[k]
	if !ok {
		return alignet.StudentVersion{}, fmt.Errorf("student %q: %w", id, alignet.ErrNotFound)
	}
	if n == 0 {
		n = s.Current
	}
	for _, v := range f.tr().versions[k] {
		if v.Version == n {
			return v, nil
		}
	}
	return alignet.StudentVersion{}, fmt.Errorf("version %d of %q: %w", n, id, alignet.ErrNotFound)
}

func (f *fakeStore) Datasets(ctx context.Context, study string) ([]alignet.Dataset, error) {
	done, err := f.enter(ctx, "Datasets")
	if err != nil {
		return nil, err
	}
	defer done()
	if err := pgText(study); err != nil {
		return nil, err
	}
	if _, ok := f.studies[study]; !ok {
		return nil, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	out := slices.Clone(f.tr().datasets[study])
	slices.Reverse(out)
	if out == nil {
		out = []alignet.Dataset{}
	}
	return out, nil
}

func (f *fakeStore) GetDataset(ctx context.Context, study string, n int64) (alignet.Dataset, error) {
	done, err := f.enter(ctx, "GetDataset")
	if err != nil {
		return alignet.Dataset{}, err
	}
	defer done()
	if err := pgText(study); err != nil {
		return alignet.Dataset{}, err
	}
	ds := f.tr().datasets[study]
	for i := len(ds) - 1; i >= 0; i-- {
		if n == 0 || ds[i].Version == n {
			return ds[i], nil
		}
	}
	return alignet.Dataset{}, fmt.Errorf("dataset %d of %q: %w", n, study, alignet.ErrNotFound)
}

func (f *fakeStore) GetArtifact(ctx context.Context, id int64) (alignet.Artifact, error) {
	done, err := f.enter(ctx, "GetArtifact")
	if err != nil {
		return alignet.Artifact{}, err
	}
	defer done()
	a, ok := f.tr().artifacts[id]
	if !ok {
		return alignet.Artifact{}, fmt.Errorf("artifact %d: %w", id, alignet.ErrNotFound)
	}
	return a.meta, nil
}

func (f *fakeStore) ReadArtifact(ctx context.Context, id, off, n int64, w io.Writer) error {
	done, err := f.enter(ctx, "ReadArtifact")
	if err != nil {
		return err
	}
	a, ok := f.tr().artifacts[id]
	done()
	if !ok {
		return fmt.Errorf("artifact %d: %w", id, alignet.ErrNotFound)
	}
	if off < 0 || n < 0 || off+n > int64(len(a.data)) {
		return fmt.Errorf("fake: range [%d, %d) outside %d bytes", off, off+n, len(a.data))
	}
	_, err = w.Write(a.data[off : off+n])
	return err
}

// newArtifact stores data as a complete artifact.
func (f *fakeStore) newArtifactLocked(kind string, data []byte) alignet.Artifact {
	t := f.tr()
	t.nextArt++
	sum := sha256.Sum256(data)
	a := alignet.Artifact{ID: t.nextArt, Kind: kind, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), CreatedAt: time.Now().UTC()}
	t.artifacts[a.ID] = fakeArtifact{meta: a, data: slices.Clone(data)}
	return a
}

// SeedDataset stores data as the study's next dataset, keeping keep.
func (f *fakeStore) SeedDataset(ctx context.Context, ds alignet.Dataset, data []byte, keep int) (alignet.Dataset, error) {
	done, err := f.enter(ctx, "SeedDataset")
	if err != nil {
		return alignet.Dataset{}, err
	}
	defer done()
	if _, ok := f.studies[ds.Study]; !ok {
		return alignet.Dataset{}, fmt.Errorf("study %q: %w", ds.Study, alignet.ErrNotFound)
	}
	a := f.newArtifactLocked("dataset", data)
	t := f.tr()
	list := t.datasets[ds.Study]
	ds.Version = 1
	if len(list) > 0 {
		ds.Version = list[len(list)-1].Version + 1
	}
	ds.CreatedAt, ds.Artifact, ds.Size, ds.SHA256 = time.Now().UTC(), a.ID, a.Size, a.SHA256
	list = append(list, ds)
	for len(list) > max(keep, 1) {
		delete(t.artifacts, list[0].Artifact)
		list = list[1:]
	}
	t.datasets[ds.Study] = list
	return ds, nil
}

// SeedStudentVersion stores head as the student's next version.
func (f *fakeStore) SeedStudentVersion(ctx context.Context, v alignet.StudentVersion, head []byte) (alignet.StudentVersion, error) {
	done, err := f.enter(ctx, "SeedStudentVersion")
	if err != nil {
		return alignet.StudentVersion{}, err
	}
	defer done()
	k := [2]string{v.Study, v.Student}
	s, ok := f.tr().students[k]
	if !ok {
		return alignet.StudentVersion{}, fmt.Errorf("student %q: %w", v.Student, alignet.ErrNotFound)
	}
	a := f.newArtifactLocked("student", head)
	list := f.tr().versions[k]
	v.Version = int64(len(list)) + 1
	if len(list) > 0 {
		v.Version = list[len(list)-1].Version + 1
	}
	v.CreatedAt, v.Artifact = time.Now().UTC(), a.ID
	f.tr().versions[k] = append(list, v)
	if v.Promoted {
		s.Current = v.Version
		f.tr().students[k] = s
	}
	return v, nil
}
