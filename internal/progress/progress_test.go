package progress

import (
	"bytes"
	"strings"
	"testing"
)

func TestNonTerminalPrintsTenthsOnly(t *testing.T) {
	var buf bytes.Buffer
	b := New(&buf, "work", 1000)
	for i := 0; i < 1000; i++ {
		b.Add(1)
	}
	b.Finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 10 { // 10%..90% plus the final line
		t.Fatalf("got %d lines:\n%s", len(lines), buf.String())
	}
	if strings.Contains(buf.String(), "\r") {
		t.Fatal("carriage return written to a non-terminal")
	}
	if !strings.Contains(lines[len(lines)-1], "1000/1000") {
		t.Fatalf("last line %q", lines[len(lines)-1])
	}
	if b.Done() != 1000 {
		t.Fatalf("done = %d", b.Done())
	}
}

func TestDisabledStillCounts(t *testing.T) {
	b := New(nil, "x", 0)
	b.Add(5)
	b.Finish()
	if b.Done() != 5 {
		t.Fatalf("done = %d", b.Done())
	}
}
