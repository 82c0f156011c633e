package api

import (
	"context"

	"github.com/alignet/alignet"
)

// Store is the persistent state the API reads and administers. It is
// implemented by *db.DB. Methods report missing entities with
// alignet.ErrNotFound, conflicting definitions with alignet.ErrConflict and
// an unreachable database with alignet.ErrUnavailable.
type Store interface {
	// PutSpace creates the embedding space name with dimension dim. It
	// reports whether the space was created; an existing space with another
	// dimension is alignet.ErrConflict.
	PutSpace(ctx context.Context, name string, dim int) (alignet.Space, bool, error)
	// GetSpace returns the named space.
	GetSpace(ctx context.Context, name string) (alignet.Space, error)
	// UpsertEmbeddings stores len(ids) row-major vectors of the space's
	// dimension, all or nothing, and returns how many rows were written.
	UpsertEmbeddings(ctx context.Context, space string, ids []string, vectors []float32) (int64, error)
	// CountEmbeddings returns the number of embeddings in a space.
	CountEmbeddings(ctx context.Context, space string) (int64, error)
	// CreateStudy creates a study and reports whether it was created; an
	// identical existing study is returned unchanged.
	CreateStudy(ctx context.Context, s alignet.Study) (alignet.Study, bool, error)
	// GetStudy returns the study with the given id.
	GetStudy(ctx context.Context, id string) (alignet.Study, error)
	// ListStudies returns every study.
	ListStudies(ctx context.Context) ([]alignet.Study, error)
	// AddStudyItems adds items to a study's pool and returns how many were new.
	AddStudyItems(ctx context.Context, study string, items []string) (int64, error)
	// StudyItems returns a study's item pool.
	StudyItems(ctx context.Context, study string) ([]string, error)
	// ExportJudgments calls fn for every stored judgment matching f.
	ExportJudgments(ctx context.Context, f alignet.JudgmentFilter, fn func(alignet.Judgment) error) error
	// CountJudgments returns the number of stored judgments of a study.
	CountJudgments(ctx context.Context, study string) (int64, error)
	// WorkerSummary returns per-study judgment counts of a pseudonymous worker.
	WorkerSummary(ctx context.Context, worker string) ([]alignet.WorkerStudy, error)
	// CreateAPIKey stores a new key under the SHA-256 hash of its secret.
	CreateAPIKey(ctx context.Context, k alignet.APIKey, hash []byte) (alignet.APIKey, error)
	// EnsureAPIKey stores a key if its hash is not stored yet.
	EnsureAPIKey(ctx context.Context, k alignet.APIKey, hash []byte) error
	// APIKeyByHash returns the live key with the given hash; unknown and
	// revoked keys are alignet.ErrNotFound.
	APIKeyByHash(ctx context.Context, hash []byte) (alignet.APIKey, error)
	// ListAPIKeys returns every key, without secrets.
	ListAPIKeys(ctx context.Context) ([]alignet.APIKey, error)
	// RevokeAPIKey revokes the key with the given id.
	RevokeAPIKey(ctx context.Context, id string) error
	// Ready reports whether the database is reachable.
	Ready(ctx context.Context) error
}

// Publisher hands accepted judgments to the stream. It is implemented by
// *stream.Producer.
type Publisher interface {
	// Publish returns nil only after the broker durably acknowledged every
	// judgment; an unreachable broker is alignet.ErrUnavailable.
	Publish(ctx context.Context, study string, js []alignet.Judgment) error
	// Ping reports whether the broker is reachable.
	Ping(ctx context.Context) error
}
