package learner

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"time"
)

// HumanModelConfig configures FitVICE, EnsembleDistilledTargets and
// EnsembleSoftTargets. Zero fields take the documented defaults.
type HumanModelConfig struct {
	// Dim is the number of embedding dimensions per item (default 20: on
	// THINGS with 10⁵ triplets, 20 dimensions predicted held-out choices
	// better than 50, which overfit).
	Dim int
	// Epochs is the number of passes over the training triplets
	// (default 60).
	Epochs int
	// BatchSize is the number of triplets per Adam step (default 2048). The
	// cost of a step is dominated by sampling the whole embedding, so large
	// batches are cheap.
	BatchSize int
	// LR is the Adam step size (default 0.03).
	LR float64
	// TrainSamples is the number of reparameterised samples of the whole
	// embedding per Adam step (default 1, as in VICE).
	TrainSamples int
	// PredictSamples is the number of Monte-Carlo samples averaged by the
	// VICE predictions made in EnsembleDistilledTargets (default 30).
	PredictSamples int
	// SpikeScale is the standard deviation of the narrow prior component
	// (default 0.125).
	SpikeScale float64
	// SlabScale is the standard deviation of the wide prior component
	// (default 1).
	SlabScale float64
	// Pi is the prior weight of the spike (default 0.6).
	Pi float64
	// InitLogSigma is the initial log standard deviation of every
	// variational factor (default −3).
	InitLogSigma float64
	// Seed seeds the initialisation, the batch order and every sample.
	Seed int64
	// Workers is the number of goroutines (default GOMAXPROCS). Results do
	// not depend on it.
	Workers int

	// RepeatPseudoCount is κ, the weight in pseudo-responses that the
	// distilled targets give the model prediction v when a triplet has
	// repeated responses: q = (c + κ·v)/(N + κ) (default 3; a negative value
	// means 0). See EnsembleSoftTargets.
	RepeatPseudoCount float64
	// OneHotMix is α, the weight of the observed choice in the distilled
	// targets of triplets without repeated responses:
	// q = (1−α)·v + α·onehot (default EnsembleOneHotMix; a negative value
	// means 0; at most 1). See EnsembleSoftTargets.
	OneHotMix float64
}

