package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/alignet/alignet/client"
	"github.com/alignet/alignet/internal/progress"
	"github.com/alignet/alignet/npy"
)

// importFlags are shared by the import subcommands.
type importFlags struct {
	server      string
	key         string
	batch       int
	concurrency int
}

func (f *importFlags) bind(fs *flag.FlagSet) {
	def := getenv("ALIGNET_URL")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	key := getenv("ALIGNET_KEY")
	if key == "" {
		key = getenv("ALIGNET_ADMIN_KEY")
	}
	fs.StringVar(&f.server, "server", def, "alignet base URL (ALIGNET_URL)")
	fs.StringVar(&f.key, "key", key, "API key with admin scope (ALIGNET_KEY or ALIGNET_ADMIN_KEY)")
	fs.IntVar(&f.batch, "batch", 1000, "judgments per request (at most 1000)")
	fs.IntVar(&f.concurrency, "concurrency", 4, "requests in flight")
}

func (f *importFlags) client() (*client.Client, error) {
	if f.key == "" {
		return nil, errors.New("an API key is required: --key or ALIGNET_KEY")
	}
	if f.batch < 1 || f.batch > 1000 {
		return nil, fmt.Errorf("--batch must be between 1 and 1000, got %d", f.batch)
	}
	return client.New(f.server, f.key, nil), nil
}

const importUsage = `usage:
  alignet import embeddings --space S --npy E.npy --ids IDS.txt
  alignet import judgments  --study S --file F [--format things|anchor|anchor-csv] [--ids IDS.txt]
  alignet import things     --dir ../shared/data/things [--study things] [--space clip-vit-b32] [--limit N]

Everything goes through the HTTP ingestion API, so imported judgments are
validated, pseudonymised, logged to Kafka and persisted exactly like live ones.
Re-running an import stores nothing twice: judgment ids derive from the file
contents and line numbers.`

func runImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, importUsage)
		return errors.New("missing import kind")
	}
	switch args[0] {
	case "embeddings":
		return importEmbeddingsCmd(ctx, args[1:], stdout, stderr)
	case "judgments":
		return importJudgmentsCmd(ctx, args[1:], stdout, stderr)
	case "things":
		return importThingsCmd(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintln(stderr, importUsage)
		return fmt.Errorf("unknown import kind %q", args[0])
	}
}

func importEmbeddingsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("import embeddings", stderr)
	var f importFlags
	f.bind(fs)
	space := fs.String("space", "", "representation space name")
	npyPath := fs.String("npy", "", ".npy matrix, one row per item")
	idsPath := fs.String("ids", "", "text file of item ids, one per line, in row order")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *space == "" || *npyPath == "" || *idsPath == "" {
		return errors.New("--space, --npy and --ids are required")
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	ids, err := readLines(*idsPath)
	if err != nil {
		return err
	}
	n, err := importEmbeddings(ctx, c, *space, *npyPath, ids, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "upserted %d embeddings into space %s\n", n, *space)
	return nil
}

// importEmbeddings creates the space if needed and uploads the matrix.
func importEmbeddings(ctx context.Context, c *client.Client, space, npyPath string, ids []string, stderr io.Writer) (int64, error) {
	fh, err := os.Open(npyPath)
	if err != nil {
		return 0, fmt.Errorf("open embeddings: %w", err)
	}
	defer fh.Close()
	vec, shape, err := npy.ReadFloat32(fh)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", npyPath, err)
	}
	if len(shape) != 2 || shape[0] != len(ids) {
		return 0, fmt.Errorf("%s has shape %v but %d ids were given", npyPath, shape, len(ids))
	}
	if err := c.PutSpace(ctx, space, shape[1]); err != nil {
		return 0, fmt.Errorf("create space: %w", err)
	}
	const chunk = 20000
	bar := progress.New(stderr, "embeddings", int64(len(ids)))
	defer bar.Finish()
	var total int64
	for lo := 0; lo < len(ids); lo += chunk {
		hi := min(lo+chunk, len(ids))
		n, err := c.UploadEmbeddings(ctx, space, ids[lo:hi], vec[lo*shape[1]:hi*shape[1]], shape[1])
		if err != nil {
			return total, fmt.Errorf("upload rows %d-%d: %w", lo, hi, err)
		}
		total += n
		bar.Add(int64(hi - lo))
	}
	return total, nil
}

func importJudgmentsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("import judgments", stderr)
	var f importFlags
	f.bind(fs)
	study := fs.String("study", "", "study to import into (must exist, with the items in its pool)")
	file := fs.String("file", "", "judgments file")
	format := fs.String("format", "things", "things (i j k [subject], k odd), anchor (head close far), or anchor-csv (salmon/NEXT export)")
	idsPath := fs.String("ids", "", "optional file mapping integer indices to item ids (line n is item n)")
	limit := fs.Int("limit", 0, "import at most this many judgments (0 = all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *study == "" || *file == "" {
		return errors.New("--study and --file are required")
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	var ids []string
	if *idsPath != "" {
		if ids, err = readLines(*idsPath); err != nil {
			return err
		}
	}
	js, err := readJudgmentFile(*file, *format, ids, *limit)
	if err != nil {
		return err
	}
	if err := postAll(ctx, c, *study, js, f.batch, f.concurrency, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "imported %d judgments into study %s\n", len(js), *study)
	return nil
}

func importThingsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("import things", stderr)
	var f importFlags
	f.bind(fs)
	dir := fs.String("dir", filepath.Join("..", "shared", "data", "things"), "THINGS data folder")
	study := fs.String("study", "things", "study id to create")
	space := fs.String("space", "clip-vit-b32", "representation space for the CLIP features")
	limit := fs.Int("limit", 0, "import at most this many triplets (0 = all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	concepts, err := readLines(filepath.Join(*dir, "concepts.txt"))
	if err != nil {
		return err
	}
	n, err := importEmbeddings(ctx, c, *space, filepath.Join(*dir, "clip_vit_b32.npy"), concepts, stderr)
	if err != nil {
		return err
	}
	if err := c.CreateStudy(ctx, *study, "odd-one-out", *space); err != nil {
		return fmt.Errorf("create study: %w", err)
	}
	if _, err := c.AddItems(ctx, *study, concepts); err != nil {
		return fmt.Errorf("add items: %w", err)
	}
	js, err := readJudgmentFile(filepath.Join(*dir, "triplets_train.txt"), "things", concepts, *limit)
	if err != nil {
		return err
	}
	if err := postAll(ctx, c, *study, js, f.batch, f.concurrency, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "THINGS imported: %d embeddings in space %s, %d items and %d judgments in study %s\n",
		n, *space, len(concepts), len(js), *study)
	fmt.Fprintln(stdout, "Data: Hebart et al., THINGS-data (2023), CC-BY 4.0.")
	return nil
}

// readJudgmentFile parses a judgments file into API judgments with ids
// derived from the file's content hash and line number, so re-imports are
// idempotent.
func readJudgmentFile(path, format string, ids []string, limit int) ([]client.Judgment, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read judgments: %w", err)
	}
	sum := sha256.Sum256(raw)
	prefix := "imp-" + hex.EncodeToString(sum[:6]) + "-"
	item := func(s string, line int) (string, error) {
		if ids == nil {
			return s, nil
		}
		i, err := strconv.Atoi(s)
		if err != nil || i < 0 || i >= len(ids) {
			return "", fmt.Errorf("%s:%d: item %q is not an index into the %d ids", path, line, s, len(ids))
		}
		return ids[i], nil
	}
	var out []client.Judgment
	switch format {
	case "things", "anchor":
		sc := bufio.NewScanner(strings.NewReader(string(raw)))
		line := 0
		for sc.Scan() {
			line++
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
				continue
			}
			if len(fields) < 3 {
				return nil, fmt.Errorf("%s:%d: want at least 3 fields, got %d", path, line, len(fields))
			}
			var it [3]string
			for a := 0; a < 3; a++ {
				if it[a], err = item(fields[a], line); err != nil {
					return nil, err
				}
			}
			worker := "unknown"
			if len(fields) > 3 {
				worker = "subject-" + fields[3]
			}
			j := client.Judgment{ID: prefix + strconv.Itoa(line), Worker: worker}
			if format == "things" {
				j.Items, j.Odd = it[:], it[2]
			} else {
				j.Head, j.Close, j.Far = it[0], it[1], it[2]
			}
			out = append(out, j)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	case "anchor-csv":
		out, err = readAnchorCSV(path, string(raw), prefix, item, limit)
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown format %q (want things, anchor or anchor-csv)", format)
	}
	return out, nil
}

