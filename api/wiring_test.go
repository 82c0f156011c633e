package api_test

import (
	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/stream"
)

// The concrete store and producer satisfy the API's consumer-side
// interfaces, so cmd/alignet can pass them to api.New directly.
var (
	_ api.Store     = (*db.DB)(nil)
	_ api.Publisher = (*stream.Producer)(nil)
)
