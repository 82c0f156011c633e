package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/internal/ttlcache"
)

// studyCacheMax bounds the number of cached studies, misses included.
const studyCacheMax = 10000

// studyEntry is a cached study definition and item pool, or a cached miss.
type studyEntry struct {
	study alignet.Study
	items map[string]struct{}
	found bool
}

// newStudyCache returns the cache behind the judgment hot path. A known
// study past PoolCacheTTL is served while it is refreshed in the
// background; a cached miss is rechecked before it is answered, so a study
// created elsewhere is found at once. Through a store outage, studies seen
// before keep being served, and each is reloaded at most once per second.
func (s *Server) newStudyCache() (*ttlcache.Cache[string, *studyEntry], error) {
	return ttlcache.New(ttlcache.Config[string, *studyEntry]{
		Load:          s.loadStudy,
		TTL:           s.cfg.PoolCacheTTL,
		RetryInterval: reloadInterval,
		MaxEntries:    studyCacheMax,
		Background:    func(e *studyEntry) bool { return e.found },
		Evictable:     func(e *studyEntry) bool { return !e.found },
		Now:           s.cfg.Now,
	})
}

// loadStudy reads a study and its pool from the store.
func (s *Server) loadStudy(ctx context.Context, id string) (*studyEntry, error) {
	st, err := s.deps.Studies.GetStudy(ctx, id)
	if errors.Is(err, alignet.ErrNotFound) {
		return &studyEntry{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load study %q: %w", id, err)
	}
	items, err := s.deps.Studies.StudyItems(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load items of study %q: %w", id, err)
	}
	e := &studyEntry{study: st, found: true, items: make(map[string]struct{}, len(items))}
	for _, it := range items {
		e.items[it] = struct{}{}
	}
	s.warmStudies.Store(true)
	return e, nil
}

// study returns the cached study. Unknown studies are 404.
func (s *Server) study(ctx context.Context, id string) (*studyEntry, error) {
	e, err := s.studies.Get(ctx, id)
	if err != nil {
		return nil, storeErr(err, "study", "")
	}
	if !e.found {
		return nil, notFound("", "study %q not found", id)
	}
	return e, nil
}

// refreshStudy reloads a study synchronously unless it was loaded within
// the last second (bounding reloads caused by bad requests). It reports
// whether an entry newer than old is available.
func (s *Server) refreshStudy(ctx context.Context, id string, old *studyEntry) (*studyEntry, bool) {
	e, ok := s.studies.Refresh(ctx, id, min(reloadInterval, s.cfg.PoolCacheTTL))
	if !ok || !e.found || e == old {
		return nil, false
	}
	return e, true
}
