package alignet

import (
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"
)

// QueryKind says why the server asked a query. Pages never learn it: it is
// stamped on the judgment by the API from the query the judgment answers.
type QueryKind string

const (
	// QueryActive is a triplet the active scorer picked from the candidate
	// pool as the most informative.
	QueryActive QueryKind = "active"
	// QueryRandom is a uniform random triplet over the study's items. Its
	// judgments are the unbiased test set of studies that ask them.
	QueryRandom QueryKind = "random"
	// QueryRepeat is one of the study's fixed repeat triplets, asked of
	// many workers to measure human response distributions.
	QueryRepeat QueryKind = "repeat"
	// QueryCheck is an attention check with a known answer.
	QueryCheck QueryKind = "check"
)

// QueryKinds returns every query kind, in the order of QueryMix's fields.
func QueryKinds() [4]QueryKind {
	return [4]QueryKind{QueryActive, QueryRandom, QueryRepeat, QueryCheck}
}

// Valid reports whether k is a known kind.
func (k QueryKind) Valid() bool {
	return k == QueryActive || k == QueryRandom || k == QueryRepeat || k == QueryCheck
}

// Scorers of active queries (QuerySettings.Scorer).
const (
	// ScorerEntropy scores a triplet by the teacher's predictive entropy.
	ScorerEntropy = "entropy"
	// ScorerInfoGain scores a triplet by the expected information gain
	// (BALD) under a posterior over the teacher's item representations.
	ScorerInfoGain = "infogain"
	// ScorerDisagreement scores a triplet by the divergence between the
	// teacher and a registered student.
	ScorerDisagreement = "disagreement"
)

// DefaultScorer is the scorer of a study that sets none: entropy, the
// cheapest, which the THINGS simulation measured against random selection
// (see README, "Query selection"); infogain was not simulated yet.
const DefaultScorer = ScorerEntropy

// QueryMix holds the share of each kind among the queries a study serves.
// The shares are non-negative and sum to one.
type QueryMix struct {
	// Active is the share of active queries. Default 0.75.
	Active float64 `json:"active"`
	// Random is the share of uniform random queries. Default 0.15.
	Random float64 `json:"random"`
	// Repeat is the share of repeat queries. Default 0.05.
	Repeat float64 `json:"repeat"`
	// Check is the share of attention checks. Default 0.05.
	Check float64 `json:"check"`
}

// Share returns the share of kind k (0 for an unknown kind).
func (m QueryMix) Share(k QueryKind) float64 {
	switch k {
	case QueryActive:
		return m.Active
	case QueryRandom:
		return m.Random
	case QueryRepeat:
		return m.Repeat
	case QueryCheck:
		return m.Check
	}
	return 0
}

// FlagSettings decide when a worker is flagged. Flagged workers keep
// their judgments (nothing is deleted) but TrainingRole excludes them from
// learning.
type FlagSettings struct {
	// MaxFailedChecks flags a worker who failed this many attention checks.
	// Default 2 (Prolific's rule: one failure is not grounds for rejection).
	MaxFailedChecks int `json:"max_failed_checks"`
	// FastShare flags a worker when more than this share of their answered
	// trials were faster than QuerySettings.MinRTMillis. Default 0.5
	// ("most trials").
	FastShare float64 `json:"fast_share"`
	// MinTrials is the number of answered trials before the response-time
	// rule applies. Default 10.
	MinTrials int `json:"min_trials"`
}

// Reasons returns why a worker with the given counts is flagged, in a
// fixed order ("failed_checks", "fast_responses"); none means not flagged.
// It is the one flag rule: the store applies it whenever counts change.
func (f FlagSettings) Reasons(w WorkerFlags) []string {
	var r []string
	if w.ChecksFailed >= int64(f.MaxFailedChecks) {
		r = append(r, FlagFailedChecks)
	}
	if w.Trials >= int64(f.MinTrials) && w.Trials > 0 && float64(w.Fast) > f.FastShare*float64(w.Trials) {
		r = append(r, FlagFastResponses)
	}
	return r
}

