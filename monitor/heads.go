package monitor

import (
	"context"
	"sync"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// headCache keeps the heads of current student versions, by artifact
// (artifacts are immutable).
type headCache struct {
	src   modelfile.Artifacts
	mu    sync.Mutex
	heads map[int64]*learner.StudentHead
	// used marks the artifacts asked for since the last keep.
	used map[int64]bool
}

func newHeadCache(src modelfile.Artifacts) *headCache {
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
	h, err := modelfile.ReadStudentArtifact(ctx, c.src, id)
	if err != nil {
		return nil, err
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
