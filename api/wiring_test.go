package api_test

import (
	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/stream"
)

// The concrete store and producer satisfy the API's consumer-side
// interfaces, so internal/server can pass them to api.New directly.
var (
	_ api.SpaceStore       = (*db.DB)(nil)
	_ api.StudyStore       = (*db.DB)(nil)
	_ api.JudgmentExporter = (*db.DB)(nil)
	_ api.KeyStore         = (*db.DB)(nil)
	_ api.WorkerStore      = (*db.DB)(nil)
	_ api.ItemStore        = (*db.DB)(nil)
	_ api.ReadinessChecker = (*db.DB)(nil)
	_ api.TrainerStore     = (*db.DB)(nil)
	_ api.Publisher        = (*stream.Producer)(nil)
)
