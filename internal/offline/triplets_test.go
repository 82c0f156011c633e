package offline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/npy"
)

// exportFiles writes judgments as the server's JSONL export (one
// alignet.Judgment per line) and CSV export (api.CSVHeader), and returns
// their paths.
func exportFiles(t *testing.T, dir string, js []alignet.Judgment) (jsonl, csvPath string) {
	t.Helper()
	var jb, cb bytes.Buffer
	enc := json.NewEncoder(&jb)
	cb.WriteString(api.CSVHeader + "\n")
	for _, j := range js {
		if err := enc.Encode(j); err != nil {
			t.Fatal(err)
		}
		odd, head, closeItem, far := j.Odd, "", "", ""
		if j.Task == alignet.TaskAnchor {
			odd, head, closeItem, far = "", j.Items[0], j.Items[1], j.Items[2]
		}
		fmt.Fprintf(&cb, "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%d,%s,%s,%s\n", j.ID, j.Study, j.Task, j.Worker,
			j.Items[0], j.Items[1], j.Items[2], odd, head, closeItem, far, j.RTMillis, j.QueryID, j.QueryKind, j.ReceivedAt.Format(time.RFC3339Nano))
	}
	jsonl, csvPath = filepath.Join(dir, "export.jsonl"), filepath.Join(dir, "export.csv")
	for p, b := range map[string][]byte{jsonl: jb.Bytes(), csvPath: cb.Bytes()} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return jsonl, csvPath
}

