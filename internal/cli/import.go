package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/alignet/alignet/client"
	"github.com/alignet/alignet/internal/cmdline"
	"github.com/alignet/alignet/internal/offline"
	"github.com/alignet/alignet/internal/progress"
)

// importFlags are shared by the import subcommands and loadgen.
type importFlags struct {
	server      string
	key         string
	batch       int
	concurrency int
}

func (f *importFlags) bind(fs *cmdline.FlagSet) {
	fs.StringVar(&f.server, "server", "http://127.0.0.1:8080", "alignet base `URL`")
	fs.StringVar(&f.key, "key", "", "API `KEY` with admin scope (make run prints it and keeps it in alignet-data/admin.key)")
	fs.IntVar(&f.batch, "batch", 1000, "judgments per request (at most 1000)")
	fs.IntVar(&f.concurrency, "concurrency", 4, "requests in flight")
	fs.Env("server", getenv, "ALIGNET_URL")
	fs.Env("key", getenv, "ALIGNET_KEY", "ALIGNET_ADMIN_KEY")
	fs.Require("key")
}

func (f *importFlags) client() (*client.Client, error) {
	if f.batch < 1 || f.batch > 1000 {
		return nil, fmt.Errorf("--batch must be between 1 and 1000, got %d", f.batch)
	}
	return client.New(f.server, f.key, nil), nil
}

// importKinds are the subcommands of "alignet import".
var importKinds = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"embeddings": importEmbeddingsCmd,
	"judgments":  importJudgmentsCmd,
	"things":     importThingsCmd,
	"images":     importImagesCmd,
}

const importUsage = `Usage: alignet import <kind> [flags]

Load embeddings and judgments through the HTTP ingestion API, so imported
judgments are validated, pseudonymised, logged to Kafka and persisted
exactly like live ones. Re-running an import stores nothing twice: judgment
ids derive from the file contents and line numbers.

Kinds:
  embeddings  upload a .npy matrix into a representation space
  judgments   post a judgments file into an existing study
  things      create the THINGS space and study and import all of it
  images      upload a folder of stimulus pictures as item images

Example:
  alignet import things --dir ../shared/data/things --key "$(cat alignet-data/admin.key)"

Run 'alignet import <kind> --help' for a kind's flags.
`

func runImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, importUsage)
		return cmdline.Usagef("import", "missing import kind")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, importUsage)
		return nil
	}
	run, ok := importKinds[args[0]]
	if !ok {
		return cmdline.Usagef("import", "unknown import kind %q (want embeddings, judgments, things or images)", args[0])
	}
	return run(ctx, args[1:], stdout, stderr)
}

func importEmbeddingsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("import embeddings", "Upload a .npy matrix, one row per item, into a representation space (created when missing).", stdout)
	var f importFlags
	f.bind(fs)
	space := fs.String("space", "", "representation space `NAME`")
	npyPath := fs.String("npy", "", ".npy matrix `FILE`, one float row per item")
	idsPath := fs.String("ids", "", "item ids `FILE`, one per line, in row order")
	fs.Require("space", "npy", "ids")
	fs.Example(`alignet import embeddings --space clip --npy emb.npy --ids ids.txt --key "$KEY"`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	ids, err := offline.ReadIDs(*idsPath)
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

// importEmbeddings creates the space if needed and uploads the matrix,
// after the checks the offline commands make (finite values, one row per
// id).
func importEmbeddings(ctx context.Context, c *client.Client, space, npyPath string, ids []string, stderr io.Writer) (int64, error) {
	vec, n, d, err := offline.ReadEmbeddings(npyPath)
	var nf *offline.NonFiniteError
	if errors.As(err, &nf) && nf.Row < len(ids) {
		return 0, fmt.Errorf("item %q: %w", ids[nf.Row], err)
	}
	if err != nil {
		return 0, err
	}
	if _, err := offline.NewRows(n, d, ids); err != nil {
		return 0, fmt.Errorf("%s: %w", npyPath, err)
	}
	if err := c.PutSpace(ctx, space, d); err != nil {
		return 0, fmt.Errorf("create space: %w", err)
	}
	const chunk = 20000
	bar := progress.New(stderr, "embeddings", int64(len(ids)))
	defer bar.Finish()
	var total int64
	for lo := 0; lo < len(ids); lo += chunk {
		hi := min(lo+chunk, len(ids))
		m, err := c.UploadEmbeddings(ctx, space, ids[lo:hi], vec[lo*d:hi*d], d)
		if err != nil {
			return total, fmt.Errorf("upload rows %d-%d: %w", lo, hi, err)
		}
		total += m
		bar.Add(int64(hi - lo))
	}
	return total, nil
}

func importJudgmentsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("import judgments", "Post a judgments file into an existing study whose pool holds the items.", stdout)
	var f importFlags
	f.bind(fs)
	study := fs.String("study", "", "study `ID` to import into")
	file := fs.String("file", "", "judgments `FILE`")
	format := fs.String("format", "things", "file `FORMAT`: things (i j k [subject], k odd), anchor (head close far [subject]), or anchor-csv (salmon/NEXT export)")
	idsPath := fs.String("ids", "", "optional `FILE` naming the items of integer-indexed files: line n is item n (THINGS concepts.txt)")
	limit := fs.Int("limit", 0, "import at most this many judgments (0 = all)")
	fs.Require("study", "file")
	fs.Example(`alignet import judgments --study things --file triplets_train.txt --ids concepts.txt --key "$KEY"`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	var ids []string
	if *idsPath != "" {
		if ids, err = offline.ReadIDs(*idsPath); err != nil {
			return err
		}
	}
	js, lines, err := readJudgmentFile(*file, *format, ids, *limit)
	if err != nil {
		return err
	}
	if err := postAll(ctx, c, *study, js, lines, f.batch, f.concurrency, stderr); err != nil {
		return withIDsHint(err, js, ids, *file)
	}
	fmt.Fprintf(stdout, "imported %d judgments into study %s\n", len(js), *study)
	return nil
}

// withIDsHint adds a hint to an unknown_item error when the file names
// items by integer index and no --ids file maps them to item ids.
func withIDsHint(err error, js []client.Judgment, ids []string, path string) error {
	var apiErr *client.Error
	if ids != nil || len(js) == 0 || !errors.As(err, &apiErr) || apiErr.Code != "unknown_item" {
		return err
	}
	j := js[0]
	for _, it := range append([]string{j.Head, j.Close, j.Far}, j.Items...) {
		if _, aerr := strconv.Atoi(it); it != "" && aerr != nil {
			return err
		}
	}
	return fmt.Errorf("%w; %s names items by integer index (THINGS format): give --ids FILE naming item n on line n, such as --ids concepts.txt", err, path)
}

func importThingsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("import things", "Create the THINGS representation space (CLIP ViT-B/32) and odd-one-out study, and import its 1,854 embeddings and 126k human triplets.", stdout)
	var f importFlags
	f.bind(fs)
	dir := fs.String("dir", filepath.Join("..", "shared", "data", "things"), "THINGS data `DIR` (concepts.txt, clip_vit_b32.npy, triplets_train.txt)")
	study := fs.String("study", "things", "study `ID` to create")
	space := fs.String("space", "clip-vit-b32", "representation space `NAME` for the CLIP features")
	limit := fs.Int("limit", 0, "import at most this many triplets (0 = all)")
	fs.Example(`alignet import things --dir ../shared/data/things --key "$(cat alignet-data/admin.key)"`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	concepts, err := offline.ReadIDs(filepath.Join(*dir, "concepts.txt"))
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
	// Participants see concept names ("air conditioner" for air_conditioner).
	labels := make([]client.ItemDisplay, len(concepts))
	for i, id := range concepts {
		labels[i] = client.ItemDisplay{ID: id, Label: strings.ReplaceAll(id, "_", " ")}
	}
	if err := c.PutItemDisplays(ctx, labels); err != nil {
		return fmt.Errorf("set concept labels: %w", err)
	}
	js, lines, err := readJudgmentFile(filepath.Join(*dir, "triplets_train.txt"), "things", concepts, *limit)
	if err != nil {
		return err
	}
	if err := postAll(ctx, c, *study, js, lines, f.batch, f.concurrency, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "THINGS imported: %d embeddings in space %s, %d items and %d judgments in study %s\n",
		n, *space, len(concepts), len(js), *study)
	fmt.Fprintln(stdout, "Data: Hebart et al., THINGS-data (2023), CC-BY 4.0.")
	return nil
}

// readJudgmentFile parses a judgments file into API judgments with ids
// derived from the file's content hash and line number, so re-imports are
// idempotent, and returns the line of each. Text files (things, anchor)
// are read by offline.ParseJudgments, the reader the offline commands use;
// with ids their fields are row indices into ids, else item ids.
func readJudgmentFile(path, format string, ids []string, limit int) ([]client.Judgment, []int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read judgments: %w", err)
	}
	sum := sha256.Sum256(raw)
	prefix := "imp-" + hex.EncodeToString(sum[:6]) + "-"
	rows := offline.IndexRows(len(ids))
	item := func(s string, line int) (string, error) {
		if ids == nil {
			return s, nil
		}
		i, err := rows.Row(s)
		if err != nil {
			return "", fmt.Errorf("%s:%d: %w (--ids names %d items)", path, line, err, len(ids))
		}
		return ids[i], nil
	}
	var out []client.Judgment
	var lines []int
	switch format {
	case "things", "anchor":
		recs, _, err := offline.ParseJudgments(bytes.NewReader(raw), offline.FormatText, limit)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, r := range recs {
			var it [3]string
			for a := range it {
				if it[a], err = item(r.Items[a], r.Line); err != nil {
					return nil, nil, err
				}
			}
			worker := "unknown"
			if r.Worker != "" {
				worker = "subject-" + r.Worker
			}
			j := client.Judgment{ID: prefix + strconv.Itoa(r.Line), Worker: worker}
			if format == "things" {
				j.Items, j.Odd = it[:], it[2]
			} else {
				j.Head, j.Close, j.Far = it[0], it[1], it[2]
			}
			out = append(out, j)
			lines = append(lines, r.Line)
		}
	case "anchor-csv":
		if out, lines, err = readAnchorCSV(path, string(raw), prefix, item, limit); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("unknown format %q (want things, anchor or anchor-csv)", format)
	}
	return out, lines, nil
}

