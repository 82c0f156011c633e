package offline

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/alignet/alignet/internal/cmdline"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// EvalLevels is the per-abstraction-level part of the eval report.
type EvalLevels struct {
	// Coarse and Fine are the accuracies (null without triplets) and
	// NCoarse and NFine the triplet counts, as in learner.LevelAccuracy.
	Coarse  *float64 `json:"coarse"`
	Fine    *float64 `json:"fine"`
	NCoarse int      `json:"n_coarse"`
	NFine   int      `json:"n_fine"`
}

// EvalReport is the JSON output of "alignet eval". Metrics that are
// undefined (no repeats, no categories) are null.
type EvalReport struct {
	Model             string                   `json:"model"`
	Task              learner.Task             `json:"task"`
	Tau               float64                  `json:"tau"`
	NTriplets         int                      `json:"n_triplets"`
	Accuracy          *float64                 `json:"accuracy"`
	NLL               *float64                 `json:"nll"`
	ECE               *float64                 `json:"ece"`
	KLHuman           *float64                 `json:"kl_human"`
	MajorityAgreement *float64                 `json:"majority_agreement"`
	NRepeats          int                      `json:"n_repeats"`
	Levels            *EvalLevels              `json:"levels"`
	Reliability       []learner.ReliabilityBin `json:"reliability"`
}

// reliabilityJSON replaces NaN means of empty bins by zero so that the
// bins marshal; Count tells that they are empty.
func reliabilityJSON(bins []learner.ReliabilityBin) []learner.ReliabilityBin {
	out := append([]learner.ReliabilityBin(nil), bins...)
	for i := range out {
		if out[i].Count == 0 {
			out[i].Confidence, out[i].Accuracy = 0, 0
		}
	}
	return out
}

