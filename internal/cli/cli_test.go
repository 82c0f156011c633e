package cli

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

// TestEveryCommandHasHelp runs "<cmd> -h" for every subcommand, which
// registers all of its flags: a duplicate flag or a panic fails here.
func TestEveryCommandHasHelp(t *testing.T) {
	for name := range commands() {
		if name == "import" {
			continue // import's help lists its kinds; checked below.
		}
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := Main(context.Background(), []string{name, "-h"}, &out, &errOut); code != 0 {
				t.Fatalf("exit %d\n%s", code, errOut.String())
			}
			if !strings.Contains(errOut.String(), "-") {
				t.Fatalf("no flags listed:\n%s", errOut.String())
			}
		})
	}
	for _, kind := range []string{"embeddings", "judgments", "things"} {
		var out, errOut bytes.Buffer
		if code := Main(context.Background(), []string{"import", kind, "-h"}, &out, &errOut); code != 0 {
			t.Fatalf("import %s -h: exit %d\n%s", kind, code, errOut.String())
		}
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
	js, err := readJudgmentFile(things, "things", ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 2 || js[0].Odd != "c" || js[1].Odd != "b" || js[1].Worker != "subject-8" || js[0].Items[0] != "a" {
		t.Fatalf("things parse = %+v", js)
	}
	again, _ := readJudgmentFile(things, "things", ids, 0)
	if again[1].ID != js[1].ID || js[0].ID == js[1].ID {
		t.Fatalf("ids not stable and distinct: %q %q %q", js[0].ID, js[1].ID, again[1].ID)
	}
	anchor := write("a.txt", "0 1 2\n")
	js, err = readJudgmentFile(anchor, "anchor", ids, 0)
	if err != nil || js[0].Head != "a" || js[0].Close != "b" || js[0].Far != "c" || len(js[0].Items) != 0 {
		t.Fatalf("anchor parse = %+v, %v", js, err)
	}
	csv := write("s.csv", "head,left,right,winner,puid,response_time\n0,1,2,2,p1,1.5\n3,0,1,0,p2,2\n")
	js, err = readJudgmentFile(csv, "anchor-csv", ids, 0)
	if err != nil {
		t.Fatal(err)
	}
	if js[0].Close != "c" || js[0].Far != "b" || js[0].Worker != "p1" || js[0].RTMs != 1500 || js[1].Close != "a" {
		t.Fatalf("salmon csv parse = %+v", js)
	}
	if _, err := readJudgmentFile(write("bad.txt", "0 1 9\n"), "things", ids, 0); err == nil {
		t.Fatal("index out of range accepted")
	}
	if _, err := readJudgmentFile(write("bad.csv", "head,left,right,winner\n0,1,2,3\n"), "anchor-csv", ids, 0); err == nil {
		t.Fatal("winner that is neither left nor right accepted")
	}
}

func writeFile(path, body string) error { return os.WriteFile(path, []byte(body), 0o644) }
