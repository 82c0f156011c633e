package alignet

import (
	"fmt"
	"hash/fnv"
	"math"
	"time"
)

// LearnerSettings configure a study's online learner (the "learner" group
// of StudySettings). The zero value is not meaningful: studies start from
// DefaultLearnerSettings.
type LearnerSettings struct {
	// Online enables Adam steps on arriving judgments. Default true.
	Online bool `json:"online"`
	// Refits enables exact refits from the Postgres record. Default true.
	Refits bool `json:"refits"`
	// MinJudgments is the judgment count at which the first refit runs.
	// Default 500.
	MinJudgments int `json:"min_judgments"`
	// RefitFactor triggers a refit once the study's judgment count has
	// grown by this factor since the last one. Default 1.25.
	RefitFactor float64 `json:"refit_factor"`
	// HeldOutShare is the deterministic share of judgments (by a keyed hash
	// of the judgment id) that is never trained on and scores every
	// version. Default 0.1.
	HeldOutShare float64 `json:"held_out_share"`
	// OutDim is the teacher's output dimension; 0 means the space's
	// dimension. Default 0.
	OutDim int `json:"out_dim"`
	// Lambdas is the grid of regularisation strengths a refit chooses from
	// on validation data. Default [0.3, 0.1, 0.03].
	Lambdas []float64 `json:"lambdas"`
	// MaxIter bounds the L-BFGS iterations of a refit per λ. Default 60.
	MaxIter int `json:"max_iter"`
	// Distill makes refits uncertainty-distilled (soft targets from the
	// ensemble of VICE and the hard teacher, and the human response
	// distributions of repeated triplets). Default true.
	Distill bool `json:"distill"`
	// LearningRate is the Adam step size of online updates. Default 1e-3.
	LearningRate float64 `json:"learning_rate"`
	// VersionInterval is how often an online version is stored while
	// judgments arrive. Default 10m.
	VersionInterval Duration `json:"version_interval"`
	// KeepVersions is how many versions are kept; older ones are deleted.
	// Default 100.
	KeepVersions int `json:"keep_versions"`
}

// DefaultLearnerSettings returns the learner settings of a study that sets
// nothing.
func DefaultLearnerSettings() LearnerSettings {
	return LearnerSettings{
		Online:          true,
		Refits:          true,
		MinJudgments:    500,
		RefitFactor:     1.25,
		HeldOutShare:    0.1,
		Lambdas:         []float64{0.3, 0.1, 0.03},
		MaxIter:         60,
		Distill:         true,
		LearningRate:    1e-3,
		VersionInterval: Duration(10 * time.Minute),
		KeepVersions:    100,
	}
}

func (l *LearnerSettings) validate() *FieldError {
	switch {
	case l.MinJudgments < 10:
		return Invalid("min_judgments", "must be at least 10")
	case !(l.RefitFactor > 1) || l.RefitFactor > 100:
		return Invalid("refit_factor", "must be in (1, 100]")
	case !(l.HeldOutShare >= 0) || l.HeldOutShare > 0.5:
		return Invalid("held_out_share", "must be in [0, 0.5]")
	case l.OutDim < 0:
		return Invalid("out_dim", "must not be negative (0 means the space's dimension)")
	case len(l.Lambdas) == 0 || len(l.Lambdas) > 20:
		return Invalid("lambdas", "must hold 1 to 20 values")
	case l.MaxIter < 1 || l.MaxIter > 10000:
		return Invalid("max_iter", "must be in [1, 10000]")
	case !(l.LearningRate > 0) || l.LearningRate > 1:
		return Invalid("learning_rate", "must be in (0, 1]")
	case l.KeepVersions < 1 || l.KeepVersions > 100000:
		return Invalid("keep_versions", "must be in [1, 100000]")
	}
	for i, v := range l.Lambdas {
		if !(v >= 0) || math.IsInf(v, 0) {
			return Invalid(fmt.Sprintf("lambdas[%d]", i), "must be a non-negative number")
		}
	}
	return checkDuration("version_interval", l.VersionInterval, time.Second)
}

// HeldOut reports whether the judgment id of study falls in the held-out
// share: its HeldOutScore is below share. It is deterministic, so every
// process and every offline script agrees on the split.
func HeldOut(study, id string, share float64) bool {
	return share > 0 && heldOutBy(HeldOutScore(study, id), share)
}

// heldOutBy reports whether a judgment of the given HeldOutScore is held
// out under share.
func heldOutBy(score, share float64) bool { return share > 0 && score < share }