func (c HumanModelConfig) withDefaults() HumanModelConfig {
	if c.Dim == 0 {
		c.Dim = 20
	}
	if c.Epochs == 0 {
		c.Epochs = 60
	}
	if c.BatchSize == 0 {
		c.BatchSize = 2048
	}
	if c.LR == 0 {
		c.LR = 0.03
	}
	if c.TrainSamples == 0 {
		c.TrainSamples = 1
	}
	if c.PredictSamples == 0 {
		c.PredictSamples = 30
	}
	if c.SpikeScale == 0 {
		c.SpikeScale = 0.125
	}
	if c.SlabScale == 0 {
		c.SlabScale = 1
	}
	if c.Pi == 0 {
		c.Pi = 0.6
	}
	if c.InitLogSigma == 0 {
		c.InitLogSigma = -3
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.OneHotMix == 0 {
		c.OneHotMix = EnsembleOneHotMix
	} else if c.OneHotMix < 0 {
		c.OneHotMix = 0
	}
	if c.RepeatPseudoCount == 0 {
		c.RepeatPseudoCount = 3
	} else if c.RepeatPseudoCount < 0 {
		c.RepeatPseudoCount = 0
	}
	return c
}

func (c HumanModelConfig) validate() error {
	switch {
	case c.Dim < 1:
		return fmt.Errorf("dimension %d is not positive", c.Dim)
	case c.Epochs < 1:
		return fmt.Errorf("epochs %d is not positive", c.Epochs)
	case c.BatchSize < 1:
		return fmt.Errorf("batch size %d is not positive", c.BatchSize)
	case !(c.LR > 0):
		return fmt.Errorf("learning rate %v is not positive", c.LR)
	case c.TrainSamples < 1 || c.PredictSamples < 1:
		return fmt.Errorf("sample counts %d and %d must be positive", c.TrainSamples, c.PredictSamples)
	case !(c.SpikeScale > 0) || !(c.SlabScale > 0):
		return fmt.Errorf("prior scales %v and %v must be positive", c.SpikeScale, c.SlabScale)
	case !(c.Pi > 0 && c.Pi < 1):
		return fmt.Errorf("prior weight %v not in (0,1)", c.Pi)
	case !(c.OneHotMix >= 0 && c.OneHotMix <= 1):
		return fmt.Errorf("one-hot mix %v not in [0,1]", c.OneHotMix)
	}
	return nil
}

// VICE is a fitted probabilistic human model (Muttenthaler et al., 2022): a
// mean-field Gaussian over an N×Dim embedding whose non-negative part
// ReLU(w) explains odd-one-out choices through dot-product similarities.
type VICE struct {
	// N is the number of items and Dim the number of dimensions.
	N, Dim int
	// Mu holds the variational means, N×Dim row-major.
	Mu []float32
	// LogSigma holds the variational log standard deviations, N×Dim.
	LogSigma []float32
}

// VICEStats describes a finished VICE fit.
type VICEStats struct {
	// Steps is the number of Adam steps taken.
	Steps int
	// EpochLoss is the negative ELBO per training triplet of every epoch: a
	// Monte-Carlo estimate from the samples drawn during training, with the
	// complexity term taken at the last step of the epoch.
	EpochLoss []float64
	// EpochNLL is the mean negative log-likelihood part of EpochLoss over
	// the epoch's minibatches.
	EpochNLL []float64
	// Duration is the wall time of the fit.
	Duration time.Duration
}

// viceMix returns a well-mixed 64-bit value of x (SplitMix64 finaliser).
func viceMix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Stream domains keep the random streams of different purposes apart.
const (
	viceStreamInit uint64 = iota + 1
	viceStreamOrder
	viceStreamTrain
	viceStreamPredict
)

// viceSeed seeds pcg for the stream (domain, a, b) of seed, so every row of
// every sample has its own reproducible stream whatever the scheduling.
func viceSeed(pcg *rand.PCG, seed int64, domain, a, b uint64) {
	h := viceMix(uint64(seed) ^ viceMix(domain))
	h = viceMix(h ^ a)
	pcg.Seed(h, viceMix(h^b))
}

// viceObjective evaluates the negative ELBO of one minibatch for fixed
// standard-normal noise eps: the mean negative log-likelihood of the batch
// under x = ReLU(μ + σ⊙ε) plus (1/N_train)·(log q(w) − log p(w)) summed over
// all N×Dim weights, with p the spike-and-slab prior.
type viceObjective struct {
	n, p    int
	nTrain  int
	spike   float64
	slab    float64
	pi      float64
	workers pool
	w, x    []float64 // sampled weights and their ReLU, n×p
	gx      []float64 // gradient with respect to x, n×p
	gt      []float64 // per-triplet gradients, batch×3×p
	tl      []float64 // per-triplet losses
	rowTerm []float64 // per-row complexity terms
	sig     []float64 // σ = exp(log σ), n×p

	// Prior constants: d = c0 − k·w² is the log-odds of the spike.
	c0, k                        float64
	invSpike2, invSlab2, logSlab float64
}

func newVICEObjective(n, p, nTrain, batch int, cfg HumanModelConfig) *viceObjective {
	o := &viceObjective{
		n: n, p: p, nTrain: nTrain,
		spike: cfg.SpikeScale, slab: cfg.SlabScale, pi: cfg.Pi,
		workers: pool(cfg.Workers),
		w:       make([]float64, n*p), x: make([]float64, n*p),
		gx: make([]float64, n*p), gt: make([]float64, batch*3*p),
		tl: make([]float64, batch), rowTerm: make([]float64, n),
		sig:       make([]float64, n*p),
		invSpike2: 1 / (cfg.SpikeScale * cfg.SpikeScale),
		invSlab2:  1 / (cfg.SlabScale * cfg.SlabScale),
		c0: math.Log(cfg.Pi) - math.Log(cfg.SpikeScale) -
			math.Log1p(-cfg.Pi) + math.Log(cfg.SlabScale),
		logSlab: math.Log1p(-cfg.Pi) - math.Log(cfg.SlabScale) - 0.9189385332046727,
	}
	o.k = 0.5 * (o.invSpike2 - o.invSlab2)
	return o
}

// priorResp returns the spike responsibility of w under the prior, and the
// exponential factor e = exp(−|d|) of the log-odds d it is computed from.
func (o *viceObjective) priorResp(w float64) (ra, d, e float64) {
	d = o.c0 - o.k*w*w
	e = math.Exp(-math.Abs(d))
	if d >= 0 {
		ra = 1 / (1 + e)
	} else {
		ra = e / (1 + e)
	}
	return ra, d, e
}

// logPrior returns log p(w) under the spike-and-slab prior and its
// derivative with respect to w.
func (o *viceObjective) logPrior(w float64) (float64, float64) {
	ra, d, e := o.priorResp(w)
	// log p = log((1−π)·N(w;0,slab²)) + softplus(d).
	lb := o.logSlab - 0.5*w*w*o.invSlab2
	return lb + math.Max(d, 0) + math.Log1p(e), -w * (ra*o.invSpike2 + (1-ra)*o.invSlab2)
}

// eval returns the negative log-likelihood part of the negative ELBO
// estimate at (mu, logSigma) for the noise eps and the batch and, when
// wantKL is set, the complexity part (1/N_train)·Σ(log q(w) − log p(w))
// (otherwise NaN). When gMu and gLogSigma are not nil it writes the gradient
// of their sum into them. The result does not depend on the number of
// workers.
func (o *viceObjective) eval(mu, logSigma, eps []float64, batch []Triplet, gMu, gLogSigma []float64, wantKL bool) (nll, kl float64) {
	n, p := o.n, o.p
	o.workers.split(n*p, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			sg := math.Exp(logSigma[i])
			w := mu[i] + sg*eps[i]
			o.sig[i] = sg
			o.w[i] = w
			o.x[i] = math.Max(w, 0)
		}
	})
	nb := len(batch)
	o.workers.split(nb, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			t := batch[b]
			xi := o.x[int(t.I)*p : int(t.I)*p+p]
			xj := o.x[int(t.J)*p : int(t.J)*p+p]
			xk := o.x[int(t.K)*p : int(t.K)*p+p]
			var sij, sik, sjk float64
			for a := 0; a < p; a++ {
				sij += xi[a] * xj[a]
				sik += xi[a] * xk[a]
				sjk += xj[a] * xk[a]
			}
			ls := LogSoftmax3([3]float64{sij, sik, sjk}, 1)
			o.tl[b] = -ls[0]
			if gMu == nil {
				continue
			}
			g0, g1, g2 := math.Exp(ls[0])-1, math.Exp(ls[1]), math.Exp(ls[2])
			gt := o.gt[b*3*p : (b+1)*3*p]
			gi, gj, gk := gt[:p], gt[p:2*p], gt[2*p:]
			for a := 0; a < p; a++ {
				gi[a] = g0*xj[a] + g1*xk[a]
				gj[a] = g0*xi[a] + g2*xk[a]
				gk[a] = g1*xi[a] + g2*xj[a]
			}
		}
	})
	for b := 0; b < nb; b++ {
		nll += o.tl[b]
	}
	nll /= float64(nb)

	grad := gMu != nil
	if grad {
		// Scatter per-triplet gradients in triplet order, in parallel over
		// column blocks, so the sums do not depend on scheduling.
		for i := range o.gx {
			o.gx[i] = 0
		}
		o.workers.split(p, func(lo, hi int) {
			for b := 0; b < nb; b++ {
				t := batch[b]
				gt := o.gt[b*3*p : (b+1)*3*p]
				for r, it := range [3]int32{t.I, t.J, t.K} {
					dst := o.gx[int(it)*p : int(it)*p+p]
					src := gt[r*p : r*p+p]
					for a := lo; a < hi; a++ {
						dst[a] += src[a]
					}
				}
			}
		})
	}
	invB := 1 / float64(nb)
	invN := 1 / float64(o.nTrain)
	const halfLog2Pi = 0.9189385332046727
	o.workers.split(n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			var term float64
			for i := r * p; i < r*p+p; i++ {
				w, e := o.w[i], eps[i]
				var dlp float64
				if wantKL {
					var lp float64
					lp, dlp = o.logPrior(w)
					// log q(w) = −log σ − ε²/2 − log√(2π) for w = μ + σε.
					term += -logSigma[i] - 0.5*e*e - halfLog2Pi - lp
				} else {
					ra, _, _ := o.priorResp(w)
					dlp = -w * (ra*o.invSpike2 + (1-ra)*o.invSlab2)
				}
				if !grad {
					continue
				}
				gw := -invN * dlp
				if w > 0 {
					gw += invB * o.gx[i]
				}
				gMu[i] = gw
				// The pathwise derivative of log q(w) in log σ is −1.
				gLogSigma[i] = gw*o.sig[i]*e - invN
			}
			o.rowTerm[r] = term
		}
	})
	if !wantKL {
		return nll, math.NaN()
	}
	for _, v := range o.rowTerm {
		kl += v
	}
	return nll, invN * kl
}

