// Package offline implements the file-based offline subcommands of alignet
// (fit, eval, generate, distill): it reads embeddings, item ids, judgments
// (THINGS text files and the server's CSV and JSONL exports), repeated
// triplets and category tables from disk, calls package learner, and
// writes models and datasets (package modelfile) and reports.
package offline

import (
	"bufio"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/npy"
)

// NonFiniteError reports a NaN or infinite value in an embeddings matrix.
type NonFiniteError struct {
	// Row and Col locate the value (0-based); Value is it.
	Row, Col int
	Value    float32
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("row %d, column %d is %v; every value must be finite (in NumPy, np.isfinite(x).all() checks, np.nan_to_num(x) replaces)", e.Row, e.Col, e.Value)
}

// checkFinite returns a *NonFiniteError for the first NaN or infinite value
// of the row-major matrix x with d columns, or nil.
func checkFinite(x []float32, d int) error {
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return &NonFiniteError{Row: i / d, Col: i % d, Value: v}
		}
	}
	return nil
}

// ReadEmbeddings reads a two-dimensional .npy matrix as float32 and returns
// it row-major with its number of rows n and columns d. Every value must be
// finite; the error of one that is not is a *NonFiniteError naming its row.
func ReadEmbeddings(path string) (x []float32, n, d int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read embeddings: %w", err)
	}
	defer f.Close()
	x, shape, err := npy.ReadFloat32(bufio.NewReader(f))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read embeddings %s: %w", path, err)
	}
	if len(shape) != 2 || shape[0] == 0 || shape[1] == 0 {
		return nil, 0, 0, fmt.Errorf("embeddings %s: want a non-empty 2-d array (one row per item), got shape %v", path, shape)
	}
	if err := checkFinite(x, shape[1]); err != nil {
		return nil, 0, 0, fmt.Errorf("embeddings %s: %w", path, err)
	}
	return x, shape[0], shape[1], nil
}

// ReadIDs reads an ids file such as THINGS's concepts.txt: one item id per
// line, line n naming row n of the matching embeddings. Ids must be
// non-empty and distinct; a trailing newline and CRLF line ends are fine.
func ReadIDs(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ids: %w", err)
	}
	text := strings.TrimSuffix(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	if text == "" {
		return nil, fmt.Errorf("ids %s: file is empty", path)
	}
	ids := strings.Split(text, "\n")
	seen := make(map[string]int, len(ids))
	for i, id := range ids {
		id = strings.TrimSpace(id)
		if id == "" {
			return nil, fmt.Errorf("ids %s line %d: empty id", path, i+1)
		}
		if prev, dup := seen[id]; dup {
			return nil, fmt.Errorf("ids %s line %d: id %q already on line %d", path, i+1, id, prev+1)
		}
		seen[id] = i
		ids[i] = id
	}
	return ids, nil
}

// Rows names the rows of an embeddings matrix, so that judgments naming
// items by id (the server's exports) map to rows. Without ids, items are
// named by their row index.
type Rows struct {
	n     int
	ids   []string
	index map[string]int32
}

// Errors of row lookups, wrapped with the item.
var (
	errOutOfRange = errors.New("out of range")
	errNotIndex   = errors.New("not a row index")
)

// IndexRows returns n rows named by their index ("0", "1", ...).
func IndexRows(n int) Rows { return Rows{n: n} }

// NewRows names n rows with ids (row i is ids[i]). A count that does not
// match n is an error, with a hint when the matrix looks transposed.
func NewRows(n, d int, ids []string) (Rows, error) {
	if len(ids) != n {
		hint := ""
		if len(ids) == d {
			hint = fmt.Sprintf("; the matrix has %d columns, as many as there are ids: it looks transposed (save x.T, or np.ascontiguousarray(x.T), with one row per item)", d)
		}
		return Rows{}, fmt.Errorf("%d ids for %d embedding rows%s", len(ids), n, hint)
	}
	r := Rows{n: n, ids: ids, index: make(map[string]int32, n)}
	for i, id := range ids {
		r.index[id] = int32(i)
	}
	return r, nil
}

// Index returns the row of an item id.
func (r Rows) Index(id string) (int32, error) {
	if r.ids == nil {
		i, err := r.Row(id)
		if errors.Is(err, errNotIndex) {
			return 0, fmt.Errorf("%w; name the embeddings rows with --ids FILE (one id per line) to use item ids", err)
		}
		return i, err
	}
	i, ok := r.index[id]
	if !ok {
		return 0, fmt.Errorf("item %q is not in the ids file", id)
	}
	return i, nil
}

// Row parses a row index in [0,n) (n = 0: any non-negative index).
func (r Rows) Row(s string) (int32, error) {
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("item %q is %w", s, errNotIndex)
	}
	if v < 0 || (r.n > 0 && v >= int64(r.n)) {
		return 0, fmt.Errorf("item %d %w [0,%d)", v, errOutOfRange, r.n)
	}
	return int32(v), nil
}

// embeddings is a matrix an offline command reads, with the names of its
// rows.
type embeddings struct {
	x    []float32
	n, d int
	rows Rows
}

// loadEmbeddings reads the embeddings at path and, when idsPath is set,
// the ids naming their rows.
func loadEmbeddings(path, idsPath string) (*embeddings, error) {
	x, n, d, err := ReadEmbeddings(path)
	if err != nil {
		return nil, err
	}
	e := &embeddings{x: x, n: n, d: d, rows: IndexRows(n)}
	if idsPath != "" {
		ids, err := ReadIDs(idsPath)
		if err != nil {
			return nil, err
		}
		if e.rows, err = NewRows(n, d, ids); err != nil {
			return nil, fmt.Errorf("--ids %s and --embeddings %s: %w", idsPath, path, err)
		}
	}
	return e, nil
}

