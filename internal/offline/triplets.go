package offline

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
)

// Format is the layout of a judgments file.
type Format string

// Judgment file formats.
const (
	// FormatAuto detects the format from the first line that is neither
	// blank nor a comment.
	FormatAuto Format = ""
	// FormatText is the THINGS text format: one judgment per line, "i j k
	// [subject]" with k the odd one out, or "head close far [subject]" for
	// the anchor task, fields separated by spaces, tabs or commas. Lines
	// that are blank or start with '#' are skipped.
	FormatText Format = "text"
	// FormatCSV is the server's CSV export (header id,study,task,worker,
	// item_a,item_b,item_c,odd,head,close,far,rt_ms,query_id,query_kind,
	// received_at, and with ?join=queries the api.CSVQueryColumns).
	FormatCSV Format = "csv"
	// FormatJSONL is the server's JSON lines export: one alignet.Judgment
	// per line.
	FormatJSONL Format = "jsonl"
)

// Record is one judgment as a file states it, before item names are
// mapped to rows.
type Record struct {
	// Line is the 1-based line the judgment starts on.
	Line int
	// ID is the judgment id of an export ("" in text files).
	ID string
	// Task is the task an export records; "" for text files, whose task
	// the reader chooses.
	Task alignet.Task
	// Items are the three items as written: for text files the three
	// fields, for odd-one-out exports the display order, for anchor
	// exports head, close and far.
	Items [3]string
	// Odd is the odd one out of an odd-one-out export ("" otherwise; in
	// text files it is Items[2]).
	Odd string
	// Worker is the subject column of a text file or the worker pseudonym
	// of an export ("" when absent).
	Worker string
	// RTMillis is an export's response time in milliseconds.
	RTMillis int
}

// Triplet maps r onto rows. Text files hold row indices (i, j, k as
// written). Odd-one-out exports give K the odd item and I, J the other
// two in display order; anchor exports give head, close, far. Export
// items are looked up by id when rows has ids, else read as indices.
func (r Record) Triplet(rows Rows) (learner.Triplet, error) {
	var names [3]string
	switch r.Task {
	case "", alignet.TaskAnchor:
		names = r.Items
	case alignet.TaskOddOneOut:
		k := -1
		for a, it := range r.Items {
			if it == r.Odd {
				k = a
			}
		}
		if k < 0 {
			return learner.Triplet{}, fmt.Errorf("odd %q is not one of the items %q", r.Odd, r.Items)
		}
		o := 0
		for a, it := range r.Items {
			if a != k {
				names[o] = it
				o++
			}
		}
		names[2] = r.Odd
	default:
		return learner.Triplet{}, fmt.Errorf("unknown task %q", r.Task)
	}
	var v [3]int32
	for a, name := range names {
		var err error
		if r.Task == "" {
			v[a], err = rows.Row(name)
		} else {
			v[a], err = rows.Index(name)
		}
		if err != nil {
			return learner.Triplet{}, err
		}
	}
	if v[0] == v[1] || v[0] == v[2] || v[1] == v[2] {
		return learner.Triplet{}, errors.New("repeated item in triplet")
	}
	return learner.Triplet{I: v[0], J: v[1], K: v[2]}, nil
}

// ParseJudgments reads the judgments of r in format (FormatAuto detects
// it), at most limit of them when limit > 0, and returns them with the
// format read. It is the one reader of judgment files: the offline
// commands and "alignet import" both use it.
func ParseJudgments(r io.Reader, format Format, limit int) ([]Record, Format, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if format == FormatAuto {
		format = detectFormat(br)
	}
	var recs []Record
	var err error
	switch format {
	case FormatText:
		recs, err = parseText(br, limit)
	case FormatJSONL:
		recs, err = parseJSONL(br, limit)
	case FormatCSV:
		recs, err = parseCSV(br, limit)
	default:
		return nil, format, fmt.Errorf("unknown judgments format %q (want text, csv or jsonl)", format)
	}
	return recs, format, err
}

// detectFormat peeks at the first meaningful line of br.
func detectFormat(br *bufio.Reader) Format {
	head, _ := br.Peek(br.Size())
	for _, line := range bytes.Split(head, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		if s[0] == '{' {
			return FormatJSONL
		}
		if cols := csvColumns(s); cols["task"] && cols["item_a"] && cols["odd"] {
			return FormatCSV
		}
		break
	}
	return FormatText
}

func csvColumns(header string) map[string]bool {
	cols := map[string]bool{}
	for _, c := range strings.Split(header, ",") {
		cols[strings.ToLower(strings.TrimSpace(c))] = true
	}
	return cols
}

