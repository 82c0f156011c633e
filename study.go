package alignet

import "time"

// Space is a named embedding space: every vector in it has Dim float32s.
type Space struct {
	// Name identifies the space.
	Name string
	// Dim is the number of float32 components of each vector.
	Dim int
	// CreatedAt is when the space was created.
	CreatedAt time.Time
}

// Study is a data-collection campaign: one task over items of one embedding
// space.
type Study struct {
	// ID identifies the study.
	ID string
	// Task is the question the study asks.
	Task Task
	// Space is the embedding space its items live in.
	Space string
	// CreatedAt is when the study was created; creating a study ignores it.
	CreatedAt time.Time
	// Settings are the study's settings, complete with defaults.
	Settings StudySettings
}

// JudgmentFilter selects judgments for export. Zero fields do not filter.
type JudgmentFilter struct {
	// Study restricts the export to one study; empty means all studies.
	Study string
	// Since is the inclusive lower bound on ReceivedAt.
	Since time.Time
	// Until is the exclusive upper bound on ReceivedAt.
	Until time.Time
	// Worker restricts the export to one worker pseudonym.
	Worker string
}

// WorkerStudy summarises one worker's judgments in one study.
type WorkerStudy struct {
	// Study is the study id.
	Study string
	// Judgments is the number of judgments the worker gave in it.
	Judgments int64
	// First and Last are the earliest and latest ReceivedAt.
	First, Last time.Time
}

// StudyStamp tells cheaply whether what a study's teacher is computed from
// changed: readers keep the stamp they built a copy from and compare it
// with a fresh one. It involves no clock, so it is immune to clock skew
// between the processes that write.
type StudyStamp struct {
	// Inputs grows whenever items are added to the study's pool or
	// embeddings of its space are written.
	Inputs int64
	// TeacherUpdatedAt is the UpdatedAt of the study's teacher state; zero
	// when the study has none.
	TeacherUpdatedAt time.Time
	// TeacherVersion is the Version of the study's teacher state (0 when it
	// has none or no version yet).
	TeacherVersion int64
}