// readAnchorCSV reads salmon- and NEXT-style exports: a header with head and
// either close/far columns or left/right/winner columns, plus optional
// worker (puid, participant, worker) and response time columns.
func readAnchorCSV(path, raw, prefix string, item func(string, int) (string, error), limit int) ([]client.Judgment, error) {
	r := csv.NewReader(strings.NewReader(raw))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("read %s header: %w", path, err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	find := func(names ...string) int {
		for _, n := range names {
			if i, ok := col[n]; ok {
				return i
			}
		}
		return -1
	}
	head := find("head", "target_head", "anchor")
	closeC, far := find("close", "winner_close"), find("far")
	left, right, winner := find("left", "target_left"), find("right", "target_right"), find("winner", "target_winner")
	worker := find("puid", "participant", "participant_uid", "worker", "worker_id")
	rt := find("response_time", "rt_ms", "response_time_ms")
	if head < 0 || (closeC < 0 || far < 0) && (left < 0 || right < 0 || winner < 0) {
		return nil, fmt.Errorf("%s: header needs head and close,far or left,right,winner columns; got %v", path, header)
	}
	var out []client.Judgment
	line := 1
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line++
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		get := func(i int) string {
			if i < 0 || i >= len(rec) {
				return ""
			}
			return strings.TrimSpace(rec[i])
		}
		h, c, f := get(head), get(closeC), get(far)
		if closeC < 0 || far < 0 {
			l, rr, w := get(left), get(right), get(winner)
			switch w {
			case l:
				c, f = l, rr
			case rr:
				c, f = rr, l
			default:
				return nil, fmt.Errorf("%s:%d: winner %q is neither left %q nor right %q", path, line, w, l, rr)
			}
		}
		j := client.Judgment{ID: prefix + strconv.Itoa(line), Worker: "unknown"}
		if j.Head, err = item(h, line); err != nil {
			return nil, err
		}
		if j.Close, err = item(c, line); err != nil {
			return nil, err
		}
		if j.Far, err = item(f, line); err != nil {
			return nil, err
		}
		if w := get(worker); w != "" {
			j.Worker = w
		}
		if v, err := strconv.ParseFloat(get(rt), 64); err == nil && v > 0 {
			if v < 100 { // salmon reports seconds
				v *= 1000
			}
			j.RTMs = int(v)
		}
		out = append(out, j)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out, nil
}

// postAll posts judgments in batches with bounded concurrency, retrying
// batches the server could not take yet (503).
func postAll(ctx context.Context, c *client.Client, study string, js []client.Judgment, batch, concurrency int, stderr io.Writer) error {
	bar := progress.New(stderr, "judgments", int64(len(js)))
	defer bar.Finish()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(concurrency, 1))
	for lo := 0; lo < len(js); lo += batch {
		part := js[lo:min(lo+batch, len(js))]
		g.Go(func() error {
			for attempt := 0; ; attempt++ {
				_, err := c.PostJudgments(gctx, study, part)
				var apiErr *client.Error
				if err == nil {
					bar.Add(int64(len(part)))
					return nil
				}
				if !errors.As(err, &apiErr) || !apiErr.Temporary() || attempt >= 10 {
					return err
				}
				select {
				case <-gctx.Done():
					return gctx.Err()
				case <-time.After(time.Duration(attempt+1) * 500 * time.Millisecond):
				}
			}
		})
	}
	return g.Wait()
}

func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		out = append(out, strings.TrimSpace(l))
	}
	return out, nil
}