// HeldOutScore maps the judgment id of study to [0, 1) by a keyed hash:
// FNV-1a 64 of study, NUL, id, finished with the SplitMix64 mixer (FNV
// alone barely moves its top bits when only the last characters of an id
// differ, as in sequential ids). A judgment is held out under a share s
// when its score is below s, so a learner that remembers scores can apply
// a changed share to judgments it no longer has the ids of.
func HeldOutScore(study, id string) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(study))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(id))
	z := h.Sum64()
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}

// TeacherStatus says how far a study's teacher has come.
type TeacherStatus string

const (
	// TeacherEmpty means no judgment has been applied yet: the teacher is
	// the raw embedding space.
	TeacherEmpty TeacherStatus = "empty"
	// TeacherOnline means the teacher has only taken online steps from its
	// initial transform; no full fit has run yet.
	TeacherOnline TeacherStatus = "online"
	// TeacherFitted means at least one exact refit has run.
	TeacherFitted TeacherStatus = "fitted"
)

// TeacherParams are the parameters of an affine teacher
// z = W·(x − Mean)/Std + B, stored compactly as float32.
type TeacherParams struct {
	// Task is the task the teacher predicts.
	Task Task `json:"task"`
	// D is the input dimension and P the output dimension.
	D int `json:"d"`
	// P is described with D.
	P int `json:"p"`
	// W is the P×D weight matrix, row-major.
	W []float32 `json:"-"`
	// B is the bias of length P.
	B []float32 `json:"-"`
	// Mean and Std standardise the inputs with scalars.
	Mean float64 `json:"mean"`
	// Std is described with Mean.
	Std float64 `json:"std"`
	// Tau is the softmax temperature.
	Tau float64 `json:"tau"`
	// Lambda is the regularisation strength the parameters were fitted with.
	Lambda float64 `json:"lambda"`
}

// Validate checks shapes and that every number is finite.
func (p *TeacherParams) Validate() error {
	switch {
	case !p.Task.Valid():
		return Invalid("task", "unknown task %q", p.Task)
	case p.D < 1 || p.P < 1 || p.P > p.D:
		return Invalid("p", "dimensions P=%d, D=%d must satisfy 1 ≤ P ≤ D", p.P, p.D)
	case len(p.W) != p.P*p.D:
		return Invalid("w", "W has %d values, want %d×%d", len(p.W), p.P, p.D)
	case len(p.B) != p.P:
		return Invalid("b", "b has %d values, want %d", len(p.B), p.P)
	case !(p.Std > 0) || math.IsInf(p.Std, 0) || math.IsNaN(p.Mean) || math.IsInf(p.Mean, 0):
		return Invalid("std", "mean must be finite and std positive")
	case !(p.Tau > 0) || math.IsInf(p.Tau, 0):
		return Invalid("tau", "tau must be positive")
	}
	for i, v := range p.W {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return Invalid("w", "W[%d] is not finite", i)
		}
	}
	for i, v := range p.B {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return Invalid("b", "b[%d] is not finite", i)
		}
	}
	return nil
}

// TeacherMetrics score a model on held-out human judgments.
type TeacherMetrics struct {
	// N is the number of held-out judgments scored.
	N int `json:"n"`
	// Accuracy is the share of judgments whose human choice is the model's
	// unique most probable outcome (ties count as wrong).
	Accuracy float64 `json:"accuracy"`
	// NLL is the mean negative log-likelihood of the human choices.
	NLL float64 `json:"nll"`
	// ECE is the expected calibration error over 10 confidence bins.
	ECE float64 `json:"ece"`
	// Repeats is the number of repeated triplets scored by KLHuman and
	// Majority; both are absent when the study has none.
	Repeats int `json:"repeats,omitempty"`
	// KLHuman is the mean KL(human ‖ model) over repeated triplets.
	KLHuman *float64 `json:"kl_human,omitempty"`
	// Majority is the share of repeated triplets whose majority choice is
	// the model's most probable outcome.
	Majority *float64 `json:"majority_agreement,omitempty"`
}

// TeacherEval is a version's evaluation on the held-out share, with the
// raw embeddings (dot products at τ=1) scored on the same judgments.
type TeacherEval struct {
	// Teacher scores the teacher.
	Teacher TeacherMetrics `json:"teacher"`
	// Raw scores the raw embeddings.
	Raw TeacherMetrics `json:"raw"`
}

// Prequential is the rolling score of arriving judgments, each scored by
// the current teacher before it was trained on.
type Prequential struct {
	// Window is the number of most recent judgments the window holds.
	Window int `json:"window"`
	// N is how many judgments are in the window so far (≤ Window).
	N int `json:"n"`
	// Accuracy and LogLoss are the window's means.
	Accuracy float64 `json:"accuracy"`
	// LogLoss is described with Accuracy.
	LogLoss float64 `json:"log_loss"`
}