func writeFile(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// judgmentsFor turns index triplets (K odd) into exported judgments over
// ids, showing the items in a shuffled display order.
func judgmentsFor(ts []learner.Triplet, ids []string, task alignet.Task, seed uint64) []alignet.Judgment {
	rng := rand.New(rand.NewPCG(seed, 1))
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	js := make([]alignet.Judgment, len(ts))
	for i, tr := range ts {
		j := alignet.Judgment{ID: fmt.Sprintf("j%d", i), Study: "s", Task: task, Worker: "w" + fmt.Sprint(i%3), RTMillis: 900, ReceivedAt: at}
		if task == alignet.TaskAnchor {
			j.Items = [3]string{ids[tr.I], ids[tr.J], ids[tr.K]}
		} else {
			// Display order: the odd one anywhere, the pair in its order.
			pos := rng.IntN(3)
			pair := []string{ids[tr.I], ids[tr.J]}
			items := slices.Insert(pair, pos, ids[tr.K])
			j.Items, j.Odd = [3]string(items), ids[tr.K]
		}
		js[i] = j
	}
	return js
}

func TestExportFormatsGiveTheTextTriplets(t *testing.T) {
	dir := t.TempDir()
	ids := []string{"cat", "dog", "car", "bus", "fig"}
	ts := []learner.Triplet{{I: 0, J: 1, K: 2}, {I: 3, J: 2, K: 4}, {I: 4, J: 0, K: 3}, {I: 1, J: 4, K: 0}}
	var text strings.Builder
	text.WriteString("# THINGS-style\n")
	for _, tr := range ts {
		fmt.Fprintf(&text, "%d %d %d 7\n", tr.I, tr.J, tr.K)
	}
	textPath := writeFile(t, filepath.Join(dir, "t.txt"), text.String())
	rows, err := NewRows(len(ids), 2, ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range []alignet.Task{alignet.TaskOddOneOut, alignet.TaskAnchor} {
		jsonl, csvPath := exportFiles(t, dir, judgmentsFor(ts, ids, task, 3))
		for _, p := range []string{textPath, jsonl, csvPath} {
			got, err := ReadTriplets(p, rows, learner.Task(task))
			if err != nil {
				t.Fatalf("%s %s: %v", task, filepath.Base(p), err)
			}
			if !slices.Equal(got, ts) {
				t.Errorf("%s %s: %v, want %v", task, filepath.Base(p), got, ts)
			}
		}
		recs, format, err := ParseJudgments(mustOpen(t, csvPath), FormatAuto, 0)
		if err != nil || format != FormatCSV || recs[0].ID != "j0" || recs[0].Worker != "w0" || recs[0].RTMillis != 900 || recs[0].Line != 2 {
			t.Fatalf("csv records %+v, format %s, %v", recs, format, err)
		}
		if recs, format, _ := ParseJudgments(mustOpen(t, jsonl), FormatAuto, 2); format != FormatJSONL || len(recs) != 2 || recs[1].Line != 2 {
			t.Fatalf("jsonl records %+v, format %s (limit 2)", recs, format)
		}
	}
	// A display order with the odd one first keeps the pair in order.
	rec := Record{Task: alignet.TaskOddOneOut, Items: [3]string{"car", "dog", "cat"}, Odd: "car"}
	if tr, err := rec.Triplet(rows); err != nil || tr != (learner.Triplet{I: 1, J: 0, K: 2}) {
		t.Fatalf("odd first: %v, %v", tr, err)
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestReadTripletsHints(t *testing.T) {
	dir := t.TempDir()
	ids := []string{"cat", "dog", "car", "bus"}
	jsonl, _ := exportFiles(t, dir, judgmentsFor([]learner.Triplet{{I: 0, J: 1, K: 2}}, ids, alignet.TaskOddOneOut, 1))
	rows, _ := NewRows(4, 2, ids)
	for _, c := range []struct {
		name string
		rows Rows
		task learner.Task
		want string
	}{
		{"ids needed", IndexRows(4), "", "name the embeddings rows with --ids FILE"},
		{"task mismatch", rows, learner.TaskAnchor, "use --task odd-one-out"},
		{"unknown id", Rows{n: 4, ids: []string{"a", "b", "c", "d"}, index: map[string]int32{"a": 0}}, "", `item "cat" is not in the ids file`},
	} {
		_, err := ReadTriplets(jsonl, c.rows, c.task)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%s: %v, want %q and the line", c.name, err, c.want)
		}
	}
	if _, err := ReadTriplets(writeFile(t, filepath.Join(dir, "bad.jsonl"), `{"task":"similarity"}`+"\n"), rows, ""); err == nil {
		t.Error("unknown task in JSONL accepted")
	}
	if _, err := ReadTriplets(writeFile(t, filepath.Join(dir, "bad.csv"), api.CSVHeader+"\nx,s,odd-one-out,w,cat,dog,car,bus,,,,1,,,\n"), rows, ""); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("odd not among the items: %v", err)
	}
}

func TestReadIDs(t *testing.T) {
	dir := t.TempDir()
	ids, err := ReadIDs(writeFile(t, filepath.Join(dir, "ok.txt"), "a\r\nb \nc\n"))
	if err != nil || !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Fatalf("ReadIDs = %q, %v", ids, err)
	}
	for body, want := range map[string]string{"a\n\nb\n": "line 2: empty id", "a\nb\na\n": `line 3: id "a" already on line 1`, "": "empty"} {
		if _, err := ReadIDs(writeFile(t, filepath.Join(dir, "bad.txt"), body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadIDs(%q) = %v, want %q", body, err, want)
		}
	}
}

func writeNPY(t *testing.T, path string, a *npy.Array) string {
	t.Helper()
	var buf bytes.Buffer
	if err := npy.Write(&buf, a); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, path, buf.String())
}

// TestEmbeddingsHints checks the errors for common mistakes with the
// embeddings: non-finite values name their row, a Fortran-ordered or
// transposed matrix suggests the fix.
func TestEmbeddingsHints(t *testing.T) {
	dir := t.TempDir()
	trip := writeFile(t, filepath.Join(dir, "t.txt"), "0 1 2\n1 2 3\n")
	fit := func(args ...string) error {
		return RunFit(context.Background(), append([]string{"--triplets", trip, "--targets", "hard", "--max-iter", "1"}, args...), &bytes.Buffer{}, &bytes.Buffer{})
	}
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
		x := make([]float32, 4*3)
		x[2*3+1] = bad
		p := writeNPY(t, filepath.Join(dir, "nan.npy"), npy.FromFloat32(x, 4, 3))
		err := fit("--embeddings", p)
		var nf *NonFiniteError
		if !errors.As(err, &nf) || nf.Row != 2 || nf.Col != 1 || !strings.Contains(err.Error(), "row 2, column 1 is "+fmt.Sprint(bad)) {
			t.Errorf("%v at row 2: %v", bad, err)
		}
	}
	x := make([]float32, 4*3)
	var buf bytes.Buffer
	if err := npy.Write(&buf, npy.FromFloat32(x, 4, 3)); err != nil {
		t.Fatal(err)
	}
	fortran := writeFile(t, filepath.Join(dir, "f.npy"), strings.Replace(buf.String(), "'fortran_order': False", "'fortran_order': True ", 1))
	if err := fit("--embeddings", fortran); !errors.Is(err, npy.ErrFortranOrder) || !strings.Contains(err.Error(), "np.ascontiguousarray") {
		t.Errorf("Fortran-ordered embeddings: %v", err)
	}
	// 3 rows of 4 columns with 4 ids, or with triplets indexing past row 3.
	wide := writeNPY(t, filepath.Join(dir, "wide.npy"), npy.FromFloat32(make([]float32, 12), 3, 4))
	ids := writeFile(t, filepath.Join(dir, "ids.txt"), "a\nb\nc\nd\n")
	if err := fit("--embeddings", wide, "--ids", ids); err == nil || !strings.Contains(err.Error(), "4 ids for 3 embedding rows") || !strings.Contains(err.Error(), "transposed") {
		t.Errorf("ids for the columns: %v", err)
	}
	if err := fit("--embeddings", wide); err == nil || !strings.Contains(err.Error(), "item 3 out of range [0,3)") || !strings.Contains(err.Error(), "transposed") {
		t.Errorf("index past the rows of a wide matrix: %v", err)
	}
}

