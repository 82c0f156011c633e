package modelfile

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/npy"
)

// The files in testdata were written by the offline package before these
// formats moved here; the writers must still produce them byte for byte.
var goldenCreated = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func goldenTeacher() (*learner.Teacher, Provenance) {
	return &learner.Teacher{W: []float64{1, 2, 3, 4, 5, 6}, B: []float64{0.5, -0.5}, D: 3, P: 2, Mean: 0.1, Std: 2, Tau: 0.7, Lambda: 0.01, Task: learner.TaskOddOneOut},
		Provenance{Seed: 9, Embeddings: "emb.npy", EmbeddingsSHA256: "abc", Triplets: "t.txt", TripletsSHA256: "def",
			Hyper: map[string]any{"lambda": 0.01}, Extra: map[string]any{"val_accuracy": 0.5}, Created: goldenCreated}
}

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTeacherGoldenBytes(t *testing.T) {
	tc, prov := goldenTeacher()
	var buf bytes.Buffer
	if err := WriteTeacher(&buf, tc, prov); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), readGolden(t, "teacher.npz")) {
		t.Fatal("WriteTeacher output differs from testdata/teacher.npz")
	}
}

func TestStudentGoldenBytes(t *testing.T) {
	golden := readGolden(t, "student.npz")
	h, p, err := ReadStudent(bytes.NewReader(golden), int64(len(golden)))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := learner.NewStudentHead(4, learner.HeadConfig{Init: learner.InitRandom, OutDim: 3, Tau: 0.7, Mean: 0.2, Std: 2, Seed: 1})
	if !slices.Equal(h.W, want.W) || !slices.Equal(h.B, want.B) || h.Init != learner.InitRandom || p.Hyper["loss"] != "kl" {
		t.Fatalf("read %+v, provenance %+v", h, p)
	}
	var buf bytes.Buffer
	if err := WriteStudent(&buf, want, Provenance{Seed: 3, Created: goldenCreated, Hyper: map[string]any{"loss": "kl"}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), golden) {
		t.Fatal("WriteStudent output differs from testdata/student.npz")
	}
}

func TestDatasetGoldenBytes(t *testing.T) {
	golden := readGolden(t, "dataset.npz")
	d, err := ReadDataset(bytes.NewReader(golden), int64(len(golden)))
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 10 || d.Provenance.Kind != KindDataset || d.Provenance.Extra["order"] != DatasetOrder {
		t.Fatalf("dataset of %d, provenance %+v", d.Len(), d.Provenance)
	}
	// Rewrite it in uneven chunks, once spooling to a file and once in memory.
	spool, err := os.CreateTemp(t.TempDir(), "spool")
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	for _, sp := range []*os.File{spool, nil} {
		var buf bytes.Buffer
		var dw *DatasetWriter
		if sp == nil {
			dw, err = NewDatasetWriter(&buf, 10, nil, nil)
		} else {
			dw, err = NewDatasetWriter(&buf, 10, sp, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range [][2]int{{0, 4}, {4, 8}, {8, 10}} {
			if err := dw.Write(d.Indices[3*r[0]:3*r[1]], d.Similarities[3*r[0]:3*r[1]]); err != nil {
				t.Fatal(err)
			}
		}
		if err := dw.Close(d.Provenance); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), golden) {
			t.Fatalf("DatasetWriter output (file spool %v) differs from testdata/dataset.npz", sp != nil)
		}
	}
}

