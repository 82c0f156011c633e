package online

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

func TestIDSetMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := newIDSet(0)
	m := map[uint64]bool{}
	for i := range 50000 {
		h := rng.Uint64() % 40000 // many repeats
		if i%1000 == 0 {
			h = 0 // the empty-slot marker is a valid hash too
		}
		if got, want := s.add(h), !m[h]; got != want {
			t.Fatalf("add(%d) = %v, want %v", h, got, want)
		}
		m[h] = true
	}
	if s.len() != len(m) {
		t.Fatalf("len %d, want %d", s.len(), len(m))
	}
	for range 10000 {
		h := rng.Uint64() % 80000
		if s.has(h) != m[h] {
			t.Fatalf("has(%d) = %v, want %v", h, s.has(h), m[h])
		}
	}
}

// TestReservoirIsUniform checks that the replay buffer stays at its cap
// and keeps a uniform sample of everything added: old and new samples are
// equally likely to be replayed.
func TestReservoirIsUniform(t *testing.T) {
	const added, limit = 100000, 5000
	r := newReservoir(limit, 7)
	for i := range added {
		r.add(sample{t: learner.Triplet{I: int32(i)}})
	}
	if r.len() != limit {
		t.Fatalf("len %d, want the cap %d", r.len(), limit)
	}
	var deciles [10]int
	for _, s := range r.items {
		deciles[int(s.t.I)*10/added]++
	}
	// Each decile holds Binomial(5000, 0.1): mean 500, sd ≈ 21.
	for d, c := range deciles {
		if c < 500-110 || c > 500+110 {
			t.Errorf("decile %d of the added samples holds %d of %d kept, want about 500: %v", d, c, limit, deciles)
		}
	}
	drawn := r.draw(20000, nil)
	old := 0
	for _, s := range drawn {
		if int(s.t.I) < added/2 {
			old++
		}
	}
	if math.Abs(float64(old)/20000-0.5) > 0.03 {
		t.Errorf("%d of 20000 draws from the older half, want about half", old)
	}
	gone := r.remove(func(s sample) bool { return s.t.I%2 == 0 })
	if len(gone)+r.len() != limit {
		t.Fatalf("remove: %d removed + %d kept != %d", len(gone), r.len(), limit)
	}
	for _, s := range r.items {
		if s.t.I%2 == 0 {
			t.Fatal("remove kept a dropped sample")
		}
	}
}

// TestWindowMeans compares the rolling windows with the means of the last
// entries computed directly, and checks restore.
func TestWindowMeans(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	w := newWindow(100)
	var accs, losses []float64
	for i := range 1234 {
		a := float64(rng.IntN(2))
		l := rng.ExpFloat64()
		w.add(a, l)
		accs, losses = append(accs, a), append(losses, l)
		if i%97 != 0 {
			continue
		}
		lo := max(0, len(accs)-100)
		var sa, sl float64
		for k := lo; k < len(accs); k++ {
			sa += accs[k]
			sl += float64(float32(losses[k]))
		}
		n := float64(len(accs) - lo)
		ga, gl := w.means()
		if math.Abs(ga-sa/n) > 1e-9 || math.Abs(gl-sl/n) > 1e-6 {
			t.Fatalf("after %d: means %v %v, want %v %v", i+1, ga, gl, sa/n, sl/n)
		}
	}
	r := newWindow(1000)
	r.restore(400, 0.6, 0.9)
	if a, l := r.means(); r.n != 400 || math.Abs(a-0.6) > 1e-6 || math.Abs(l-0.9) > 1e-6 {
		t.Fatalf("restored window n=%d means %v %v", r.n, a, l)
	}
}

func TestHeldRingKeepsNewest(t *testing.T) {
	h := &heldRing{cap: 3}
	for i := range 7 {
		h.add(sample{hash: uint64(i)})
	}
	got := map[uint64]bool{}
	for _, s := range h.items {
		got[s.hash] = true
	}
	if len(h.items) != 3 || !got[4] || !got[5] || !got[6] {
		t.Fatalf("ring holds %v, want the newest 4, 5, 6", h.items)
	}
	// Removing from a full ring keeps the rest, and the next adds
	// overwrite the oldest remaining first.
	h.remove(func(s sample) bool { return s.hash == 5 })
	for i := 7; i < 10; i++ { // 7 fills the ring, 8 overwrites 4, 9 overwrites 6
		h.add(sample{hash: uint64(i)})
	}
	got = map[uint64]bool{}
	for _, s := range h.items {
		got[s.hash] = true
	}
	if len(h.items) != 3 || !got[7] || !got[8] || !got[9] {
		t.Fatalf("ring holds %v after a removal, want the newest 7, 8, 9", h.items)
	}
}

func TestKindCodes(t *testing.T) {
	kinds := alignet.QueryKinds()
	for _, k := range append([]alignet.QueryKind{""}, kinds[:]...) {
		if got := codeOf(k).kind(); got != k {
			t.Fatalf("kind %q comes back as %q", k, got)
		}
	}
}

func TestRepeatsNeedTwoWorkers(t *testing.T) {
	ts := []learner.Triplet{
		{I: 1, J: 2, K: 3}, {I: 3, J: 1, K: 2}, {I: 2, J: 3, K: 1}, // one set, three answers
		{I: 4, J: 5, K: 6}, {I: 6, J: 5, K: 4}, // one worker twice
		{I: 7, J: 8, K: 9},
	}
	workers := []uint64{1, 2, 2, 5, 5, 6}
	reps := repeatsOf(ts, workers)
	if len(reps) != 1 || reps[0].Items != [3]int32{1, 2, 3} || reps[0].Counts != [3]int32{1, 1, 1} {
		t.Fatalf("repeats %+v, want the set {1,2,3} with each item odd once", reps)
	}
}
