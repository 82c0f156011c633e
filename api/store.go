package api

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/alignet/alignet"
)

// The API depends on the small interfaces below, one per handler group.
// *db.DB implements all of them and *stream.Producer implements Publisher.
// Methods report missing entities with alignet.ErrNotFound, conflicting
// definitions with alignet.ErrConflict and an unreachable dependency with
// alignet.ErrUnavailable.

// SpaceStore holds embedding spaces and their vectors.
type SpaceStore interface {
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
}

// StudyStore holds studies and their item pools.
type StudyStore interface {
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
	// CountJudgments returns the number of stored judgments of a study.
	CountJudgments(ctx context.Context, study string) (int64, error)
}

// SettingsStore changes study settings.
type SettingsStore interface {
	// UpdateStudySettings replaces the settings of study id with what
	// update returns for the current ones, atomically, and returns the
	// updated study. An error from update is returned unchanged and
	// nothing is written.
	UpdateStudySettings(ctx context.Context, id string, update func(alignet.StudySettings) (alignet.StudySettings, error)) (alignet.Study, error)
}

// TeacherStore holds the studies' teachers, which the learner role writes,
// for the /teacher routes.
type TeacherStore interface {
	// TeacherState returns the current teacher of a study; a study without
	// one is alignet.ErrNotFound.
	TeacherState(ctx context.Context, study string) (alignet.TeacherState, error)
	// TeacherStateMeta is TeacherState without W and b.
	TeacherStateMeta(ctx context.Context, study string) (alignet.TeacherState, error)
	// TeacherVersions returns a study's versions, newest first, without
	// W and b.
	TeacherVersions(ctx context.Context, study string) ([]alignet.TeacherVersion, error)
	// TeacherVersion returns version n of a study with its parameters.
	TeacherVersion(ctx context.Context, study string, n int64) (alignet.TeacherVersion, error)
	// InsertTeacherVersion stores v as the study's next version, keeping
	// the newest keep, and returns it numbered.
	InsertTeacherVersion(ctx context.Context, v alignet.TeacherVersion, keep int) (alignet.TeacherVersion, error)
	// RequestRefit records that the learner owning a study should refit it.
	RequestRefit(ctx context.Context, study string) error
}

// TeacherSource feeds the TeacherCache: what a study's teacher
// representations are computed from, and stamps that tell cheaply when
// that changed.
type TeacherSource interface {
	// GetStudy returns the study with the given id.
	GetStudy(ctx context.Context, id string) (alignet.Study, error)
	// GetSpace returns the named space.
	GetSpace(ctx context.Context, name string) (alignet.Space, error)
	// StudyItems returns a study's item pool.
	StudyItems(ctx context.Context, study string) ([]string, error)
	// LoadEmbeddings returns the vectors of ids in a space, back to back,
	// and whether each was found (missing ones are zeros).
	LoadEmbeddings(ctx context.Context, space string, ids []string) ([]float32, []bool, error)
	// TeacherState returns the current teacher of a study; a study without
	// one is alignet.ErrNotFound.
	TeacherState(ctx context.Context, study string) (alignet.TeacherState, error)
	// StudyStamps returns the stamps of the existing studies among studies.
	StudyStamps(ctx context.Context, studies []string) (map[string]alignet.StudyStamp, error)
}

// JudgmentExporter streams stored judgments.
type JudgmentExporter interface {
	// ExportJudgments calls fn for every stored judgment matching f, in
	// (received_at, id) order, and stops at fn's first error. A study that
	// does not exist is alignet.ErrNotFound, reported before fn is called.
	ExportJudgments(ctx context.Context, f alignet.JudgmentFilter, fn func(alignet.Judgment) error) error
	// ExportJudgmentQueries is ExportJudgments joined to the queries the
	// judgments answer: fn also gets each one's query, or nil.
	ExportJudgmentQueries(ctx context.Context, f alignet.JudgmentFilter, fn func(alignet.Judgment, *alignet.Query) error) error
}

