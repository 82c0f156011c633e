package offline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/alignet/alignet/internal/cmdline"
	"github.com/alignet/alignet/internal/progress"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// FitSplit holds the metrics of a teacher on one split.
type FitSplit struct {
	// N is the number of triplets; the other fields are null when undefined.
	N        int      `json:"n_triplets"`
	Accuracy *float64 `json:"accuracy"`
	NLL      *float64 `json:"nll"`
	ECE      *float64 `json:"ece"`
}

// FitReport is the JSON output of "alignet fit": the chosen λ and τ, the
// metrics on the training and validation splits, the raw embeddings'
// validation metrics at τ=1, the per-λ scores and the wall time.
type FitReport struct {
	Task        learner.Task          `json:"task"`
	Targets     string                `json:"targets"`
	Lambda      float64               `json:"lambda"`
	Tau         float64               `json:"tau"`
	Train       FitSplit              `json:"train"`
	Val         FitSplit              `json:"val"`
	RawVal      FitSplit              `json:"raw_val"`
	Lambdas     []learner.LambdaScore `json:"lambdas"`
	WallSeconds float64               `json:"wall_seconds"`
	Out         string                `json:"out,omitempty"`
}

// FitOptions are the parsed options of "alignet fit".
type FitOptions struct {
	// Embeddings, IDs, Triplets and Repeats are the input paths.
	Embeddings, IDs, Triplets, Repeats string
	// Targets is "distilled" or "hard" and Out the output path.
	Targets, Out string
	// Task is the judgment task.
	Task learner.Task
	// Seed seeds the split and the human model.
	Seed uint64
	// ValFrac is the validation fraction used to pick λ and τ.
	ValFrac float64
	// JSON selects JSON output.
	JSON bool
	// Lambdas is the λ grid (empty: learner.DefaultLambdas).
	Lambdas []float64
	// MaxIter bounds L-BFGS iterations per λ; OutDim is P (0: D).
	MaxIter, OutDim int
}

func parseFloats(s string) ([]float64, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad lambda %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// Usage texts of the input flags several commands share.
const (
	usageEmbeddings = "item embeddings `FILE` (.npy, one float row per item)"
	usageIDs        = "ids `FILE` naming each embeddings row, one id per line (like THINGS concepts.txt); needed for --triplets files that name items by id, such as the server's exports"
	usageTriplets   = "judgments `FILE`: THINGS text (\"i j k [subject]\" row indices, k the odd one; \"head close far\" for anchor) or the server's CSV or JSONL export (detected)"
)

// ParseFitArgs parses the command line of "alignet fit"; help goes to
// stdout.
func ParseFitArgs(args []string, stdout io.Writer) (FitOptions, error) {
	var o FitOptions
	fs := cmdline.New("fit", "Fit a surrogate teacher (an affine map of the embeddings) to human judgments, choosing λ and τ on a validation split.", stdout)
	fs.StringVar(&o.Embeddings, "embeddings", "", usageEmbeddings)
	fs.StringVar(&o.IDs, "ids", "", usageIDs)
	fs.StringVar(&o.Triplets, "triplets", "", usageTriplets)
	fs.StringVar(&o.Repeats, "repeats", "", "optional repeated-triplets CSV `FILE` that sharpens the distilled targets (do not reuse it for evaluation)")
	fs.StringVar(&o.Targets, "targets", "distilled", "training targets: distilled (human-model soft targets) or hard")
	task := fs.String("task", string(learner.TaskOddOneOut), "task: odd-one-out or anchor")
	fs.StringVar(&o.Out, "out", "", "write the teacher to this .npz `FILE`")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed for the validation split and every random choice")
	fs.Float64Var(&o.ValFrac, "val-frac", 0.1, "fraction of triplets held out to pick λ and τ")
	fs.BoolVar(&o.JSON, "json", false, "print JSON instead of a table")
	lams := fs.String("lambdas", "", "comma-separated λ `LIST` (default "+fmtFloats(learner.DefaultLambdas())+")")
	fs.IntVar(&o.MaxIter, "max-iter", 300, "L-BFGS iterations per λ")
	fs.IntVar(&o.OutDim, "out-dim", 0, "output dimension (default: input dimension)")
	fs.Placeholder("targets", "KIND")
	fs.Placeholder("task", "TASK")
	fs.Placeholder("val-frac", "FRACTION")
	fs.Require("embeddings", "triplets")
	fs.Example(
		"alignet fit --embeddings clip.npy --triplets triplets_train.txt --out teacher.npz",
		"alignet fit --embeddings clip.npy --ids concepts.txt --triplets export.jsonl --targets hard --out teacher.npz",
	)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.Task = learner.Task(*task)
	var err error
	if o.Lambdas, err = parseFloats(*lams); err != nil {
		return o, fmt.Errorf("--lambdas: %w", err)
	}
	switch {
	case o.Targets != "distilled" && o.Targets != "hard":
		return o, fmt.Errorf("--targets must be distilled or hard, not %q", o.Targets)
	case o.Task.Valid() != nil:
		return o, fmt.Errorf("--task: %w", o.Task.Valid())
	case !(o.ValFrac > 0 && o.ValFrac < 1):
		return o, fmt.Errorf("--val-frac must lie in (0,1), not %v", o.ValFrac)
	case o.MaxIter < 1:
		return o, errors.New("--max-iter must be positive")
	}
	if o.Task == learner.TaskAnchor && o.Targets == "distilled" {
		return o, errors.New("--targets distilled needs the odd-one-out task; use --targets hard for anchor data")
	}
	return o, nil
}

func fmtFloats(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'g', -1, 64)
	}
	return strings.Join(s, ",")
}