// triplets reads a judgments file (see ReadTriplets) over e's rows.
func (e *embeddings) triplets(path string, task learner.Task) ([]learner.Triplet, error) {
	ts, err := ReadTriplets(path, e.rows, task)
	if errors.Is(err, errOutOfRange) && e.d > e.n {
		return nil, fmt.Errorf("%w (the embeddings have %d rows and %d columns: if the matrix is transposed, save x.T, or np.ascontiguousarray(x.T), with one row per item)", err, e.n, e.d)
	}
	return ts, err
}

// ReadRepeats reads a repeated-triplets CSV with a header line and rows
// "id0,id1,id2,n_odd_id0,n_odd_id1,n_odd_id2". Indices must lie in [0,n)
// when n > 0.
func ReadRepeats(path string, n int) ([]learner.RepeatedTriplet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read repeats: %w", err)
	}
	defer f.Close()
	cr := csv.NewReader(bufio.NewReader(f))
	cr.FieldsPerRecord = 6
	cr.TrimLeadingSpace = true
	recs, err := cr.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("read repeats %s: %w", path, err)
	}
	if len(recs) < 2 {
		return nil, fmt.Errorf("read repeats %s: no rows", path)
	}
	out := make([]learner.RepeatedTriplet, 0, len(recs)-1)
	for i, rec := range recs[1:] {
		var rt learner.RepeatedTriplet
		for a := 0; a < 6; a++ {
			v, err := strconv.ParseInt(strings.TrimSpace(rec[a]), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("read repeats %s row %d: %w", path, i+2, err)
			}
			if v < 0 || (a < 3 && n > 0 && v >= int64(n)) {
				return nil, fmt.Errorf("read repeats %s row %d: value %d out of range", path, i+2, v)
			}
			if a < 3 {
				rt.Items[a] = int32(v)
			} else {
				rt.Counts[a-3] = int32(v)
			}
		}
		out = append(out, rt)
	}
	return out, nil
}

// Categories is a multi-label table of item categories.
type Categories struct {
	// Names are the category names, in column order.
	Names []string
	// Items lists, for each item, the indices into Names of its categories.
	Items [][]int32
}

// ReadCategories reads a THINGS-style categories TSV: a header row whose
// first two columns are the item word and its definition, followed by one
// 0/1 column per category, then one row per item in item order. Rows with
// an empty item word (such as a trailing totals row) are skipped. Empty
// cells count as 0.
func ReadCategories(path string) (*Categories, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read categories: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	if !sc.Scan() {
		return nil, fmt.Errorf("read categories %s: empty file", path)
	}
	header := strings.Split(strings.TrimRight(sc.Text(), "\r\n"), "\t")
	const skip = 2
	for len(header) > skip && strings.TrimSpace(header[len(header)-1]) == "" {
		header = header[:len(header)-1]
	}
	if len(header) <= skip {
		return nil, fmt.Errorf("read categories %s: header has no category columns", path)
	}
	c := &Categories{Names: append([]string(nil), header[skip:]...)}
	line := 1
	for sc.Scan() {
		line++
		fields := strings.Split(strings.TrimRight(sc.Text(), "\r\n"), "\t")
		if len(fields) == 1 && strings.TrimSpace(fields[0]) == "" {
			continue
		}
		if len(fields) < skip {
			return nil, fmt.Errorf("read categories %s line %d: too few columns", path, line)
		}
		if strings.TrimSpace(fields[0]) == "" {
			// A row without an item word (THINGS ends with a row of
			// per-category totals) is not an item.
			continue
		}
		var cats []int32
		for a := range c.Names {
			if skip+a >= len(fields) {
				break
			}
			switch strings.TrimSpace(fields[skip+a]) {
			case "1":
				cats = append(cats, int32(a))
			case "0", "":
			default:
				return nil, fmt.Errorf("read categories %s line %d: column %q is not 0/1", path, line, c.Names[a])
			}
		}
		c.Items = append(c.Items, cats)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read categories %s: %w", path, err)
	}
	return c, nil
}

// SplitIndices returns a deterministic random partition of [0,n) into
// training and validation indices, with round(valFrac·n) validation
// indices. Both parts are sorted ascending.
func SplitIndices(n int, valFrac float64, seed uint64) (train, val []int) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	perm := rng.Perm(n)
	nv := int(valFrac*float64(n) + 0.5)
	isVal := make([]bool, n)
	for _, i := range perm[:nv] {
		isVal[i] = true
	}
	for i := 0; i < n; i++ {
		if isVal[i] {
			val = append(val, i)
		} else {
			train = append(train, i)
		}
	}
	return train, val
}

// SplitTriplets partitions ts deterministically by seed into training and
// validation triplets (see SplitIndices).
func SplitTriplets(ts []learner.Triplet, valFrac float64, seed uint64) (train, val []learner.Triplet) {
	tr, va := SplitIndices(len(ts), valFrac, seed)
	return Gather(ts, tr), Gather(ts, va)
}

// Gather returns xs[idx[0]], xs[idx[1]], ....
func Gather[T any](xs []T, idx []int) []T {
	out := make([]T, len(idx))
	for a, i := range idx {
		out[a] = xs[i]
	}
	return out
}

// FileSHA256 returns the hex SHA-256 digest of a file's contents.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash: %w", err) // a *PathError naming the file
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
