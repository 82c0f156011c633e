package db_test

import (
	"context"
	"errors"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db/dbtest"
)

func TestSpaces(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()

	s, created, err := d.PutSpace(ctx, "clip", 4)
	if err != nil || !created || s.Name != "clip" || s.Dim != 4 || s.CreatedAt.IsZero() {
		t.Fatalf("PutSpace new = %+v, %v, %v", s, created, err)
	}
	again, created, err := d.PutSpace(ctx, "clip", 4)
	if err != nil || created || !again.CreatedAt.Equal(s.CreatedAt) {
		t.Fatalf("PutSpace same = %+v, %v, %v; want the stored space, created=false", again, created, err)
	}
	if _, _, err := d.PutSpace(ctx, "clip", 8); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("PutSpace other dim: err = %v, want ErrConflict", err)
	}
	for _, dim := range []int{0, -3} {
		if _, _, err := d.PutSpace(ctx, "bad", dim); err == nil {
			t.Fatalf("PutSpace dim %d succeeded", dim)
		}
	}
	if _, _, err := d.PutSpace(ctx, "", 4); err == nil {
		t.Fatal("PutSpace with empty name succeeded")
	}

	got, err := d.GetSpace(ctx, "clip")
	if err != nil || got.Dim != 4 {
		t.Fatalf("GetSpace = %+v, %v", got, err)
	}
	if _, err := d.GetSpace(ctx, "nope"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("GetSpace missing: err = %v, want ErrNotFound", err)
	}
}