// Flag reasons reported by FlagSettings.Reasons.
const (
	// FlagFailedChecks means the worker failed MaxFailedChecks or more
	// attention checks.
	FlagFailedChecks = "failed_checks"
	// FlagFastResponses means most of the worker's trials were answered
	// faster than the study's minimum response time.
	FlagFastResponses = "fast_responses"
)

// CompletionSettings say where a participant goes when their session is
// complete.
type CompletionSettings struct {
	// Code is the completion code. Prolific sessions require it (it is the
	// code the study was given on Prolific). For MTurk and generic
	// sessions an empty code means a per-session code. Default "".
	Code string `json:"code"`
	// Redirect is the URL generic sessions are sent to when complete; the
	// placeholders {code} and {session} are replaced (URL-escaped). Empty
	// means no redirect. Prolific and MTurk sessions ignore it. Default "".
	Redirect string `json:"redirect"`
}

// QuerySettings configure query selection and participant sessions (the
// "queries" group of StudySettings). Studies start from
// DefaultQuerySettings.
type QuerySettings struct {
	// Mix is the share of each query kind. Default active 0.75, random
	// 0.15, repeat 0.05, check 0.05.
	Mix QueryMix `json:"mix"`
	// Scorer picks active queries: "entropy", "infogain" or
	// "disagreement" (the latter needs Student). Default DefaultScorer.
	Scorer string `json:"scorer"`
	// Student is the registered student the disagreement scorer compares
	// the teacher against. Default "".
	Student string `json:"student"`
	// PoolSize is the number of candidate triplets the active scorer
	// rescores at each new teacher. Default 100000.
	PoolSize int `json:"pool_size"`
	// Trials is the number of queries a session answers before it is
	// complete. Default 50.
	Trials int `json:"trials"`
	// TTL is how long a served query may be answered; later answers are
	// refused (410) and the query is handed out again. Default 30m.
	TTL Duration `json:"ttl"`
	// MinRTMillis is the minimum plausible response time in milliseconds;
	// answers faster than it count towards FlagSettings.FastShare.
	// Default 300.
	MinRTMillis int `json:"min_rt_ms"`
	// Repeats is the number of fixed repeat triplets drawn when the study
	// first serves queries. Default 200.
	Repeats int `json:"repeats"`
	// Discount multiplies an active candidate's score once for each time
	// it is handed out and not yet answered, and once for each answer
	// since its score was computed, so concurrent workers are not all sent
	// the same top triplet. Default 0.5.
	Discount float64 `json:"discount"`
	// CheckConfidence is the teacher probability at or above which a
	// triplet serves as an attention check when the study supplies none.
	// Default 0.95.
	CheckConfidence float64 `json:"check_confidence"`
	// Flags decide when a worker is flagged.
	Flags FlagSettings `json:"flags"`
	// Completion says where completed sessions go.
	Completion CompletionSettings `json:"completion"`
}

// DefaultQuerySettings returns the query settings of a study that sets
// nothing.
func DefaultQuerySettings() QuerySettings {
	return QuerySettings{
		Mix:             QueryMix{Active: 0.75, Random: 0.15, Repeat: 0.05, Check: 0.05},
		Scorer:          DefaultScorer,
		PoolSize:        100000,
		Trials:          50,
		TTL:             Duration(30 * time.Minute),
		MinRTMillis:     300,
		Repeats:         200,
		Discount:        0.5,
		CheckConfidence: 0.95,
		Flags:           FlagSettings{MaxFailedChecks: 2, FastShare: 0.5, MinTrials: 10},
	}
}

// Limits of QuerySettings and checks.
const (
	// MaxPoolSize bounds QuerySettings.PoolSize.
	MaxPoolSize = 10_000_000
	// MaxTrials bounds QuerySettings.Trials.
	MaxTrials = 10_000
	// MaxRepeats bounds QuerySettings.Repeats.
	MaxRepeats = 100_000
	// MaxChecks bounds the study-supplied attention checks.
	MaxChecks = 10_000
	// MaxCompletionCodeLen bounds completion codes, in characters.
	MaxCompletionCodeLen = 64
	// MaxRedirectLen bounds redirect URLs, in characters.
	MaxRedirectLen = 2048
)

