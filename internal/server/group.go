package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Component is one running part of the server, such as the API, the
// persister or the learner. Run blocks until ctx is cancelled and the
// component has shut down, or until it fails.
type Component interface {
	Run(ctx context.Context) error
}

// ComponentFunc adapts a function to Component.
type ComponentFunc func(ctx context.Context) error

// Run calls f(ctx).
func (f ComponentFunc) Run(ctx context.Context) error { return f(ctx) }

// Shutdown stages, in the order components are stopped. Components of one
// stage stop together; the next stage is interrupted only once every
// component of the previous one has returned.
const (
	// StageIngress holds what accepts work from outside: the API (which
	// drains its requests and then flushes its producer) and the metrics
	// listener.
	StageIngress = iota
	// StageConsumers holds the stream consumers: persister, learner and
	// trainer. Each finishes and commits its current batch.
	StageConsumers
	stageCount
)

// group runs components together, in the manner of prometheus's run.Group:
// when the context is cancelled or any component returns, every component
// is interrupted, stage by stage, and Run returns the first error.
type group struct {
	log    *slog.Logger
	actors []actor
}

type actor struct {
	name  string
	stage int
	c     Component
}

// add registers c under name in the given shutdown stage.
func (g *group) add(name string, stage int, c Component) {
	g.actors = append(g.actors, actor{name: name, stage: stage, c: c})
}

// run starts every component and blocks until all have returned. It returns
// the first error other than context cancellation, naming its component.
func (g *group) run(ctx context.Context) error {
	if len(g.actors) == 0 {
		return errors.New("no components to run")
	}
	var ctxs [stageCount]context.Context
	var cancels [stageCount]context.CancelFunc
	for s := range ctxs {
		// Stages are cancelled explicitly, in order; values such as trace
		// ids still flow from ctx.
		ctxs[s], cancels[s] = context.WithCancel(context.WithoutCancel(ctx))
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	type result struct {
		a   actor
		err error
	}
	results := make(chan result, len(g.actors))
	var running [stageCount]sync.WaitGroup
	for _, a := range g.actors {
		running[a.stage].Add(1)
		go func() {
			defer running[a.stage].Done()
			err := a.c.Run(ctxs[a.stage])
			results <- result{a, err}
		}()
	}

	var first error
	record := func(r result) {
		if r.err != nil && !errors.Is(r.err, context.Canceled) && first == nil {
			first = fmt.Errorf("%s: %w", r.a.name, r.err)
		}
		level := slog.LevelInfo
		if r.err != nil && !errors.Is(r.err, context.Canceled) {
			level = slog.LevelError
		}
		g.log.Log(ctx, level, "component stopped", "component", r.a.name, "err", r.err)
	}
	select {
	case <-ctx.Done():
		g.log.Info("shutting down")
	case r := <-results:
		record(r)
		g.log.Warn("a component stopped early; shutting down the others", "component", r.a.name)
	}
	for s := range stageCount {
		cancels[s]()
		running[s].Wait()
	}
	close(results)
	for r := range results {
		record(r)
	}
	return first
}