// lines calls fn with each line of br and its 1-based number until fn
// returns false or the input ends.
func lines(br *bufio.Reader, fn func(n int, line string) (bool, error)) error {
	for n := 1; ; n++ {
		s, err := br.ReadString('\n')
		if s != "" {
			more, ferr := fn(n, strings.TrimRight(s, "\r\n"))
			if ferr != nil {
				return fmt.Errorf("line %d: %w", n, ferr)
			}
			if !more {
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func parseText(br *bufio.Reader, limit int) ([]Record, error) {
	var recs []Record
	err := lines(br, func(n int, line string) (bool, error) {
		s := strings.TrimSpace(line)
		if s == "" || s[0] == '#' {
			return true, nil
		}
		f := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' })
		if len(f) < 3 || len(f) > 4 {
			return false, fmt.Errorf("want 3 or 4 fields (i j k [subject]), got %d", len(f))
		}
		rec := Record{Line: n, Items: [3]string{f[0], f[1], f[2]}}
		if len(f) == 4 {
			rec.Worker = f[3]
		}
		recs = append(recs, rec)
		return limit <= 0 || len(recs) < limit, nil
	})
	return recs, err
}

func parseJSONL(br *bufio.Reader, limit int) ([]Record, error) {
	var recs []Record
	err := lines(br, func(n int, line string) (bool, error) {
		if strings.TrimSpace(line) == "" {
			return true, nil
		}
		var j alignet.Judgment
		if err := json.Unmarshal([]byte(line), &j); err != nil {
			return false, fmt.Errorf("not a judgment: %w", err)
		}
		if !j.Task.Valid() {
			return false, fmt.Errorf("task %q is not %q or %q", j.Task, alignet.TaskOddOneOut, alignet.TaskAnchor)
		}
		recs = append(recs, Record{Line: n, ID: j.ID, Task: j.Task, Items: j.Items, Odd: j.Odd, Worker: j.Worker, RTMillis: int(j.RTMillis)})
		return limit <= 0 || len(recs) < limit, nil
	})
	return recs, err
}

func parseCSV(br *bufio.Reader, limit int) ([]Record, error) {
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	cr.Comment = '#'
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	for _, need := range []string{"task", "item_a", "item_b", "item_c", "odd", "head", "close", "far"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("header lacks column %q: want the server's export header", need)
		}
	}
	var recs []Record
	for limit <= 0 || len(recs) < limit {
		row, err := cr.Read()
		if err == io.EOF {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			return nil, err
		}
		get := func(name string) string {
			i, ok := col[name]
			if !ok || i >= len(row) {
				return ""
			}
			return strings.TrimSpace(row[i])
		}
		rec := Record{Line: line, ID: get("id"), Task: alignet.Task(get("task")), Worker: get("worker")}
		switch rec.Task {
		case alignet.TaskOddOneOut:
			rec.Items, rec.Odd = [3]string{get("item_a"), get("item_b"), get("item_c")}, get("odd")
		case alignet.TaskAnchor:
			rec.Items = [3]string{get("head"), get("close"), get("far")}
		default:
			return nil, fmt.Errorf("line %d: task %q is not %q or %q", line, rec.Task, alignet.TaskOddOneOut, alignet.TaskAnchor)
		}
		if v := get("rt_ms"); v != "" {
			if rec.RTMillis, err = strconv.Atoi(v); err != nil {
				return nil, fmt.Errorf("line %d: rt_ms %q is not an integer", line, v)
			}
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// Triplets converts records to triplets over rows (see Record.Triplet).
// When task is set, exports must record that task.
func Triplets(recs []Record, rows Rows, task learner.Task) ([]learner.Triplet, error) {
	if len(recs) == 0 {
		return nil, errors.New("no triplets")
	}
	ts := make([]learner.Triplet, len(recs))
	for i, r := range recs {
		if task != "" && r.Task != "" && learner.Task(r.Task) != task {
			return nil, fmt.Errorf("line %d: the file holds %s judgments, not %s; use --task %s", r.Line, r.Task, task, r.Task)
		}
		t, err := r.Triplet(rows)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", r.Line, err)
		}
		ts[i] = t
	}
	return ts, nil
}

// ParseTriplets reads judgments (format detected) whose items are row
// indices in [0,n) (n = 0: unchecked) and returns their triplets and, for
// text files, the subject column (−1 where a line has none).
func ParseTriplets(r io.Reader, n int) (ts []learner.Triplet, subjects []int32, err error) {
	recs, format, err := ParseJudgments(r, FormatAuto, 0)
	if err != nil {
		return nil, nil, err
	}
	if ts, err = Triplets(recs, IndexRows(n), ""); err != nil {
		return nil, nil, err
	}
	subjects = make([]int32, len(recs))
	for i, rec := range recs {
		subjects[i] = -1
		if format == FormatText && rec.Worker != "" {
			v, err := strconv.ParseInt(rec.Worker, 10, 32)
			if err != nil {
				return nil, nil, fmt.Errorf("line %d: subject %q is not an integer", rec.Line, rec.Worker)
			}
			subjects[i] = int32(v)
		}
	}
	return ts, subjects, nil
}

// ReadTriplets reads the judgments file at path in any Format, detected
// from its content, and maps its items onto rows (see Record.Triplet).
// When task is set, an export must record that task.
func ReadTriplets(path string, rows Rows, task learner.Task) ([]learner.Triplet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read triplets: %w", err)
	}
	defer f.Close()
	recs, _, err := ParseJudgments(f, FormatAuto, 0)
	if err == nil {
		var ts []learner.Triplet
		if ts, err = Triplets(recs, rows, task); err == nil {
			return ts, nil
		}
	}
	return nil, fmt.Errorf("read triplets %s: %w", path, err)
}
