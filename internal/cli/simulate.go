package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/internal/cmdline"
	"github.com/alignet/alignet/internal/offline"
	"github.com/alignet/alignet/internal/simulate"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// simulateReport is the JSON output of "alignet simulate".
type simulateReport struct {
	Judgments int               `json:"judgments"`
	Seed      uint64            `json:"seed"`
	Crowd     crowdInfo         `json:"crowd"`
	Curves    []simulate.Result `json:"curves"`
	// ReachedAt is, per active curve, the judgment count at which it first
	// reached the random curve's final accuracy (0: not within the budget).
	ReachedAt map[string]int `json:"reached_random_final_at,omitempty"`
}

// crowdInfo describes the simulated crowd's human model.
type crowdInfo struct {
	Lambda   float64 `json:"lambda"`
	Tau      float64 `json:"tau"`
	Accuracy float64 `json:"held_out_accuracy"`
	Eval     int     `json:"held_out_triplets"`
	Fitted   int     `json:"fitted_on"`
}

func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("simulate", "Run a study against a simulated crowd and print the learning curve: accuracy on real held-out human triplets against the number of judgments, for random queries and for the server's active selection, so a lab can plan how many judgments it needs. The crowd samples its answers from a human model (an affine teacher with calibrated τ) fitted on THINGS triplets_train.txt without its every tenth line, which is the held-out set. The learner refits as the server's does (λ on a validation split, τ calibrated) at the first refit's count and every growth factor after.", stdout)
	dir := fs.String("dir", "", "THINGS data `DIR` (clip_vit_b32.npy, concepts.txt, triplets_train.txt)")
	policies := fs.String("policy", "random,active", "comma-separated policies: random, active")
	budget := fs.Int("judgments", 20000, "simulated judgments per policy")
	scorer := fs.String("scorer", alignet.DefaultScorer, "active scorer: entropy, infogain or disagreement")
	mixFlag := fs.String("mix", "", "active policy's mix, such as active=0.75,random=0.15,repeat=0.05,check=0.05 (default: the study default)")
	seed := fs.Uint64("seed", 1, "seed of the crowd's answers, the queries and the splits")
	first := fs.Int("first", simulate.DefaultFirst, "judgments before the first refit")
	factor := fs.Float64("factor", simulate.DefaultFactor, "growth of the judgment count between refits")
	poolSize := fs.Int("pool-size", alignet.DefaultQuerySettings().PoolSize, "candidate triplets the active scorer rescores")
	maxIter := fs.Int("max-iter", simulate.DefaultMaxIter, "L-BFGS iterations per λ of each refit and of the crowd model")
	lambdas := fs.String("lambdas", "0.3,0.1,0.03", "λ grid of the refits")
	crowdPath := fs.String("crowd", "", "cache `FILE` (.npz) of the crowd model: read when it exists, written after fitting otherwise")
	plot := fs.String("plot", "", "write the learning curves as an SVG `FILE`")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Placeholder("policy", "LIST")
	fs.Placeholder("scorer", "NAME")
	fs.Placeholder("mix", "SHARES")
	fs.Placeholder("lambdas", "LIST")
	fs.Require("dir")
	fs.Example("alignet simulate --dir ../shared/data/things --judgments 20000 --crowd crowd.npz --plot curves.svg")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var pols []string
	for _, p := range strings.Split(*policies, ",") {
		p = strings.TrimSpace(p)
		if p != simulate.PolicyRandom && p != simulate.PolicyActive {
			return cmdline.Usagef("simulate", "--policy: unknown policy %q (want random or active)", p)
		}
		pols = append(pols, p)
	}
	if *budget < *first || *first < 10 {
		return cmdline.Usagef("simulate", "--judgments must be at least --first, which must be at least 10")
	}
	if *plot != "" && !strings.EqualFold(filepath.Ext(*plot), ".svg") {
		return cmdline.Usagef("simulate", "--plot writes SVG: give a file ending in .svg")
	}
	grid, err := parseFloatList(*lambdas)
	if err != nil || len(grid) == 0 {
		return cmdline.Usagef("simulate", "--lambdas: %v", err)
	}
	settings := alignet.DefaultStudySettings()
	settings.Queries.Scorer, settings.Queries.PoolSize = *scorer, *poolSize
	settings.Learner.MaxIter, settings.Learner.Lambdas = *maxIter, grid
	if *mixFlag != "" {
		if settings.Queries.Mix, err = parseMix(*mixFlag); err != nil {
			return cmdline.Usagef("simulate", "--mix: %v", err)
		}
		if settings.Queries.Mix.Repeat == 0 {
			settings.Queries.Repeats = 0
		}
	}
	if err := settings.Validate(); err != nil {
		return cmdline.Usagef("simulate", "%v", err)
	}
	data, err := simulate.LoadTHINGS(*dir)
	if err != nil {
		return err
	}
	crowd, err := loadOrFitCrowd(ctx, data, *crowdPath, grid, *maxIter, *seed, stderr)
	if err != nil {
		return err
	}
	crowdAcc := learner.Accuracy(data.Task, crowd.Transform(data.X, data.N), crowd.P, data.Eval)
	fmt.Fprintf(stderr, "simulate: crowd model λ=%g τ=%.3f, %.2f%% on the %d held-out triplets\n", crowd.Lambda, crowd.Tau, 100*crowdAcc, len(data.Eval))
	rep := simulateReport{Judgments: *budget, Seed: *seed,
		Crowd: crowdInfo{Lambda: crowd.Lambda, Tau: crowd.Tau, Accuracy: crowdAcc, Eval: len(data.Eval), Fitted: len(data.CrowdTrain)}}
	for _, p := range pols {
		res, err := simulate.Run(ctx, data, crowd, simulate.Config{Policy: p, Settings: &settings, Judgments: *budget,
			First: *first, Factor: *factor, Seed: *seed, Progress: func(pt simulate.Point) {
				fmt.Fprintf(stderr, "simulate: %s: %6d judgments (%d trained): %.2f%% (λ=%g, τ=%.2f) after %.0fs\n",
					p, pt.Judgments, pt.Trained, 100*pt.Accuracy, pt.Lambda, pt.Tau, pt.Seconds)
			}})
		if err != nil {
			return err
		}
		rep.Curves = append(rep.Curves, res)
	}
	rep.ReachedAt = reachedAt(rep.Curves)
	if *plot != "" {
		f, err := os.Create(*plot)
		if err != nil {
			return err
		}
		title := fmt.Sprintf("THINGS: simulated crowd, %d judgments", *budget)
		if err := simulate.WriteSVG(f, title, rep.Curves); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if *asJSON {
		return offline.WriteJSON(stdout, rep)
	}
	return writeCurves(stdout, rep)
}

