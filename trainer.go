package alignet

import (
	"encoding/json"
	"math"
	"sort"
	"time"
)

// Triplet sampling strategies of AligNet generation, as the trainer's
// strategy mix names them (learner implements them).
const (
	// StrategyClusterBorder draws two items of one k-means cluster of the
	// teacher representations and one of another (the paper's default).
	StrategyClusterBorder = "cluster_border"
	// StrategyRandom draws three distinct items uniformly.
	StrategyRandom = "random"
	// StrategyWithinCluster draws three items of one cluster.
	StrategyWithinCluster = "within_cluster"
	// StrategyBetweenClass draws items of three different classes.
	StrategyBetweenClass = "between_class"
	// StrategyWithinClass draws three items of one class.
	StrategyWithinClass = "within_class"
	// StrategyClassBorder draws two items of one class and one of another.
	StrategyClassBorder = "class_border"
)

// Strategies lists the strategy names a mix may use.
func Strategies() []string {
	return []string{StrategyClusterBorder, StrategyRandom, StrategyWithinCluster,
		StrategyBetweenClass, StrategyWithinClass, StrategyClassBorder}
}

// ClassStrategy reports whether strategy s draws by class labels, so it
// applies only to pools whose items have labels.
func ClassStrategy(s string) bool {
	return s == StrategyBetweenClass || s == StrategyWithinClass || s == StrategyClassBorder
}

// Student head initialisations and distillation losses.
const (
	// InitAffine starts from the identity rescaled to the teacher's logit
	// scale.
	InitAffine = "affine"
	// InitIdentity starts from the plain identity.
	InitIdentity = "identity"
	// InitRandom starts from random weights.
	InitRandom = "random"
	// LossKL is KL(teacher ‖ student) over the three odd-one-out outcomes.
	LossKL = "kl"
	// LossJS is the Jensen–Shannon divergence.
	LossJS = "jsd"
)

// StudentSettings are the head settings of a student: an affine head on
// the frozen embeddings of the student's space, distilled from the
// teacher's triplet distributions with Adam and decay toward its initial
// weights θ₀. The defaults are those of DefaultStudentSettings, found by
// the recipe sweep documented in trainer/recipe_test.go.
type StudentSettings struct {
	// Init is "affine", "identity" or "random". Default "affine".
	Init string `json:"init"`
	// OutDim is the head's output dimension; 0 means the space's
	// dimension. Default 0.
	OutDim int `json:"out_dim"`
	// Loss is "kl" or "jsd". Default "kl".
	Loss string `json:"loss"`
	// Temperature is the student's softmax temperature. Default 1.
	Temperature float64 `json:"temperature"`
	// LearningRate is the Adam step size. Default 3e-3.
	LearningRate float64 `json:"learning_rate"`
	// Decay is μ of the pull μ(θ − θ₀) toward the initial weights.
	// Default 0.01.
	Decay float64 `json:"decay"`
	// Epochs is the number of passes over each new dataset. Default 4.
	Epochs int `json:"epochs"`
	// BatchSize is the number of triplets per step. Default 8192.
	BatchSize int `json:"batch_size"`
	// ValShare is the share of each dataset's triplets held out to score
	// agreement with the teacher. Default 0.05.
	ValShare float64 `json:"val_share"`
	// Seed seeds the initialisation, the validation split and the
	// shuffling. Default 1.
	Seed uint64 `json:"seed"`
}

// DefaultStudentSettings returns the head settings of a student that sets
// nothing.
func DefaultStudentSettings() StudentSettings {
	return StudentSettings{
		Init:         InitAffine,
		Loss:         LossKL,
		Temperature:  1,
		LearningRate: 3e-3,
		Decay:        0.01,
		Epochs:       4,
		BatchSize:    8192,
		ValShare:     0.05,
		Seed:         1,
	}
}

// Validate checks the settings and returns a *FieldError naming the field.
func (s *StudentSettings) Validate() error {
	if err := s.validate(); err != nil {
		return err
	}
	return nil
}