// splitMetrics scores a representation on triplets at temperature tau.
func splitMetrics(task learner.Task, z []float32, p int, ts []learner.Triplet, tau float64) FitSplit {
	ls := learner.AllLogits(z, p, ts)
	ece, _ := learner.ECE(task, ls, tau, 10)
	return FitSplit{
		N:        len(ts),
		Accuracy: JSONFloat(learner.AccuracyFromLogits(task, ls)),
		NLL:      JSONFloat(learner.NLL(task, ls, tau)),
		ECE:      JSONFloat(ece),
	}
}

// RunFit implements "alignet fit": it fits the surrogate teacher, choosing
// λ and then τ on a held-out validation split, prints a report and
// optionally saves the teacher.
func RunFit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := ParseFitArgs(args, stdout)
	if err != nil {
		return err
	}
	start := time.Now()
	emb, err := loadEmbeddings(o.Embeddings, o.IDs)
	if err != nil {
		return err
	}
	x, n, d := emb.x, emb.n, emb.d
	ts, err := emb.triplets(o.Triplets, o.Task)
	if err != nil {
		return err
	}
	train, val := SplitTriplets(ts, o.ValFrac, o.Seed)
	if len(train) == 0 || len(val) == 0 {
		return fmt.Errorf("%d triplets are too few to split", len(ts))
	}
	var reps []learner.RepeatedTriplet
	if o.Targets == "distilled" && o.Repeats != "" {
		if reps, err = ReadRepeats(o.Repeats, n); err != nil {
			return err
		}
	}
	lams := o.Lambdas
	if len(lams) == 0 {
		lams = learner.DefaultLambdas()
	}
	fits := 1
	if o.Targets == "distilled" {
		fits = 2 // the hard-label teacher of the ensemble, then the distilled one
	}
	bar := progress.New(stderr, "fit", int64(fits*len(lams)*o.MaxIter))
	cfg := learner.TeacherConfig{
		Task: o.Task, OutDim: o.OutDim, MaxIter: o.MaxIter, Seed: o.Seed,
		Progress: func(int, float64) { bar.Add(1) },
	}
	var targets [][3]float32
	if o.Targets == "distilled" {
		// The distilled targets average the human model with a hard-label
		// teacher selected and calibrated on the validation choices.
		hard, _, err := learner.SelectLambda(ctx, x, n, d, train, nil, val, nil, lams, cfg)
		if err != nil {
			bar.Finish()
			return fmt.Errorf("hard-label teacher for distilled targets: %w", err)
		}
		if rest := int64(len(lams)*o.MaxIter) - bar.Done(); rest > 0 {
			bar.Add(rest)
		}
		fmt.Fprintf(stderr, "fitting the human model for distilled targets on %d triplets\n", len(train))
		if targets, err = distilledTargets(x, n, train, reps, hard, o.Seed); err != nil {
			bar.Finish()
			return fmt.Errorf("distilled targets: %w", err)
		}
	}
	t, scores, err := learner.SelectLambda(ctx, x, n, d, train, targets, val, nil, lams, cfg)
	// Top the bar up for λ values that converged early.
	if rest := int64(fits*len(lams)*o.MaxIter) - bar.Done(); rest > 0 {
		bar.Add(rest)
	}
	bar.Finish()
	if err != nil {
		return err
	}
	z := t.Transform(x, n)
	rep := FitReport{
		Task: o.Task, Targets: o.Targets, Lambda: t.Lambda, Tau: t.Tau,
		Train:   splitMetrics(o.Task, z, t.P, train, t.Tau),
		Val:     splitMetrics(o.Task, z, t.P, val, t.Tau),
		RawVal:  splitMetrics(o.Task, x, d, val, 1),
		Lambdas: scores,
		Out:     o.Out,
	}
	rep.WallSeconds = time.Since(start).Seconds()
	if o.Out != "" {
		prov := modelfile.Provenance{
			Seed: o.Seed, Task: o.Task, Embeddings: o.Embeddings, Triplets: o.Triplets,
			Hyper: map[string]any{
				"lambda": t.Lambda, "tau": t.Tau, "lambdas": lams, "targets": o.Targets,
				"val_frac": o.ValFrac, "max_iter": o.MaxIter, "out_dim": t.P, "repeats": o.Repeats,
			},
			Extra: map[string]any{"val_accuracy": rep.Val.Accuracy, "val_nll": rep.Val.NLL},
		}
		if o.IDs != "" {
			prov.Extra["ids"] = o.IDs
		}
		if prov.EmbeddingsSHA256, err = FileSHA256(o.Embeddings); err != nil {
			return err
		}
		if prov.TripletsSHA256, err = FileSHA256(o.Triplets); err != nil {
			return err
		}
		if err := modelfile.SaveTeacher(o.Out, t, prov); err != nil {
			return fmt.Errorf("save teacher: %w", err)
		}
	}
	if o.JSON {
		return WriteJSON(stdout, rep)
	}
	return writeFitTables(stdout, rep)
}

