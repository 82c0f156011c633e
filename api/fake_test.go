package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/alignet/alignet"
)

// fakeStore is an in-memory Store with the documented semantics of *db.DB.
type fakeStore struct {
	mu         sync.Mutex
	spaces     map[string]alignet.Space
	embeddings map[string]map[string][]float32
	studies    map[string]alignet.Study
	items      map[string]map[string]bool
	judgments  []alignet.Judgment
	keys       map[string]alignet.APIKey // by hex hash
	keyHash    map[string]string         // id -> hash
	down       error                     // returned by every method when set
	exportErr  error                     // returned by ExportJudgments after exportOK rows
	exportOK   int
	calls      map[string]int
}

func newFakeStore() *fakeStore {
	return &fakeStore{
		spaces:     map[string]alignet.Space{},
		embeddings: map[string]map[string][]float32{},
		studies:    map[string]alignet.Study{},
		items:      map[string]map[string]bool{},
		keys:       map[string]alignet.APIKey{},
		keyHash:    map[string]string{},
		calls:      map[string]int{},
	}
}

func (f *fakeStore) enter(op string) error {
	f.mu.Lock()
	f.calls[op]++
	return f.down
}

func (f *fakeStore) setDown(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = err
}

func (f *fakeStore) callCount(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeStore) PutSpace(ctx context.Context, name string, dim int) (alignet.Space, bool, error) {
	defer f.mu.Unlock()
	if err := f.enter("PutSpace"); err != nil {
		return alignet.Space{}, false, err
	}
	if sp, ok := f.spaces[name]; ok {
		if sp.Dim != dim {
			return alignet.Space{}, false, fmt.Errorf("put space: %w", alignet.ErrConflict)
		}
		return sp, false, nil
	}
	sp := alignet.Space{Name: name, Dim: dim, CreatedAt: time.Now().UTC()}
	f.spaces[name] = sp
	f.embeddings[name] = map[string][]float32{}
	return sp, true, nil
}

func (f *fakeStore) GetSpace(ctx context.Context, name string) (alignet.Space, error) {
	defer f.mu.Unlock()
	if err := f.enter("GetSpace"); err != nil {
		return alignet.Space{}, err
	}
	sp, ok := f.spaces[name]
	if !ok {
		return alignet.Space{}, fmt.Errorf("space %q: %w", name, alignet.ErrNotFound)
	}
	return sp, nil
}

func (f *fakeStore) UpsertEmbeddings(ctx context.Context, space string, ids []string, vectors []float32) (int64, error) {
	defer f.mu.Unlock()
	if err := f.enter("UpsertEmbeddings"); err != nil {
		return 0, err
	}
	sp, ok := f.spaces[space]
	if !ok {
		return 0, fmt.Errorf("space %q: %w", space, alignet.ErrNotFound)
	}
	if len(vectors) != len(ids)*sp.Dim {
		return 0, fmt.Errorf("fake: %d vectors for %d ids of dim %d", len(vectors), len(ids), sp.Dim)
	}
	for i, id := range ids {
		f.embeddings[space][id] = slices.Clone(vectors[i*sp.Dim : (i+1)*sp.Dim])
	}
	return int64(len(ids)), nil
}

func (f *fakeStore) CountEmbeddings(ctx context.Context, space string) (int64, error) {
	defer f.mu.Unlock()
	if err := f.enter("CountEmbeddings"); err != nil {
		return 0, err
	}
	if _, ok := f.spaces[space]; !ok {
		return 0, fmt.Errorf("space %q: %w", space, alignet.ErrNotFound)
	}
	return int64(len(f.embeddings[space])), nil
}

func (f *fakeStore) CreateStudy(ctx context.Context, s alignet.Study) (alignet.Study, bool, error) {
	defer f.mu.Unlock()
	if err := f.enter("CreateStudy"); err != nil {
		return alignet.Study{}, false, err
	}
	if _, ok := f.spaces[s.Space]; !ok {
		return alignet.Study{}, false, fmt.Errorf("space %q: %w", s.Space, alignet.ErrNotFound)
	}
	if got, ok := f.studies[s.ID]; ok {
		if got.Task != s.Task || got.Space != s.Space {
			return alignet.Study{}, false, fmt.Errorf("study %q: %w", s.ID, alignet.ErrConflict)
		}
		return got, false, nil
	}
	s.CreatedAt = time.Now().UTC()
	f.studies[s.ID] = s
	f.items[s.ID] = map[string]bool{}
	return s, true, nil
}