func (q *QuerySettings) validate() *FieldError {
	for _, k := range QueryKinds() {
		if v := q.Mix.Share(k); !(v >= 0) || v > 1 {
			return Invalid("mix."+string(k), "must be in [0, 1]")
		}
	}
	if sum := q.Mix.Active + q.Mix.Random + q.Mix.Repeat + q.Mix.Check; math.Abs(sum-1) > 1e-9 {
		return Invalid("mix", "shares must sum to 1, got %g", sum)
	}
	switch q.Scorer {
	case ScorerEntropy, ScorerInfoGain:
	case ScorerDisagreement:
		if q.Student == "" {
			return Invalid("student", "the disagreement scorer needs a registered student")
		}
	default:
		return Invalid("scorer", "must be %q, %q or %q", ScorerEntropy, ScorerInfoGain, ScorerDisagreement)
	}
	switch {
	case q.Student != "" && !ValidName(q.Student):
		return Invalid("student", "student names are 1-%d characters of [A-Za-z0-9._-]", MaxNameLen)
	case q.PoolSize < 1 || q.PoolSize > MaxPoolSize:
		return Invalid("pool_size", "must be in [1, %d]", MaxPoolSize)
	case q.Trials < 1 || q.Trials > MaxTrials:
		return Invalid("trials", "must be in [1, %d]", MaxTrials)
	case q.MinRTMillis < 0 || q.MinRTMillis > 600000:
		return Invalid("min_rt_ms", "must be in [0, 600000]")
	case q.Repeats < 0 || q.Repeats > MaxRepeats:
		return Invalid("repeats", "must be in [0, %d]", MaxRepeats)
	case q.Mix.Repeat > 0 && q.Repeats == 0:
		return Invalid("repeats", "must be positive when mix.repeat is")
	case !(q.Discount > 0) || q.Discount > 1:
		return Invalid("discount", "must be in (0, 1]")
	case !(q.CheckConfidence >= 0.5) || q.CheckConfidence > 1:
		return Invalid("check_confidence", "must be in [0.5, 1]")
	case q.Flags.MaxFailedChecks < 1:
		return Invalid("flags.max_failed_checks", "must be at least 1")
	case !(q.Flags.FastShare >= 0) || q.Flags.FastShare > 1:
		return Invalid("flags.fast_share", "must be in [0, 1]")
	case q.Flags.MinTrials < 1:
		return Invalid("flags.min_trials", "must be at least 1")
	}
	if msg := CheckText(q.Completion.Code, MaxCompletionCodeLen); msg != "" {
		return Invalid("completion.code", "%s", msg)
	}
	if q.Completion.Redirect != "" {
		if msg := CheckText(q.Completion.Redirect, MaxRedirectLen); msg != "" {
			return Invalid("completion.redirect", "%s", msg)
		}
		u, err := url.Parse(strings.NewReplacer("{code}", "x", "{session}", "x").Replace(q.Completion.Redirect))
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return Invalid("completion.redirect", "must be an absolute http(s) URL")
		}
	}
	return checkDuration("ttl", q.TTL, 10*time.Second)
}

// CheckTriplet is an attention check a study supplies: three items of its
// pool and the answer a careful participant gives.
type CheckTriplet struct {
	// Items are the three items. For anchor studies Items[0] is the head.
	Items [3]string `json:"items"`
	// Answer is the expected choice: the odd one out for odd-one-out
	// studies, the item closer to the head for anchor studies.
	Answer string `json:"answer"`
}

