package db_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
)

// randomVectors returns n ids ("item-<prefix>-<i>") and n*dim seeded floats.
func randomVectors(seed uint64, prefix string, n, dim int) ([]string, []float32) {
	r := rand.New(rand.NewPCG(seed, 1))
	ids := make([]string, n)
	vecs := make([]float32, n*dim)
	for i := range ids {
		ids[i] = fmt.Sprintf("item-%s-%07d", prefix, i)
	}
	for i := range vecs {
		vecs[i] = r.Float32() - 0.5
	}
	return ids, vecs
}

func TestEmbeddingsRoundTrip(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	if _, err := d.UpsertEmbeddings(ctx, "ghost", []string{"a"}, []float32{1}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("UpsertEmbeddings into missing space: err = %v, want ErrNotFound", err)
	}
	if _, err := d.CountEmbeddings(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("CountEmbeddings of missing space: err = %v, want ErrNotFound", err)
	}
	if _, _, err := d.LoadEmbeddings(ctx, "ghost", []string{"a"}); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("LoadEmbeddings of missing space: err = %v, want ErrNotFound", err)
	}
	if _, _, err := d.AllEmbeddings(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("AllEmbeddings of missing space: err = %v, want ErrNotFound", err)
	}
	if _, _, err := d.PutSpace(ctx, "s", 3); err != nil {
		t.Fatal(err)
	}
	special := []float32{float32(math.Inf(1)), float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32}
	n, err := d.UpsertEmbeddings(ctx, "s", []string{"b", "a", "c"}, append([]float32{1, 2, 3, 4, 5, 6}, special...))
	if err != nil || n != 3 {
		t.Fatalf("UpsertEmbeddings = %d, %v; want 3", n, err)
	}
	// Replace b, add d.
	if n, err := d.UpsertEmbeddings(ctx, "s", []string{"d", "b"}, []float32{7, 8, 9, -1, -2, -3}); err != nil || n != 2 {
		t.Fatalf("UpsertEmbeddings again = %d, %v; want 2", n, err)
	}
	if c, err := d.CountEmbeddings(ctx, "s"); err != nil || c != 4 {
		t.Fatalf("CountEmbeddings = %d, %v; want 4", c, err)
	}

	vecs, found, err := d.LoadEmbeddings(ctx, "s", []string{"c", "zz", "b", "a", "c"})
	if err != nil {
		t.Fatal(err)
	}
	wantVecs := append(append(append(append(slices.Clone(special), 0, 0, 0), -1, -2, -3), 4, 5, 6), special...)
	if !slices.Equal(found, []bool{true, false, true, true, true}) || !bitsEqual(vecs, wantVecs) {
		t.Fatalf("LoadEmbeddings = %v, %v; want %v, [true false true true true]", vecs, found, wantVecs)
	}
	if vecs, found, err := d.LoadEmbeddings(ctx, "s", nil); err != nil || len(vecs) != 0 || len(found) != 0 {
		t.Fatalf("LoadEmbeddings(nil) = %v, %v, %v", vecs, found, err)
	}

	ids, all, err := d.AllEmbeddings(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{"a", "b", "c", "d"}) ||
		!bitsEqual(all, append(append([]float32{4, 5, 6, -1, -2, -3}, special...), 7, 8, 9)) {
		t.Fatalf("AllEmbeddings = %v, %v", ids, all)
	}
}

// bitsEqual compares float32 slices bit for bit (so -0 and NaN count).
func bitsEqual(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

func TestUpsertEmbeddingsAllOrNothing(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	if _, _, err := d.PutSpace(ctx, "s", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := d.UpsertEmbeddings(ctx, "s", []string{"a", "b"}, []float32{1, 1, 2, 2}); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		ids  []string
		vecs []float32
	}{
		{"short vectors", []string{"a", "c"}, []float32{9, 9, 9}},
		{"long vectors", []string{"a", "c"}, []float32{9, 9, 9, 9, 9}},
		{"duplicate id", []string{"a", "c", "a"}, []float32{9, 9, 9, 9, 9, 9}},
		{"empty id", []string{"a", ""}, []float32{9, 9, 9, 9}},
		// Rejected by Postgres only after "a" and "c" were copied.
		{"NUL in last id", []string{"a", "c", "zz\x00"}, []float32{9, 9, 9, 9, 9, 9}},
	}
	for _, tc := range bad {
		if n, err := d.UpsertEmbeddings(ctx, "s", tc.ids, tc.vecs); err == nil {
			t.Fatalf("%s: UpsertEmbeddings = %d, nil; want an error", tc.name, n)
		}
		ids, vecs, err := d.AllEmbeddings(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, []string{"a", "b"}) || !slices.Equal(vecs, []float32{1, 1, 2, 2}) {
			t.Fatalf("%s: stored %v %v after a failed call; want it unchanged", tc.name, ids, vecs)
		}
	}
}

func TestUpsertEmbeddingsLarge(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("large upload skipped in -short mode")
	}
	d := dbtest.New(t)
	ctx := context.Background()
	const n, dim = 20000, 1152
	if _, _, err := d.PutSpace(ctx, "big", dim); err != nil {
		t.Fatal(err)
	}
	wantIDs, wantVecs := randomVectors(7, "big", n, dim)
	// Upload in reverse order; AllEmbeddings must return sorted ids.
	ids := slices.Clone(wantIDs)
	slices.Reverse(ids)
	vecs := make([]float32, n*dim)
	for i := range n {
		copy(vecs[i*dim:(i+1)*dim], wantVecs[(n-1-i)*dim:(n-i)*dim])
	}
	got, err := d.UpsertEmbeddings(ctx, "big", ids, vecs)
	if err != nil || got != n {
		t.Fatalf("UpsertEmbeddings = %d, %v; want %d", got, err, n)
	}
	if c, err := d.CountEmbeddings(ctx, "big"); err != nil || c != n {
		t.Fatalf("CountEmbeddings = %d, %v; want %d", c, err, n)
	}
	allIDs, all, err := d.AllEmbeddings(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(allIDs, wantIDs) || !slices.Equal(all, wantVecs) {
		t.Fatal("AllEmbeddings does not return the uploaded vectors in id order")
	}
	pick := []string{wantIDs[n-1], wantIDs[0], "missing", wantIDs[12345]}
	loaded, found, err := d.LoadEmbeddings(ctx, "big", pick)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(found, []bool{true, true, false, true}) ||
		!slices.Equal(loaded[:dim], wantVecs[(n-1)*dim:]) ||
		!slices.Equal(loaded[dim:2*dim], wantVecs[:dim]) ||
		!slices.Equal(loaded[3*dim:], wantVecs[12345*dim:12346*dim]) {
		t.Fatal("LoadEmbeddings returned wrong vectors")
	}
}

func BenchmarkUpsertEmbeddingsLarge(b *testing.B) {
	d := dbtest.Open(b, db.Config{})
	ctx := context.Background()
	const n, dim = 100000, 1152
	if _, _, err := d.PutSpace(ctx, "big", dim); err != nil {
		b.Fatal(err)
	}
	ids, vecs := randomVectors(1, "big", n, dim)
	b.SetBytes(int64(len(vecs) * 4))
	b.ResetTimer()
	for b.Loop() {
		got, err := d.UpsertEmbeddings(ctx, "big", ids, vecs)
		if err != nil || got != n {
			b.Fatalf("UpsertEmbeddings = %d, %v", got, err)
		}
	}
}
