package db

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/alignet/alignet"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

const keyColumns = `id, name, scopes, prefix, created_at, revoked_at, coalesce(study, '')`

func scanKey(row pgx.Row, k *alignet.APIKey) error {
	return row.Scan(&k.ID, &k.Name, &k.Scopes, &k.Prefix, &k.CreatedAt, &k.RevokedAt, &k.Study)
}

// checkKey validates hash and fills k's defaults: a random UUID for an empty
// ID and a non-nil Scopes.
func checkKey(what string, k *alignet.APIKey, hash []byte) error {
	if len(hash) != sha256.Size {
		return fmt.Errorf("db: %s: hash has %d bytes, want %d (sha256)", what, len(hash), sha256.Size)
	}
	if k.ID == "" {
		k.ID = uuid.NewString()
	}
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
	return nil
}

// CreateAPIKey stores k with the SHA-256 hash of the key and returns the
// stored key; an empty k.ID gets a random UUID, and CreatedAt and RevokedAt
// are set by the database. An existing ID or hash yields an error wrapping
// alignet.ErrConflict; a k.Study that does not exist, one wrapping
// alignet.ErrNotFound.
func (d *DB) CreateAPIKey(ctx context.Context, k alignet.APIKey, hash []byte) (alignet.APIKey, error) {
	defer d.observe("create_api_key", time.Now())
	if err := checkKey("create api key", &k, hash); err != nil {
		return alignet.APIKey{}, err
	}
	var got alignet.APIKey
	err := scanKey(d.pool.QueryRow(ctx, `INSERT INTO api_keys (id, name, scopes, prefix, hash, study)
		VALUES ($1, $2, $3, $4, $5, nullif($6, '')) RETURNING `+keyColumns, k.ID, k.Name, k.Scopes, k.Prefix, hash, k.Study), &got)
	if err != nil {
		return alignet.APIKey{}, wrapErr(fmt.Sprintf("create api key %q", k.ID), err)
	}
	return got, nil
}

// EnsureAPIKey stores k unless a key with the same hash already exists, in
// which case it does nothing (a revoked key stays revoked). It is meant for
// the bootstrap admin key. An ID taken by a different hash yields an error
// wrapping alignet.ErrConflict.
func (d *DB) EnsureAPIKey(ctx context.Context, k alignet.APIKey, hash []byte) error {
	defer d.observe("ensure_api_key", time.Now())
	if err := checkKey("ensure api key", &k, hash); err != nil {
		return err
	}
	_, err := d.pool.Exec(ctx, `INSERT INTO api_keys (id, name, scopes, prefix, hash)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING`, k.ID, k.Name, k.Scopes, k.Prefix, hash)
	return wrapErr(fmt.Sprintf("ensure api key %q", k.ID), err)
}

// APIKeyByHash returns the active key with the given SHA-256 hash. Unknown
// and revoked keys yield an error wrapping alignet.ErrNotFound.
func (d *DB) APIKeyByHash(ctx context.Context, hash []byte) (alignet.APIKey, error) {
	defer d.observe("api_key_by_hash", time.Now())
	var k alignet.APIKey
	err := scanKey(d.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE hash = $1 AND revoked_at IS NULL`, hash), &k)
	if err != nil {
		return alignet.APIKey{}, wrapErr("api key by hash", err)
	}
	return k, nil
}

// ListAPIKeys returns all keys, revoked ones included, oldest first.
func (d *DB) ListAPIKeys(ctx context.Context) ([]alignet.APIKey, error) {
	defer d.observe("list_api_keys", time.Now())
	rows, err := d.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, wrapErr("list api keys", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (alignet.APIKey, error) {
		var k alignet.APIKey
		err := scanKey(r, &k)
		return k, err
	})
	if err != nil {
		return nil, wrapErr("list api keys", err)
	}
	if keys == nil {
		keys = []alignet.APIKey{}
	}
	return keys, nil
}

// RevokeAPIKey revokes the key id. Revoking a revoked key keeps its first
// revocation time and succeeds. An unknown id yields an error wrapping
// alignet.ErrNotFound.
func (d *DB) RevokeAPIKey(ctx context.Context, id string) error {
	defer d.observe("revoke_api_key", time.Now())
	tag, err := d.pool.Exec(ctx, `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1`, id)
	if err != nil {
		return wrapErr(fmt.Sprintf("revoke api key %q", id), err)
	}
	if tag.RowsAffected() == 0 {
		return wrapErr(fmt.Sprintf("revoke api key %q", id), pgx.ErrNoRows)
	}
	return nil
}

// KeysRevokedSince returns the ids of the keys revoked at or after since,
// sorted, and the database's clock when it answered. A caller polling for
// revocations passes that time, less a margin for revocations whose
// transactions were still committing, as since next time.
func (d *DB) KeysRevokedSince(ctx context.Context, since time.Time) ([]string, time.Time, error) {
	defer d.observe("keys_revoked_since", time.Now())
	var ids []string
	var now time.Time
	err := d.pool.QueryRow(ctx, `SELECT now(), ARRAY(SELECT id FROM api_keys WHERE revoked_at >= $1 ORDER BY id)`, since).
		Scan(&now, &ids)
	if err != nil {
		return nil, time.Time{}, wrapErr("keys revoked since", err)
	}
	if ids == nil {
		ids = []string{}
	}
	return ids, now, nil
}
