// Package offline implements the file-based offline subcommands of alignet
// (fit, eval, generate, distill): it reads embeddings, triplets, repeated
// triplets and category tables from disk, calls package learner, and writes
// models and reports.
package offline

import (
	"bufio"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/npy"
)

// ReadEmbeddings reads a two-dimensional .npy matrix as float32 and returns
// it row-major with its number of rows n and columns d.
func ReadEmbeddings(path string) (x []float32, n, d int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("open embeddings: %w", err)
	}
	defer f.Close()
	x, shape, err := npy.ReadFloat32(bufio.NewReader(f))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read embeddings %s: %w", path, err)
	}
	if len(shape) != 2 || shape[0] == 0 || shape[1] == 0 {
		return nil, 0, 0, fmt.Errorf("embeddings %s: want a non-empty 2-d array, got shape %v", path, shape)
	}
	return x, shape[0], shape[1], nil
}

// ReadTriplets reads a triplet text file with one judgment per line,
// "i j k [subject]" (odd-one-out: k is the odd one) or "head close far"
// (anchor). Blank lines and lines starting with '#' are skipped. Indices
// must lie in [0,n) when n > 0. subjects holds the fourth column, or -1 when
// a line has none.
func ReadTriplets(path string, n int) (ts []learner.Triplet, subjects []int32, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open triplets: %w", err)
	}
	defer f.Close()
	ts, subjects, err = ParseTriplets(f, n)
	if err != nil {
		return nil, nil, fmt.Errorf("read triplets %s: %w", path, err)
	}
	return ts, subjects, nil
}

// ParseTriplets parses the triplet text format described at ReadTriplets.
func ParseTriplets(r io.Reader, n int) (ts []learner.Triplet, subjects []int32, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || s[0] == '#' {
			continue
		}
		fields := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' })
		if len(fields) < 3 || len(fields) > 4 {
			return nil, nil, fmt.Errorf("line %d: want 3 or 4 fields, got %d", line, len(fields))
		}
		var v [4]int64
		v[3] = -1
		for a, fs := range fields {
			x, err := strconv.ParseInt(fs, 10, 32)
			if err != nil {
				return nil, nil, fmt.Errorf("line %d field %d: %w", line, a+1, err)
			}
			v[a] = x
		}
		for a := 0; a < 3; a++ {
			if v[a] < 0 || (n > 0 && v[a] >= int64(n)) {
				return nil, nil, fmt.Errorf("line %d: item %d out of range [0,%d)", line, v[a], n)
			}
		}
		if v[0] == v[1] || v[0] == v[2] || v[1] == v[2] {
			return nil, nil, fmt.Errorf("line %d: repeated item in triplet", line)
		}
		ts = append(ts, learner.Triplet{I: int32(v[0]), J: int32(v[1]), K: int32(v[2])})
		subjects = append(subjects, int32(v[3]))
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if len(ts) == 0 {
		return nil, nil, errors.New("no triplets")
	}
	return ts, subjects, nil
}

// ReadRepeats reads a repeated-triplets CSV with a header line and rows
// "id0,id1,id2,n_odd_id0,n_odd_id1,n_odd_id2". Indices must lie in [0,n)
// when n > 0.
func ReadRepeats(path string, n int) ([]learner.RepeatedTriplet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open repeats: %w", err)
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
		return nil, fmt.Errorf("open categories: %w", err)
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
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