// viceSampleEps fills eps with standard-normal noise from the stream of
// (domain, step) of seed, one sub-stream per row, in parallel.
func viceSampleEps(eps []float64, n, p int, seed int64, domain, step uint64, workers pool) {
	workers.split(n, func(lo, hi int) {
		var pcg rand.PCG
		rng := rand.New(&pcg)
		for r := lo; r < hi; r++ {
			viceSeed(&pcg, seed, domain, step, uint64(r))
			for i := r * p; i < r*p+p; i++ {
				eps[i] = rng.NormFloat64()
			}
		}
	})
}

// viceCheckTriplets reports the first triplet with an item outside [0,n).
func viceCheckTriplets(n int, ts []Triplet) error {
	for a, t := range ts {
		if t.I < 0 || t.J < 0 || t.K < 0 || int(t.I) >= n || int(t.J) >= n || int(t.K) >= n {
			return fmt.Errorf("triplet %d (%d,%d,%d) has an item outside [0,%d)", a, t.I, t.J, t.K, n)
		}
	}
	return nil
}

// FitVICE fits VICE to n items from the training triplets (K the odd one
// out) by maximising the ELBO with Adam and the reparameterisation trick.
// Each step draws fresh noise ε for the whole embedding, forms
// x = ReLU(μ + σ⊙ε) and descends the mean negative log-likelihood of a
// minibatch plus (1/len(train))·Σ(log q(w) − log p(w)), the per-triplet share
// of the Monte-Carlo KL to the spike-and-slab prior. Means start at
// |N(0,1)|·0.5/√Dim and log standard deviations at InitLogSigma. The
// result depends only on the inputs and cfg.Seed.
func FitVICE(n int, train []Triplet, cfg HumanModelConfig) (*VICE, VICEStats, error) {
	start := time.Now()
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, VICEStats{}, fmt.Errorf("fit vice: %w", err)
	}
	if n < 3 {
		return nil, VICEStats{}, fmt.Errorf("fit vice: %d items, want at least 3", n)
	}
	if len(train) == 0 {
		return nil, VICEStats{}, errors.New("fit vice: no training triplets")
	}
	if err := viceCheckTriplets(n, train); err != nil {
		return nil, VICEStats{}, fmt.Errorf("fit vice: %w", err)
	}
	p := cfg.Dim
	np := n * p
	params := make([]float64, 2*np)
	mu, logSigma := params[:np], params[np:]
	{
		var pcg rand.PCG
		viceSeed(&pcg, cfg.Seed, viceStreamInit, 0, 0)
		rng := rand.New(&pcg)
		scale := 0.5 / math.Sqrt(float64(p))
		for i := range mu {
			mu[i] = math.Abs(rng.NormFloat64()) * scale
			logSigma[i] = cfg.InitLogSigma
		}
	}
	bs := min(cfg.BatchSize, len(train))
	obj := newVICEObjective(n, p, len(train), bs, cfg)
	grad := make([]float64, 2*np)
	acc := make([]float64, 2*np)
	eps := make([]float64, np)
	opt := NewAdam(cfg.LR)
	order := make([]int, len(train))
	for i := range order {
		order[i] = i
	}
	batch := make([]Triplet, 0, bs)
	var st VICEStats
	step := 0
	for ep := 0; ep < cfg.Epochs; ep++ {
		var pcg rand.PCG
		viceSeed(&pcg, cfg.Seed, viceStreamOrder, uint64(ep), 0)
		rand.New(&pcg).Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		var sumNLL, lastKL float64
		for lo := 0; lo < len(order); lo += bs {
			hi := min(lo+bs, len(order))
			batch = batch[:0]
			for _, a := range order[lo:hi] {
				batch = append(batch, train[a])
			}
			for i := range acc {
				acc[i] = 0
			}
			for s := 0; s < cfg.TrainSamples; s++ {
				viceSampleEps(eps, n, p, cfg.Seed, viceStreamTrain, uint64(step*cfg.TrainSamples+s), pool(cfg.Workers))
				last := hi == len(order) && s == 0
				nll, kl := obj.eval(mu, logSigma, eps, batch, grad[:np], grad[np:], last)
				sumNLL += nll * float64(len(batch)) / float64(cfg.TrainSamples)
				if last {
					lastKL = kl
				}
				for i, g := range grad {
					acc[i] += g
				}
			}
			if cfg.TrainSamples > 1 {
				inv := 1 / float64(cfg.TrainSamples)
				for i := range acc {
					acc[i] *= inv
				}
			}
			opt.Step(params, acc)
			step++
		}
		nl := sumNLL / float64(len(train))
		l := nl + lastKL
		if math.IsNaN(l) || math.IsInf(l, 0) {
			return nil, VICEStats{}, fmt.Errorf("fit vice: loss diverged in epoch %d", ep)
		}
		st.EpochLoss = append(st.EpochLoss, l)
		st.EpochNLL = append(st.EpochNLL, nl)
	}
	v := &VICE{N: n, Dim: p, Mu: make([]float32, np), LogSigma: make([]float32, np)}
	for i := 0; i < np; i++ {
		v.Mu[i] = float32(mu[i])
		v.LogSigma[i] = float32(logSigma[i])
	}
	st.Steps = step
	st.Duration = time.Since(start)
	return v, st, nil
}