func (s *StudentSettings) validate() *FieldError {
	switch {
	case s.Init != InitAffine && s.Init != InitIdentity && s.Init != InitRandom:
		return Invalid("init", "must be %q, %q or %q", InitAffine, InitIdentity, InitRandom)
	case s.OutDim < 0 || s.OutDim > 1<<16:
		return Invalid("out_dim", "must be in [0, 65536] (0 means the space's dimension)")
	case s.Loss != LossKL && s.Loss != LossJS:
		return Invalid("loss", "must be %q or %q", LossKL, LossJS)
	case !(s.Temperature > 0) || s.Temperature > 1e6:
		return Invalid("temperature", "must be in (0, 1e6]")
	case !(s.LearningRate > 0) || s.LearningRate > 1:
		return Invalid("learning_rate", "must be in (0, 1]")
	case !(s.Decay >= 0) || s.Decay > 1e3:
		return Invalid("decay", "must be in [0, 1000]")
	case s.Epochs < 1 || s.Epochs > 1000:
		return Invalid("epochs", "must be in [1, 1000]")
	case s.BatchSize < 1 || s.BatchSize > 1<<20:
		return Invalid("batch_size", "must be in [1, 1048576]")
	case !(s.ValShare >= 0) || s.ValShare > 0.5:
		return Invalid("val_share", "must be in [0, 0.5]")
	}
	return nil
}

// TrainerSettings configure a study's trainer (the "trainer" group of
// StudySettings): when AligNet data is regenerated over the study's
// generation pool, how, and how long it is kept.
type TrainerSettings struct {
	// Enabled lets the trainer regenerate for the study once it has a
	// generation pool. Default true.
	Enabled bool `json:"enabled"`
	// Clusters is k of the k-means on teacher representations, capped at
	// pool size / 200 (at least 2) for small pools. Default 500.
	Clusters int `json:"clusters"`
	// Triplets is the number of triplets per regeneration. Default 1,000,000.
	Triplets int64 `json:"triplets"`
	// Strategies is the strategy mix: weight by strategy name. Class
	// strategies apply only where the pool's items have labels. Default
	// {"cluster_border": 1}. A patch merges into the mix (RFC 7396): set a
	// strategy to 0 or null to drop it.
	Strategies StrategyMix `json:"strategies"`
	// MinInterval is the least time between two regenerations. Default 10m.
	MinInterval Duration `json:"min_interval"`
	// MinTeacherChange is the relative parameter change
	// ‖θ − θ_last‖/‖θ_last‖ of a teacher version since the version of the
	// last dataset that triggers a regeneration; refit versions always
	// do. Default 0.05.
	MinTeacherChange float64 `json:"min_teacher_change"`
	// KeepDatasets is how many datasets are kept; older ones are deleted
	// with their artifacts. Default 3.
	KeepDatasets int `json:"keep_datasets"`
	// KeepStudentVersions is how many versions of each student are kept
	// (the current one always is). Default 20.
	KeepStudentVersions int `json:"keep_student_versions"`
	// Seed seeds k-means and sampling; regeneration r uses Seed+r. Default 1.
	Seed uint64 `json:"seed"`
	// Student holds the head settings students take unless they set their
	// own.
	Student StudentSettings `json:"student"`
}

// DefaultTrainerSettings returns the trainer settings of a study that sets
// nothing.
func DefaultTrainerSettings() TrainerSettings {
	return TrainerSettings{
		Enabled:             true,
		Clusters:            500,
		Triplets:            1_000_000,
		Strategies:          StrategyMix{StrategyClusterBorder: 1},
		MinInterval:         Duration(10 * time.Minute),
		MinTeacherChange:    0.05,
		KeepDatasets:        3,
		KeepStudentVersions: 20,
		Seed:                1,
		Student:             DefaultStudentSettings(),
	}
}

// StrategyMix weighs sampling strategies by name.
type StrategyMix map[string]float64

// UnmarshalJSON replaces the mix (encoding/json would merge into a map
// decoded over the defaults).
func (m *StrategyMix) UnmarshalJSON(b []byte) error {
	var v map[string]float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*m = v
	return nil
}

// MaxTrainerTriplets bounds TrainerSettings.Triplets.
const MaxTrainerTriplets = 100_000_000

