package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alignet/alignet"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// KeyPrefix starts every generated API key.
const KeyPrefix = "alg_"

// validScope reports whether s is a known scope.
func validScope(s string) bool { return s == scopeCollect || s == scopeRead || s == scopeAdmin }

const ctxKeyPrincipal = "alignet.key"
const ctxKeyAPIError = "alignet.error"

// maxKeyLen bounds the bearer token that is hashed.
const maxKeyLen = 256

// keyCacheMax bounds the number of cached key lookups, so random keys cannot
// grow memory without limit.
const keyCacheMax = 10000

// GenerateKey returns a new random API key: "alg_" followed by 32 random
// bytes in unpadded base64url.
func GenerateKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashKey returns the SHA-256 hash under which a key is stored.
func HashKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// keyPrefix is the non-secret beginning of a key shown in key lists.
func keyPrefix(key string) string {
	if len(key) > len(KeyPrefix)+6 {
		return key[:len(KeyPrefix)+6]
	}
	return key
}

// hasScope reports whether scopes grant need; admin grants everything and
// scopeAny is granted to every valid key.
func hasScope(scopes []string, need string) bool {
	if need == scopeAny {
		return true
	}
	return slices.Contains(scopes, scopeAdmin) || slices.Contains(scopes, need)
}

type keyEntry struct {
	key     alignet.APIKey
	valid   bool
	expires time.Time
}

// keyCache caches key lookups by hash, including misses.
type keyCache struct {
	ttl time.Duration
	mu  sync.RWMutex
	m   map[[sha256.Size]byte]keyEntry
}

func newKeyCache(ttl time.Duration) *keyCache {
	return &keyCache{ttl: ttl, m: make(map[[sha256.Size]byte]keyEntry)}
}

func (kc *keyCache) get(h [sha256.Size]byte, now time.Time) (keyEntry, bool) {
	kc.mu.RLock()
	e, ok := kc.m[h]
	kc.mu.RUnlock()
	if !ok || now.After(e.expires) {
		return keyEntry{}, false
	}
	return e, true
}

func (kc *keyCache) put(h [sha256.Size]byte, e keyEntry) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if len(kc.m) >= keyCacheMax {
		now := time.Now()
		for k, v := range kc.m {
			if now.After(v.expires) {
				delete(kc.m, k)
			}
		}
		if len(kc.m) >= keyCacheMax {
			clear(kc.m)
		}
	}
	kc.m[h] = e
}

// forget drops every cached entry of the key with the given id.
func (kc *keyCache) forget(id string) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	for k, v := range kc.m {
		if v.valid && v.key.ID == id {
			delete(kc.m, k)
		}
	}
}

func unauthorized(msg string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: msg}
}

// authenticate returns the key presented with the request.
func (s *Server) authenticate(c echo.Context) (alignet.APIKey, error) {
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	if h == "" {
		return alignet.APIKey{}, unauthorized("missing Authorization: Bearer <key> header")
	}
	scheme, token, ok := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return alignet.APIKey{}, unauthorized("Authorization header must be \"Bearer <key>\"")
	}
	if len(token) > maxKeyLen {
		return alignet.APIKey{}, unauthorized("invalid API key")
	}
	hash := sha256.Sum256([]byte(token))
	if s.hasAdmin && subtle.ConstantTimeCompare(hash[:], s.adminHash[:]) == 1 {
		return s.adminKeyRecord(), nil
	}
	now := time.Now()
	if e, ok := s.keys.get(hash, now); ok {
		if !e.valid {
			return alignet.APIKey{}, unauthorized("invalid API key")
		}
		return e.key, nil
	}
	v, err, _ := s.sf.Do("key:"+string(hash[:]), func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), 5*time.Second)
		defer cancel()
		k, err := s.store.APIKeyByHash(ctx, hash[:])
		switch {
		case errors.Is(err, alignet.ErrNotFound):
			s.keys.put(hash, keyEntry{expires: time.Now().Add(s.cfg.KeyCacheTTL)})
			return keyEntry{}, nil
		case err != nil:
			return nil, err
		case k.RevokedAt != nil:
			s.keys.put(hash, keyEntry{expires: time.Now().Add(s.cfg.KeyCacheTTL)})
			return keyEntry{}, nil
		}
		e := keyEntry{key: k, valid: true, expires: time.Now().Add(s.cfg.KeyCacheTTL)}
		s.keys.put(hash, e)
		return e, nil
	})
	if err != nil {
		return alignet.APIKey{}, unavailable(err)
	}
	e := v.(keyEntry)
	if !e.valid {
		return alignet.APIKey{}, unauthorized("invalid API key")
	}
	return e.key, nil
}

// auth requires a valid key with the given scope.
func (s *Server) auth(scope string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			k, err := s.authenticate(c)
			if err != nil {
				return err
			}
			if !hasScope(k.Scopes, scope) {
				return &Error{Status: http.StatusForbidden, Code: CodeForbidden,
					Message: "API key lacks the \"" + scope + "\" scope"}
			}
			c.Set(ctxKeyPrincipal, k)
			return next(c)
		}
	}
}

// adminKeyID is the id under which the bootstrap admin key is stored: a
// name-based UUID of its hash, so restarts with the same key reuse it.
func (s *Server) adminKeyID() string {
	return uuid.NewSHA1(uuid.NameSpaceOID, s.adminHash[:]).String()
}

func (s *Server) adminKeyRecord() alignet.APIKey {
	return alignet.APIKey{ID: s.adminKeyID(), Name: "bootstrap-admin", Scopes: []string{scopeAdmin},
		Prefix: keyPrefix(s.cfg.AdminKey)}
}

// ensureAdminKey stores the bootstrap admin key's hash so it is listed; the
// key works from memory even when this fails.
func (s *Server) ensureAdminKey(ctx context.Context) {
	if !s.hasAdmin {
		s.log.Warn("no bootstrap admin key configured")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	k := s.adminKeyRecord()
	k.CreatedAt = time.Now().UTC()
	if err := s.store.EnsureAPIKey(ctx, k, s.adminHash[:]); err != nil {
		s.log.Warn("could not store the bootstrap admin key; it still works", "err", err)
	}
}

// corsMiddleware answers CORS preflights and marks responses readable by
// the allowed browser origins.
func corsMiddleware(origins []string) echo.MiddlewareFunc {
	anyOrigin := slices.Contains(origins, "*")
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			origin := req.Header.Get("Origin")
			if origin == "" || (!anyOrigin && !slices.Contains(origins, origin)) {
				return next(c)
			}
			h := c.Response().Header()
			h.Add("Vary", "Origin")
			if anyOrigin {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
			}
			if req.Method == http.MethodOptions && req.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
				h.Set("Access-Control-Max-Age", "600")
				return c.NoContent(http.StatusNoContent)
			}
			return next(c)
		}
	}
}
