package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alignet/alignet/client"
	"github.com/alignet/alignet/db/dbtest"
	"github.com/alignet/alignet/internal/offline"
	"github.com/alignet/alignet/internal/testenv"
	"github.com/alignet/alignet/learner"
)

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// schemaURL returns the test database URL on a fresh schema.
func schemaURL(t *testing.T) string {
	t.Helper()
	base, schema := dbtest.Schema(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// startDev runs "alignet dev" on the test database and returns its base URL
// and the admin key it wrote to its data dir once it reported running.
func startDev(t *testing.T, ctx context.Context, dataDir string) (base, key string) {
	t.Helper()
	args := []string{"dev", "--data-dir", dataDir, "--database-url", schemaURL(t), "--listen", "127.0.0.1:" + strconv.Itoa(freePort(t)),
		"--kafka-port", strconv.Itoa(freePort(t)), "--partitions", "2", "--log-level", "warn"}
	listen := args[6]
	out := &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- Main(ctx, args, out, io.Discard) }()
	t.Cleanup(func() {
		if code := <-done; code != 0 {
			t.Errorf("alignet dev exited %d:\n%s", code, out.String())
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "alignet dev is running") {
		if time.Now().After(deadline) {
			t.Fatalf("alignet dev did not report running:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + listen, strings.TrimSpace(string(b))
}

func sortTriplets(ts []learner.Triplet) []learner.Triplet {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b learner.Triplet) int {
		if a.I != b.I {
			return int(a.I - b.I)
		}
		if a.J != b.J {
			return int(a.J - b.J)
		}
		return int(a.K - b.K)
	})
	return ts
}

// TestTHINGSExportToFit imports a THINGS subset through "alignet dev" on
// the test Postgres, exports the study as JSONL and CSV through the API,
// and checks that the offline pipeline reads exactly the imported THINGS
// triplets back from both exports (--ids concepts.txt) and that "alignet
// fit" trains on the JSONL export. It also checks the hint for THINGS
// indices imported without --ids.
func TestTHINGSExportToFit(t *testing.T) {
	thingsDir := testenv.SharedData(t, "things")
	const limit = 3000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, key := startDev(t, ctx, t.TempDir())
	t.Cleanup(cancel) // stop dev before its Cleanup waits for it

	var out, errOut bytes.Buffer
	if code := Main(ctx, []string{"import", "things", "--dir", thingsDir, "--limit", strconv.Itoa(limit), "--server", base, "--key", key}, &out, &errOut); code != 0 {
		t.Fatalf("import things: exit %d\n%s", code, errOut.String())
	}
	// Storage is asynchronous: wait until the persister stored everything.
	c := client.New(base, key, nil)
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := c.Study(ctx, "things")
		if err == nil && st.Judgments == limit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored judgments: %+v, %v; want %d", st, err, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}

	dir := t.TempDir()
	exports := map[string]string{}
	for _, format := range []string{"jsonl", "csv"} {
		rc, err := c.Export(ctx, "things", format, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		exports[format] = filepath.Join(dir, "export."+format)
		if err := os.WriteFile(exports[format], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The exports hold exactly the imported THINGS triplets.
	concepts := filepath.Join(thingsDir, "concepts.txt")
	ids, err := offline.ReadIDs(concepts)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := offline.NewRows(len(ids), 0, ids)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(thingsDir, "triplets_train.txt"))
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := offline.ParseJudgments(f, offline.FormatText, limit)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	want, err := offline.Triplets(recs, offline.IndexRows(len(ids)), "")
	if err != nil {
		t.Fatal(err)
	}
	for format, p := range exports {
		got, err := offline.ReadTriplets(p, rows, learner.TaskOddOneOut)
		if err != nil {
			t.Fatalf("%s export: %v", format, err)
		}
		if !slices.Equal(sortTriplets(got), sortTriplets(want)) {
			t.Errorf("%s export: %d triplets differ from the %d imported THINGS lines", format, len(got), len(want))
		}
	}

	// alignet fit trains on the JSONL export.
	out.Reset()
	errOut.Reset()
	args := []string{"fit", "--embeddings", filepath.Join(thingsDir, "clip_vit_b32.npy"), "--ids", concepts,
		"--triplets", exports["jsonl"], "--targets", "hard", "--lambdas", "0.1", "--max-iter", "15", "--json"}
	if code := Main(ctx, args, &out, &errOut); code != 0 {
		t.Fatalf("fit on the export: exit %d\n%s", code, errOut.String())
	}
	var rep offline.FitReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("fit on the JSONL export of %d THINGS triplets: validation accuracy %.4f (raw CLIP %.4f)", limit, *rep.Val.Accuracy, *rep.RawVal.Accuracy)
	if rep.Train.N+rep.Val.N != limit || !(*rep.Val.Accuracy > 1.0/3) {
		t.Errorf("fit report %+v", rep)
	}

	// THINGS indices posted without --ids get the hint.
	idx := filepath.Join(dir, "indices.txt")
	if err := os.WriteFile(idx, []byte("12 45 7 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	code := Main(ctx, []string{"import", "judgments", "--study", "things", "--file", idx, "--server", base, "--key", key}, &out, &errOut)
	t.Logf("THINGS indices without --ids: %s", errOut.String())
	if code != 1 || !strings.Contains(errOut.String(), "unknown_item") || !strings.Contains(errOut.String(), "--ids concepts.txt") || !strings.Contains(errOut.String(), "alignet import judgments: judgment on line 1: ") {
		t.Errorf("integer ids without --ids: exit %d, %q", code, errOut.String())
	}
}
