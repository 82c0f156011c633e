package api

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/alignet/alignet"
)

// This file holds the fake's settings, embeddings and teacher methods, with
// the semantics of *db.DB that the store suite checks.

func cloneSettings(s alignet.StudySettings) alignet.StudySettings {
	s.Learner.Lambdas = slices.Clone(s.Learner.Lambdas)
	s.Trainer.Strategies = maps.Clone(s.Trainer.Strategies)
	return s
}

func cloneParams(p alignet.TeacherParams) alignet.TeacherParams {
	p.W, p.B = slices.Clone(p.W), slices.Clone(p.B)
	return p
}

func cloneHyper(h alignet.TeacherHyper) alignet.TeacherHyper {
	h.Lambdas = slices.Clone(h.Lambdas)
	return h
}

func cloneMetrics(m alignet.TeacherMetrics) alignet.TeacherMetrics {
	if m.KLHuman != nil {
		v := *m.KLHuman
		m.KLHuman = &v
	}
	if m.Majority != nil {
		v := *m.Majority
		m.Majority = &v
	}
	return m
}

func cloneEval(e alignet.TeacherEval) alignet.TeacherEval {
	return alignet.TeacherEval{Teacher: cloneMetrics(e.Teacher), Raw: cloneMetrics(e.Raw)}
}

// cloneState returns a deep copy of s, so the fake never shares memory
// with its callers.
func cloneState(s alignet.TeacherState) alignet.TeacherState {
	s.Params, s.Hyper = cloneParams(s.Params), cloneHyper(s.Hyper)
	s.Prequential = slices.Clone(s.Prequential)
	if s.Eval != nil {
		e := cloneEval(*s.Eval)
		s.Eval = &e
	}
	if s.LastRefitAt != nil {
		t := *s.LastRefitAt
		s.LastRefitAt = &t
	}
	s.Skipped = maps.Clone(s.Skipped)
	return s
}

func cloneVersion(v alignet.TeacherVersion, withParams bool) alignet.TeacherVersion {
	v.Params, v.Hyper, v.Eval = cloneParams(v.Params), cloneHyper(v.Hyper), cloneEval(v.Eval)
	v.Offsets = maps.Clone(v.Offsets)
	if v.Offsets == nil {
		v.Offsets = map[int32]int64{}
	}
	if !withParams {
		v.Params.W, v.Params.B = nil, nil
	}
	return v
}

func (f *fakeStore) UpdateStudySettings(ctx context.Context, id string, update func(alignet.StudySettings) (alignet.StudySettings, error)) (alignet.Study, error) {
	done, err := f.enter(ctx, "UpdateStudySettings")
	if err != nil {
		return alignet.Study{}, err
	}
	defer done()
	if err := pgText(id); err != nil {
		return alignet.Study{}, err
	}
	st, ok := f.studies[id]
	if !ok {
		return alignet.Study{}, fmt.Errorf("study %q: %w", id, alignet.ErrNotFound)
	}
	next, err := update(cloneSettings(st.Settings))
	if err != nil {
		return alignet.Study{}, err
	}
	st.Settings = cloneSettings(next)
	f.studies[id] = st
	st.Settings = cloneSettings(st.Settings)
	return st, nil
}

func (f *fakeStore) LoadEmbeddings(ctx context.Context, space string, ids []string) ([]float32, []bool, error) {
	done, err := f.enter(ctx, "LoadEmbeddings")
	if err != nil {
		return nil, nil, err
	}
	defer done()
	if err := pgText(append([]string{space}, ids...)...); err != nil {
		return nil, nil, err
	}
	sp, ok := f.spaces[space]
	if !ok {
		return nil, nil, fmt.Errorf("space %q: %w", space, alignet.ErrNotFound)
	}
	vecs := make([]float32, len(ids)*sp.Dim)
	found := make([]bool, len(ids))
	for i, id := range ids {
		if v, ok := f.embeddings[space][id]; ok {
			copy(vecs[i*sp.Dim:], v)
			found[i] = true
		}
	}
	return vecs, found, nil
}

func (f *fakeStore) StudyStamps(ctx context.Context, studies []string) (map[string]alignet.StudyStamp, error) {
	done, err := f.enter(ctx, "StudyStamps")
	if err != nil {
		return nil, err
	}
	defer done()
	if err := pgText(studies...); err != nil {
		return nil, err
	}
	out := make(map[string]alignet.StudyStamp, len(studies))
	for _, id := range studies {
		st, ok := f.studies[id]
		if !ok {
			continue
		}
		stamp := alignet.StudyStamp{Inputs: f.itemsRev[id] + f.embRev[st.Space]}
		if ts, ok := f.states[id]; ok {
			stamp.TeacherUpdatedAt, stamp.TeacherVersion = ts.UpdatedAt, ts.Version
		}
		out[id] = stamp
	}
	return out, nil
}