func TestTeacherRoundTrip(t *testing.T) {
	tc := &learner.Teacher{W: []float64{1, 2, 3, 4, 5, 6}, B: []float64{0.5, -0.5}, D: 3, P: 2, Mean: 0.1, Std: 2, Tau: 0.7, Lambda: 0.01, Task: learner.TaskAnchor}
	path := filepath.Join(t.TempDir(), "t.npz")
	prov := Provenance{Seed: 9, Hyper: map[string]any{"lambda": 0.01}, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if err := SaveTeacher(path, tc, prov); err != nil {
		t.Fatal(err)
	}
	got, p, err := LoadTeacher(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.D != 3 || got.P != 2 || got.Tau != 0.7 || got.Std != 2 || got.Mean != 0.1 || got.Lambda != 0.01 || got.Task != learner.TaskAnchor || got.W[5] != 6 || got.B[1] != -0.5 {
		t.Fatalf("round trip: %+v", got)
	}
	if p.Seed != 9 || p.Kind != KindTeacher || p.Version != ProvenanceVersion || !p.Created.Equal(prov.Created) || p.Hyper["lambda"] != 0.01 || p.Task != learner.TaskAnchor {
		t.Fatalf("provenance %+v", p)
	}
	// No temporary file is left next to it.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only t.npz", len(entries))
	}
}

func TestStudentRoundTrip(t *testing.T) {
	h, err := learner.NewStudentHead(4, learner.HeadConfig{Init: learner.InitRandom, OutDim: 3, Tau: 0.7, Mean: 0.2, Std: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	h.B[1] = 0.5
	var buf bytes.Buffer
	hyper := map[string]any{"lr": 0.1}
	if err := WriteStudent(&buf, h, Provenance{Seed: 3, Hyper: hyper}); err != nil {
		t.Fatal(err)
	}
	if _, ok := hyper["init"]; ok {
		t.Error("WriteStudent modified the caller's Hyper map")
	}
	g, p, err := ReadStudent(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g.W, h.W) || !slices.Equal(g.B, h.B) || g.P != 3 || g.D != 4 || g.Tau != 0.7 || g.Mean != 0.2 || g.Std != 2 || g.Init != learner.InitRandom {
		t.Errorf("read %+v, wrote %+v", g, h)
	}
	if p.Kind != KindStudent || p.Seed != 3 || p.Task != learner.TaskOddOneOut || p.Hyper["lr"] != 0.1 || p.Created.IsZero() {
		t.Errorf("provenance %+v", p)
	}
}

func TestKindMismatch(t *testing.T) {
	tc, prov := goldenTeacher()
	dir := t.TempDir()
	path := filepath.Join(dir, "teacher.npz")
	if err := SaveTeacher(path, tc, prov); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadStudent(path)
	if err == nil || !strings.Contains(err.Error(), `holds a "teacher", not a student`) || !strings.Contains(err.Error(), path) {
		t.Fatalf("loading a teacher as a student: %v", err)
	}
	if _, err := LoadDataset(path); err == nil {
		t.Fatal("loading a teacher as a dataset: no error")
	}
	_, _, err = LoadTeacher(filepath.Join(dir, "missing.npz"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if strings.Count(err.Error(), "missing.npz") != 1 {
		t.Errorf("error names the path more than once: %v", err)
	}
}

func TestDatasetWriterCounts(t *testing.T) {
	var buf bytes.Buffer
	dw, err := NewDatasetWriter(&buf, 2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dw.Write([]int32{0, 1, 2}, []float32{3, 2, 1}); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(Provenance{}); err == nil {
		t.Error("Close after 1 of 2 triplets: no error")
	}
	if err := dw.Write([]int32{0, 1, 2, 3, 4, 5}, []float32{3, 2, 1, 3, 2, 1}); err == nil {
		t.Error("writing past the announced total: no error")
	}
	if err := dw.Write([]int32{0, 1}, []float32{3, 2}); err == nil {
		t.Error("partial triplet: no error")
	}
	if _, err := NewDatasetWriter(&buf, -1, nil, nil); err == nil {
		t.Error("negative total: no error")
	}
}

func TestSaveDataset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.npz")
	idx := []int32{0, 1, 2, 3, 4, 5, 5, 4, 3}
	sims := []float32{3, 2, 1, 6, 5, 4, 9, 8, 7}
	err := SaveDataset(path, 3, nil, Provenance{Seed: 4, Extra: map[string]any{"order": DatasetOrder}}, func(dw *DatasetWriter) error {
		if err := dw.Write(idx[:3], sims[:3]); err != nil {
			return err
		}
		return dw.Write(idx[3:], sims[3:])
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := LoadDataset(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Indices, idx) || !slices.Equal(d.Similarities, sims) || d.Provenance.Kind != KindDataset || d.Provenance.Seed != 4 {
		t.Fatalf("loaded %+v", d)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only d.npz", len(entries))
	}
}

func TestDatasetFilenames(t *testing.T) {
	ids := []string{"a", "bé", "ccc", "d"}
	idx := []int32{0, 1, 2, 3, 2, 1}
	sims := []float32{3, 2, 1, 6, 5, 4}
	for _, spool := range []bool{false, true} {
		var buf bytes.Buffer
		var sp io.ReadWriteSeeker
		if spool {
			f, err := os.CreateTemp(t.TempDir(), "spool")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sp = f
		}
		dw, err := NewDatasetWriter(&buf, 2, sp, ids)
		if err != nil {
			t.Fatal(err)
		}
		if err := dw.Write([]int32{0, 1, 9}, []float32{1, 1, 1}); err == nil {
			t.Fatal("an index beyond the ids was written")
		}
		if err := dw.Write(idx, sims); err != nil {
			t.Fatal(err)
		}
		if err := dw.Close(Provenance{}); err != nil {
			t.Fatal(err)
		}
		d, err := ReadDataset(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"a", "bé", "ccc", "d", "ccc", "bé"}
		if !slices.Equal(d.Filenames, want) || !slices.Equal(d.Indices, idx) {
			t.Fatalf("filenames %q, indices %v", d.Filenames, d.Indices)
		}
		z, err := npy.OpenNPZ(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatal(err)
		}
		if got := z.Names(); !slices.Equal(got, []string{"filenames", "indices", "meta", "similarities"}) {
			t.Fatalf("members %v", got)
		}
		fa, _ := z.Read("filenames")
		if fa.Dtype != "<U3" || !slices.Equal(fa.Shape, []int{2, 3}) {
			t.Fatalf("filenames dtype %s shape %v", fa.Dtype, fa.Shape)
		}
	}
}