func (t *TrainerSettings) validate() *FieldError {
	switch {
	case t.Clusters < 2 || t.Clusters > 100000:
		return Invalid("clusters", "must be in [2, 100000]")
	case t.Triplets < 1 || t.Triplets > MaxTrainerTriplets:
		return Invalid("triplets", "must be in [1, %d]", MaxTrainerTriplets)
	case len(t.Strategies) == 0:
		return Invalid("strategies", "must name at least one strategy")
	case !(t.MinTeacherChange >= 0) || math.IsInf(t.MinTeacherChange, 0):
		return Invalid("min_teacher_change", "must be a non-negative number")
	case t.KeepDatasets < 1 || t.KeepDatasets > 1000:
		return Invalid("keep_datasets", "must be in [1, 1000]")
	case t.KeepStudentVersions < 1 || t.KeepStudentVersions > 100000:
		return Invalid("keep_student_versions", "must be in [1, 100000]")
	}
	names := make([]string, 0, len(t.Strategies))
	for s := range t.Strategies {
		names = append(names, s)
	}
	sort.Strings(names)
	positive := false
	for _, s := range names {
		w := t.Strategies[s]
		known := false
		for _, k := range Strategies() {
			known = known || k == s
		}
		if !known {
			return Invalid("strategies."+s, "unknown strategy (want one of %v)", Strategies())
		}
		if !(w >= 0) || math.IsInf(w, 0) {
			return Invalid("strategies."+s, "weight must be a non-negative number")
		}
		positive = positive || w > 0
	}
	if !positive {
		return Invalid("strategies", "at least one weight must be positive")
	}
	if err := t.Student.validate(); err != nil {
		return err.Prefix("student")
	}
	return checkDuration("min_interval", t.MinInterval, time.Second)
}

// Pool is a study's generation pool: the items of a space (the teacher's
// base space, of the study space's dimension) that AligNet triplets are
// drawn from, usually far more than the study's item pool.
type Pool struct {
	// Study is the study id.
	Study string `json:"study"`
	// Space holds the pool's embeddings.
	Space string `json:"space"`
	// Items lists the pool's items; nil means every item of Space.
	Items []string `json:"items,omitempty"`
	// UpdatedAt is when the pool was last set.
	UpdatedAt time.Time `json:"updated_at"`
}

// ItemLabels are the categories of one item of a space, for class-based
// strategies (the first label is the item's class) and per-level accuracy.
type ItemLabels struct {
	// Item is the item id.
	Item string `json:"id"`
	// Labels are the item's categories.
	Labels []string `json:"labels"`
}

// MaxCategoriesPerItem and MaxCategoryLen bound item labels.
const (
	MaxCategoriesPerItem = 64
	MaxCategoryLen       = 128
)

// Student is a representation space whose affine head the trainer keeps
// distilling from the study's teacher.
type Student struct {
	// Study is the study id and ID the student's name in it.
	Study string `json:"study"`
	// ID is described with Study.
	ID string `json:"id"`
	// Space holds the student's embeddings of the pool and study items.
	Space string `json:"space"`
	// Settings are the head settings, complete with defaults.
	Settings StudentSettings `json:"settings"`
	// CreatedAt is when the student was registered.
	CreatedAt time.Time `json:"created_at"`
	// Current is the promoted version (0: none yet).
	Current int64 `json:"current"`
	// InitArtifact is the artifact holding θ₀, the head before its first
	// training, which every version decays toward (0: not trained yet).
	InitArtifact int64 `json:"-"`
}

// LevelAccuracy is accuracy split by abstraction level (see
// learner.TripletLevel).
type LevelAccuracy struct {
	// Coarse and Fine are the accuracies and NCoarse and NFine the numbers
	// of judgments at each level.
	Coarse  *float64 `json:"coarse,omitempty"`
	NCoarse int      `json:"n_coarse"`
	Fine    *float64 `json:"fine,omitempty"`
	NFine   int      `json:"n_fine"`
}

// StudentMetrics score a student version.
type StudentMetrics struct {
	// Held scores the version on the study's held-out human judgments.
	Held TeacherMetrics `json:"held_out"`
	// Levels splits the held-out accuracy by abstraction level when the
	// items have labels.
	Levels *LevelAccuracy `json:"levels,omitempty"`
	// Raw scores the student space's raw embeddings on the same judgments.
	Raw TeacherMetrics `json:"raw"`
	// TeacherAgreement is the share of the dataset's validation triplets
	// whose odd one the student picks as the teacher did.
	TeacherAgreement float64 `json:"teacher_agreement"`
	// HeldTeacherAgreement is the share of held-out judgments on which the
	// student's and the teacher's most probable odd one agree.
	HeldTeacherAgreement float64 `json:"held_out_teacher_agreement"`
	// TrainLossBefore and TrainLossAfter are the distillation losses.
	TrainLossBefore float64 `json:"train_loss_before"`
	TrainLossAfter  float64 `json:"train_loss_after"`
	// Triplets is the number of triplets trained on and Seconds the time.
	Triplets int64   `json:"triplets"`
	Seconds  float64 `json:"seconds"`
}

