package query

import (
	"cmp"
	"hash/fnv"
	"math/rand/v2"
	"slices"

	"github.com/alignet/alignet/learner"
)

// maxItems is the most items a teacher may have: candidate keys pack three
// item indices into 21 bits each.
const maxItems = 1 << 21

// canonical returns tr in its task's canonical order: ascending indices
// for odd-one-out (display order does not matter), and for anchor the
// head first and the two others ascending.
func canonical(task learner.Task, tr learner.Triplet) learner.Triplet {
	a, b, c := tr.I, tr.J, tr.K
	if task == learner.TaskAnchor {
		if b > c {
			b, c = c, b
		}
		return learner.Triplet{I: a, J: b, K: c}
	}
	if a > b {
		a, b = b, a
	}
	if b > c {
		b, c = c, b
	}
	if a > b {
		a, b = b, a
	}
	return learner.Triplet{I: a, J: b, K: c}
}

// packKey packs a canonical triplet into one integer.
func packKey(tr learner.Triplet) uint64 {
	return uint64(tr.I)<<42 | uint64(tr.J)<<21 | uint64(tr.K)
}

func unpackKey(k uint64) learner.Triplet {
	const m = 1<<21 - 1
	return learner.Triplet{I: int32(k >> 42), J: int32(k >> 21 & m), K: int32(k & m)}
}

// tileBits is the log2 of the item block size rescoring works in.
const tileBits = 6

// blockKey is the triple of item blocks of a packed key.
func blockKey(k uint64) uint64 {
	tr := unpackKey(k)
	return uint64(tr.I>>tileBits)<<42 | uint64(tr.J>>tileBits)<<21 | uint64(tr.K>>tileBits)
}

// distinctTriplets returns how many distinct triplets n items form for the
// task (odd-one-out: n choose 3; anchor: a head and an unordered pair).
func distinctTriplets(task learner.Task, n int) float64 {
	if n < 3 {
		return 0
	}
	f := float64(n)
	if task == learner.TaskAnchor {
		return f * (f - 1) * (f - 2) / 2
	}
	return f * (f - 1) * (f - 2) / 6
}

// Candidates returns min(size, all) distinct triplets over n items, drawn
// uniformly without replacement with the seeded generator, each in
// canonical order (see TripletKey), sorted by blocks of their item
// indices. When the
// items form few triplets, all of them are enumerated and a random subset
// taken.
func Candidates(task learner.Task, n, size int, seed uint64) []learner.Triplet {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	total := distinctTriplets(task, n)
	if total == 0 || size <= 0 {
		return nil
	}
	var keys []uint64
	if total <= 4*float64(size) {
		keys = make([]uint64, 0, int(total))
		for i := int32(0); i < int32(n); i++ {
			for j := int32(0); j < int32(n); j++ {
				for k := j + 1; k < int32(n); k++ {
					switch {
					case task == learner.TaskAnchor && i != j && i != k:
						keys = append(keys, packKey(learner.Triplet{I: i, J: j, K: k}))
					case task != learner.TaskAnchor && i < j:
						keys = append(keys, packKey(learner.Triplet{I: i, J: j, K: k}))
					}
				}
			}
		}
	} else {
		keys = make([]uint64, 0, size+size/50+16)
		for len(keys) < size {
			need := size - len(keys)
			for range need + need/50 + 16 {
				keys = append(keys, packKey(canonical(task, randomTriplet(rng, n))))
			}
			slices.Sort(keys)
			keys = slices.Compact(keys)
		}
	}
	rng.Shuffle(len(keys), func(a, b int) { keys[a], keys[b] = keys[b], keys[a] })
	keys = keys[:min(size, len(keys))]
	// Sorted by blocks of item indices, rescoring reads each group of
	// candidates' rows of Z (or entries of the Gram matrix) from a few
	// cache-resident tiles instead of all over memory.
	slices.SortFunc(keys, func(a, b uint64) int {
		return cmp.Or(cmp.Compare(blockKey(a), blockKey(b)), cmp.Compare(a, b))
	})
	out := make([]learner.Triplet, len(keys))
	for i, k := range keys {
		out[i] = unpackKey(k)
	}
	return out
}

// randomTriplet draws three distinct items uniformly (n ≥ 3).
func randomTriplet(rng *rand.Rand, n int) learner.Triplet {
	i := rng.IntN(n)
	j := rng.IntN(n - 1)
	if j >= i {
		j++
	}
	k := rng.IntN(n - 2)
	for _, v := range sorted2(i, j) {
		if k >= v {
			k++
		}
	}
	return learner.Triplet{I: int32(i), J: int32(j), K: int32(k)}
}

func sorted2(a, b int) [2]int {
	if a > b {
		return [2]int{b, a}
	}
	return [2]int{a, b}
}

// TripletKey returns the identity of a triplet of item ids for the task,
// whatever its display order: for odd-one-out the set of the three items,
// for anchor the head and the set of the other two. It is a 64-bit hash of
// the ids, so it does not depend on item indices; a worker is never shown
// two queries with the same key.
func TripletKey(task learner.Task, items [3]string) uint64 {
	a, b, c := items[0], items[1], items[2]
	if task == learner.TaskAnchor {
		if b > c {
			b, c = c, b
		}
	} else {
		if a > b {
			a, b = b, a
		}
		if b > c {
			b, c = c, b
		}
		if a > b {
			a, b = b, a
		}
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(a))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(b))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(c))
	return h.Sum64()
}
