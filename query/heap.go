package query

// keyHeap is an indexed binary max-heap of candidate indices ordered by
// key. Keys are upper bounds on the candidates' current values; the
// engine tightens them lazily when a candidate reaches the top.
type keyHeap struct {
	key  []float32 // by candidate
	pos  []int32   // position of each candidate in h, −1 when absent
	heap []int32
}

// newKeyHeap returns a heap of every candidate with the given keys,
// which it keeps (and modifies).
func newKeyHeap(keys []float32) *keyHeap {
	h := &keyHeap{key: keys, pos: make([]int32, len(keys)), heap: make([]int32, len(keys))}
	for i := range h.heap {
		h.heap[i] = int32(i)
		h.pos[i] = int32(i)
	}
	for i := len(h.heap)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
	return h
}

func (h *keyHeap) len() int { return len(h.heap) }

// top returns the candidate with the largest key; the heap must not be
// empty.
func (h *keyHeap) top() int32 { return h.heap[0] }

// pop removes and returns the top candidate.
func (h *keyHeap) pop() int32 {
	c := h.heap[0]
	last := len(h.heap) - 1
	h.swap(0, last)
	h.heap = h.heap[:last]
	h.pos[c] = -1
	if last > 0 {
		h.down(0)
	}
	return c
}

// push inserts a candidate that is not in the heap with key k.
func (h *keyHeap) push(c int32, k float32) {
	h.key[c] = k
	h.pos[c] = int32(len(h.heap))
	h.heap = append(h.heap, c)
	h.up(len(h.heap) - 1)
}

// set changes the key of candidate c, inserting it when absent.
func (h *keyHeap) set(c int32, k float32) {
	i := h.pos[c]
	if i < 0 {
		h.push(c, k)
		return
	}
	old := h.key[c]
	h.key[c] = k
	if k > old {
		h.up(int(i))
	} else {
		h.down(int(i))
	}
}

func (h *keyHeap) swap(a, b int) {
	h.heap[a], h.heap[b] = h.heap[b], h.heap[a]
	h.pos[h.heap[a]] = int32(a)
	h.pos[h.heap[b]] = int32(b)
}

func (h *keyHeap) less(a, b int) bool { return h.key[h.heap[a]] < h.key[h.heap[b]] }

func (h *keyHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(p, i) {
			return
		}
		h.swap(p, i)
		i = p
	}
}

func (h *keyHeap) down(i int) {
	n := len(h.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && h.less(l, r) {
			c = r
		}
		if !h.less(i, c) {
			return
		}
		h.swap(i, c)
		i = c
	}
}
