package api

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/internal/storetest"
)

// fakePoolSize is the fake's connection pool, the size of db's default.
const fakePoolSize = 16

// fakeStore is an in-memory store with the documented semantics of *db.DB;
// TestFakeStoreSuite holds it to the suite *db.DB passes. It models the
// connection pool: each call holds one of fakePoolSize connections while
// it runs (an export for as long as it streams) and waits for one when all
// are taken, as pgxpool does.
type fakeStore struct {
	conns chan struct{}

	mu         sync.Mutex
	spaces     map[string]alignet.Space
	embeddings map[string]map[string][]float32
	studies    map[string]alignet.Study
	items      map[string]map[string]bool
	judgments  []alignet.Judgment        // sorted by (received_at, id, study); replaced, never modified
	keys       map[string]alignet.APIKey // by hash
	keyHash    map[string]string         // id -> hash
	itemsRev   map[string]int64          // study -> items revision
	embRev     map[string]int64          // space -> embeddings revision
	states     map[string]alignet.TeacherState
	versions   map[string][]alignet.TeacherVersion // oldest first
	refits     map[string]bool
	sessions   map[[2]string]alignet.Session // by (study, id)
	queries    map[[2]string]*fakeQuery      // by (study, id)
	byWorker   map[[2]string][]*fakeQuery    // by (study, worker)
	flags      map[[2]string]*fakeFlags      // by (study, worker)
	repeats    map[string][][3]string
	displays   map[string]alignet.ItemDisplay // label and image URL by item; made on first use
	images     map[string]fakeImage           // uploaded images by item; made on first use
	down       error                          // returned by every method when set
	exportErr  error                          // returned by ExportJudgments after exportOK rows
	exportOK   int
	calls      map[string]int
	inUse      int // connections held now
	peak       int // most connections held at once
	trainer    *fakeTrainer
}

// The fake and *db.DB implement every interface the API consumes, and the
// suite's Store covers them all.
var (
	_ storetest.Store  = (*fakeStore)(nil)
	_ SpaceStore       = storetest.Store(nil)
	_ StudyStore       = storetest.Store(nil)
	_ SettingsStore    = storetest.Store(nil)
	_ TeacherStore     = storetest.Store(nil)
	_ TeacherSource    = storetest.Store(nil)
	_ JudgmentExporter = storetest.Store(nil)
	_ KeyStore         = storetest.Store(nil)
	_ WorkerStore      = storetest.Store(nil)
	_ ItemStore        = storetest.Store(nil)
	_ ReadinessChecker = storetest.Store(nil)
	_ SessionStore     = storetest.Store(nil)
	_ FlagStore        = storetest.Store(nil)
	_ TrainerStore     = storetest.Store(nil)
)

func TestFakeStoreSuite(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) storetest.Store { return newFakeStore() })
}

func newFakeStore() *fakeStore {
	return &fakeStore{
		conns:      make(chan struct{}, fakePoolSize),
		spaces:     map[string]alignet.Space{},
		embeddings: map[string]map[string][]float32{},
		studies:    map[string]alignet.Study{},
		items:      map[string]map[string]bool{},
		keys:       map[string]alignet.APIKey{},
		keyHash:    map[string]string{},
		itemsRev:   map[string]int64{},
		embRev:     map[string]int64{},
		states:     map[string]alignet.TeacherState{},
		versions:   map[string][]alignet.TeacherVersion{},
		refits:     map[string]bool{},
		sessions:   map[[2]string]alignet.Session{},
		queries:    map[[2]string]*fakeQuery{},
		byWorker:   map[[2]string][]*fakeQuery{},
		flags:      map[[2]string]*fakeFlags{},
		repeats:    map[string][][3]string{},
		calls:      map[string]int{},
	}
}

// deps returns Deps with every store role filled by f.
func (f *fakeStore) deps(pub Publisher) Deps {
	return StoreDeps(f, pub)
}

// enter counts a call of op, fails when the store is down, takes a pool
// connection and locks the store. The caller must call the returned func.
func (f *fakeStore) enter(ctx context.Context, op string) (func(), error) {
	f.mu.Lock()
	f.calls[op]++
	down := f.down
	f.mu.Unlock()
	if down != nil {
		return nil, down
	}
	select {
	case f.conns <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("fake pool: acquire connection: %w", ctx.Err())
	}
	f.mu.Lock()
	f.inUse++
	f.peak = max(f.peak, f.inUse)
	return func() {
		f.inUse--
		f.mu.Unlock()
		<-f.conns
	}, nil
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

// connStats returns the connections held now and the most held at once.
func (f *fakeStore) connStats() (inUse, peak int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inUse, f.peak
}

// pgText fails like Postgres does for text it cannot take, whether to
// store it or to look it up.
func pgText(ss ...string) error {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("fake: invalid byte sequence for encoding UTF8 in %q", s)
		}
	}
	return nil
}

