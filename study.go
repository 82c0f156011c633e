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