// TeacherHyper are the hyper-parameters of a teacher.
type TeacherHyper struct {
	// Targets is "hard" or "distilled".
	Targets string `json:"targets"`
	// Lambdas is the grid the last refit chose Lambda from.
	Lambdas []float64 `json:"lambdas,omitempty"`
	// LearningRate is the online Adam step size.
	LearningRate float64 `json:"learning_rate"`
	// Seed seeds the refit's validation split and the human model.
	Seed uint64 `json:"seed"`
}

// TeacherState is a study's current teacher, updated in place by the
// learner at least once a second while judgments arrive.
type TeacherState struct {
	// Study is the study id.
	Study string `json:"study"`
	// Status says whether the teacher is still the raw space, online only,
	// or fitted.
	Status TeacherStatus `json:"status"`
	// Version is the newest stored version this state descends from; 0
	// before the first version.
	Version int64 `json:"version"`
	// UpdatedAt is when the learner last stored the state.
	UpdatedAt time.Time `json:"updated_at"`
	// JudgmentsSeen counts distinct judgment ids the learner has applied
	// (trained on, held out or skipped), each once.
	JudgmentsSeen int64 `json:"judgments_seen"`
	// JudgmentsTrained counts the judgments the online path trained on.
	JudgmentsTrained int64 `json:"judgments_trained"`
	// NewestAcceptedAt is the API accept time of the newest applied
	// judgment; UpdatedAt minus it is the freshness.
	NewestAcceptedAt time.Time `json:"newest_accepted_at"`
	// Params are the current parameters.
	Params TeacherParams `json:"params"`
	// Hyper are the current hyper-parameters.
	Hyper TeacherHyper `json:"hyper"`
	// Prequential holds the rolling windows (1,000 and 10,000 judgments).
	Prequential []Prequential `json:"prequential"`
	// Eval is the held-out evaluation of the newest version, if any.
	Eval *TeacherEval `json:"eval,omitempty"`
	// LastRefitAt is when the last refit finished, if one did.
	LastRefitAt *time.Time `json:"last_refit_at,omitempty"`
	// LastRefitJudgments is the judgment count the last refit read.
	LastRefitJudgments int64 `json:"last_refit_judgments"`
	// Skipped counts judgments not trained on, by reason (held_out,
	// excluded, no_embedding, ...).
	Skipped map[string]int64 `json:"skipped,omitempty"`
}

// Kinds of teacher versions.
const (
	// VersionRefit is written after every exact refit.
	VersionRefit = "refit"
	// VersionOnline is written at the study's version interval.
	VersionOnline = "online"
	// VersionManual is written on demand.
	VersionManual = "manual"
)

// TeacherVersion is an immutable snapshot of a study's teacher.
type TeacherVersion struct {
	// Study is the study id and Version its number, counting from 1.
	Study string `json:"study"`
	// Version is described with Study.
	Version int64 `json:"version"`
	// CreatedAt is when the version was stored.
	CreatedAt time.Time `json:"created_at"`
	// Kind is VersionRefit, VersionOnline or VersionManual.
	Kind string `json:"kind"`
	// Parent is the version this one descends from (0 for none).
	Parent int64 `json:"parent"`
	// JudgmentsSeen is the state's count when the version was taken.
	JudgmentsSeen int64 `json:"judgments_seen"`
	// Offsets maps each Kafka partition of the judgments topic that holds
	// the study to the next offset not covered by this version.
	Offsets map[int32]int64 `json:"offsets"`
	// Params are the parameters.
	Params TeacherParams `json:"params"`
	// Hyper are the hyper-parameters.
	Hyper TeacherHyper `json:"hyper"`
	// Eval scores the version on the held-out share at the time.
	Eval TeacherEval `json:"eval"`
}

// LearnerProgress is what a learner stores at each flush, in one
// transaction: the states of the studies it changed, the judgment ids it
// applied since the last flush, and the next Kafka offset of every
// partition it consumed.
type LearnerProgress struct {
	// Group and Topic identify the learner's consumer group and topic.
	Group string
	// Topic is described with Group.
	Topic string
	// Offsets maps partition to the next offset to consume.
	Offsets map[int32]int64
	// States are the changed studies' current teachers.
	States []TeacherState
	// Seen maps study to the hashes (IDHash) of newly applied judgment ids.
	Seen map[string][]uint64
}

// IDHash is the 64-bit hash (FNV-1a) under which the learner remembers an
// applied judgment id.
func IDHash(id string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return h.Sum64()
}
