package alignet

import "time"

// Scopes an API key can grant.
const (
	// ScopeCollect allows posting judgments.
	ScopeCollect = "collect"
	// ScopeRead allows reading data, exports and models.
	ScopeRead = "read"
	// ScopeAdmin allows everything.
	ScopeAdmin = "admin"
)

// APIKey describes an API key. The key itself is never stored, only its
// SHA-256 hash.
type APIKey struct {
	// ID identifies the key.
	ID string
	// Name is a human-readable label.
	Name string
	// Scopes are the permissions the key grants.
	Scopes []string
	// Prefix is the start of the key, shown to identify it.
	Prefix string
	// CreatedAt is when the key was created.
	CreatedAt time.Time
	// RevokedAt is when the key was revoked, or nil while it is active.
	RevokedAt *time.Time
	// Study, when set, binds the key to one study: it may then only
	// collect (open sessions, read next queries, post judgments) in that
	// study. Only collect keys can be bound, since a bound key is meant
	// to ship inside a public experiment page. Empty means unbound.
	Study string
}