// SessionStore holds participant sessions, the query log, the answers'
// bindings and the repeat sets of query selection.
type SessionStore interface {
	// OpenSession returns the worker's session with s.External, else
	// their open session, else stores s (created=true).
	OpenSession(ctx context.Context, s alignet.Session) (alignet.Session, bool, error)
	// GetSession returns a session of a study.
	GetSession(ctx context.Context, study, id string) (alignet.Session, error)
	// CompleteSession records a session's completion time once.
	CompleteSession(ctx context.Context, study, id string, at time.Time) error
	// LogQueries stores served queries, skipping those stored already.
	LogQueries(ctx context.Context, qs []alignet.Query) (int64, error)
	// GetQuery returns a stored query of a study with its answer, if any.
	GetQuery(ctx context.Context, study, id string) (alignet.Query, error)
	// WorkerQueries returns every stored query served to a worker in a
	// study.
	WorkerQueries(ctx context.Context, study, worker string) ([]alignet.Query, error)
	// AnswerQueries binds judgments to their queries, all or nothing (see
	// db.DB.AnswerQueries), and updates the workers' flags.
	AnswerQueries(ctx context.Context, study string, as []alignet.Answer, flags alignet.FlagSettings) ([]alignet.AnswerOutcome, error)
	// UnanswerQueries takes back bindings whose judgments were not
	// published.
	UnanswerQueries(ctx context.Context, study string, as []alignet.Answer, flags alignet.FlagSettings) error
	// RepeatSet returns a study's repeat triplets.
	RepeatSet(ctx context.Context, study string) ([][3]string, error)
	// EnsureRepeatSet stores a repeat set unless the study has one and
	// returns the stored set.
	EnsureRepeatSet(ctx context.Context, study string, ts [][3]string) ([][3]string, error)
}

// FlagStore reads the workers' answer counts and flags.
type FlagStore interface {
	// WorkerFlags returns every worker of a study who answered a query.
	WorkerFlags(ctx context.Context, study string) ([]alignet.WorkerFlags, error)
}

// KeyStore holds API keys, as SHA-256 hashes.
type KeyStore interface {
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
	// KeysRevokedSince returns the ids of the keys revoked at or after
	// since, and the store's clock when it answered, to pass (less a
	// margin for revocations still committing) as since next time.
	KeysRevokedSince(ctx context.Context, since time.Time) ([]string, time.Time, error)
}

// WorkerStore summarises the judgments of pseudonymous workers.
type WorkerStore interface {
	// WorkerSummary returns per-study judgment counts of a pseudonymous worker.
	WorkerSummary(ctx context.Context, worker string) ([]alignet.WorkerStudy, error)
}

// TrainerStore holds what the trainer makes and consumes: generation
// pools, item labels, students and their versions, datasets, and the
// artifacts (blobs) behind the last two.
type TrainerStore interface {
	// PutPool sets a study's generation pool; a space of the wrong
	// dimension or a listed item without an embedding is an
	// *alignet.FieldError.
	PutPool(ctx context.Context, p alignet.Pool) (alignet.Pool, error)
	// GetPool returns a study's pool; none is alignet.ErrNotFound.
	GetPool(ctx context.Context, study string) (alignet.Pool, error)
	// PutItemLabels stores the labels of items of a space.
	PutItemLabels(ctx context.Context, space string, labels []alignet.ItemLabels) (int64, error)
	// CreateStudent registers a student and reports whether it was
	// created; one with another space is alignet.ErrConflict.
	CreateStudent(ctx context.Context, s alignet.Student) (alignet.Student, bool, error)
	// GetStudent returns a student.
	GetStudent(ctx context.Context, study, id string) (alignet.Student, error)
	// ListStudents returns a study's students.
	ListStudents(ctx context.Context, study string) ([]alignet.Student, error)
	// DeleteStudent deletes a student with its versions.
	DeleteStudent(ctx context.Context, study, id string) error
	// StudentVersions returns a student's versions, newest first.
	StudentVersions(ctx context.Context, study, id string) ([]alignet.StudentVersion, error)
	// StudentVersion returns version n of a student (0: current).
	StudentVersion(ctx context.Context, study, id string, n int64) (alignet.StudentVersion, error)
	// Datasets returns a study's datasets, newest first.
	Datasets(ctx context.Context, study string) ([]alignet.Dataset, error)
	// GetDataset returns dataset version n of a study (0: newest).
	GetDataset(ctx context.Context, study string, n int64) (alignet.Dataset, error)
	// GetArtifact describes a complete artifact.
	GetArtifact(ctx context.Context, id int64) (alignet.Artifact, error)
	// ReadArtifact writes bytes [off, off+n) of an artifact to w.
	ReadArtifact(ctx context.Context, id, off, n int64, w io.Writer) error
	// LoadEmbeddings returns the vectors of ids in a space and whether
	// each was found.
	LoadEmbeddings(ctx context.Context, space string, ids []string) ([]float32, []bool, error)
}

