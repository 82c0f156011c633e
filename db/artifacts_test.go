package db_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
)

// TestArtifactChunksAndOrphans writes an artifact of several chunks, reads
// ranges across chunk boundaries, and checks that incomplete artifacts
// stay invisible and are deleted as orphans while referenced ones stay.
func TestArtifactChunksAndOrphans(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	data := make([]byte, 2*db.ArtifactChunkSize+12345)
	for i := range data {
		data[i] = byte(i * 31 >> 3)
	}
	w, err := d.CreateArtifact(ctx, "dataset")
	if err != nil {
		t.Fatal(err)
	}
	for lo := 0; lo < len(data); lo += 1 << 20 {
		if _, err := w.Write(data[lo:min(lo+1<<20, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	a, err := w.Close()
	if err != nil || a.Size != int64(len(data)) {
		t.Fatalf("Close = %+v, %v", a, err)
	}
	if _, err := d.GetArtifact(ctx, a.ID); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("an incomplete artifact is visible: %v", err)
	}
	if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: "s", Task: alignet.TaskOddOneOut, Space: mustSpace(t, d)}); err != nil {
		t.Fatal(err)
	}
	// A wrong size cannot complete it.
	if _, err := d.InsertDataset(ctx, alignet.Dataset{Study: "s", Artifact: a.ID, Size: a.Size - 1, SHA256: a.SHA256}, 3); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("InsertDataset with a wrong size: %v", err)
	}
	ds, err := d.InsertDataset(ctx, alignet.Dataset{Study: "s", Artifact: a.ID, Size: a.Size, SHA256: a.SHA256, Triplets: 1}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{0, 10}, {db.ArtifactChunkSize - 5, 10}, {2*db.ArtifactChunkSize - 1, 12346}, {0, int64(len(data))}} {
		var buf bytes.Buffer
		if err := d.ReadArtifact(ctx, ds.Artifact, r[0], r[1], &buf); err != nil || !bytes.Equal(buf.Bytes(), data[r[0]:r[0]+r[1]]) {
			t.Fatalf("ReadArtifact(%d, %d): %d bytes, %v", r[0], r[1], buf.Len(), err)
		}
	}
	// An abandoned writer's artifact is deleted once older than the grace;
	// the dataset's stays.
	orphan, err := d.CreateArtifact(ctx, "dataset")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := orphan.Write([]byte("half")); err != nil {
		t.Fatal(err)
	}
	if _, err := orphan.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := d.DeleteOrphanArtifacts(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("DeleteOrphanArtifacts(1h) = %d, %v; want nothing deleted yet", n, err)
	}
	if n, err := d.DeleteOrphanArtifacts(ctx, 0); err != nil || n != 1 {
		t.Fatalf("DeleteOrphanArtifacts(0) = %d, %v; want the orphan deleted", n, err)
	}
	if _, err := d.GetArtifact(ctx, ds.Artifact); err != nil {
		t.Fatalf("the dataset's artifact was deleted: %v", err)
	}
}

func mustSpace(t *testing.T, d *db.DB) string {
	t.Helper()
	if _, _, err := d.PutSpace(context.Background(), "sp", 2); err != nil {
		t.Fatal(err)
	}
	return "sp"
}

// TestPoolEmbeddingsMatchesAllEmbeddings reads a space in three parts of
// one snapshot and compares with the single-query read.
func TestPoolEmbeddingsMatchesAllEmbeddings(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	if _, _, err := d.PutSpace(ctx, "big", 2); err != nil {
		t.Fatal(err)
	}
	const n = 35000
	ids := make([]string, n)
	vecs := make([]float32, 2*n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%x-%d", (i*7919)%1000, i) // not in id order
		vecs[2*i], vecs[2*i+1] = float32(i), -float32(i)
	}
	if _, err := d.UpsertEmbeddings(ctx, "big", ids, vecs); err != nil {
		t.Fatal(err)
	}
	wantIDs, wantVecs, err := d.AllEmbeddings(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	gotIDs, gotVecs, err := d.PoolEmbeddings(ctx, "big", 3)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gotIDs, wantIDs) || !slices.Equal(gotVecs, wantVecs) {
		t.Fatalf("PoolEmbeddings differs from AllEmbeddings (%d and %d ids)", len(gotIDs), len(wantIDs))
	}
	if _, _, err := d.PoolEmbeddings(ctx, "nope", 2); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("missing space: %v", err)
	}
}
