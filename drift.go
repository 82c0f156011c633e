package alignet

import "time"

// Drift signal names (DriftSignal.Name). The set is fixed, so metrics
// labelled by signal stay bounded.
const (
	// SignalTeacherAccuracy is the current teacher's accuracy on the most
	// recent held-out judgments, against the held-out accuracy recorded
	// when its version was stored.
	SignalTeacherAccuracy = "teacher_accuracy"
	// SignalTeacherLogLoss is the current teacher's mean log-loss on the
	// same judgments, against the version's held-out log-loss.
	SignalTeacherLogLoss = "teacher_log_loss"
	// SignalPrequentialAccuracy is the learner's prequential accuracy
	// (each arriving judgment scored before it was trained on, over the
	// learner's most recent window), against the version's held-out
	// accuracy.
	SignalPrequentialAccuracy = "prequential_accuracy"
	// SignalStudentAccuracy is a current student's accuracy on held-out
	// judgments received since its promotion, against its held-out
	// accuracy at promotion.
	SignalStudentAccuracy = "student_accuracy"
	// SignalStudentAgreement is the share of the same judgments on which
	// the student's and the current teacher's predicted odd one agree,
	// against that share at promotion.
	SignalStudentAgreement = "student_teacher_agreement"
)

// DriftSignal is one windowed signal of a study and its change-point
// tests (package drift). Values are nil where undefined (no data yet).
type DriftSignal struct {
	// Name is one of the Signal* names; Student names the student of the
	// student signals.
	Name    string `json:"name"`
	Student string `json:"student,omitempty"`
	// Value is the signal over the recent window of N judgments.
	Value *float64 `json:"value"`
	N     int      `json:"n"`
	// Reference is the value it is compared with, over RefN judgments.
	Reference *float64 `json:"reference"`
	RefN      int      `json:"ref_n"`
	// Z is the test statistic: the two-proportion z of a rate, or the
	// one-sample z of a mean loss; P its one-sided p-value.
	Z *float64 `json:"z"`
	P *float64 `json:"p,omitempty"`
	// CUSUM is the Bernoulli CUSUM statistic after the window's last
	// judgment and Threshold its decision threshold h (rates only).
	CUSUM     *float64 `json:"cusum,omitempty"`
	Threshold *float64 `json:"threshold,omitempty"`
	// Enough reports whether the window held the minimum number of
	// judgments the tests run on.
	Enough bool `json:"enough"`
	// Change reports a change point: a test fired on enough judgments.
	Change bool `json:"change"`
}

