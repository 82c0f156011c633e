package online

import (
	"context"
	"fmt"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// space is an immutable snapshot of a study's items and their embeddings:
// row r of x is the vector of items[r]. Rows never move, so triplets of
// rows stay valid across refreshes, which only append items and fill in
// vectors that were missing.
type space struct {
	dim     int
	items   []string
	index   map[string]int32
	x       []float32
	has     []bool
	missing int
}

// loadSpace reads the items of study and their embeddings.
func loadSpace(ctx context.Context, store Store, st alignet.Study) (*space, error) {
	sp, err := store.GetSpace(ctx, st.Space)
	if err != nil {
		return nil, fmt.Errorf("space %q: %w", st.Space, err)
	}
	empty := &space{dim: sp.Dim, index: map[string]int32{}}
	return empty.refresh(ctx, store, st)
}

// refresh returns a snapshot with the study's new items appended and the
// embeddings that appeared since filled in, or s itself when nothing
// changed.
func (s *space) refresh(ctx context.Context, store Store, st alignet.Study) (*space, error) {
	items, err := store.StudyItems(ctx, st.ID)
	if err != nil {
		return nil, fmt.Errorf("items: %w", err)
	}
	var added []string
	for _, it := range items {
		if _, ok := s.index[it]; !ok {
			added = append(added, it)
		}
	}
	var want []string
	var rows []int32
	for r, ok := range s.has {
		if !ok {
			want = append(want, s.items[r])
			rows = append(rows, int32(r))
		}
	}
	for i, it := range added {
		want = append(want, it)
		rows = append(rows, int32(len(s.items)+i))
	}
	if len(want) == 0 {
		return s, nil
	}
	vecs, found, err := store.LoadEmbeddings(ctx, st.Space, want)
	if err != nil {
		return nil, fmt.Errorf("embeddings: %w", err)
	}
	anyFound := false
	for _, f := range found {
		anyFound = anyFound || f
	}
	if !anyFound && len(added) == 0 {
		return s, nil
	}
	n := len(s.items) + len(added)
	out := &space{
		dim:   s.dim,
		items: append(append(make([]string, 0, n), s.items...), added...),
		index: make(map[string]int32, n),
		x:     make([]float32, n*s.dim),
		has:   make([]bool, n),
	}
	copy(out.x, s.x)
	copy(out.has, s.has)
	for r, it := range out.items {
		out.index[it] = int32(r)
	}
	for i, r := range rows {
		if found[i] {
			copy(out.x[int(r)*s.dim:int(r+1)*s.dim], vecs[i*s.dim:(i+1)*s.dim])
			out.has[r] = true
		}
	}
	for _, ok := range out.has {
		if !ok {
			out.missing++
		}
	}
	return out, nil
}

// n returns the number of rows.
func (s *space) n() int { return len(s.items) }

// triplet maps a judgment to its triplet of rows: for odd-one-out I and J
// are the pair kept together (in display order) and K the odd one; for
// anchor I is the head, J the close and K the far item. known is false
// when an item is not in the snapshot, embedded when every item has a
// vector.
func (s *space) triplet(j *alignet.Judgment) (t learner.Triplet, known, embedded bool) {
	var r [3]int32
	for a, it := range j.Items {
		v, ok := s.index[it]
		if !ok {
			return t, false, false
		}
		r[a] = v
	}
	if j.Task == alignet.TaskAnchor {
		t = learner.Triplet{I: r[0], J: r[1], K: r[2]}
	} else {
		var pair []int32
		odd := int32(-1)
		for a, it := range j.Items {
			if it == j.Odd {
				odd = r[a]
			} else {
				pair = append(pair, r[a])
			}
		}
		if odd < 0 || len(pair) != 2 {
			return t, false, false
		}
		t = learner.Triplet{I: pair[0], J: pair[1], K: odd}
	}
	return t, true, s.has[t.I] && s.has[t.J] && s.has[t.K]
}

// embedded returns the rows that have vectors.
func (s *space) embedded() []int32 {
	out := make([]int32, 0, len(s.items)-s.missing)
	for r, ok := range s.has {
		if ok {
			out = append(out, int32(r))
		}
	}
	return out
}