func (f *fakeStore) SaveLearnerProgress(ctx context.Context, p alignet.LearnerProgress) error {
	done, err := f.enter(ctx, "SaveLearnerProgress")
	if err != nil {
		return err
	}
	defer done()
	for i := range p.States {
		if err := p.States[i].Params.Validate(); err != nil {
			return fmt.Errorf("fake: save learner progress: study %q: %w", p.States[i].Study, err)
		}
		if _, ok := f.studies[p.States[i].Study]; !ok {
			return fmt.Errorf("fake: study %q: %w", p.States[i].Study, alignet.ErrNotFound)
		}
	}
	for _, s := range p.States {
		s = cloneState(s)
		if old, ok := f.states[s.Study]; ok {
			s.Version = max(s.Version, old.Version)
		}
		f.states[s.Study] = s
	}
	return nil
}

// setState stores a teacher state as the learner would.
func (f *fakeStore) setState(s alignet.TeacherState) {
	if err := f.SaveLearnerProgress(context.Background(), alignet.LearnerProgress{States: []alignet.TeacherState{s}}); err != nil {
		panic(err)
	}
}

func (f *fakeStore) teacherState(ctx context.Context, op, study string, withParams bool) (alignet.TeacherState, error) {
	done, err := f.enter(ctx, op)
	if err != nil {
		return alignet.TeacherState{}, err
	}
	defer done()
	if err := pgText(study); err != nil {
		return alignet.TeacherState{}, err
	}
	s, ok := f.states[study]
	if !ok {
		return alignet.TeacherState{}, fmt.Errorf("teacher state of %q: %w", study, alignet.ErrNotFound)
	}
	s = cloneState(s)
	if !withParams {
		s.Params.W, s.Params.B = nil, nil
	}
	return s, nil
}

func (f *fakeStore) TeacherState(ctx context.Context, study string) (alignet.TeacherState, error) {
	return f.teacherState(ctx, "TeacherState", study, true)
}

func (f *fakeStore) TeacherStateMeta(ctx context.Context, study string) (alignet.TeacherState, error) {
	return f.teacherState(ctx, "TeacherStateMeta", study, false)
}

func (f *fakeStore) InsertTeacherVersion(ctx context.Context, v alignet.TeacherVersion, keep int) (alignet.TeacherVersion, error) {
	done, err := f.enter(ctx, "InsertTeacherVersion")
	if err != nil {
		return alignet.TeacherVersion{}, err
	}
	defer done()
	if err := v.Params.Validate(); err != nil {
		return alignet.TeacherVersion{}, fmt.Errorf("fake: insert teacher version of %q: %w", v.Study, err)
	}
	if _, ok := f.studies[v.Study]; !ok {
		return alignet.TeacherVersion{}, fmt.Errorf("fake: study %q: %w", v.Study, alignet.ErrNotFound)
	}
	vs := f.versions[v.Study]
	v.Version = 1
	if len(vs) > 0 {
		v.Version = vs[len(vs)-1].Version + 1
	}
	v.CreatedAt = time.Now().UTC()
	vs = append(vs, cloneVersion(v, true))
	vs = slices.DeleteFunc(vs, func(o alignet.TeacherVersion) bool { return o.Version <= v.Version-int64(max(keep, 1)) })
	f.versions[v.Study] = vs
	if s, ok := f.states[v.Study]; ok && s.Version < v.Version {
		s.Version = v.Version
		f.states[v.Study] = s
	}
	return cloneVersion(v, true), nil
}

func (f *fakeStore) TeacherVersions(ctx context.Context, study string) ([]alignet.TeacherVersion, error) {
	done, err := f.enter(ctx, "TeacherVersions")
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
	out := []alignet.TeacherVersion{}
	for _, v := range slices.Backward(f.versions[study]) {
		out = append(out, cloneVersion(v, false))
	}
	return out, nil
}

func (f *fakeStore) TeacherVersion(ctx context.Context, study string, n int64) (alignet.TeacherVersion, error) {
	done, err := f.enter(ctx, "TeacherVersion")
	if err != nil {
		return alignet.TeacherVersion{}, err
	}
	defer done()
	if err := pgText(study); err != nil {
		return alignet.TeacherVersion{}, err
	}
	vs := f.versions[study]
	for _, v := range slices.Backward(vs) {
		if v.Version == n || n == 0 {
			return cloneVersion(v, true), nil
		}
	}
	return alignet.TeacherVersion{}, fmt.Errorf("teacher version %d of %q: %w", n, study, alignet.ErrNotFound)
}

func (f *fakeStore) RequestRefit(ctx context.Context, study string) error {
	done, err := f.enter(ctx, "RequestRefit")
	if err != nil {
		return err
	}
	defer done()
	if err := pgText(study); err != nil {
		return err
	}
	if _, ok := f.studies[study]; !ok {
		return fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	f.refits[study] = true
	return nil
}

func (f *fakeStore) TakeRefitRequests(ctx context.Context, studies []string) ([]string, error) {
	done, err := f.enter(ctx, "TakeRefitRequests")
	if err != nil {
		return nil, err
	}
	defer done()
	var out []string
	for _, id := range studies {
		if f.refits[id] {
			out = append(out, id)
			delete(f.refits, id)
		}
	}
	return out, nil
}
