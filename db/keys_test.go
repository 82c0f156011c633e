package db_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db/dbtest"
)

func hashOf(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()

	k, err := d.CreateAPIKey(ctx, alignet.APIKey{Name: "lab", Scopes: []string{"judgments:write", "export"}, Prefix: "ak_12"}, hashOf("secret-1"))
	if err != nil || k.ID == "" || k.Name != "lab" || k.Prefix != "ak_12" || k.CreatedAt.IsZero() || k.RevokedAt != nil ||
		!slices.Equal(k.Scopes, []string{"judgments:write", "export"}) {
		t.Fatalf("CreateAPIKey = %+v, %v", k, err)
	}
	if _, err := d.CreateAPIKey(ctx, alignet.APIKey{Name: "dup"}, hashOf("secret-1")); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("CreateAPIKey with a stored hash: err = %v, want ErrConflict", err)
	}
	if _, err := d.CreateAPIKey(ctx, alignet.APIKey{ID: k.ID, Name: "dup"}, hashOf("secret-2")); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("CreateAPIKey with a stored id: err = %v, want ErrConflict", err)
	}
	if _, err := d.CreateAPIKey(ctx, alignet.APIKey{Name: "short"}, []byte("abc")); err == nil {
		t.Fatal("CreateAPIKey with a 3-byte hash succeeded")
	}

	got, err := d.APIKeyByHash(ctx, hashOf("secret-1"))
	if err != nil || got.ID != k.ID || !slices.Equal(got.Scopes, k.Scopes) {
		t.Fatalf("APIKeyByHash = %+v, %v", got, err)
	}
	if _, err := d.APIKeyByHash(ctx, hashOf("unknown")); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("APIKeyByHash unknown: err = %v, want ErrNotFound", err)
	}

	admin := alignet.APIKey{ID: "admin", Name: "bootstrap admin", Scopes: []string{"admin"}, Prefix: "ak_ad"}
	for i := 0; i < 2; i++ {
		if err := d.EnsureAPIKey(ctx, admin, hashOf("admin-key")); err != nil {
			t.Fatalf("EnsureAPIKey #%d: %v", i, err)
		}
	}
	if err := d.EnsureAPIKey(ctx, alignet.APIKey{ID: "admin", Name: "x"}, hashOf("other")); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("EnsureAPIKey with a taken id and new hash: err = %v, want ErrConflict", err)
	}
	keys, err := d.ListAPIKeys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("ListAPIKeys = %+v, %v; want 2 keys", keys, err)
	}

	if err := d.RevokeAPIKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.RevokeAPIKey(ctx, k.ID); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if err := d.RevokeAPIKey(ctx, "nope"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("RevokeAPIKey unknown: err = %v, want ErrNotFound", err)
	}
	if _, err := d.APIKeyByHash(ctx, hashOf("secret-1")); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("APIKeyByHash revoked: err = %v, want ErrNotFound", err)
	}
	keys, err = d.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	revoked := 0
	for _, key := range keys {
		if key.RevokedAt != nil {
			revoked++
			if key.ID != k.ID {
				t.Fatalf("key %q revoked, want only %q", key.ID, k.ID)
			}
		}
	}
	if revoked != 1 || len(keys) != 2 {
		t.Fatalf("ListAPIKeys after revoke: %d keys, %d revoked; want 2 and 1", len(keys), revoked)
	}
	// The key itself is never stored: only its hash.
	var n int
	if err := d.Pool().QueryRow(ctx, "SELECT count(*) FROM api_keys WHERE hash = $1", hashOf("admin-key")).Scan(&n); err != nil || n != 1 {
		t.Fatalf("stored hash rows = %d, %v", n, err)
	}
}
