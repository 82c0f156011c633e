package api

import (
	"bytes"
	"sync"
)

// bufPoolMaxCap is the largest buffer kept for reuse; larger ones, grown by
// rare large bodies, are left to the garbage collector.
const bufPoolMaxCap = 256 << 10

// bufPool recycles the buffers that request bodies are read into.
type bufPool struct{ p sync.Pool }

func (b *bufPool) get() *bytes.Buffer {
	if buf, ok := b.p.Get().(*bytes.Buffer); ok {
		return buf
	}
	return new(bytes.Buffer)
}

func (b *bufPool) put(buf *bytes.Buffer) {
	if buf.Cap() > bufPoolMaxCap {
		return
	}
	buf.Reset()
	b.p.Put(buf)
}
