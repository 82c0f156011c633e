package offline

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Table is a small text table printed with aligned columns.
type Table struct {
	// Title, when set, is printed above the table.
	Title string
	// Headers are the column names.
	Headers []string
	// Rows holds the formatted cells.
	Rows [][]string
}

// NewTable returns a table with the given column names.
func NewTable(headers ...string) *Table { return &Table{Headers: headers} }

// AddRow appends a row, formatting each cell with FormatCell.
func (t *Table) AddRow(cells ...any) {
	row := make([]string, len(cells))
	for i, c := range cells {
		row[i] = FormatCell(c)
	}
	t.Rows = append(t.Rows, row)
}

// FormatCell renders a value for a table: floats with four significant
// decimals, durations rounded to milliseconds, NaN as "-".
func FormatCell(c any) string {
	switch v := c.(type) {
	case float64:
		if math.IsNaN(v) {
			return "-"
		}
		if v != 0 && (math.Abs(v) < 1e-3 || math.Abs(v) >= 1e6) {
			return fmt.Sprintf("%.3g", v)
		}
		return fmt.Sprintf("%.4f", v)
	case float32:
		return FormatCell(float64(v))
	case time.Duration:
		return v.Round(time.Millisecond).String()
	case string:
		return v
	case nil:
		return "-"
	}
	return fmt.Sprint(c)
}

// Write prints the table with aligned columns and a rule under the header.
func (t *Table) Write(w io.Writer) error {
	if t.Title != "" {
		if _, err := fmt.Fprintln(w, t.Title); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.Headers, "\t"))
	rule := make([]string, len(t.Headers))
	for i, h := range t.Headers {
		rule[i] = strings.Repeat("-", max(len(h), 3))
	}
	fmt.Fprintln(tw, strings.Join(rule, "\t"))
	for _, r := range t.Rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// WriteJSON writes v as indented JSON followed by a newline. NaN and
// infinite float64 values must be replaced by the caller (see JSONFloat).
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

// JSONFloat returns a pointer to v, or nil when v is NaN or infinite, so it
// marshals as null instead of failing.
func JSONFloat(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}
