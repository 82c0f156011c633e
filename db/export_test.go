package db

import (
	"context"

	"github.com/alignet/alignet"
)

// InsertJudgmentsCopy exposes the COPY variant of InsertJudgments to tests
// and benchmarks.
func (d *DB) InsertJudgmentsCopy(ctx context.Context, js []alignet.Judgment) (int64, error) {
	return d.insertJudgments(ctx, js, insertCopy)
}

// WrapErr exposes the driver error translation to tests.
func WrapErr(what string, err error) error { return wrapErr(what, err) }
