package db_test

import (
	"testing"

	"github.com/alignet/alignet/db/dbtest"
	"github.com/alignet/alignet/internal/storetest"
)

// TestStoreSuite runs the store suite that the API's in-memory fake also
// passes, so the two cannot drift apart.
func TestStoreSuite(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) storetest.Store { return dbtest.New(t) })
}