// validateChecks checks the study-supplied attention checks. Whether the
// items are in the study's pool and fit its task is checked when the
// checks are served: a check that does not fit is skipped.
func validateChecks(cs []CheckTriplet) *FieldError {
	if len(cs) > MaxChecks {
		return Invalid("", "at most %d checks", MaxChecks)
	}
	for i, c := range cs {
		field := fmt.Sprintf("[%d]", i)
		for k, it := range c.Items {
			if !ValidItemID(it) {
				return Invalid(fmt.Sprintf("%s.items[%d]", field, k), "must be an item id (1-%d characters of text)", MaxItemIDLen)
			}
			for l := 0; l < k; l++ {
				if c.Items[l] == it {
					return Invalid(fmt.Sprintf("%s.items[%d]", field, k), "item %q appears twice", it)
				}
			}
		}
		if c.Answer != c.Items[0] && c.Answer != c.Items[1] && c.Answer != c.Items[2] {
			return Invalid(field+".answer", "must be one of the three items")
		}
	}
	return nil
}

// Platform is the crowdsourcing platform a session comes from.
type Platform string

const (
	// PlatformProlific is Prolific (PROLIFIC_PID, STUDY_ID, SESSION_ID).
	PlatformProlific Platform = "prolific"
	// PlatformMTurk is Amazon Mechanical Turk (workerId, assignmentId,
	// hitId, turkSubmitTo).
	PlatformMTurk Platform = "mturk"
	// PlatformGeneric is any other source of participants.
	PlatformGeneric Platform = "generic"
)

// Valid reports whether p is a known platform.
func (p Platform) Valid() bool {
	return p == PlatformProlific || p == PlatformMTurk || p == PlatformGeneric
}

// Session is one participant's visit: a budget of trials served by the
// API and answered by judgments linked to its queries.
type Session struct {
	// ID identifies the session.
	ID string `json:"id"`
	// Study is the study the session belongs to.
	Study string `json:"study"`
	// Worker is the pseudonym of the platform worker id.
	Worker string `json:"worker"`
	// Platform is where the participant came from.
	Platform Platform `json:"platform"`
	// External is the platform's id of the visit (Prolific SESSION_ID,
	// MTurk assignmentId); a worker opening a session with the same one
	// gets this session back, even once it is complete.
	External string `json:"external,omitempty"`
	// Params are the platform parameters the session was opened with,
	// without raw worker ids.
	Params map[string]string `json:"params,omitempty"`
	// Trials is the session's budget of answered queries.
	Trials int `json:"trials"`
	// CreatedAt is when the session was opened.
	CreatedAt time.Time `json:"created_at"`
	// CompletedAt is when the budget was spent, or nil while open.
	CompletedAt *time.Time `json:"completed_at,omitempty"`
}

// Query is one triplet the API handed to a session.
type Query struct {
	// ID identifies the query within its study.
	ID string `json:"id"`
	// Study, Session and Worker say to whom it was served.
	Study string `json:"study"`
	// Session is described with Study.
	Session string `json:"session"`
	// Worker is described with Study.
	Worker string `json:"worker"`
	// Kind says why it was asked.
	Kind QueryKind `json:"kind"`
	// Items are the three items in display order; for anchor studies
	// Items[0] is the head.
	Items [3]string `json:"items"`
	// Expected is the answer of an attention check ("" for other kinds).
	Expected string `json:"expected,omitempty"`
	// Score is the active scorer's value of the triplet under the teacher
	// version it was served with.
	Score float64 `json:"score"`
	// TeacherVersion is the teacher version whose scores picked it (0: the
	// raw embeddings or the state before any version).
	TeacherVersion int64 `json:"teacher_version"`
	// ServedAt is when it was handed out and ExpiresAt when answers stop
	// being accepted.
	ServedAt time.Time `json:"served_at"`
	// ExpiresAt is described with ServedAt.
	ExpiresAt time.Time `json:"expires_at"`
	// AnsweredBy is the id of the judgment that answered it, "" while
	// unanswered.
	AnsweredBy string `json:"answered_by,omitempty"`
	// AnsweredAt is when it was answered, or nil.
	AnsweredAt *time.Time `json:"answered_at,omitempty"`
}

