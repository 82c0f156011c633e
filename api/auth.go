package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/alignet/alignet"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// KeyPrefix starts every generated API key.
const KeyPrefix = "alg_"

// validScope reports whether s is a known scope.
func validScope(s string) bool {
	return s == alignet.ScopeCollect || s == alignet.ScopeRead || s == alignet.ScopeAdmin
}

const ctxKeyPrincipal = "alignet.key"
const ctxKeyAPIError = "alignet.error"

// maxKeyLen bounds the bearer token that is hashed.
const maxKeyLen = 256

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
	return slices.Contains(scopes, alignet.ScopeAdmin) || slices.Contains(scopes, need)
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
	e, err := s.keys.Get(c.Request().Context(), hash)
	if err != nil {
		return alignet.APIKey{}, unavailable(err)
	}
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
			if k.Study != "" {
				if err := s.checkBoundKey(c, k, scope); err != nil {
					return err
				}
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
	return alignet.APIKey{ID: s.adminKeyID(), Name: "bootstrap-admin", Scopes: []string{alignet.ScopeAdmin},
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
	if err := s.deps.Keys.EnsureAPIKey(ctx, k, s.adminHash[:]); err != nil {
		s.log.Warn("could not store the bootstrap admin key; it still works", "err", err)
	}
}
