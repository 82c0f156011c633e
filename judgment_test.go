package alignet

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validJudgment() Judgment {
	return Judgment{ID: "j1", Study: "s1", Task: TaskOddOneOut, Worker: "w", Items: [3]string{"a", "b", "c"},
		Odd: "b", RTMillis: 10, ReceivedAt: time.Unix(1, 0)}
}

func TestJudgmentValidate(t *testing.T) {
	if j := validJudgment(); j.Validate() != nil {
		t.Fatalf("valid judgment rejected: %v", j.Validate())
	}
	anchor := validJudgment()
	anchor.Task, anchor.Odd = TaskAnchor, ""
	if err := anchor.Validate(); err != nil {
		t.Fatalf("valid anchor judgment rejected: %v", err)
	}
	cases := []struct {
		name, field string
		mod         func(*Judgment)
	}{
		{"bad id", "id", func(j *Judgment) { j.ID = "a b" }},
		{"long id", "id", func(j *Judgment) { j.ID = strings.Repeat("x", MaxIDLen+1) }},
		{"bad study", "study", func(j *Judgment) { j.Study = "" }},
		{"bad task", "task", func(j *Judgment) { j.Task = "pairwise" }},
		{"no worker", "worker", func(j *Judgment) { j.Worker = "" }},
		{"NUL in worker", "worker", func(j *Judgment) { j.Worker = "w\x00" }},
		{"NUL in query id", "query_id", func(j *Judgment) { j.QueryID = "q\x00" }},
		{"invalid UTF-8 in query id", "query_id", func(j *Judgment) { j.QueryID = "q\xff" }},
		{"C1 control in item", "items[1]", func(j *Judgment) { j.Items[1] = "b\u0085"; j.Odd = "a" }},
		{"empty item", "items[2]", func(j *Judgment) { j.Items[2] = "" }},
		{"repeated item", "items[2]", func(j *Judgment) { j.Items[2] = "a" }},
		{"odd not an item", "odd", func(j *Judgment) { j.Odd = "z" }},
		{"odd on anchor", "odd", func(j *Judgment) { j.Task = TaskAnchor }},
		{"anchor repeat names far", "far", func(j *Judgment) { j.Task, j.Odd, j.Items[2] = TaskAnchor, "", "a" }},
		{"negative rt", "rt_ms", func(j *Judgment) { j.RTMillis = -1 }},
		{"no time", "received_at", func(j *Judgment) { j.ReceivedAt = time.Time{} }},
	}
	for _, c := range cases {
		j := validJudgment()
		c.mod(&j)
		err := j.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) || fe.Field != c.field {
			t.Errorf("%s: Validate() = %v, want a FieldError on %q", c.name, err, c.field)
		}
	}
}

func TestCheckText(t *testing.T) {
	for _, ok := range []string{"", "plain", "Zürich – 東京", "tab-free"} {
		if msg := CheckText(ok, 20); msg != "" {
			t.Errorf("CheckText(%q) = %q, want ok", ok, msg)
		}
	}
	for _, bad := range []string{"a\x00", "a\tb", "\x7f", "\u009f", "\xff", strings.Repeat("é", 21)} {
		if CheckText(bad, 20) == "" {
			t.Errorf("CheckText(%q) accepted it", bad)
		}
	}
}
