package online

import (
	"math/rand/v2"
	"slices"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// idSet is a set of 64-bit id hashes (open addressing, linear probing),
// about 12 bytes per id instead of a Go map's 40.
type idSet struct {
	slots []uint64 // 0 marks an empty slot; the hash 0 is kept in zero
	n     int
	zero  bool
}

func newIDSet(hint int) *idSet {
	s := &idSet{}
	s.grow(hint)
	return s
}

// len returns the number of ids in the set.
func (s *idSet) len() int {
	if s.zero {
		return s.n + 1
	}
	return s.n
}

func (s *idSet) slot(h uint64) int {
	// Fibonacci hashing spreads FNV values that differ in low bits.
	return int(((h * 0x9e3779b97f4a7c15) >> 1) % uint64(len(s.slots)))
}

// has reports whether h is in the set.
func (s *idSet) has(h uint64) bool {
	if h == 0 {
		return s.zero
	}
	if len(s.slots) == 0 {
		return false
	}
	for i := s.slot(h); ; i = (i + 1) % len(s.slots) {
		switch s.slots[i] {
		case h:
			return true
		case 0:
			return false
		}
	}
}

// add inserts h and reports whether it was new.
func (s *idSet) add(h uint64) bool {
	if h == 0 {
		was := s.zero
		s.zero = true
		return !was
	}
	if 10*(s.n+1) > 7*len(s.slots) {
		s.grow(2 * (s.n + 1))
	}
	for i := s.slot(h); ; i = (i + 1) % len(s.slots) {
		switch s.slots[i] {
		case h:
			return false
		case 0:
			s.slots[i] = h
			s.n++
			return true
		}
	}
}

// grow resizes the table to hold at least n ids below the load limit.
func (s *idSet) grow(n int) {
	size := 16
	for 7*size < 10*n {
		size *= 2
	}
	if size <= len(s.slots) {
		return
	}
	old := s.slots
	s.slots = make([]uint64, size)
	s.n = 0
	for _, h := range old {
		if h != 0 {
			s.add(h)
		}
	}
}

// sample is a judgment the learner keeps: its triplet of item rows (hard
// choice), its query kind, the hash of its id, its held-out score
// (alignet.HeldOutScore) and the hash of its worker: what
// alignet.TrainingRoleOf needs to decide its role again when settings or
// flags change.
type sample struct {
	t      learner.Triplet
	kind   kindCode
	hash   uint64
	score  float64
	worker uint64
}

// newSample returns the sample of judgment j of its study over triplet t.
func newSample(j *alignet.Judgment, t learner.Triplet) sample {
	return sample{
		t: t, kind: codeOf(j.QueryKind), hash: alignet.IDHash(j.ID),
		score: alignet.HeldOutScore(j.Study, j.ID), worker: alignet.IDHash(j.Worker),
	}
}

// kindCode is an alignet.QueryKind in one byte: 0 for none, else one
// more than its index in alignet.QueryKinds.
type kindCode uint8

func codeOf(k alignet.QueryKind) kindCode {
	for i, v := range alignet.QueryKinds() {
		if v == k {
			return kindCode(i + 1)
		}
	}
	return 0
}

// kind returns the query kind of c.
func (c kindCode) kind() alignet.QueryKind {
	kinds := alignet.QueryKinds()
	if c == 0 || int(c) > len(kinds) {
		return ""
	}
	return kinds[c-1]
}

// reservoir is the replay buffer: a uniform sample, of at most cap
// entries, of every sample ever added (Vitter's algorithm R).
type reservoir struct {
	cap   int
	items []sample
	added int64
	rng   *rand.Rand
}

func newReservoir(limit int, seed uint64) *reservoir {
	return &reservoir{cap: limit, rng: rand.New(rand.NewPCG(seed, 0x7e91a4))}
}

func (r *reservoir) len() int { return len(r.items) }

// add offers s to the sample.
func (r *reservoir) add(s sample) {
	r.added++
	if len(r.items) < r.cap {
		r.items = append(r.items, s)
		return
	}
	if j := r.rng.Int64N(r.added); j < int64(r.cap) {
		r.items[j] = s
	}
}

// draw appends k samples drawn uniformly with replacement to dst.
func (r *reservoir) draw(k int, dst []sample) []sample {
	if len(r.items) == 0 {
		return dst
	}
	for range k {
		dst = append(dst, r.items[r.rng.IntN(len(r.items))])
	}
	return dst
}

// remove deletes the samples for which drop is true and returns them.
func (r *reservoir) remove(drop func(sample) bool) []sample {
	var out []sample
	kept := r.items[:0]
	for _, s := range r.items {
		if drop(s) {
			out = append(out, s)
			continue
		}
		kept = append(kept, s)
	}
	r.items = kept
	return out
}

// reset empties the sample.
func (r *reservoir) reset() {
	r.items, r.added = r.items[:0], 0
}

// heldRing keeps the newest held-out judgments of a study.
type heldRing struct {
	cap   int
	items []sample
	next  int
}

func (h *heldRing) add(s sample) {
	if len(h.items) < h.cap {
		h.items = append(h.items, s)
		return
	}
	h.items[h.next] = s
	h.next = (h.next + 1) % h.cap
}

// remove deletes the samples for which drop is true and returns them;
// the ring then overwrites from its oldest remaining sample on.
func (h *heldRing) remove(drop func(sample) bool) []sample {
	if len(h.items) == h.cap {
		// Oldest first, so that the next add overwrites the oldest.
		h.items = slices.Concat(h.items[h.next:], h.items[:h.next])
	}
	var out []sample
	kept := h.items[:0]
	for _, s := range h.items {
		if drop(s) {
			out = append(out, s)
			continue
		}
		kept = append(kept, s)
	}
	h.items, h.next = kept, 0
	return out
}

// window is a prequential window: the running means of accuracy and
// log-loss over the last size scored judgments.
type window struct {
	size      int
	acc, loss []float32
	pos, n    int
	sumAcc    float64
	sumLoss   float64
	sinceSum  int
}

func newWindow(size int) *window {
	return &window{size: size, acc: make([]float32, size), loss: make([]float32, size)}
}

// add records one judgment: acc is 1 when the teacher predicted it, else 0.
func (w *window) add(acc, loss float64) {
	if w.n == w.size {
		w.sumAcc -= float64(w.acc[w.pos])
		w.sumLoss -= float64(w.loss[w.pos])
	} else {
		w.n++
	}
	w.acc[w.pos], w.loss[w.pos] = float32(acc), float32(loss)
	w.sumAcc += float64(w.acc[w.pos])
	w.sumLoss += float64(w.loss[w.pos])
	w.pos = (w.pos + 1) % w.size
	// Recompute the sums now and then so that rounding does not drift.
	if w.sinceSum++; w.sinceSum >= w.size {
		w.sinceSum = 0
		w.sumAcc, w.sumLoss = 0, 0
		for i := 0; i < w.n; i++ {
			w.sumAcc += float64(w.acc[i])
			w.sumLoss += float64(w.loss[i])
		}
	}
}

// means returns the window's mean accuracy and log-loss (0 when empty).
func (w *window) means() (acc, loss float64) {
	if w.n == 0 {
		return 0, 0
	}
	return w.sumAcc / float64(w.n), w.sumLoss / float64(w.n)
}

// restore refills an empty window with n judgments of the stored means,
// so that a restarted learner continues the windows it stored (their
// individual entries are not stored).
func (w *window) restore(n int, acc, loss float64) {
	for range min(n, w.size) {
		w.add(acc, loss)
	}
}
