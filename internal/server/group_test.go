package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// recorder notes the order in which components stop.
type recorder struct {
	mu    sync.Mutex
	order []string
}

func (r *recorder) component(name string, hold time.Duration) Component {
	return ComponentFunc(func(ctx context.Context) error {
		<-ctx.Done()
		time.Sleep(hold)
		r.mu.Lock()
		r.order = append(r.order, name)
		r.mu.Unlock()
		return ctx.Err()
	})
}

func TestGroupStopsStagesInOrder(t *testing.T) {
	t.Parallel()
	var r recorder
	g := &group{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	// The ingress component takes longer to drain; consumers must still
	// wait for it.
	g.add("persister", StageConsumers, r.component("persister", 0))
	g.add("api", StageIngress, r.component("api", 50*time.Millisecond))
	g.add("learner", StageConsumers, r.component("learner", 0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.run(ctx) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after cancel = %v, want nil", err)
	}
	if len(r.order) != 3 || r.order[0] != "api" {
		t.Fatalf("stop order %v: the api must stop before the consumers", r.order)
	}
}

func TestGroupFailureStopsEveryone(t *testing.T) {
	t.Parallel()
	var r recorder
	g := &group{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	boom := errors.New("boom")
	g.add("api", StageIngress, r.component("api", 0))
	g.add("persister", StageConsumers, ComponentFunc(func(context.Context) error { return boom }))
	err := g.run(context.Background())
	if !errors.Is(err, boom) || err.Error() != "persister: boom" {
		t.Fatalf("run = %v, want the persister's error named", err)
	}
	if len(r.order) != 1 {
		t.Fatalf("the api was not stopped after the persister failed: %v", r.order)
	}
}