// readAnchorCSV reads salmon- and NEXT-style exports: a header with head and
// either close/far columns or left/right/winner columns, plus optional
// worker (puid, participant, worker) and response time columns.
func readAnchorCSV(path, raw, prefix string, item func(string, int) (string, error), limit int) ([]client.Judgment, []int, error) {
	r := csv.NewReader(strings.NewReader(raw))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("read %s header: %w", path, err)
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
		return nil, nil, fmt.Errorf("%s: header needs head and close,far or left,right,winner columns; got %v", path, header)
	}
	var out []client.Judgment
	var lines []int
	line := 1
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line++
		if err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %w", path, line, err)
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
				return nil, nil, fmt.Errorf("%s:%d: winner %q is neither left %q nor right %q", path, line, w, l, rr)
			}
		}
		j := client.Judgment{ID: prefix + strconv.Itoa(line), Worker: "unknown"}
		if j.Head, err = item(h, line); err != nil {
			return nil, nil, err
		}
		if j.Close, err = item(c, line); err != nil {
			return nil, nil, err
		}
		if j.Far, err = item(f, line); err != nil {
			return nil, nil, err
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
		lines = append(lines, line)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out, lines, nil
}

// postAll posts judgments in batches with bounded concurrency, retrying
// batches the server could not take yet (503). A rejected judgment's error
// names its line, from lines (parallel to js; nil when unknown).
func postAll(ctx context.Context, c *client.Client, study string, js []client.Judgment, lines []int, batch, concurrency int, stderr io.Writer) error {
	bar := progress.New(stderr, "judgments", int64(len(js)))
	defer bar.Finish()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(concurrency, 1))
	for lo := 0; lo < len(js); lo += batch {
		hi := min(lo+batch, len(js))
		part := js[lo:hi]
		g.Go(func() error {
			for attempt := 0; ; attempt++ {
				_, err := c.PostJudgments(gctx, study, part)
				var apiErr *client.Error
				if err == nil {
					bar.Add(int64(len(part)))
					return nil
				}
				if !errors.As(err, &apiErr) || !apiErr.Temporary() || attempt >= 10 {
					return rejectedAt(err, apiErr, lines, lo, hi)
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

// rejectedAt adds to the error of the batch js[lo:hi] the line of the
// judgment its field ("[3].odd") names, when known.
func rejectedAt(err error, apiErr *client.Error, lines []int, lo, hi int) error {
	if apiErr != nil && lines != nil && strings.HasPrefix(apiErr.Field, "[") {
		if k, perr := strconv.Atoi(apiErr.Field[1:max(strings.IndexByte(apiErr.Field, ']'), 1)]); perr == nil && lo+k < hi {
			return fmt.Errorf("judgment on line %d: %w", lines[lo+k], err)
		}
	}
	return fmt.Errorf("judgments %d-%d: %w", lo+1, hi, err)
}

func importImagesCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("import images", "Upload every JPEG, PNG, WebP or GIF in a folder as the image of the item named by its file name (without extension, after --prefix); with --study, add the items to the study's pool.", stdout)
	var f importFlags
	f.bind(fs)
	dir := fs.String("dir", "", "`DIR` of images, such as ../shared/data/zappos/images")
	prefix := fs.String("prefix", "", "`PREFIX` of the item ids, such as zappos- (display data are global per item id)")
	study := fs.String("study", "", "optional study `ID` whose pool gets the items")
	fs.Require("dir")
	fs.Example(`alignet import images --dir ../shared/data/zappos/images --prefix zappos- --key "$KEY"`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(*dir)
	if err != nil {
		return fmt.Errorf("read images: %w", err)
	}
	var items, files []string
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".jpg" && ext != ".jpeg" && ext != ".png" && ext != ".webp" && ext != ".gif") {
			continue
		}
		items = append(items, *prefix+strings.TrimSuffix(e.Name(), filepath.Ext(e.Name())))
		files = append(files, filepath.Join(*dir, e.Name()))
	}
	if len(items) == 0 {
		return fmt.Errorf("%s holds no .jpg, .png, .webp or .gif files", *dir)
	}
	bar := progress.New(stderr, "images", int64(len(items)))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(f.concurrency, 1))
	for i := range items {
		g.Go(func() error {
			data, err := os.ReadFile(files[i])
			if err != nil {
				return fmt.Errorf("read image: %w", err)
			}
			if err := c.PutItemImage(gctx, items[i], data); err != nil {
				return fmt.Errorf("upload %s as item %q: %w", files[i], items[i], err)
			}
			bar.Add(1)
			return nil
		})
	}
	err = g.Wait()
	bar.Finish()
	if err != nil {
		return err
	}
	if *study != "" {
		if _, err := c.AddItems(ctx, *study, items); err != nil {
			return fmt.Errorf("add items to study %s: %w", *study, err)
		}
	}
	fmt.Fprintf(stdout, "uploaded %d images from %s as items %s...\n", len(items), *dir, items[0])
	return nil
}
