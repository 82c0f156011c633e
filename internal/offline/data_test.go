package offline

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/alignet/alignet/internal/testenv"
	"github.com/alignet/alignet/learner"
)

func TestParseTriplets(t *testing.T) {
	ts, subj, err := ParseTriplets(strings.NewReader("# c\n1 2 3 7\n\n4 5 6\n"), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[1] != (learner.Triplet{I: 4, J: 5, K: 6}) || subj[0] != 7 || subj[1] != -1 {
		t.Fatalf("got %v %v", ts, subj)
	}
	for _, bad := range []string{"1 2\n", "1 2 10\n", "1 1 2\n", "a b c\n", ""} {
		if _, _, err := ParseTriplets(strings.NewReader(bad), 10); err == nil {
			t.Fatalf("accepted %q", bad)
		}
	}
}

func TestSplitDeterministic(t *testing.T) {
	a1, b1 := SplitIndices(1000, 0.1, 3)
	a2, b2 := SplitIndices(1000, 0.1, 3)
	_, b3 := SplitIndices(1000, 0.1, 4)
	if len(b1) != 100 || len(a1) != 900 {
		t.Fatalf("sizes %d %d", len(a1), len(b1))
	}
	same3 := true
	for i := range b1 {
		if b1[i] != b2[i] || a1[i] != a2[i] {
			t.Fatal("split not deterministic")
		}
		if b1[i] != b3[i] {
			same3 = false
		}
	}
	if same3 {
		t.Fatal("different seeds gave the same split")
	}
}

func TestReadRealFiles(t *testing.T) {
	fitThingsDir := testenv.SharedData(t, "things")
	cats, err := ReadCategories(filepath.Join(fitThingsDir, "categories.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cats.Names) != 53 || len(cats.Items) != 1854 {
		t.Fatalf("categories: %d names, %d items", len(cats.Names), len(cats.Items))
	}
	// Row 0 is the aardvark: an animal and a mammal.
	var names []string
	for _, c := range cats.Items[0] {
		names = append(names, cats.Names[c])
	}
	if strings.Join(names, ",") != "animal,mammal" {
		t.Fatalf("aardvark categories %v", names)
	}
	reps, err := ReadRepeats(filepath.Join(fitThingsDir, "repeats_dev.csv"), 1854)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 498 || reps[0].Items != [3]int32{2, 77, 746} || reps[0].Counts != [3]int32{29, 0, 9} {
		t.Fatalf("repeats: %d, first %+v", len(reps), reps[0])
	}
	x, n, d, err := ReadEmbeddings(filepath.Join(fitThingsDir, "clip_vit_b32.npy"))
	if err != nil || n != 1854 || d != 512 || len(x) != n*d {
		t.Fatalf("embeddings %d×%d: %v", n, d, err)
	}
	if math.IsNaN(float64(x[0])) {
		t.Fatal("NaN embedding")
	}
}

func writeTriplets(t testing.TB, path string, ts []learner.Triplet) {
	t.Helper()
	var b strings.Builder
	for _, tr := range ts {
		b.WriteString(strconvItoa(tr.I) + " " + strconvItoa(tr.J) + " " + strconvItoa(tr.K) + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func strconvItoa(v int32) string { return strconv.Itoa(int(v)) }
