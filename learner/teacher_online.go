package learner

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// OnlineConfig configures Teacher.Update. Zero fields take the defaults.
type OnlineConfig struct {
	// LR is the Adam step size (default 1e-3).
	LR float64
	// Beta1, Beta2 and Eps are the Adam constants (defaults 0.9, 0.999, 1e-8).
	Beta1, Beta2, Eps float64
	// Steps is the number of Adam steps (default 1).
	Steps int
	// BatchSize is the number of judgments per step, fresh and replayed
	// together (default 1280).
	BatchSize int
	// ReplayFraction is the share of each batch drawn from the replayed
	// judgments (default 0.8; a negative value means none). When one pool
	// runs short the other fills the batch.
	ReplayFraction float64
	// Seed seeds the sampling of batches.
	Seed uint64
}

func (c OnlineConfig) withDefaults() OnlineConfig {
	if c.LR == 0 {
		c.LR = 1e-3
	}
	if c.Steps == 0 {
		c.Steps = 1
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1280
	}
	if c.ReplayFraction == 0 {
		c.ReplayFraction = 0.8
	} else if c.ReplayFraction < 0 {
		c.ReplayFraction = 0
	}
	return c
}

// AdamState carries the Adam moments of the teacher's W and B across
// calls to Update. The zero value is ready to use.
type AdamState struct {
	// W and B are the optimisers of the weights and the bias.
	W, B Adam
}

// UpdateStats describes an online update.
type UpdateStats struct {
	// Steps is the number of Adam steps taken.
	Steps int
	// Fresh and Replayed count the judgments used per step, summed.
	Fresh, Replayed int
	// Rows is the number of embedding rows transformed, summed over steps.
	Rows int
	// MeanLoss is the mean batch objective before each step.
	MeanLoss float64
	// Duration is the wall time.
	Duration time.Duration
}

// Update takes Adam steps on mini-batches that mix fresh judgments with
// replayed old ones, warm-started from the current transform. The objective
// is the batch mean cross-entropy at t.Tau plus t.Lambda times the
// regulariser. Only the embedding rows touched by a batch are transformed.
// Nil target slices mean hard choices.
func (t *Teacher) Update(x []float32, n int, fresh []Triplet, freshTargets [][3]float32, replay []Triplet, replayTargets [][3]float32, cfg OnlineConfig, state *AdamState) (UpdateStats, error) {
	start := time.Now()
	cfg = cfg.withDefaults()
	if state == nil {
		state = &AdamState{}
	}
	if err := t.Task.Valid(); err != nil {
		return UpdateStats{}, fmt.Errorf("teacher update: %w", err)
	}
	if len(x) != n*t.D {
		return UpdateStats{}, fmt.Errorf("teacher update: embeddings have %d values, want %d×%d", len(x), n, t.D)
	}
	if len(fresh)+len(replay) == 0 {
		return UpdateStats{}, errors.New("teacher update: no judgments")
	}
	if (freshTargets != nil && len(freshTargets) != len(fresh)) || (replayTargets != nil && len(replayTargets) != len(replay)) {
		return UpdateStats{}, errors.New("teacher update: targets and triplets differ in length")
	}
	for _, ts := range [][]Triplet{fresh, replay} {
		for _, tr := range ts {
			if tr.I < 0 || tr.J < 0 || tr.K < 0 || int(tr.I) >= n || int(tr.J) >= n || int(tr.K) >= n {
				return UpdateStats{}, fmt.Errorf("teacher update: triplet %v outside [0,%d)", tr, n)
			}
		}
	}
	for _, a := range []*Adam{&state.W, &state.B} {
		a.LR, a.Beta1, a.Beta2, a.Eps = cfg.LR, cfg.Beta1, cfg.Beta2, cfg.Eps
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x0411e))
	nRep := int(math.Round(float64(cfg.BatchSize) * cfg.ReplayFraction))
	nRep = min(nRep, len(replay))
	nFresh := min(cfg.BatchSize-nRep, len(fresh))
	nRep = min(cfg.BatchSize-nFresh, len(replay))
	freshPerm, repPerm := rng.Perm(len(fresh)), rng.Perm(len(replay))
	fPos, rPos := 0, 0
	var st UpdateStats
	p, d := t.P, t.D
	gw := make([]float64, p*d)
	gb := make([]float64, p)
	reg := make([]float64, p*d)
	gw32 := make([]float32, p*d)
	batch := make([]Triplet, 0, nFresh+nRep)
	targets := make([][3]float32, 0, nFresh+nRep)
	local := make(map[int32]int32)
	var rows []int32
	for step := 0; step < cfg.Steps; step++ {
		batch, targets = batch[:0], targets[:0]
		take := func(ts []Triplet, qs [][3]float32, perm []int, pos *int, k int) {
			for a := 0; a < k; a++ {
				if *pos == len(perm) {
					*pos = 0
				}
				i := perm[*pos]
				*pos++
				batch = append(batch, ts[i])
				if qs != nil {
					targets = append(targets, qs[i])
				} else {
					targets = append(targets, HardTarget)
				}
			}
		}
		take(fresh, freshTargets, freshPerm, &fPos, nFresh)
		take(replay, replayTargets, repPerm, &rPos, nRep)
		// Map the touched rows to a compact local index.
		clear(local)
		rows = rows[:0]
		lb := make([]Triplet, len(batch))
		for a, tr := range batch {
			var li [3]int32
			for r, it := range [3]int32{tr.I, tr.J, tr.K} {
				l, ok := local[it]
				if !ok {
					l = int32(len(rows))
					local[it] = l
					rows = append(rows, it)
				}
				li[r] = l
			}
			lb[a] = Triplet{li[0], li[1], li[2]}
		}
		m := len(rows)
		// The batch work runs in float32 (the GEMM kernel) for latency; the
		// parameters and Adam moments stay float64.
		xt := t.standardRows(x, rows)
		z := t.forward32(xt, m)
		dz := make([]float64, m*p)
		var loss float64
		scale := 1 / float64(len(lb))
		for a, tr := range lb {
			ce, g := TaskCrossEntropy(t.Task, Logits(z, p, tr), t.Tau, targets[a])
			loss += ce
			for c := range g {
				g[c] *= scale
			}
			AddRepGrad(z, p, tr, g, dz)
		}
		loss *= scale
		// gw = dZᵀ·X̃ as (dZᵀ)·(X̃ᵀ)ᵀ with the transposes laid out row-major.
		dzT := make([]float32, p*m)
		xtT := make([]float32, d*m)
		for l := 0; l < m; l++ {
			for q := 0; q < p; q++ {
				dzT[q*m+l] = float32(dz[l*p+q])
			}
			for a := 0; a < d; a++ {
				xtT[a*m+l] = xt[l*d+a]
			}
		}
		parMulNT(prepareB(d, m, xtT), p, m, d, dzT, gw32, allProcs)
		for i, v := range gw32 {
			gw[i] = float64(v)
		}
		clear(gb)
		for l := 0; l < m; l++ {
			axpy(1, dz[l*p:(l+1)*p], gb)
		}
		if t.Lambda > 0 {
			clear(reg)
			r := regulariser(t.W, p, d, reg)
			loss += t.Lambda * r
			axpy(t.Lambda, reg, gw)
		}
		state.W.Step(t.W, gw)
		state.B.Step(t.B, gb)
		st.Steps++
		st.Fresh += nFresh
		st.Replayed += nRep
		st.Rows += m
		st.MeanLoss += loss
	}
	st.MeanLoss /= float64(max(st.Steps, 1))
	st.Duration = time.Since(start)
	return st, nil
}