func (f *fakeStore) PutSpace(ctx context.Context, name string, dim int) (alignet.Space, bool, error) {
	done, err := f.enter(ctx, "PutSpace")
	if err != nil {
		return alignet.Space{}, false, err
	}
	defer done()
	if err := pgText(name); err != nil {
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
	done, err := f.enter(ctx, "GetSpace")
	if err != nil {
		return alignet.Space{}, err
	}
	defer done()
	if err := pgText(name); err != nil {
		return alignet.Space{}, err
	}
	sp, ok := f.spaces[name]
	if !ok {
		return alignet.Space{}, fmt.Errorf("space %q: %w", name, alignet.ErrNotFound)
	}
	return sp, nil
}

func (f *fakeStore) UpsertEmbeddings(ctx context.Context, space string, ids []string, vectors []float32) (int64, error) {
	done, err := f.enter(ctx, "UpsertEmbeddings")
	if err != nil {
		return 0, err
	}
	defer done()
	if err := pgText(space); err != nil {
		return 0, err
	}
	sp, ok := f.spaces[space]
	if !ok {
		return 0, fmt.Errorf("space %q: %w", space, alignet.ErrNotFound)
	}
	if len(vectors) != len(ids)*sp.Dim {
		return 0, fmt.Errorf("fake: %d vectors for %d ids of dim %d", len(vectors), len(ids), sp.Dim)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if id == "" || seen[id] {
			return 0, fmt.Errorf("fake: empty or duplicate id %q", id)
		}
		if err := pgText(id); err != nil {
			return 0, err
		}
		seen[id] = true
	}
	for i, id := range ids {
		f.embeddings[space][id] = slices.Clone(vectors[i*sp.Dim : (i+1)*sp.Dim])
	}
	if len(ids) > 0 {
		f.embRev[space]++
	}
	return int64(len(ids)), nil
}

func (f *fakeStore) CountEmbeddings(ctx context.Context, space string) (int64, error) {
	done, err := f.enter(ctx, "CountEmbeddings")
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
	return int64(len(f.embeddings[space])), nil
}

func (f *fakeStore) CreateStudy(ctx context.Context, s alignet.Study) (alignet.Study, bool, error) {
	done, err := f.enter(ctx, "CreateStudy")
	if err != nil {
		return alignet.Study{}, false, err
	}
	defer done()
	if err := pgText(s.ID, s.Space); err != nil {
		return alignet.Study{}, false, err
	}
	if _, ok := f.spaces[s.Space]; !ok {
		return alignet.Study{}, false, fmt.Errorf("space %q: %w", s.Space, alignet.ErrNotFound)
	}
	if got, ok := f.studies[s.ID]; ok {
		if got.Task != s.Task || got.Space != s.Space {
			return alignet.Study{}, false, fmt.Errorf("study %q: %w", s.ID, alignet.ErrConflict)
		}
		got.Settings = cloneSettings(got.Settings)
		return got, false, nil
	}
	s.CreatedAt = time.Now().UTC()
	if reflect.DeepEqual(s.Settings, alignet.StudySettings{}) {
		s.Settings = alignet.DefaultStudySettings()
	}
	s.Settings = cloneSettings(s.Settings)
	f.studies[s.ID] = s
	s.Settings = cloneSettings(s.Settings)
	f.items[s.ID] = map[string]bool{}
	return s, true, nil
}

func (f *fakeStore) GetStudy(ctx context.Context, id string) (alignet.Study, error) {
	done, err := f.enter(ctx, "GetStudy")
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
	st.Settings = cloneSettings(st.Settings)
	return st, nil
}

func (f *fakeStore) ListStudies(ctx context.Context) ([]alignet.Study, error) {
	done, err := f.enter(ctx, "ListStudies")
	if err != nil {
		return nil, err
	}
	defer done()
	out := []alignet.Study{}
	for _, st := range f.studies {
		st.Settings = cloneSettings(st.Settings)
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b alignet.Study) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (f *fakeStore) AddStudyItems(ctx context.Context, study string, items []string) (int64, error) {
	done, err := f.enter(ctx, "AddStudyItems")
	if err != nil {
		return 0, err
	}
	defer done()
	if err := pgText(study); err != nil {
		return 0, err
	}
	pool, ok := f.items[study]
	if !ok {
		return 0, fmt.Errorf("study %q: %w", study, alignet.ErrNotFound)
	}
	for _, it := range items {
		if it == "" {
			return 0, errors.New("fake: empty item")
		}
		if err := pgText(it); err != nil {
			return 0, err
		}
	}
	var n int64
	for _, it := range items {
		if !pool[it] {
			pool[it] = true
			n++
		}
	}
	if n > 0 {
		f.itemsRev[study]++
	}
	return n, nil
}

func (f *fakeStore) StudyItems(ctx context.Context, study string) ([]string, error) {
	done, err := f.enter(ctx, "StudyItems")
	if err != nil {
		return nil, err
	}
	defer done()
	if err := pgText(study); err != nil {
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
	slices.Sort(out)
	return out, nil
}

// judgmentOrder is the export order: (received_at, id, study).
func judgmentOrder(a, b alignet.Judgment) int {
	return cmp.Or(a.ReceivedAt.Compare(b.ReceivedAt), strings.Compare(a.ID, b.ID), strings.Compare(a.Study, b.Study))
}

func (f *fakeStore) InsertJudgments(ctx context.Context, js []alignet.Judgment) (int64, error) {
	done, err := f.enter(ctx, "InsertJudgments")
	if err != nil {
		return 0, err
	}
	defer done()
	return f.insertLocked(js)
}

func (f *fakeStore) insertLocked(js []alignet.Judgment) (int64, error) {
	stored := make(map[[2]string]bool, len(f.judgments))
	for _, j := range f.judgments {
		stored[[2]string{j.Study, j.ID}] = true
	}
	var add []alignet.Judgment
	for _, j := range js {
		if j.Study == "" || j.ID == "" {
			return 0, errors.New("fake: empty study or id")
		}
		if _, ok := f.studies[j.Study]; !ok {
			return 0, fmt.Errorf("study %q: %w", j.Study, alignet.ErrNotFound)
		}
		if err := pgText(j.ID, j.Worker, j.Items[0], j.Items[1], j.Items[2], j.Odd, j.QueryID); err != nil {
			return 0, err
		}
		if k := [2]string{j.Study, j.ID}; !stored[k] {
			stored[k] = true
			add = append(add, j)
		}
	}
	// A new slice, so exports iterating the old one are not disturbed.
	all := slices.Concat(f.judgments, add)
	slices.SortStableFunc(all, judgmentOrder)
	f.judgments = all
	return int64(len(add)), nil
}

// addJudgments stores judgments as the persister would.
func (f *fakeStore) addJudgments(js []alignet.Judgment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.insertLocked(js); err != nil {
		panic(err)
	}
}

func (f *fakeStore) ExportJudgments(ctx context.Context, jf alignet.JudgmentFilter, fn func(alignet.Judgment) error) error {
	done, err := f.enter(ctx, "ExportJudgments")
	if err != nil {
		return err
	}
	// The connection is held until the export ends; the lock only while
	// reading the state.
	unlocked := false
	defer func() {
		if unlocked {
			f.mu.Lock()
		}
		done()
	}()
	if err := pgText(jf.Study, jf.Worker); err != nil {
		return err
	}
	if _, ok := f.studies[jf.Study]; jf.Study != "" && !ok {
		return fmt.Errorf("study %q: %w", jf.Study, alignet.ErrNotFound)
	}
	all, failErr, failAfter := f.judgments, f.exportErr, f.exportOK
	f.mu.Unlock()
	unlocked = true
	n := 0
	for _, j := range all {
		if jf.Study != "" && j.Study != jf.Study || !jf.Since.IsZero() && j.ReceivedAt.Before(jf.Since) ||
			!jf.Until.IsZero() && !j.ReceivedAt.Before(jf.Until) || jf.Worker != "" && j.Worker != jf.Worker {
			continue
		}
		if failErr != nil && n == failAfter {
			return failErr
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(j); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		n++
	}
	return failErr
}

func (f *fakeStore) CountJudgments(ctx context.Context, study string) (int64, error) {
	done, err := f.enter(ctx, "CountJudgments")
	if err != nil {
		return 0, err
	}
	defer done()
	if err := pgText(study); err != nil {
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
	done, err := f.enter(ctx, "WorkerSummary")
	if err != nil {
		return nil, err
	}
	defer done()
	if err := pgText(worker); err != nil {
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
	slices.SortFunc(out, func(a, b alignet.WorkerStudy) int { return strings.Compare(a.Study, b.Study) })
	return out, nil
}

// checkKeyLocked checks k and hash as *db.DB does and fills k's defaults.
func (f *fakeStore) checkKeyLocked(k *alignet.APIKey, hash []byte) error {
	if len(hash) != sha256.Size {
		return fmt.Errorf("fake: hash has %d bytes", len(hash))
	}
	if err := pgText(k.ID, k.Name, k.Prefix); err != nil {
		return err
	}
	if k.ID == "" {
		k.ID = fmt.Sprintf("fake-key-%d", len(f.keyHash)+1)
	}
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
	k.CreatedAt, k.RevokedAt = time.Now().UTC(), nil
	return nil
}

func (f *fakeStore) CreateAPIKey(ctx context.Context, k alignet.APIKey, hash []byte) (alignet.APIKey, error) {
	done, err := f.enter(ctx, "CreateAPIKey")
	if err != nil {
		return alignet.APIKey{}, err
	}
	defer done()
	if err := f.checkKeyLocked(&k, hash); err != nil {
		return alignet.APIKey{}, err
	}
	h := string(hash)
	if _, ok := f.keys[h]; ok {
		return alignet.APIKey{}, fmt.Errorf("api key: %w", alignet.ErrConflict)
	}
	if _, ok := f.keyHash[k.ID]; ok {
		return alignet.APIKey{}, fmt.Errorf("api key %q: %w", k.ID, alignet.ErrConflict)
	}
	if _, ok := f.studies[k.Study]; k.Study != "" && !ok {
		return alignet.APIKey{}, fmt.Errorf("api key %q: study %q: %w", k.ID, k.Study, alignet.ErrNotFound)
	}
	f.keys[h] = k
	f.keyHash[k.ID] = h
	return k, nil
}

func (f *fakeStore) EnsureAPIKey(ctx context.Context, k alignet.APIKey, hash []byte) error {
	done, err := f.enter(ctx, "EnsureAPIKey")
	if err != nil {
		return err
	}
	defer done()
	if err := f.checkKeyLocked(&k, hash); err != nil {
		return err
	}
	h := string(hash)
	if _, ok := f.keys[h]; ok {
		return nil
	}
	if _, ok := f.keyHash[k.ID]; ok {
		return fmt.Errorf("api key %q: %w", k.ID, alignet.ErrConflict)
	}
	f.keys[h] = k
	f.keyHash[k.ID] = h
	return nil
}

func (f *fakeStore) APIKeyByHash(ctx context.Context, hash []byte) (alignet.APIKey, error) {
	done, err := f.enter(ctx, "APIKeyByHash")
	if err != nil {
		return alignet.APIKey{}, err
	}
	defer done()
	k, ok := f.keys[string(hash)]
	if !ok || k.RevokedAt != nil {
		return alignet.APIKey{}, fmt.Errorf("api key: %w", alignet.ErrNotFound)
	}
	return k, nil
}

func (f *fakeStore) ListAPIKeys(ctx context.Context) ([]alignet.APIKey, error) {
	done, err := f.enter(ctx, "ListAPIKeys")
	if err != nil {
		return nil, err
	}
	defer done()
	out := []alignet.APIKey{}
	for _, k := range f.keys {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b alignet.APIKey) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

func (f *fakeStore) RevokeAPIKey(ctx context.Context, id string) error {
	done, err := f.enter(ctx, "RevokeAPIKey")
	if err != nil {
		return err
	}
	defer done()
	if err := pgText(id); err != nil {
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

func (f *fakeStore) KeysRevokedSince(ctx context.Context, since time.Time) ([]string, time.Time, error) {
	done, err := f.enter(ctx, "KeysRevokedSince")
	if err != nil {
		return nil, time.Time{}, err
	}
	defer done()
	ids := []string{}
	for _, k := range f.keys {
		if k.RevokedAt != nil && !k.RevokedAt.Before(since) {
			ids = append(ids, k.ID)
		}
	}
	slices.Sort(ids)
	return ids, time.Now().UTC(), nil
}

func (f *fakeStore) Ready(ctx context.Context) error {
	done, err := f.enter(ctx, "Ready")
	if err != nil {
		return err
	}
	done()
	return nil
}

// fakePublisher records published batches. It can fail with
// alignet.ErrUnavailable, or block each Publish until released. With
// maxBytes set it refuses batches whose JSON encoding is larger, with
// alignet.ErrTooLarge, as the stream producer does.
type fakePublisher struct {
	mu       sync.Mutex
	batches  [][]alignet.Judgment
	fail     bool
	gate     chan struct{} // when non-nil, Publish waits for a receive on it
	entered  chan struct{} // when non-nil, Publish signals entry
	pingErr  error
	maxBytes int
}

func (p *fakePublisher) Publish(ctx context.Context, study string, js []alignet.Judgment) error {
	p.mu.Lock()
	gate, entered, fail, maxBytes := p.gate, p.entered, p.fail, p.maxBytes
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
		if err := j.Validate(); err != nil {
			return fmt.Errorf("fake: invalid judgment published: %w", err)
		}
	}
	if maxBytes > 0 {
		b, err := json.Marshal(js)
		if err != nil {
			return err
		}
		if len(b) > maxBytes {
			return fmt.Errorf("fake: batch encodes to %d bytes, limit %d: %w", len(b), maxBytes, alignet.ErrTooLarge)
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
