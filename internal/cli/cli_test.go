package cli

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/alignet/alignet/npy"
)

// TestEveryCommandHasHelp runs "<cmd> -h" for every subcommand, which
// registers all of its flags: a duplicate flag or a panic fails here.
func TestEveryCommandHasHelp(t *testing.T) {
	for name := range commands() {
		if name == "import" || name == "version" {
			continue // import's help lists its kinds, checked below; version has no flags.
		}
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := Main(context.Background(), []string{name, "-h"}, &out, &errOut); code != 0 {
				t.Fatalf("exit %d\n%s", code, errOut.String())
			}
			if !strings.Contains(out.String(), "-") {
				t.Fatalf("no flags listed:\n%s", out.String())
			}
		})
	}
	for _, kind := range []string{"embeddings", "judgments", "things", "images"} {
		var out, errOut bytes.Buffer
		if code := Main(context.Background(), []string{"import", kind, "-h"}, &out, &errOut); code != 0 {
			t.Fatalf("import %s -h: exit %d\n%s", kind, code, errOut.String())
		}
	}
}

// helpCommands lists every command line whose help is checked, with the
// flags it must mark as required.
func helpCommands() map[string][]string {
	required := map[string][]string{
		"fit":               {"embeddings", "triplets"},
		"eval":              {"embeddings", "triplets"},
		"generate":          {"teacher", "embeddings", "n", "out"},
		"distill":           {"student", "dataset", "out"},
		"migrate":           {"database-url"},
		"backup":            {"database-url", "out"},
		"restore":           {"database-url"},
		"loadgen":           {"key"},
		"soak":              {"database-url", "kafka-brokers"},
		"import embeddings": {"key", "space", "npy", "ids"},
		"import judgments":  {"key", "study", "file"},
		"import things":     {"key"},
		"simulate":          {"dir"},
		"import images":     {"key", "dir"},
		"serve":             nil,
		"dev":               nil,
		"version":           nil,
	}
	for name := range commands() {
		if _, ok := required[name]; !ok && name != "import" {
			required[name] = nil
		}
	}
	return required
}

// TestHelpFormat checks the help of every command: -h and --help print to
// stdout and exit 0 with a "Usage: alignet <cmd> [flags]" header, a
// one-line description, an example, required flags marked, and one
// placeholder word per flag.
func TestHelpFormat(t *testing.T) {
	flagLine := regexp.MustCompile(`^  --([a-z0-9-]+)( [A-Z][A-Z0-9_-]*)?(  \(required\))?$`)
	for cmd, required := range helpCommands() {
		for _, h := range []string{"-h", "--help"} {
			t.Run(cmd+" "+h, func(t *testing.T) {
				var out, errOut bytes.Buffer
				args := append(strings.Fields(cmd), h)
				if code := Main(context.Background(), args, &out, &errOut); code != 0 || errOut.Len() != 0 {
					t.Fatalf("exit %d, stderr %q", code, errOut.String())
				}
				help := out.String()
				lines := strings.Split(help, "\n")
				synopsis := "Usage: alignet " + cmd + " [flags]"
				if cmd == "restore" {
					synopsis += " FILE" // its one positional argument
				}
				if lines[0] != synopsis || lines[1] != "" || !strings.HasSuffix(lines[2], ".") {
					t.Fatalf("header and description:\n%s", help)
				}
				if !strings.Contains(help, "\nExample:\n  ") || !strings.Contains(help, "\n  alignet "+strings.Fields(cmd)[0]) && !strings.Contains(help, " alignet "+cmd) {
					t.Errorf("no example:\n%s", help)
				}
				marked := map[string]bool{}
				for _, l := range lines {
					if !strings.HasPrefix(l, "  --") {
						continue
					}
					m := flagLine.FindStringSubmatch(l)
					if m == nil {
						t.Errorf("flag line %q: want --name, one placeholder word and an optional (required)", l)
						continue
					}
					if m[3] != "" {
						marked[m[1]] = true
					}
				}
				for _, r := range required {
					if !marked[r] {
						t.Errorf("--%s is not marked (required):\n%s", r, help)
					}
				}
				if len(marked) != len(required) {
					t.Errorf("marked %v, want %v", marked, required)
				}
			})
		}
	}
}

func TestTopLevelUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), nil, &out, &errOut); code != 2 || !strings.HasPrefix(errOut.String(), "Usage: alignet <command> [flags]") {
		t.Fatalf("alignet: exit %d, stderr %q", code, errOut.String())
	}
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		out.Reset()
		errOut.Reset()
		if code := Main(context.Background(), args, &out, &errOut); code != 0 || !strings.Contains(out.String(), "  fit ") || errOut.Len() != 0 {
			t.Fatalf("alignet %v: exit %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
	out.Reset()
	if code := Main(context.Background(), []string{"help", "fit"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "Usage: alignet fit [flags]") {
		t.Fatalf("alignet help fit: exit %d, stdout %q", code, out.String())
	}
	for _, args := range [][]string{{"import", "--help"}, {"import", "-h"}} {
		out.Reset()
		errOut.Reset()
		if code := Main(context.Background(), args, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "Usage: alignet import <kind> [flags]") || errOut.Len() != 0 {
			t.Fatalf("alignet %v: exit %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
	errOut.Reset()
	if code := Main(context.Background(), []string{"import", "bogus"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `unknown import kind "bogus"`) {
		t.Fatalf("alignet import bogus: exit %d, stderr %q", code, errOut.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"fit", "--nope"}, "alignet fit: flag provided but not defined: -nope\nRun 'alignet fit --help' for usage.\n"},
		{[]string{"fit", "--triplets", "t.txt"}, "alignet fit: --embeddings is required\nRun 'alignet fit --help' for usage.\n"},
		{[]string{"generate", "stray"}, `alignet generate: unexpected argument "stray"`},
		{[]string{"import", "things", "--key", ""}, "alignet import things: --key (or $ALIGNET_KEY, $ALIGNET_ADMIN_KEY) is required"},
	} {
		var out, errOut bytes.Buffer
		t.Setenv("ALIGNET_KEY", "")
		t.Setenv("ALIGNET_ADMIN_KEY", "")
		if code := Main(context.Background(), c.args, &out, &errOut); code != 2 || !strings.HasPrefix(errOut.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q, want exit 2 and %q", c.args, code, errOut.String(), c.want)
		}
	}
}

// TestErrorContextOnce checks that a failing command names itself once:
// "alignet fit: read embeddings: open ...", not "alignet fit: fit: ...".
func TestErrorContextOnce(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.npy")
	for _, cmd := range []string{"fit", "eval"} {
		var out, errOut bytes.Buffer
		if code := Main(context.Background(), []string{cmd, "--embeddings", missing, "--triplets", missing}, &out, &errOut); code != 1 {
			t.Fatalf("%s: exit %d", cmd, code)
		}
		want := "alignet " + cmd + ": read embeddings: open " + missing + ": no such file or directory\n"
		if errOut.String() != want {
			t.Errorf("%s: stderr %q, want %q", cmd, errOut.String(), want)
		}
	}
}

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), []string{"version"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.HasPrefix(out.String(), "alignet ") || !strings.Contains(out.String(), runtime.Version()) {
		t.Fatalf("version output %q", out.String())
	}
	info := &debug.BuildInfo{GoVersion: "go1.99", Path: "github.com/alignet/alignet/cmd/alignet",
		Main:     debug.Module{Path: "github.com/alignet/alignet", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}}
	got := versionText(info)
	for _, want := range []string{"alignet v1.2.3 (github.com/alignet/alignet)\n", "revision abc123 (2026-01-02T03:04:05Z), with uncommitted changes\n", "go1.99 "} {
		if !strings.Contains(got, want) {
			t.Errorf("versionText lacks %q:\n%s", want, got)
		}
	}
	if got := versionText(&debug.BuildInfo{Main: debug.Module{Path: "m"}}); !strings.Contains(got, "alignet (devel) (m)") || !strings.Contains(got, "revision unknown") {
		t.Errorf("versionText without VCS information:\n%s", got)
	}
}

func TestUnknownCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), []string{"nope"}, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(errOut.String(), `unknown command "nope"`) {
		t.Fatalf("stderr = %q", errOut.String())
	}
}

func TestReadJudgmentFileFormats(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := dir + "/" + name
		if err := writeFile(p, body); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ids := []string{"a", "b", "c", "d"}
	things := write("t.txt", "0 1 2 7\n3 2 1 8\n")
	js, _, err := readJudgmentFile(things, "things", ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 2 || js[0].Odd != "c" || js[1].Odd != "b" || js[1].Worker != "subject-8" || js[0].Items[0] != "a" {
		t.Fatalf("things parse = %+v", js)
	}
	again, _, _ := readJudgmentFile(things, "things", ids, 0)
	if again[1].ID != js[1].ID || js[0].ID == js[1].ID {
		t.Fatalf("ids not stable and distinct: %q %q %q", js[0].ID, js[1].ID, again[1].ID)
	}
	anchor := write("a.txt", "0 1 2\n")
	js, _, err = readJudgmentFile(anchor, "anchor", ids, 0)
	if err != nil || js[0].Head != "a" || js[0].Close != "b" || js[0].Far != "c" || len(js[0].Items) != 0 {
		t.Fatalf("anchor parse = %+v, %v", js, err)
	}
	csv := write("s.csv", "head,left,right,winner,puid,response_time\n0,1,2,2,p1,1.5\n3,0,1,0,p2,2\n")
	js, _, err = readJudgmentFile(csv, "anchor-csv", ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	if js[0].Close != "c" || js[0].Far != "b" || js[0].Worker != "p1" || js[0].RTMs != 1500 || js[1].Close != "a" {
		t.Fatalf("salmon csv parse = %+v", js)
	}
	if _, _, err := readJudgmentFile(write("bad.txt", "0 1 9\n"), "things", ids, 0); err == nil {
		t.Fatal("index out of range accepted")
	}
	if _, _, err := readJudgmentFile(write("bad.csv", "head,left,right,winner\n0,1,2,3\n"), "anchor-csv", ids, 0); err == nil {
		t.Fatal("winner that is neither left nor right accepted")
	}
}

func writeFile(path, body string) error { return os.WriteFile(path, []byte(body), 0o644) }

// TestImportEmbeddingsHints checks the errors of "import embeddings" for a
// NaN (naming the row's item id), a Fortran-ordered file and a transposed
// matrix; all are found before anything is sent.
func TestImportEmbeddingsHints(t *testing.T) {
	dir := t.TempDir()
	ids := filepath.Join(dir, "ids.txt")
	if err := writeFile(ids, "a\nb\nc\n"); err != nil {
		t.Fatal(err)
	}
	npyFile := func(name string, a *npy.Array, fortran bool) string {
		var buf bytes.Buffer
		if err := npy.Write(&buf, a); err != nil {
			t.Fatal(err)
		}
		b := buf.String()
		if fortran {
			b = strings.Replace(b, "'fortran_order': False", "'fortran_order': True ", 1)
		}
		p := filepath.Join(dir, name)
		if err := writeFile(p, b); err != nil {
			t.Fatal(err)
		}
		return p
	}
	x := make([]float32, 3*2)
	x[3] = float32(math.Inf(-1))
	for file, want := range map[string]string{
		npyFile("inf.npy", npy.FromFloat32(x, 3, 2), false):                `item "b": embeddings ` + dir + `/inf.npy: row 1, column 1 is -Inf`,
		npyFile("f.npy", npy.FromFloat32(make([]float32, 6), 3, 2), true):  "np.ascontiguousarray(x)",
		npyFile("t.npy", npy.FromFloat32(make([]float32, 6), 2, 3), false): "3 ids for 2 embedding rows; the matrix has 3 columns, as many as there are ids: it looks transposed",
	} {
		var out, errOut bytes.Buffer
		code := Main(context.Background(), []string{"import", "embeddings", "--server", "http://127.0.0.1:1", "--key", "k",
			"--space", "s", "--npy", file, "--ids", ids}, &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), want) {
			t.Errorf("%s: exit %d, stderr %q, want %q", filepath.Base(file), code, errOut.String(), want)
		}
	}
}
