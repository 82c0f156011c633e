package offline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/alignet/alignet/internal/cmdline"
	"github.com/alignet/alignet/internal/progress"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// DistillSummary is the report of RunDistill. Pointer fields are nil (null
// in JSON) when the corresponding evaluation data was not given.
type DistillSummary struct {
	// Out is the student path.
	Out string `json:"out"`
	// Triplets, Train and Val count the dataset triplets and its split.
	Triplets int `json:"triplets"`
	Train    int `json:"train"`
	Val      int `json:"val"`
	// Loss, Init and InitScale describe the objective and initialisation.
	Loss      string  `json:"loss"`
	Init      string  `json:"init"`
	InitScale float64 `json:"init_scale"`
	// Epochs and Steps count the optimisation.
	Epochs int `json:"epochs"`
	Steps  int `json:"steps"`
	// TrainBefore and TrainAfter are the mean training losses.
	TrainBefore float64 `json:"train_loss_before"`
	TrainAfter  float64 `json:"train_loss_after"`
	// ValBefore and ValAfter are the held-out dataset losses.
	ValBefore *float64 `json:"val_loss_before"`
	ValAfter  *float64 `json:"val_loss_after"`
	// AgreeBefore and AgreeAfter are the fractions of held-out dataset
	// triplets whose odd one the student picks as the teacher did.
	AgreeBefore *float64 `json:"val_teacher_agreement_before"`
	AgreeAfter  *float64 `json:"val_teacher_agreement_after"`
	// HumanBefore and HumanAfter are accuracies on --triplets.
	HumanBefore *float64 `json:"human_accuracy_before"`
	HumanAfter  *float64 `json:"human_accuracy_after"`
	// LevelsBefore and LevelsAfter split them by abstraction level.
	LevelsBefore *DistillLevels `json:"levels_before,omitempty"`
	LevelsAfter  *DistillLevels `json:"levels_after,omitempty"`
	// Seconds and PerSecond time the training.
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"triplets_per_second"`
}

// DistillLevels is a JSON-safe per-abstraction-level accuracy (see
// learner.LevelAccuracy).
type DistillLevels struct {
	// Coarse is the accuracy on coarse triplets and NCoarse their number.
	Coarse  *float64 `json:"coarse"`
	NCoarse int      `json:"n_coarse"`
	// Fine is the accuracy on fine triplets and NFine their number.
	Fine  *float64 `json:"fine"`
	NFine int      `json:"n_fine"`
}

func distillLevels(l learner.Levels) *DistillLevels {
	return &DistillLevels{Coarse: JSONFloat(l.Coarse), NCoarse: l.NCoarse, Fine: JSONFloat(l.Fine), NFine: l.NFine}
}

// RunDistill implements "alignet distill": it fits an affine student head
// on frozen student embeddings to an AligNet dataset (from alignet
// generate) by minimising the KL or JS divergence between the teacher's
// and the student's triplet distributions with Adam and decay toward the
// initial weights, and saves it with SaveStudent. With --triplets it also
// reports the student's accuracy on those human triplets before and after,
// and with --categories per abstraction level.
func RunDistill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("distill", "Distil a student: fit an affine head on frozen student embeddings to an AligNet dataset by matching the teacher's triplet distributions.", stdout)
	studentPath := fs.String("student", "", "student embeddings `FILE` (.npy, one float row per item)")
	idsPath := fs.String("ids", "", usageIDs)
	datasetPath := fs.String("dataset", "", "AligNet dataset .npz `FILE` written by alignet generate")
	loss := fs.String("loss", learner.LossKL, "divergence: kl or jsd")
	epochs := fs.Int("epochs", 10, "passes over the training triplets")
	lr := fs.Float64("lr", 1e-3, "Adam step size")
	decay := fs.Float64("decay", 0.01, "decay μ toward the initial weights")
	init := fs.String("init", learner.InitAffine, "head initialisation: affine, identity or random")
	outDim := fs.Int("out-dim", 0, "output dimension of the head (default D)")
	batch := fs.Int("batch", 1024, "triplets per step")
	studentTau := fs.Float64("tau", 1, "student temperature")
	teacherTau := fs.Float64("teacher-tau", 0, "teacher temperature (default: from the dataset metadata, else 1)")
	valFrac := fs.Float64("val", 0.05, "fraction of dataset triplets held out for validation")
	humanPath := fs.String("triplets", "", "optional human odd-one-out judgments `FILE` to evaluate on, in any format alignet fit reads")
	catsPath := fs.String("categories", "", "optional categories .tsv `FILE` for per-level accuracy (needs --triplets)")
	seed := fs.Uint64("seed", 1, "random seed")
	out := fs.String("out", "", "output student .npz `FILE`")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	fs.Placeholder("loss", "LOSS")
	fs.Placeholder("init", "INIT")
	fs.Placeholder("val", "FRACTION")
	fs.Require("student", "dataset", "out")
	fs.Example("alignet distill --student word2vec.npy --dataset alignet.npz --epochs 2 --triplets held.txt --categories categories.tsv --out student.npz")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *valFrac < 0 || *valFrac >= 1 {
		return errors.New("--val must be in [0, 1)")
	}
	emb, err := loadEmbeddings(*studentPath, *idsPath)
	if err != nil {
		return err
	}
	x, n, d := emb.x, emb.n, emb.d
	// Only the slices are kept, so they can be released once split.
	var idx []int32
	var sims []float32
	var dprov modelfile.Provenance
	if ds, err := modelfile.LoadDataset(*datasetPath); err != nil {
		return err
	} else {
		idx, sims, dprov = ds.Indices, ds.Similarities, ds.Provenance
		// A dataset downloaded from the server indexes its generation
		// pool; its filenames name the items, which --ids maps to rows.
		if ds.Filenames != nil && *idsPath != "" {
			if err := remapIndices(idx, ds.Filenames, emb.rows); err != nil {
				return fmt.Errorf("dataset %s: %w", *datasetPath, err)
			}
		}
	}
	tauT := *teacherTau
	if tauT <= 0 {
		tauT = 1
		if v, ok := dprov.Extra["teacher_tau"].(float64); ok && v > 0 {
			tauT = v
		}
	}
	var human []learner.Triplet
	var cats *Categories
	if *humanPath != "" {
		if human, err = emb.triplets(*humanPath, learner.TaskOddOneOut); err != nil {
			return err
		}
		if *catsPath != "" {
			if cats, err = ReadCategories(*catsPath); err != nil {
				return err
			}
		}
	}
	nt := len(idx) / 3
	trIdx, trSims, vaIdx, vaSims := SplitDataset(idx, sims, *valFrac, *seed)
	idx, sims = nil, nil
	dcfg := learner.DistillConfig{Loss: *loss, TeacherTau: tauT, Epochs: *epochs, BatchSize: *batch,
		LR: *lr, Decay: *decay, Seed: *seed}
	h, scale, err := InitialHead(x, n, d, trIdx, trSims, learner.HeadConfig{Init: *init, OutDim: *outDim, Tau: *studentTau, Seed: *seed}, dcfg)
	if err != nil {
		return err
	}
	sum := DistillSummary{Out: *out, Triplets: nt, Train: len(trIdx) / 3, Val: len(vaIdx) / 3, Loss: *loss, Init: h.Init,
		InitScale: scale, Epochs: *epochs}
	eval := func() (val, agree, hum *float64, lv *DistillLevels, err error) {
		z := h.Transform(x, n)
		if len(vaIdx) > 0 {
			l, err := learner.DistillLoss(h, x, n, vaIdx, vaSims, dcfg)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			val = JSONFloat(l)
			agree = JSONFloat(TeacherAgreement(z, h.P, vaIdx))
		}
		if human != nil {
			hum = JSONFloat(learner.Accuracy(learner.TaskOddOneOut, z, h.P, human))
			if cats != nil {
				lv = distillLevels(learner.LevelAccuracy(z, h.P, human, cats.Items))
			}
		}
		return val, agree, hum, lv, nil
	}
	if sum.ValBefore, sum.AgreeBefore, sum.HumanBefore, sum.LevelsBefore, err = eval(); err != nil {
		return err
	}
	bar := progress.New(stderr, "distill", int64(*epochs)*int64(sum.Train))
	dcfg.StepProgress = func(m int) { bar.Add(int64(m)) }
	start := time.Now()
	st, err := learner.TrainStudent(ctx, h, x, n, trIdx, trSims, dcfg)
	bar.Finish()
	if err != nil {
		return err
	}
	sum.Seconds = time.Since(start).Seconds()
	if sum.Seconds > 0 {
		sum.PerSecond = float64(st.Triplets) / sum.Seconds
	}
	sum.Steps, sum.TrainBefore, sum.TrainAfter = st.Steps, st.InitialLoss, st.FinalLoss
	if sum.ValAfter, sum.AgreeAfter, sum.HumanAfter, sum.LevelsAfter, err = eval(); err != nil {
		return err
	}
	ssha, err := FileSHA256(*studentPath)
	if err != nil {
		return err
	}
	dsha, err := FileSHA256(*datasetPath)
	if err != nil {
		return err
	}
	prov := modelfile.Provenance{Seed: *seed, Task: learner.TaskOddOneOut, Embeddings: *studentPath, EmbeddingsSHA256: ssha,
		Hyper: map[string]any{"loss": *loss, "epochs": *epochs, "lr": *lr, "decay": *decay, "init": h.Init,
			"init_scale": sum.InitScale, "out_dim": h.P, "batch": *batch, "tau": *studentTau,
			"teacher_tau": tauT, "val": *valFrac},
		Extra: map[string]any{"dataset": *datasetPath, "dataset_sha256": dsha,
			"train_loss": st.FinalLoss, "epoch_loss": st.EpochLoss}}
	if err := modelfile.SaveStudent(*out, h, prov); err != nil {
		return fmt.Errorf("save student: %w", err)
	}
	if *asJSON {
		return WriteJSON(stdout, sum)
	}
	t := NewTable("metric", "before", "after")
	t.Title = fmt.Sprintf("AligNet distillation (%s, %d train / %d val triplets, init %s ×%.3g, %d steps, %.0f triplets/s)",
		sum.Loss, sum.Train, sum.Val, sum.Init, sum.InitScale, sum.Steps, sum.PerSecond)
	t.AddRow("train loss", sum.TrainBefore, sum.TrainAfter)
	t.AddRow("val loss", distillDeref(sum.ValBefore), distillDeref(sum.ValAfter))
	t.AddRow("val teacher agreement", distillDeref(sum.AgreeBefore), distillDeref(sum.AgreeAfter))
	t.AddRow("human accuracy", distillDeref(sum.HumanBefore), distillDeref(sum.HumanAfter))
	if sum.LevelsBefore != nil {
		t.AddRow(fmt.Sprintf("coarse accuracy (n=%d)", sum.LevelsBefore.NCoarse), distillDeref(sum.LevelsBefore.Coarse), distillDeref(sum.LevelsAfter.Coarse))
		t.AddRow(fmt.Sprintf("fine accuracy (n=%d)", sum.LevelsBefore.NFine), distillDeref(sum.LevelsBefore.Fine), distillDeref(sum.LevelsAfter.Fine))
	}
	return t.Write(stdout)
}

func distillDeref(v *float64) float64 {
	if v == nil {
		return math.NaN()
	}
	return *v
}

// SplitDataset splits dataset triplets (N×3 indices and similarities)
// into training and validation triplets with SplitIndices, as "alignet
// distill" and the trainer do.
func SplitDataset(idx []int32, sims []float32, valFrac float64, seed uint64) (trIdx []int32, trSims []float32, vaIdx []int32, vaSims []float32) {
	trI, vaI := SplitIndices(len(idx)/3, valFrac, seed)
	pick := func(rows []int) ([]int32, []float32) {
		a := make([]int32, 0, 3*len(rows))
		b := make([]float32, 0, 3*len(rows))
		for _, r := range rows {
			a = append(a, idx[3*r:3*r+3]...)
			b = append(b, sims[3*r:3*r+3]...)
		}
		return a, b
	}
	trIdx, trSims = pick(trI)
	vaIdx, vaSims = pick(vaI)
	return trIdx, trSims, vaIdx, vaSims
}

// InitialHead returns the head θ₀ that distillation starts from, as
// "alignet distill" and the trainer build it: hc's head on the n×d
// embeddings x standardised by their scalar mean and deviation and, for
// the affine initialisation, rescaled by learner.CalibrateScale on the
// training triplets; it also returns that scale (1 without calibration).
func InitialHead(x []float32, n, d int, trIdx []int32, trSims []float32, hc learner.HeadConfig, dc learner.DistillConfig) (*learner.StudentHead, float64, error) {
	hc.Mean, hc.Std = learner.MeanStd(x)
	h, err := learner.NewStudentHead(d, hc)
	if err != nil {
		return nil, 0, err
	}
	scale := 1.0
	if h.Init == learner.InitAffine {
		if scale, err = h.CalibrateScale(x, n, trIdx, trSims, dc); err != nil {
			return nil, 0, err
		}
	}
	return h, scale, nil
}

// remapIndices replaces each dataset index by the row that rows gives its
// filename.
func remapIndices(idx []int32, filenames []string, rows Rows) error {
	for i, name := range filenames {
		r, err := rows.Index(name)
		if err != nil {
			return err
		}
		idx[i] = r
	}
	return nil
}

// TeacherAgreement returns the fraction of dataset triplets (odd one out
// last) whose odd one the representation z (n×p) also picks strictly.
func TeacherAgreement(z []float32, p int, idx []int32) float64 {
	if len(idx) == 0 {
		return math.NaN()
	}
	ok := 0
	for t := 0; t < len(idx)/3; t++ {
		l := learner.Logits(z, p, learner.Triplet{I: idx[3*t], J: idx[3*t+1], K: idx[3*t+2]})
		if learner.Correct(learner.TaskOddOneOut, l) {
			ok++
		}
	}
	return float64(ok) / float64(len(idx)/3)
}