// Answer binds a judgment to the query it answers, with what the API
// measured about the answer.
type Answer struct {
	// Query is the query as served.
	Query Query
	// JudgmentID is the id of the answering judgment.
	JudgmentID string
	// At is when the API accepted the answer.
	At time.Time
	// RTMillis is the judgment's response time.
	RTMillis int32
	// Fast reports a response time below the study's minimum.
	Fast bool
	// CheckPassed reports, for an attention check, whether the expected
	// answer was given; nil for other kinds.
	CheckPassed *bool
}

// AnswerOutcome is what binding an answer to its query found.
type AnswerOutcome string

const (
	// AnswerBound means the query was unanswered and is now bound.
	AnswerBound AnswerOutcome = "bound"
	// AnswerRepeated means the query was already bound to the same
	// judgment id: a retry, which succeeds again.
	AnswerRepeated AnswerOutcome = "repeated"
	// AnswerTaken means another judgment answered the query.
	AnswerTaken AnswerOutcome = "taken"
	// AnswerExpired means the query's TTL passed before an answer.
	AnswerExpired AnswerOutcome = "expired"
)

// WorkerFlags are a worker's answer counts in a study and whether they are
// flagged.
type WorkerFlags struct {
	// Study and Worker (pseudonym) identify the counts.
	Study string `json:"study"`
	// Worker is described with Study.
	Worker string `json:"worker"`
	// Trials counts the worker's answered queries.
	Trials int64 `json:"trials"`
	// Fast counts those answered faster than the study's minimum.
	Fast int64 `json:"fast"`
	// ChecksPassed and ChecksFailed count attention checks.
	ChecksPassed int64 `json:"checks_passed"`
	// ChecksFailed is described with ChecksPassed.
	ChecksFailed int64 `json:"checks_failed"`
	// Flagged is set once Reasons is not empty.
	Flagged bool `json:"flagged"`
	// Reasons say why the worker is flagged (FlagFailedChecks,
	// FlagFastResponses).
	Reasons []string `json:"reasons,omitempty"`
	// FlaggedAt is when the worker was first flagged.
	FlaggedAt *time.Time `json:"flagged_at,omitempty"`
	// UpdatedAt is when the counts last changed.
	UpdatedAt time.Time `json:"updated_at"`
}

// Role is what learning may do with a judgment.
type Role string

const (
	// RoleTrain means the judgment may be trained on.
	RoleTrain Role = "train"
	// RoleHeldOut means the judgment scores models and is never trained on.
	RoleHeldOut Role = "held_out"
	// RoleExcluded means the judgment is kept but neither trained nor
	// scored on: an attention check, or a flagged worker's judgment.
	RoleExcluded Role = "excluded"
)

// TrainingRole is the one rule deciding which judgments learning may use;
// the learner, refits, the trainer and simulations all call it.
//
//   - A flagged worker's judgments and attention checks are excluded.
//   - In a study whose mix asks random queries, judgments of random
//     queries are the held-out test set and other served queries are
//     trained on; judgments posted without a query (imports, pages that
//     pick their own triplets) fall back to the hash split below.
//   - Otherwise HeldOut(study, id, settings.Learner.HeldOutShare) decides.
func TrainingRole(j Judgment, s StudySettings, flagged bool) Role {
	return TrainingRoleOf(j.QueryKind, HeldOutScore(j.Study, j.ID), s, flagged)
}

// TrainingRoleOf is TrainingRole for a judgment known by its query kind
// and its HeldOutScore, for learners that keep the score of a judgment
// rather than its id.
func TrainingRoleOf(kind QueryKind, heldOutScore float64, s StudySettings, flagged bool) Role {
	switch {
	case flagged || kind == QueryCheck:
		return RoleExcluded
	case s.Queries.Mix.Random > 0 && kind != "":
		if kind == QueryRandom {
			return RoleHeldOut
		}
		return RoleTrain
	case heldOutBy(heldOutScore, s.Learner.HeldOutShare):
		return RoleHeldOut
	}
	return RoleTrain
}