// TestRunFitOnExports fits the same planted triplets from a text file and
// from JSONL and CSV exports naming items by id: the reports are the same.
func TestRunFitOnExports(t *testing.T) {
	dir := t.TempDir()
	const n, d = 60, 8
	emb, _ := writeAlignetSynthetic(t, dir, n, d)
	rng := rand.New(rand.NewPCG(5, 6))
	var ts []learner.Triplet
	for len(ts) < 1500 {
		i, j, k := int32(rng.IntN(n)), int32(rng.IntN(n)), int32(rng.IntN(n))
		if i == j || i%6 != j%6 || k%6 == i%6 {
			continue
		}
		ts = append(ts, learner.Triplet{I: i, J: j, K: k})
	}
	trip := filepath.Join(dir, "triplets.txt")
	writeTriplets(t, trip, ts)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("item-%02d", (i*7)%n) // not the row numbers
	}
	idsPath := writeFile(t, filepath.Join(dir, "ids.txt"), strings.Join(ids, "\n")+"\n")
	jsonl, csvPath := exportFiles(t, dir, judgmentsFor(ts, ids, alignet.TaskOddOneOut, 9))
	fit := func(args ...string) FitReport {
		var out, errOut bytes.Buffer
		args = append([]string{"--embeddings", emb, "--targets", "hard", "--lambdas", "0.01", "--max-iter", "20", "--json"}, args...)
		if err := RunFit(context.Background(), args, &out, &errOut); err != nil {
			t.Fatalf("fit %v: %v\n%s", args, err, errOut.String())
		}
		var rep FitReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		rep.WallSeconds, rep.Lambdas = 0, nil
		return rep
	}
	want := fit("--triplets", trip)
	if acc := deref(want.Val.Accuracy); !(acc > 0.8) {
		t.Fatalf("planted structure not learnt: validation accuracy %.3f", acc)
	}
	for _, p := range []string{jsonl, csvPath} {
		got := fit("--triplets", p, "--ids", idsPath)
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		if !bytes.Equal(gj, wj) {
			t.Errorf("fit on %s:\n%s\nwant (text file):\n%s", filepath.Base(p), gj, wj)
		}
	}
}