// sampleRow writes the ReLU of sample s of row r of the embedding into dst,
// using the prediction stream of seed.
func (v *VICE) sampleRow(dst []float64, rng *rand.Rand, pcg *rand.PCG, seed int64, s, r int) {
	viceSeed(pcg, seed, viceStreamPredict, uint64(s), uint64(r))
	p := v.Dim
	mu, ls := v.Mu[r*p:r*p+p], v.LogSigma[r*p:r*p+p]
	for a := range dst {
		w := float64(mu[a]) + math.Exp(float64(ls[a]))*rng.NormFloat64()
		dst[a] = math.Max(w, 0)
	}
}

// Predict returns the Monte-Carlo posterior predictive distribution of the
// triplet in Softmax3 order (index 0: K is odd, 1: J is odd, 2: I is odd),
// averaging softmax(s_ij, s_ik, s_jk) over samples joint draws of the
// embedding. Sample s of item r is drawn from a stream fixed by (seed, s, r),
// so Predict and PredictBatch agree exactly. samples < 1 means 1.
func (v *VICE) Predict(t Triplet, samples int, seed int64) [3]float64 {
	samples = max(samples, 1)
	p := v.Dim
	var pcg rand.PCG
	rng := rand.New(&pcg)
	xi, xj, xk := make([]float64, p), make([]float64, p), make([]float64, p)
	var out [3]float64
	for s := 0; s < samples; s++ {
		v.sampleRow(xi, rng, &pcg, seed, s, int(t.I))
		v.sampleRow(xj, rng, &pcg, seed, s, int(t.J))
		v.sampleRow(xk, rng, &pcg, seed, s, int(t.K))
		pr := Softmax3(viceDots(xi, xj, xk), 1)
		for c := range out {
			out[c] += pr[c]
		}
	}
	for c := range out {
		out[c] /= float64(samples)
	}
	return out
}

