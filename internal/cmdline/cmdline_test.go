package cmdline

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func newTestSet(out *bytes.Buffer, env map[string]string) *FlagSet {
	fs := New("demo thing", "Do the demo thing.", out)
	fs.String("in", "", "input `FILE`")
	fs.String("secret", "", "a key")
	fs.Int("n", 3, "how many")
	fs.Bool("json", false, "print JSON")
	fs.Require("in", "secret")
	fs.Env("secret", func(k string) string { return env[k] }, "DEMO_KEY")
	fs.Example("alignet demo thing --in a.txt")
	return fs
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	fs := newTestSet(&out, map[string]string{"DEMO_KEY": "s3cret-value"})
	if err := fs.Parse([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(--help) = %v, want flag.ErrHelp", err)
	}
	h := out.String()
	for _, want := range []string{
		"Usage: alignet demo thing [flags]\n\nDo the demo thing.\n",
		"Example:\n  alignet demo thing --in a.txt\n",
		"  --in FILE  (required)\n        input FILE\n",
		"  --secret VALUE  (required)\n        a key (or $DEMO_KEY)\n",
		"  --n N\n        how many (default 3)\n",
		"  --json\n        print JSON\n",
	} {
		if !strings.Contains(h, want) {
			t.Errorf("help lacks %q:\n%s", want, h)
		}
	}
	if strings.Contains(h, "s3cret") {
		t.Errorf("help shows an environment value:\n%s", h)
	}
}

func TestParseErrors(t *testing.T) {
	var out bytes.Buffer
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--secret", "x"}, "--in is required"},
		{nil, "--in and --secret (or $DEMO_KEY) are required"},
		{[]string{"--in", "a", "--secret", "x", "extra"}, `unexpected argument "extra"`},
		{[]string{"--nope"}, "flag provided but not defined: -nope"},
		{[]string{"--n", "x"}, "invalid value"},
	} {
		err := newTestSet(&out, nil).Parse(c.args)
		var ue *UsageError
		if !errors.As(err, &ue) || ue.Command != "demo thing" || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want a UsageError containing %q", c.args, err, c.want)
		}
	}
	if out.Len() != 0 {
		t.Errorf("errors printed to stdout: %q", out.String())
	}
}

func TestEnvFallback(t *testing.T) {
	var out bytes.Buffer
	fs := newTestSet(&out, map[string]string{"DEMO_KEY": "from-env"})
	if err := fs.Parse([]string{"--in", "a"}); err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("secret").Value.String(); got != "from-env" {
		t.Fatalf("secret = %q, want the environment value", got)
	}
	fs = newTestSet(&out, map[string]string{"DEMO_KEY": "from-env"})
	if err := fs.Parse([]string{"--in", "a", "--secret", "flag"}); err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("secret").Value.String(); got != "flag" {
		t.Fatalf("secret = %q, want the flag to win over the environment", got)
	}
}

func TestRequiredNumber(t *testing.T) {
	var out bytes.Buffer
	fs := New("gen", "Generate.", &out)
	fs.Int("n", 0, "count")
	fs.Require("n")
	if err := fs.Parse(nil); err == nil || err.Error() != "--n is required" {
		t.Fatalf("Parse without --n = %v", err)
	}
	fs = New("gen", "Generate.", &out)
	n := fs.Int("n", 0, "count")
	fs.Require("n")
	if err := fs.Parse([]string{"--n", "5"}); err != nil || *n != 5 {
		t.Fatalf("Parse(--n 5) = %v, n=%d", err, *n)
	}
}

func TestPositionalArgs(t *testing.T) {
	var out bytes.Buffer
	fs := New("restore", "Restore a file.", &out)
	fs.Args("FILE")
	if err := fs.Parse(nil); err == nil || !strings.Contains(err.Error(), "FILE is required") {
		t.Fatalf("no argument: %v", err)
	}
	fs = New("restore", "Restore a file.", &out)
	fs.Args("FILE")
	if err := fs.Parse([]string{"a", "b"}); err == nil || !strings.Contains(err.Error(), `unexpected argument "b"`) {
		t.Fatalf("two arguments: %v", err)
	}
	fs = New("restore", "Restore a file.", &out)
	fs.Args("FILE")
	if err := fs.Parse([]string{"x.backup"}); err != nil || fs.Arg(0) != "x.backup" {
		t.Fatalf("one argument: %v, %q", err, fs.Arg(0))
	}
	fs.PrintHelp(&out)
	if !strings.HasPrefix(out.String(), "Usage: alignet restore [flags] FILE\n") {
		t.Fatalf("help synopsis: %q", out.String())
	}
}