// DriftQuantiles are the response-time quantiles of a window, in
// milliseconds.
type DriftQuantiles struct {
	P10 float64 `json:"p10"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// WorkerAgreement is one worker's agreement with the current teacher over
// the recent window, and whether it is far below everyone else's.
type WorkerAgreement struct {
	// Worker is the pseudonym.
	Worker string `json:"worker"`
	// N judgments of the worker were scored; Agreement is the share the
	// teacher predicted.
	N         int     `json:"n"`
	Agreement float64 `json:"agreement"`
	// Pooled is the other tested workers' agreement and P the binomial
	// lower tail of this worker's count under it.
	Pooled float64 `json:"pooled"`
	P      float64 `json:"p"`
	// Low reports that P is below the Bonferroni threshold.
	Low bool `json:"low"`
	// Reasons are the worker's quality flags (alignet.WorkerFlags.Reasons).
	Reasons []string `json:"reasons,omitempty"`
}

// DriftQuality describes the data quality of a study's recent judgments.
type DriftQuality struct {
	// Window is the number of recent judgments read.
	Window int `json:"window"`
	// RTMillis are their response-time quantiles.
	RTMillis *DriftQuantiles `json:"rt_ms,omitempty"`
	// ChecksAnswered and ChecksFailed count the study's attention checks
	// (all time, from the worker flags); FailureRate is their ratio.
	ChecksAnswered int64    `json:"checks_answered"`
	ChecksFailed   int64    `json:"checks_failed"`
	FailureRate    *float64 `json:"attention_failure_rate"`
	// Workers counts the workers who answered a query, Flagged those with
	// a quality flag, and FlaggedShare their ratio.
	Workers      int      `json:"workers"`
	Flagged      int      `json:"flagged"`
	FlaggedShare *float64 `json:"flagged_share"`
	// TestedWorkers counts the workers with enough recent judgments for
	// the agreement test; PooledAgreement is their agreement together and
	// LowAgreement how many are far below the others.
	TestedWorkers   int      `json:"tested_workers"`
	PooledAgreement *float64 `json:"pooled_agreement"`
	LowAgreement    int      `json:"low_agreement"`
	// WorkerList holds the flagged and low-agreement workers, and then the
	// tested workers by ascending agreement, at most a hundred (current
	// snapshot only).
	WorkerList []WorkerAgreement `json:"workers_list,omitempty"`
}

// DriftRoles is the lag and freshness of each role, as Postgres shows it.
type DriftRoles struct {
	// LearnerUpdatedAt is when the learner last stored the teacher state;
	// LearnerStaleness is the seconds since, and LearnerLag the seconds
	// between the newest judgment it applied being accepted and that
	// store.
	LearnerUpdatedAt *time.Time `json:"learner_updated_at,omitempty"`
	LearnerStaleness *float64   `json:"learner_staleness_seconds"`
	LearnerLag       *float64   `json:"learner_lag_seconds"`
	// NewestStoredAt is when the persister stored the newest judgment;
	// PersisterLag is the median seconds from acceptance to storage over
	// the recent window.
	NewestStoredAt *time.Time `json:"newest_stored_at,omitempty"`
	PersisterLag   *float64   `json:"persister_lag_seconds"`
	// DatasetAt and StudentAt are when the trainer stored the newest
	// dataset and student version (nil: none yet).
	DatasetAt *time.Time `json:"trainer_dataset_at,omitempty"`
	StudentAt *time.Time `json:"trainer_student_at,omitempty"`
}

// MinuteCount is the number of judgments accepted in one minute.
type MinuteCount struct {
	Minute time.Time `json:"minute"`
	Count  int64     `json:"count"`
}

// ReliabilityBin is one bin of a reliability diagram of the current teacher
// on recent held-out judgments: the outcome probabilities in [Lo, Hi),
// their mean and how often those outcomes happened.
type ReliabilityBin struct {
	Lo        float64  `json:"lo"`
	Hi        float64  `json:"hi"`
	Count     int      `json:"count"`
	Predicted *float64 `json:"predicted"`
	Observed  *float64 `json:"observed"`
}

// DriftSnapshot is what the drift monitor computed for a study at one
// time. The monitor stores one per study and interval; the newest is the
// study's current drift.
type DriftSnapshot struct {
	// Study is the study id and TakenAt when the snapshot was computed.
	Study   string    `json:"study"`
	TakenAt time.Time `json:"taken_at"`
	// Judgments is the study's stored judgment count; JudgmentsSeen the
	// teacher state's count of applied judgments.
	Judgments     int64 `json:"judgments"`
	JudgmentsSeen int64 `json:"judgments_seen"`
	// TeacherStatus and TeacherVersion describe the current teacher.
	TeacherStatus  TeacherStatus `json:"teacher_status"`
	TeacherVersion int64         `json:"teacher_version"`
	// Signals are the drift signals.
	Signals []DriftSignal `json:"signals"`
	// Changes names the signals (with ":student" for student signals)
	// that flagged a change point.
	Changes []string `json:"changes"`
	// Quality describes data quality.
	Quality DriftQuality `json:"quality"`
	// Roles is the lag and freshness of each role.
	Roles DriftRoles `json:"roles"`
	// QueryMix counts the recent window's judgments by query kind ("none"
	// for judgments posted without a query).
	QueryMix map[string]int `json:"query_mix"`
	// PerMinute counts the judgments accepted in each of the last 60
	// minutes, oldest first (current snapshot only).
	PerMinute []MinuteCount `json:"per_minute,omitempty"`
	// Reliability is the current teacher's reliability diagram on the
	// recent held-out judgments (current snapshot only).
	Reliability []ReliabilityBin `json:"reliability,omitempty"`
}

// Compact returns the snapshot without its per-minute counts, reliability
// bins and worker list, as history holds it.
func (s DriftSnapshot) Compact() DriftSnapshot {
	s.PerMinute, s.Reliability, s.Quality.WorkerList = nil, nil, nil
	return s
}

// StoredJudgment is a judgment with the time the persister stored it.
type StoredJudgment struct {
	Judgment
	// StoredAt is when it was stored.
	StoredAt time.Time
}