// ItemStore holds the display data of items: labels, external image URLs
// and uploaded images, global per item id.
type ItemStore interface {
	// PutItemDisplays stores the label and image URL of each display,
	// all or nothing, replacing the items' previous ones, and returns how
	// many rows were written; uploaded images are kept.
	PutItemDisplays(ctx context.Context, ds []alignet.ItemDisplay) (int64, error)
	// ItemDisplays returns the display data, with uploaded images'
	// metadata, of those items that have any.
	ItemDisplays(ctx context.Context, items []string) ([]alignet.ItemDisplay, error)
	// PutItemImage stores data, of a type alignet.ValidImageType accepts,
	// as the image of item and returns its metadata.
	PutItemImage(ctx context.Context, item, contentType string, data []byte) (alignet.ItemImage, error)
	// ItemImage returns the uploaded image of item and its bytes; an item
	// without one is alignet.ErrNotFound.
	ItemImage(ctx context.Context, item string) (alignet.ItemImage, []byte, error)
}

// ReadinessChecker reports whether the database can serve.
type ReadinessChecker interface {
	// Ready reports whether the database is reachable and migrated.
	Ready(ctx context.Context) error
}

// Publisher hands accepted judgments to the stream. It is implemented by
// *stream.Producer.
type Publisher interface {
	// Publish returns nil only after the broker durably acknowledged every
	// judgment; an unreachable broker is alignet.ErrUnavailable and a batch
	// too large for one message alignet.ErrTooLarge.
	Publish(ctx context.Context, study string, js []alignet.Judgment) error
	// Ping reports whether the broker is reachable.
	Ping(ctx context.Context) error
}

// Deps are the dependencies of a Server. Every field but Components,
// QueryTeachers, Students and Drift is required; a *db.DB fills all stores and a
// *stream.Producer the Publisher.
type Deps struct {
	// Spaces serves the /v1/spaces routes.
	Spaces SpaceStore
	// Studies serves the /v1/studies routes and the study cache.
	Studies StudyStore
	// Settings serves PATCH /v1/studies/{study}.
	Settings SettingsStore
	// Teachers serves the /teacher routes.
	Teachers TeacherStore
	// TeacherSource feeds the teacher cache behind predict and neighbours.
	TeacherSource TeacherSource
	// Judgments serves judgment exports.
	Judgments JudgmentExporter
	// Keys authenticates requests and serves the /v1/keys routes.
	Keys KeyStore
	// Workers serves worker lookups.
	Workers WorkerStore
	// Items serves the /v1/items routes and the display data of queries.
	Items ItemStore
	// Ready is the database check of /readyz.
	Ready ReadinessChecker
	// Sessions serve participant sessions and the query log.
	Sessions SessionStore
	// Flags serve the workers route.
	Flags FlagStore
	// Trainer serves pools, labels, students and datasets.
	Trainer TrainerStore
	// Publisher receives accepted judgments.
	Publisher Publisher
	// QueryTeachers supply the teachers query selection scores with.
	// Optional: nil means the server's teacher cache (the learner's
	// teacher, or the raw embeddings before it stored one).
	QueryTeachers QueryTeachers
	// Students supply the disagreement scorer's students. Optional: nil
	// means none is registered yet.
	Students StudentSource
	// Drift serves GET .../drift and the dashboard's drift charts.
	// Optional: nil answers every study with no snapshot (no monitor
	// runs).
	Drift DriftStore
	// Components are the other roles running in this process (such as the
	// persister), by name. Optional. A failing one makes /readyz answer
	// "degraded": the API still accepts judgments, which Kafka buffers.
	Components map[string]ReadinessChecker
}

// Store is everything Deps needs from the database, as *db.DB provides.
type Store interface {
	SpaceStore
	StudyStore
	SettingsStore
	TeacherStore
	TeacherSource
	JudgmentExporter
	KeyStore
	WorkerStore
	ItemStore
	ReadinessChecker
	SessionStore
	FlagStore
	TrainerStore
}

// StoreDeps returns the Deps of a server whose every store is st and
// whose accepted judgments go to pub; the optional fields are left nil.
func StoreDeps(st Store, pub Publisher) Deps {
	return Deps{Spaces: st, Studies: st, Settings: st, Teachers: st, TeacherSource: st, Judgments: st,
		Keys: st, Workers: st, Items: st, Ready: st, Sessions: st, Flags: st, Trainer: st, Publisher: pub}
}

func (d Deps) check() error {
	if d.Spaces == nil || d.Studies == nil || d.Settings == nil || d.Teachers == nil || d.TeacherSource == nil ||
		d.Judgments == nil || d.Keys == nil || d.Workers == nil || d.Items == nil || d.Ready == nil || d.Publisher == nil ||
		d.Sessions == nil || d.Flags == nil || d.Trainer == nil {
		return errors.New("api: every field of Deps is required")
	}
	return nil
}
