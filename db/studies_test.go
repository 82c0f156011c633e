package db_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
)

func TestStudies(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()

	_, _, err := d.CreateStudy(ctx, alignet.Study{ID: "s1", Task: alignet.TaskOddOneOut, Space: "ghost"})
	if !errors.Is(err, alignet.ErrNotFound) || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("CreateStudy in missing space: err = %v, want ErrNotFound naming the space", err)
	}
	if _, _, err := d.PutSpace(ctx, "clip", 3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: "s1", Task: "bogus", Space: "clip"}); err == nil {
		t.Fatal("CreateStudy with an invalid task succeeded")
	}

	s, created, err := d.CreateStudy(ctx, alignet.Study{ID: "s1", Task: alignet.TaskOddOneOut, Space: "clip"})
	if err != nil || !created || s.ID != "s1" || s.Task != alignet.TaskOddOneOut || s.Space != "clip" || s.CreatedAt.IsZero() {
		t.Fatalf("CreateStudy = %+v, %v, %v", s, created, err)
	}
	again, created, err := d.CreateStudy(ctx, alignet.Study{ID: "s1", Task: alignet.TaskOddOneOut, Space: "clip"})
	if err != nil || created || !again.CreatedAt.Equal(s.CreatedAt) {
		t.Fatalf("CreateStudy again = %+v, %v, %v; want existing, created=false", again, created, err)
	}
	if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: "s1", Task: alignet.TaskAnchor, Space: "clip"}); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("CreateStudy with another task: err = %v, want ErrConflict", err)
	}
	if _, _, err := d.PutSpace(ctx, "dino", 3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: "s1", Task: alignet.TaskOddOneOut, Space: "dino"}); !errors.Is(err, alignet.ErrConflict) {
		t.Fatalf("CreateStudy with another space: err = %v, want ErrConflict", err)
	}
	gen, created, err := d.CreateStudy(ctx, alignet.Study{Task: alignet.TaskAnchor, Space: "dino"})
	if err != nil || !created || gen.ID == "" {
		t.Fatalf("CreateStudy without id = %+v, %v, %v", gen, created, err)
	}

	got, err := d.GetStudy(ctx, "s1")
	if err != nil || got.Space != "clip" || got.Task != alignet.TaskOddOneOut {
		t.Fatalf("GetStudy = %+v, %v", got, err)
	}
	if _, err := d.GetStudy(ctx, "nope"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("GetStudy missing: err = %v, want ErrNotFound", err)
	}
	list, err := d.ListStudies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	want := []string{"s1", gen.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("ListStudies ids = %v, want %v", ids, want)
	}
}

func TestStudyItems(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	if _, err := d.AddStudyItems(ctx, "nope", []string{"a"}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("AddStudyItems to missing study: err = %v, want ErrNotFound", err)
	}
	if _, err := d.AddStudyItems(ctx, "nope", nil); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("AddStudyItems (empty) to missing study: err = %v, want ErrNotFound", err)
	}
	if _, err := d.StudyItems(ctx, "nope"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("StudyItems of missing study: err = %v, want ErrNotFound", err)
	}
	mustStudy(t, d, "s", 2)
	items, err := d.StudyItems(ctx, "s")
	if err != nil || items == nil || len(items) != 0 {
		t.Fatalf("StudyItems of empty study = %#v, %v; want empty non-nil", items, err)
	}
	n, err := d.AddStudyItems(ctx, "s", []string{"b", "a", "B", "b", "c"})
	if err != nil || n != 4 {
		t.Fatalf("AddStudyItems = %d, %v; want 4 new", n, err)
	}
	n, err = d.AddStudyItems(ctx, "s", []string{"c", "d", "a"})
	if err != nil || n != 1 {
		t.Fatalf("AddStudyItems overlapping = %d, %v; want 1 new", n, err)
	}
	if _, err := d.AddStudyItems(ctx, "s", []string{"e", ""}); err == nil {
		t.Fatal("AddStudyItems with an empty item succeeded")
	}
	items, err = d.StudyItems(ctx, "s")
	want := []string{"B", "a", "b", "c", "d"} // bytewise order
	if err != nil || !slices.Equal(items, want) {
		t.Fatalf("StudyItems = %v, %v; want %v", items, err, want)
	}
}

// mustStudy creates space "space-<study>" of dim and an odd-one-out study.
func mustStudy(t testing.TB, d *db.DB, study string, dim int) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := d.PutSpace(ctx, "space-"+study, dim); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: study, Task: alignet.TaskOddOneOut, Space: "space-" + study}); err != nil {
		t.Fatal(err)
	}
}