// PredictBatch returns Predict for every triplet, drawing each sample of the
// whole embedding once and sharing it across triplets. It uses up to
// GOMAXPROCS goroutines and its result does not depend on their number.
// Triplets with items outside [0,N) are an error.
func (v *VICE) PredictBatch(ts []Triplet, samples int, seed int64) ([][3]float64, error) {
	if err := viceCheckTriplets(v.N, ts); err != nil {
		return nil, fmt.Errorf("vice predict: %w", err)
	}
	samples = max(samples, 1)
	n, p := v.N, v.Dim
	x := make([]float64, n*p)
	out := make([][3]float64, len(ts))
	for s := 0; s < samples; s++ {
		allProcs.split(n, func(lo, hi int) {
			var pcg rand.PCG
			rng := rand.New(&pcg)
			for r := lo; r < hi; r++ {
				v.sampleRow(x[r*p:r*p+p], rng, &pcg, seed, s, r)
			}
		})
		allProcs.split(len(ts), func(lo, hi int) {
			for b := lo; b < hi; b++ {
				t := ts[b]
				pr := Softmax3(viceLogits(x, p, t), 1)
				for c := range pr {
					out[b][c] += pr[c]
				}
			}
		})
	}
	for b := range out {
		for c := range out[b] {
			out[b][c] /= float64(samples)
		}
	}
	return out, nil
}

// viceDots returns (xi·xj, xi·xk, xj·xk).
func viceDots(xi, xj, xk []float64) [3]float64 {
	var sij, sik, sjk float64
	for a := range xi {
		sij += xi[a] * xj[a]
		sik += xi[a] * xk[a]
		sjk += xj[a] * xk[a]
	}
	return [3]float64{sij, sik, sjk}
}

// viceLogits returns the similarity logits of t for the n×p matrix x.
func viceLogits(x []float64, p int, t Triplet) [3]float64 {
	return viceDots(x[int(t.I)*p:int(t.I)*p+p], x[int(t.J)*p:int(t.J)*p+p], x[int(t.K)*p:int(t.K)*p+p])
}