// StudentVersion is one trained head of a student.
type StudentVersion struct {
	// Study, Student and Version identify the version (from 1).
	Study   string `json:"study"`
	Student string `json:"student"`
	Version int64  `json:"version"`
	// CreatedAt is when it was stored.
	CreatedAt time.Time `json:"created_at"`
	// Dataset and TeacherVersion are what it was trained on.
	Dataset        int64 `json:"dataset"`
	TeacherVersion int64 `json:"teacher_version"`
	// Parent is the version it was warm-started from (0: θ₀).
	Parent int64 `json:"parent"`
	// Promoted reports whether it became the current version, and Reason
	// why not when it did not.
	Promoted bool   `json:"promoted"`
	Reason   string `json:"reason,omitempty"`
	// Settings are the head settings it was trained with.
	Settings StudentSettings `json:"settings"`
	// D and P are the head's input and output dimensions.
	D int `json:"d"`
	P int `json:"p"`
	// Metrics score it.
	Metrics StudentMetrics `json:"metrics"`
	// Artifact holds the head as a student .npz.
	Artifact int64 `json:"-"`
}

// Dataset is one stored AligNet dataset of a study.
type Dataset struct {
	// Study and Version identify it (versions count from 1).
	Study   string `json:"study"`
	Version int64  `json:"version"`
	// CreatedAt is when it was stored.
	CreatedAt time.Time `json:"created_at"`
	// TeacherVersion is the teacher version that labelled it.
	TeacherVersion int64 `json:"teacher_version"`
	// Seed seeded k-means and sampling.
	Seed uint64 `json:"seed"`
	// Triplets and Items count the triplets and the pool items.
	Triplets int64 `json:"triplets"`
	Items    int   `json:"items"`
	// Space is the pool's space.
	Space string `json:"space"`
	// InputHash is the SHA-256 of the pool item ids, their embeddings and
	// the teacher's parameters.
	InputHash string `json:"input_hash"`
	// Info holds the strategy mix drawn, the clustering and the stage
	// timings.
	Info DatasetInfo `json:"info"`
	// Size and SHA256 describe the .npz artifact.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Artifact holds the .npz.
	Artifact int64 `json:"-"`
}

// DatasetInfo is the provenance of a dataset beyond its columns.
type DatasetInfo struct {
	// Strategies are the strategies drawn, in order, with their counts.
	Strategies []StrategyCount `json:"strategies"`
	// Clusters is the k used and KMeans "lloyd" or "minibatch" (empty when
	// no strategy needed clusters).
	Clusters int    `json:"clusters"`
	KMeans   string `json:"kmeans,omitempty"`
	// Inertia is the k-means inertia.
	Inertia float64 `json:"inertia"`
	// TeacherTau is the teacher's temperature.
	TeacherTau float64 `json:"teacher_tau"`
	// Stages are the seconds each stage took: load (the pool's
	// embeddings), transform, generate (cluster and sample, which
	// includes labelling), store; publish is recorded in the metrics only,
	// as it runs after the dataset is stored.
	Stages map[string]float64 `json:"stages"`
}

// StrategyCount is one strategy's share of a dataset.
type StrategyCount struct {
	Strategy string `json:"strategy"`
	Triplets int64  `json:"triplets"`
}

// Artifact describes a stored blob (a dataset or a student head).
type Artifact struct {
	// ID identifies it.
	ID int64 `json:"id"`
	// Kind is "dataset" or "student".
	Kind string `json:"kind"`
	// Size is its length in bytes and SHA256 its digest.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// CreatedAt is when it was created.
	CreatedAt time.Time `json:"created_at"`
}

// CheckLabel reports why s is not an acceptable item label, or "".
func CheckLabel(s string) string {
	if s == "" {
		return "must not be empty"
	}
	return CheckText(s, MaxCategoryLen)
}
