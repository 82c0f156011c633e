package monitor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// Heads reads student head artifacts.
type Heads interface {
	GetArtifact(ctx context.Context, id int64) (alignet.Artifact, error)
	ReadArtifact(ctx context.Context, id, off, n int64, w io.Writer) error
}

// headCache keeps the heads of current student versions, by artifact
// (artifacts are immutable).
type headCache struct {
	src   Heads
	mu    sync.Mutex
	heads map[int64]*learner.StudentHead
	// used marks the artifacts asked for since the last keep.
	used map[int64]bool
}

func newHeadCache(src Heads) *headCache {
	return &headCache{src: src, heads: map[int64]*learner.StudentHead{}, used: map[int64]bool{}}
}

// get returns the head stored in artifact id.
func (c *headCache) get(ctx context.Context, id int64) (*learner.StudentHead, error) {
	c.mu.Lock()
	h, ok := c.heads[id]
	c.used[id] = true
	c.mu.Unlock()
	if ok {
		return h, nil
	}
	a, err := c.src.GetArtifact(ctx, id)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := c.src.ReadArtifact(ctx, id, 0, a.Size, &buf); err != nil {
		return nil, err
	}
	h, _, err = modelfile.ReadStudent(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		return nil, fmt.Errorf("student head artifact %d: %w", id, err)
	}
	c.mu.Lock()
	c.heads[id] = h
	c.mu.Unlock()
	return h, nil
}

// keep drops the heads not asked for since the last call.
func (c *headCache) keep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.heads {
		if !c.used[id] {
			delete(c.heads, id)
		}
	}
	c.used = map[int64]bool{}
}