func (f *fakeStore) GetStudy(ctx context.Context, id string) (alignet.Study, error) {
	defer f.mu.Unlock()
	if err := f.enter("GetStudy"); err != nil {
		return alignet.Study{}, err
	}
	st, ok := f.studies[id]
	if !ok {
		return alignet.Study{}, fmt.Errorf("study %q: %w", id, alignet.ErrNotFound)
	}
	return st, nil
}

func (f *fakeStore) ListStudies(ctx context.Context) ([]alignet.Study, error) {
	defer f.mu.Unlock()
	if err := f.enter("ListStudies"); err != nil {
		return nil, err
	}
	out := []alignet.Study{}
	for _, st := range f.studies {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *fakeStore) AddStudyItems(ctx context.Context, study string, items []string) (int64, error) {
	defer f.mu.Unlock()
	if err := f.enter("AddStudyItems"); err != nil {
		return 0, err
	}
	pool, ok := f.items[study]
	if !ok {
		return 0, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	var n int64
	for _, it := range items {
		if it == "" {
			return 0, errors.New("fake: empty item")
		}
		if !pool[it] {
			pool[it] = true
			n++
		}
	}
	return n, nil
}

func (f *fakeStore) StudyItems(ctx context.Context, study string) ([]string, error) {
	defer f.mu.Unlock()
	if err := f.enter("StudyItems"); err != nil {
		return nil, err
	}
	pool, ok := f.items[study]
	if !ok {
		return nil, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	out := []string{}
	for it := range pool {
		out = append(out, it)
	}
	sort.Strings(out)
	return out, nil
}

// addJudgments stores judgments as the consumer would.
func (f *fakeStore) addJudgments(js []alignet.Judgment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.judgments = append(f.judgments, js...)
}

func (f *fakeStore) ExportJudgments(ctx context.Context, jf alignet.JudgmentFilter, fn func(alignet.Judgment) error) error {
	f.mu.Lock()
	if err := f.down; err != nil {
		f.mu.Unlock()
		return err
	}
	if _, ok := f.studies[jf.Study]; jf.Study != "" && !ok {
		f.mu.Unlock()
		return fmt.Errorf("study %q: %w", jf.Study, alignet.ErrNotFound)
	}
	var sel []alignet.Judgment
	for _, j := range f.judgments {
		if jf.Study != "" && j.Study != jf.Study || !jf.Since.IsZero() && j.ReceivedAt.Before(jf.Since) ||
			!jf.Until.IsZero() && !j.ReceivedAt.Before(jf.Until) || jf.Worker != "" && j.Worker != jf.Worker {
			continue
		}
		sel = append(sel, j)
	}
	failErr, failAfter := f.exportErr, f.exportOK
	f.mu.Unlock()
	for i, j := range sel {
		if failErr != nil && i == failAfter {
			return failErr
		}
		if err := fn(j); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	if failErr != nil {
		return failErr
	}
	return nil
}

func (f *fakeStore) CountJudgments(ctx context.Context, study string) (int64, error) {
	defer f.mu.Unlock()
	if err := f.enter("CountJudgments"); err != nil {
		return 0, err
	}
	if _, ok := f.studies[study]; !ok {
		return 0, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	var n int64
	for _, j := range f.judgments {
		if j.Study == study {
			n++
		}
	}
	return n, nil
}

func (f *fakeStore) WorkerSummary(ctx context.Context, worker string) ([]alignet.WorkerStudy, error) {
	defer f.mu.Unlock()
	if err := f.enter("WorkerSummary"); err != nil {
		return nil, err
	}
	by := map[string]*alignet.WorkerStudy{}
	for _, j := range f.judgments {
		if j.Worker != worker {
			continue
		}
		w := by[j.Study]
		if w == nil {
			w = &alignet.WorkerStudy{Study: j.Study, First: j.ReceivedAt, Last: j.ReceivedAt}
			by[j.Study] = w
		}
		w.Judgments++
		if j.ReceivedAt.Before(w.First) {
			w.First = j.ReceivedAt
		}
		if j.ReceivedAt.After(w.Last) {
			w.Last = j.ReceivedAt
		}
	}
	out := []alignet.WorkerStudy{}
	for _, w := range by {
		out = append(out, *w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Study < out[j].Study })
	return out, nil
}

func (f *fakeStore) CreateAPIKey(ctx context.Context, k alignet.APIKey, hash []byte) (alignet.APIKey, error) {
	defer f.mu.Unlock()
	if err := f.enter("CreateAPIKey"); err != nil {
		return alignet.APIKey{}, err
	}
	h := string(hash)
	if _, ok := f.keys[h]; ok {
		return alignet.APIKey{}, alignet.ErrConflict
	}
	if _, ok := f.keyHash[k.ID]; ok {
		return alignet.APIKey{}, alignet.ErrConflict
	}
	k.CreatedAt = time.Now().UTC()
	f.keys[h] = k
	f.keyHash[k.ID] = h
	return k, nil
}

func (f *fakeStore) EnsureAPIKey(ctx context.Context, k alignet.APIKey, hash []byte) error {
	defer f.mu.Unlock()
	if err := f.enter("EnsureAPIKey"); err != nil {
		return err
	}
	h := string(hash)
	if _, ok := f.keys[h]; ok {
		return nil
	}
	k.CreatedAt = time.Now().UTC()
	f.keys[h] = k
	f.keyHash[k.ID] = h
	return nil
}

func (f *fakeStore) APIKeyByHash(ctx context.Context, hash []byte) (alignet.APIKey, error) {
	defer f.mu.Unlock()
	if err := f.enter("APIKeyByHash"); err != nil {
		return alignet.APIKey{}, err
	}
	k, ok := f.keys[string(hash)]
	if !ok || k.RevokedAt != nil {
		return alignet.APIKey{}, fmt.Errorf("api key: %w", alignet.ErrNotFound)
	}
	return k, nil
}

func (f *fakeStore) ListAPIKeys(ctx context.Context) ([]alignet.APIKey, error) {
	defer f.mu.Unlock()
	if err := f.enter("ListAPIKeys"); err != nil {
		return nil, err
	}
	out := []alignet.APIKey{}
	for _, k := range f.keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *fakeStore) RevokeAPIKey(ctx context.Context, id string) error {
	defer f.mu.Unlock()
	if err := f.enter("RevokeAPIKey"); err != nil {
		return err
	}
	h, ok := f.keyHash[id]
	if !ok {
		return fmt.Errorf("api key %q: %w", id, alignet.ErrNotFound)
	}
	k := f.keys[h]
	if k.RevokedAt == nil {
		now := time.Now().UTC()
		k.RevokedAt = &now
		f.keys[h] = k
	}
	return nil
}

func (f *fakeStore) Ready(ctx context.Context) error {
	defer f.mu.Unlock()
	if err := f.enter("Ready"); err != nil {
		return err
	}
	return nil
}

// fakePublisher records published batches. It can fail with
// alignet.ErrUnavailable, or block each Publish until released.
type fakePublisher struct {
	mu      sync.Mutex
	batches [][]alignet.Judgment
	fail    bool
	gate    chan struct{} // when non-nil, Publish waits for a receive on it
	entered chan struct{} // when non-nil, Publish signals entry
	pingErr error
}

func (p *fakePublisher) Publish(ctx context.Context, study string, js []alignet.Judgment) error {
	p.mu.Lock()
	gate, entered, fail := p.gate, p.entered, p.fail
	p.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail {
		return fmt.Errorf("fake kafka: %w", alignet.ErrUnavailable)
	}
	for _, j := range js {
		if j.Study != study {
			return fmt.Errorf("fake: judgment of study %q published to %q", j.Study, study)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.batches = append(p.batches, slices.Clone(js))
	return nil
}

func (p *fakePublisher) Ping(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pingErr
}

func (p *fakePublisher) setFail(fail bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = fail
}

// published returns all published judgments in order.
func (p *fakePublisher) published() []alignet.Judgment {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []alignet.Judgment
	for _, b := range p.batches {
		out = append(out, b...)
	}
	return out
}

func (p *fakePublisher) batchCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.batches)
}

// nopPublisher accepts everything and records nothing.
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, string, []alignet.Judgment) error { return nil }
func (nopPublisher) Ping(context.Context) error                                { return nil }

func dbStudy(id string) alignet.Study {
	return alignet.Study{ID: id, Task: alignet.TaskOddOneOut, Space: "clip"}
}