// loadOrFitCrowd reads the crowd model from path when it exists, or fits
// it and writes it there.
func loadOrFitCrowd(ctx context.Context, data *simulate.Data, path string, grid []float64, maxIter int, seed uint64, stderr io.Writer) (*learner.Teacher, error) {
	if path != "" {
		t, _, err := modelfile.LoadTeacher(path)
		if err == nil {
			if t.D != data.D {
				return nil, fmt.Errorf("crowd model %s has input dimension %d, the embeddings %d", path, t.D, data.D)
			}
			return t, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	fmt.Fprintf(stderr, "simulate: fitting the crowd model on %d triplets\n", len(data.CrowdTrain))
	t, err := simulate.FitCrowd(ctx, data, grid, maxIter, seed)
	if err != nil {
		return nil, err
	}
	if path != "" {
		prov := modelfile.Provenance{Seed: seed, Task: data.Task, Hyper: map[string]any{"lambdas": grid, "max_iter": maxIter},
			Extra: map[string]any{"producer": "alignet simulate crowd model", "fitted_on": len(data.CrowdTrain)}}
		if err := modelfile.SaveTeacher(path, t, prov); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// reachedAt returns, for each active curve, the first judgment count at
// which it reached the random curve's final accuracy.
func reachedAt(curves []simulate.Result) map[string]int {
	var target float64
	found := false
	for _, c := range curves {
		if c.Policy == simulate.PolicyRandom && len(c.Points) > 0 {
			target, found = c.Points[len(c.Points)-1].Accuracy, true
		}
	}
	if !found {
		return nil
	}
	out := map[string]int{}
	for _, c := range curves {
		if c.Policy == simulate.PolicyRandom {
			continue
		}
		out[c.Label()] = 0
		for _, p := range c.Points {
			if p.Accuracy >= target {
				out[c.Label()] = p.Judgments
				break
			}
		}
	}
	return out
}

func writeCurves(w io.Writer, rep simulateReport) error {
	headers := []string{"judgments"}
	for _, c := range rep.Curves {
		headers = append(headers, c.Label(), "trained")
	}
	t := offline.NewTable(headers...)
	t.Title = fmt.Sprintf("Accuracy on %d real held-out THINGS triplets (crowd model: %.2f%%)", rep.Crowd.Eval, 100*rep.Crowd.Accuracy)
	row := []any{"0 (raw)"}
	for _, c := range rep.Curves {
		row = append(row, pctCell(c.Raw.Accuracy), "-")
	}
	t.AddRow(row...)
	n := 0
	for _, c := range rep.Curves {
		n = max(n, len(c.Points))
	}
	for i := range n {
		row := []any{""}
		for k, c := range rep.Curves {
			if i >= len(c.Points) {
				row = append(row, "-", "-")
				continue
			}
			if k == 0 || row[0] == "" {
				row[0] = strconv.Itoa(c.Points[i].Judgments)
			}
			row = append(row, pctCell(c.Points[i].Accuracy), strconv.Itoa(c.Points[i].Trained))
		}
		t.AddRow(row...)
	}
	if err := t.Write(w); err != nil {
		return err
	}
	for label, at := range rep.ReachedAt {
		if at == 0 {
			fmt.Fprintf(w, "%s did not reach random's final accuracy within %d judgments\n", label, rep.Judgments)
		} else {
			fmt.Fprintf(w, "%s reached random's final accuracy at %d judgments (%.0f%% of %d)\n", label, at, 100*float64(at)/float64(rep.Judgments), rep.Judgments)
		}
	}
	return nil
}

func pctCell(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

func parseFloatList(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// parseMix reads "active=0.75,random=0.15,...": kinds not named get 0.
func parseMix(s string) (alignet.QueryMix, error) {
	var m alignet.QueryMix
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		f, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			return m, fmt.Errorf("want kind=share, got %q", part)
		}
		switch alignet.QueryKind(k) {
		case alignet.QueryActive:
			m.Active = f
		case alignet.QueryRandom:
			m.Random = f
		case alignet.QueryRepeat:
			m.Repeat = f
		case alignet.QueryCheck:
			m.Check = f
		default:
			return m, fmt.Errorf("unknown kind %q", k)
		}
	}
	return m, nil
}