func deref(v *float64) float64 {
	if v == nil {
		return math.NaN()
	}
	return *v
}

func writeFitTables(w io.Writer, rep FitReport) error {
	lt := NewTable("lambda", "tau", "val acc", "val nll", "train ce", "iters", "time")
	lt.Title = "λ selection (validation cross-entropy at calibrated τ)"
	for _, s := range rep.Lambdas {
		mark := ""
		if s.Lambda == rep.Lambda {
			mark = " *"
		}
		lt.AddRow(FormatCell(s.Lambda)+mark, s.Tau, s.ValAccuracy, s.ValNLL, s.TrainCE, s.Iterations, s.Duration)
	}
	if err := lt.Write(w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	mt := NewTable("split", "n", "accuracy", "nll", "ece")
	mt.Title = fmt.Sprintf("teacher (%s, %s targets): λ=%s τ=%s", rep.Task, rep.Targets, FormatCell(rep.Lambda), FormatCell(rep.Tau))
	for _, r := range []struct {
		name string
		s    FitSplit
	}{{"train", rep.Train}, {"val", rep.Val}, {"raw val (τ=1)", rep.RawVal}} {
		mt.AddRow(r.name, r.s.N, deref(r.s.Accuracy), deref(r.s.NLL), deref(r.s.ECE))
	}
	if err := mt.Write(w); err != nil {
		return err
	}
	out := rep.Out
	if out == "" {
		out = "(not saved; use --out)"
	}
	_, err := fmt.Fprintf(w, "\nwall time %s; teacher %s\n", FormatCell(time.Duration(rep.WallSeconds*float64(time.Second))), out)
	return err
}
