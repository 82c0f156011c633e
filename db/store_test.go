package db_test

import (
	"context"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
	"github.com/alignet/alignet/internal/storetest"
)

// TestStoreSuite runs the store suite that the API's in-memory fake also
// passes, so the two cannot drift apart.
func TestStoreSuite(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) storetest.Store { return seeder{dbtest.New(t)} })
}

// seeder stores datasets and student versions as the trainer does: an
// artifact written in chunks, completed by the insert that refers to it.
type seeder struct{ *db.DB }

func (s seeder) artifact(ctx context.Context, kind string, data []byte) (alignet.Artifact, error) {
	w, err := s.CreateArtifact(ctx, kind)
	if err != nil {
		return alignet.Artifact{}, err
	}
	if _, err := w.Write(data); err != nil {
		return alignet.Artifact{}, err
	}
	return w.Close()
}

func (s seeder) SeedDataset(ctx context.Context, ds alignet.Dataset, data []byte, keep int) (alignet.Dataset, error) {
	a, err := s.artifact(ctx, "dataset", data)
	if err != nil {
		return alignet.Dataset{}, err
	}
	ds.Artifact, ds.Size, ds.SHA256 = a.ID, a.Size, a.SHA256
	return s.InsertDataset(ctx, ds, keep)
}

func (s seeder) SeedStudentVersion(ctx context.Context, v alignet.StudentVersion, head []byte) (alignet.StudentVersion, error) {
	a, err := s.artifact(ctx, "student", head)
	if err != nil {
		return alignet.StudentVersion{}, err
	}
	return s.InsertStudentVersion(ctx, v, a, 100)
}