// RunEval implements "alignet eval": it scores a teacher, a student or the
// raw embeddings (dot products at τ=1) on triplets, and optionally on
// repeated triplets and per abstraction level.
func RunEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("eval", "Score a teacher, a student or the raw embeddings on human judgments: accuracy, NLL, calibration, and optionally agreement with repeated judgments and accuracy per abstraction level.", stdout)
	teacherPath := fs.String("teacher", "", "teacher .npz `FILE` written by alignet fit")
	studentPath := fs.String("student", "", "student .npz `FILE` written by alignet distill")
	embPath := fs.String("embeddings", "", usageEmbeddings)
	idsPath := fs.String("ids", "", usageIDs)
	tripPath := fs.String("triplets", "", usageTriplets)
	repPath := fs.String("repeats", "", "optional repeated-triplets CSV `FILE` (kl_human, majority_agreement)")
	catPath := fs.String("categories", "", "optional categories TSV `FILE` (coarse and fine accuracy)")
	task := fs.String("task", "", "task: odd-one-out or anchor (default: the teacher's, else odd-one-out)")
	tauFlag := fs.Float64("tau", 0, "temperature override (default: the teacher's τ, else 1)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	fs.Placeholder("task", "TASK")
	fs.Require("embeddings", "triplets")
	fs.Example(
		"alignet eval --embeddings clip.npy --triplets held.txt --repeats repeats_dev.csv --categories categories.tsv",
		"alignet eval --teacher teacher.npz --embeddings clip.npy --ids concepts.txt --triplets export.csv --json",
	)
	fs.Note("Without --teacher or --student the raw embeddings are scored by dot products at τ=1. With --categories, a triplet is fine when one category holds all three items, and coarse when the pair kept together shares a category that the odd one lacks and no category holds all three.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *teacherPath != "" && *studentPath != "" {
		return cmdline.Usagef("eval", "give at most one of --teacher and --student")
	}
	emb, err := loadEmbeddings(*embPath, *idsPath)
	if err != nil {
		return err
	}
	x, n, d := emb.x, emb.n, emb.d
	rep := EvalReport{Model: "raw", Tau: 1, Task: learner.TaskOddOneOut}
	z, p := x, d
	switch {
	case *teacherPath != "":
		t, _, err := modelfile.LoadTeacher(*teacherPath)
		if err != nil {
			return err
		}
		if t.D != d {
			return fmt.Errorf("teacher %s expects %d-d embeddings, got %d", *teacherPath, t.D, d)
		}
		z, p = t.Transform(x, n), t.P
		rep.Model, rep.Tau, rep.Task = "teacher "+*teacherPath, t.Tau, t.Task
	case *studentPath != "":
		if z, p, rep.Tau, err = studentRepresentation(*studentPath, x, n, d); err != nil {
			return err
		}
		rep.Model = "student " + *studentPath
	}
	if *task != "" {
		rep.Task = learner.Task(*task)
		if err := rep.Task.Valid(); err != nil {
			return fmt.Errorf("--task: %w", err)
		}
	}
	if *tauFlag > 0 {
		rep.Tau = *tauFlag
	}
	ts, err := emb.triplets(*tripPath, rep.Task)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ls := learner.AllLogits(z, p, ts)
	ece, bins := learner.ECE(rep.Task, ls, rep.Tau, 10)
	rep.NTriplets = len(ts)
	rep.Accuracy = JSONFloat(learner.AccuracyFromLogits(rep.Task, ls))
	rep.NLL = JSONFloat(learner.NLL(rep.Task, ls, rep.Tau))
	rep.ECE = JSONFloat(ece)
	rep.Reliability = reliabilityJSON(bins)
	if *repPath != "" {
		reps, err := ReadRepeats(*repPath, n)
		if err != nil {
			return err
		}
		rep.NRepeats = len(reps)
		rep.KLHuman = JSONFloat(learner.KLHuman(reps, z, p, rep.Tau))
		rep.MajorityAgreement = JSONFloat(learner.MajorityAgreement(reps, z, p))
	}
	if *catPath != "" {
		if rep.Task != learner.TaskOddOneOut {
			return errors.New("--categories levels are defined for the odd-one-out task only")
		}
		cats, err := ReadCategories(*catPath)
		if err != nil {
			return err
		}
		if len(cats.Items) != n {
			return fmt.Errorf("categories %s list %d items, embeddings %d", *catPath, len(cats.Items), n)
		}
		lv := learner.LevelAccuracy(z, p, ts, cats.Items)
		rep.Levels = &EvalLevels{Coarse: JSONFloat(lv.Coarse), Fine: JSONFloat(lv.Fine), NCoarse: lv.NCoarse, NFine: lv.NFine}
	}
	if *asJSON {
		return WriteJSON(stdout, rep)
	}
	return writeEvalTables(stdout, rep)
}

func writeEvalTables(w io.Writer, rep EvalReport) error {
	t := NewTable("metric", "value")
	t.Title = fmt.Sprintf("%s on %d triplets (%s, τ=%s)", rep.Model, rep.NTriplets, rep.Task, FormatCell(rep.Tau))
	t.AddRow("accuracy", deref(rep.Accuracy))
	t.AddRow("nll", deref(rep.NLL))
	t.AddRow("ece", deref(rep.ECE))
	if rep.NRepeats > 0 {
		t.AddRow(fmt.Sprintf("kl_human (%d repeats)", rep.NRepeats), deref(rep.KLHuman))
		t.AddRow("majority_agreement", deref(rep.MajorityAgreement))
	}
	if rep.Levels != nil {
		t.AddRow(fmt.Sprintf("coarse accuracy (%d)", rep.Levels.NCoarse), deref(rep.Levels.Coarse))
		t.AddRow(fmt.Sprintf("fine accuracy (%d)", rep.Levels.NFine), deref(rep.Levels.Fine))
	}
	if err := t.Write(w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	rt := NewTable("confidence bin", "count", "mean confidence", "accuracy")
	rt.Title = "reliability"
	for _, b := range rep.Reliability {
		if b.Count == 0 {
			continue
		}
		rt.AddRow(fmt.Sprintf("[%.2f, %.2f)", b.Lo, b.Hi), b.Count, b.Confidence, b.Accuracy)
	}
	return rt.Write(w)
}
