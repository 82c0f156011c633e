package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/internal/ttlcache"
)

// keyCacheMax bounds the number of cached key lookups, so random keys cannot
// grow memory without limit.
const keyCacheMax = 10000

// keyLoadTimeout bounds one key lookup in the store.
const keyLoadTimeout = 5 * time.Second

// revocationOverlap is how far back each revocation poll reaches before the
// previous one, so that a revocation still committing during a poll is seen
// by the next.
const revocationOverlap = 10 * time.Second

// keyEntry is a cached key lookup: a live key, or a miss (unknown or
// revoked).
type keyEntry struct {
	key   alignet.APIKey
	valid bool
}

// newKeyCache returns the cache of key lookups by hash. Misses are cached
// too and are evicted first. A stale entry is reloaded before it is used,
// and used as it is while the store is unreachable.
func (s *Server) newKeyCache() (*ttlcache.Cache[[sha256.Size]byte, keyEntry], error) {
	return ttlcache.New(ttlcache.Config[[sha256.Size]byte, keyEntry]{
		Load:          s.loadKey,
		TTL:           s.cfg.KeyCacheTTL,
		RetryInterval: reloadInterval,
		LoadTimeout:   keyLoadTimeout,
		MaxEntries:    keyCacheMax,
		Evictable:     func(e keyEntry) bool { return !e.valid },
		Now:           s.cfg.Now,
	})
}

func (s *Server) loadKey(ctx context.Context, hash [sha256.Size]byte) (keyEntry, error) {
	k, err := s.deps.Keys.APIKeyByHash(ctx, hash[:])
	switch {
	case errors.Is(err, alignet.ErrNotFound):
		return keyEntry{}, nil
	case err != nil:
		return keyEntry{}, fmt.Errorf("look up api key: %w", err)
	case k.RevokedAt != nil:
		return keyEntry{}, nil
	}
	s.warmKeys.Store(true)
	return keyEntry{key: k, valid: true}, nil
}

// forgetKey drops every cached lookup of the key with the given id.
func (s *Server) forgetKey(id string) {
	s.keys.InvalidateFunc(func(_ [sha256.Size]byte, e keyEntry) bool { return e.valid && e.key.ID == id })
}

// pollRevocations drops keys revoked through other servers from the key
// cache, every RevocationPollInterval until ctx ends.
func (s *Server) pollRevocations(ctx context.Context) {
	t := time.NewTicker(s.cfg.RevocationPollInterval)
	defer t.Stop()
	var since time.Time
	failing := false
	for {
		next, err := s.syncRevocations(ctx, since)
		switch {
		case err == nil:
			since, failing = next, false
		case ctx.Err() != nil:
			return
		case !failing:
			// Logged once per outage; the key cache's TTL still bounds how
			// long a revoked key is honoured once the store answers again.
			s.log.Warn("poll key revocations failed", "err", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncRevocations drops the keys revoked at or after since from the key
// cache, and returns the since of the next call.
func (s *Server) syncRevocations(ctx context.Context, since time.Time) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, keyLoadTimeout)
	defer cancel()
	ids, asOf, err := s.deps.Keys.KeysRevokedSince(ctx, since)
	if err != nil {
		return since, fmt.Errorf("keys revoked since %s: %w", since.Format(time.RFC3339), err)
	}
	for _, id := range ids {
		s.forgetKey(id)
	}
	return asOf.Add(-revocationOverlap), nil
}
