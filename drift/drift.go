// Package drift holds the statistics behind alignet's drift signals: the
// one-sided two-proportion z-test and Page's Bernoulli CUSUM that decide
// whether a recent window of per-judgment outcomes (a model right or wrong
// about a human choice) fell below its reference rate, a one-sample mean
// test for continuous losses, the exact binomial tail that flags workers far
// below everyone else, quantiles and reliability bins. It does no I/O: the
// monitor feeds it plain slices and counts.
//
// # Change points
//
// A signal is a rate p̂₁ = x₁/n₁ over the recent window, compared with a
// reference rate p₀ = x₀/n₀ (for the teacher: its held-out accuracy when the
// current version was stored). Two tests look at it, and a change is flagged
// when the recent window holds at least Config.MinRecent outcomes and either
// fires:
//
//   - Two-proportion z-test (one-sided, for a drop):
//     z = (p̂₁ − p₀) / √(p̄(1−p̄)(1/n₁ + 1/n₀)) with the pooled rate
//     p̄ = (x₁+x₀)/(n₁+n₀). It fires at z < Config.Z (default −3, that is a
//     one-sided p = Φ(−3) ≈ 0.00135).
//   - Bernoulli CUSUM (Page 1954; Reynolds & Stoumbos 1999) over the window's
//     outcomes in time order: S₀ = 0, Sₜ = max(0, Sₜ₋₁ + Wₜ) with the
//     log-likelihood ratio of the designed shifted rate p₁ = p₀ − δ
//     (Config.Delta, default 0.05) against p₀: Wₜ = ln(p₁/p₀) for a success
//     and ln((1−p₁)/(1−p₀)) for a failure. It fires when Sₜ ≥ h with
//     h = ln(ARL₀) (Config.ARL0, default 10,000 outcomes, h ≈ 9.21): by
//     Lorden's bound for likelihood-ratio CUSUMs the in-control average run
//     length is then at least ARL₀ outcomes between false alarms.
package drift

import (
	"errors"
	"math"
	"sort"
)

// Defaults of Config.
const (
	// DefaultZ is the z below which the two-proportion test flags a drop.
	DefaultZ = -3.0
	// DefaultDelta is the drop of the rate the CUSUM is designed to detect.
	DefaultDelta = 0.05
	// DefaultARL0 is the CUSUM's in-control average run length bound, in
	// outcomes.
	DefaultARL0 = 10000.0
	// DefaultMinRecent is the fewest recent outcomes a test is run on.
	DefaultMinRecent = 100
)

// Config sets the change-point tests. Zero fields take the defaults.
type Config struct {
	// Z is the alarm threshold of the two-proportion z statistic.
	// Default -3.
	Z float64
	// Delta is the designed drop p₀ − p₁ of the CUSUM. Default 0.05.
	Delta float64
	// ARL0 is the in-control average run length the CUSUM threshold
	// h = ln(ARL0) guarantees at least. Default 10,000.
	ARL0 float64
	// MinRecent is the fewest recent outcomes the tests run on; fewer
	// report no change. Default 100.
	MinRecent int
}

func (c Config) withDefaults() Config {
	if c.Z == 0 {
		c.Z = DefaultZ
	}
	if c.Delta <= 0 {
		c.Delta = DefaultDelta
	}
	if c.ARL0 <= 1 {
		c.ARL0 = DefaultARL0
	}
	if c.MinRecent <= 0 {
		c.MinRecent = DefaultMinRecent
	}
	return c
}

// Proportion is a count of successes among trials.
type Proportion struct {
	// Successes and Trials are the counts (0 ≤ Successes ≤ Trials).
	Successes, Trials int
}

// Rate returns Successes/Trials, or NaN without trials.
func (p Proportion) Rate() float64 {
	if p.Trials == 0 {
		return math.NaN()
	}
	return float64(p.Successes) / float64(p.Trials)
}

// Count returns the proportion of true values in xs.
func Count(xs []bool) Proportion {
	p := Proportion{Trials: len(xs)}
	for _, x := range xs {
		if x {
			p.Successes++
		}
	}
	return p
}

// FromRate returns the proportion of rate over n trials, rounding the
// successes to the nearest count (for references stored as a rate and a
// count).
func FromRate(rate float64, n int) Proportion {
	if n <= 0 || math.IsNaN(rate) {
		return Proportion{}
	}
	s := int(math.Round(min(max(rate, 0), 1) * float64(n)))
	return Proportion{Successes: s, Trials: n}
}

// NormalCDF returns Φ(z), the standard normal lower tail.
func NormalCDF(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }

// TwoProportionZ returns the z statistic of recent against ref (see the
// package documentation) and its one-sided lower-tail p-value Φ(z). ok is
// false when the statistic is undefined: no recent trials, a reference rate
// without a count and outside (0,1), or a pooled rate of 0 or 1 (both
// windows all successes or all failures, so nothing differs).
func TwoProportionZ(recent Proportion, ref Proportion) (z, p float64, ok bool) {
	if recent.Trials == 0 || ref.Trials == 0 {
		return math.NaN(), math.NaN(), false
	}
	p1, p0 := recent.Rate(), ref.Rate()
	pool := float64(recent.Successes+ref.Successes) / float64(recent.Trials+ref.Trials)
	se := math.Sqrt(pool * (1 - pool) * (1/float64(recent.Trials) + 1/float64(ref.Trials)))
	if !(se > 0) {
		return math.NaN(), math.NaN(), false
	}
	z = (p1 - p0) / se
	return z, NormalCDF(z), true
}

// CUSUM is Page's Bernoulli CUSUM for a drop of a success rate from P0 to
// P1 < P0, with decision threshold H.
type CUSUM struct {
	// P0 is the in-control rate and P1 the designed out-of-control rate.
	P0, P1 float64
	// H is the decision threshold.
	H float64
}

// NewCUSUM returns the CUSUM for a drop of delta from p0 with threshold
// h = ln(arl0). p0 must be in (0,1); p1 = p0 − delta is kept at least
// p0/2, so the weights stay finite.
func NewCUSUM(p0, delta, arl0 float64) (CUSUM, error) {
	if !(p0 > 0 && p0 < 1) {
		return CUSUM{}, errors.New("drift: CUSUM reference rate must be in (0, 1)")
	}
	if !(delta > 0) || !(arl0 > 1) {
		return CUSUM{}, errors.New("drift: CUSUM needs a positive shift and an ARL0 above 1")
	}
	return CUSUM{P0: p0, P1: max(p0-delta, p0/2), H: math.Log(arl0)}, nil
}

// Weight returns the log-likelihood ratio ln(P(x|P1)/P(x|P0)) of one
// outcome.
func (c CUSUM) Weight(success bool) float64 {
	if success {
		return math.Log(c.P1 / c.P0)
	}
	return math.Log((1 - c.P1) / (1 - c.P0))
}

// Step returns max(0, s + Weight(success)).
func (c CUSUM) Step(s float64, success bool) float64 { return max(0, s+c.Weight(success)) }

// Run applies the CUSUM to xs from S = 0 and returns the final statistic,
// its maximum and the index of the first outcome at which it reached H (-1
// if it never did).
func (c CUSUM) Run(xs []bool) (final, peak float64, alarm int) {
	alarm = -1
	for t, x := range xs {
		final = c.Step(final, x)
		peak = max(peak, final)
		if alarm < 0 && final >= c.H {
			alarm = t
		}
	}
	return final, peak, alarm
}

// Result is the outcome of Compare.
type Result struct {
	// Recent and Reference are the compared counts.
	Recent, Reference Proportion
	// Enough reports whether Recent held Config.MinRecent outcomes.
	Enough bool
	// Z and P are the two-proportion statistic and its one-sided p-value
	// (NaN when undefined).
	Z, P float64
	// CUSUM is the CUSUM statistic after the last recent outcome, H its
	// threshold and Alarm the index of the first outcome at which it
	// reached H (-1: never); all zero (Alarm -1) when undefined.
	CUSUM, H float64
	Alarm    int
	// ZChange and CUSUMChange report which test fired; Change is either.
	ZChange, CUSUMChange, Change bool
}

// Compare tests whether the recent outcomes xs (oldest first) fell below
// the reference ref, with both tests of the package documentation. A
// reference with Trials 0 is unusable and reports no change.
func Compare(xs []bool, ref Proportion, cfg Config) Result {
	cfg = cfg.withDefaults()
	r := Result{Recent: Count(xs), Reference: ref, Z: math.NaN(), P: math.NaN(), Alarm: -1}
	r.Enough = r.Recent.Trials >= cfg.MinRecent
	if ref.Trials == 0 {
		return r
	}
	var ok bool
	if r.Z, r.P, ok = TwoProportionZ(r.Recent, ref); ok && r.Enough {
		r.ZChange = r.Z < cfg.Z
	}
	if c, err := NewCUSUM(ref.Rate(), cfg.Delta, cfg.ARL0); err == nil {
		r.CUSUM, _, r.Alarm = c.Run(xs)
		r.H = c.H
		r.CUSUMChange = r.Enough && r.Alarm >= 0
	}
	r.Change = r.ZChange || r.CUSUMChange
	return r
}

// MeanShiftZ returns the one-sample z statistic (x̄ − ref)/(s/√n) of the
// values xs against a reference mean, with the sample standard deviation
// s; ok is false with fewer than two values or no spread. A loss that rose
// gives a positive z.
func MeanShiftZ(xs []float64, ref float64) (z float64, ok bool) {
	n := len(xs)
	if n < 2 || math.IsNaN(ref) {
		return math.NaN(), false
	}
	var mean float64
	for _, x := range xs {
		mean += x
	}
	mean /= float64(n)
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	sd := math.Sqrt(ss / float64(n-1))
	if !(sd > 0) {
		return math.NaN(), false
	}
	return (mean - ref) / (sd / math.Sqrt(float64(n))), true
}

// BinomialCDF returns P(X ≤ x) for X ~ Binomial(n, p), summed exactly in
// log space.
func BinomialCDF(x, n int, p float64) float64 {
	switch {
	case x < 0:
		return 0
	case x >= n:
		return 1
	case p <= 0:
		return 1
	case p >= 1:
		return 0
	}
	lgn, _ := math.Lgamma(float64(n + 1))
	lp, lq := math.Log(p), math.Log1p(-p)
	var sum float64
	for k := 0; k <= x; k++ {
		a, _ := math.Lgamma(float64(k + 1))
		b, _ := math.Lgamma(float64(n - k + 1))
		sum += math.Exp(lgn - a - b + float64(k)*lp + float64(n-k)*lq)
	}
	return min(sum, 1)
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of the ascending values by
// linear interpolation between order statistics (Hyndman and Fan's type
// 7, as numpy's default), or NaN for no values.
func Quantile(sorted []float64, q float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	h := q * float64(n-1)
	lo := int(math.Floor(h))
	if lo >= n-1 {
		return sorted[n-1]
	}
	return sorted[lo] + (h-float64(lo))*(sorted[lo+1]-sorted[lo])
}

// Quantiles sorts a copy of xs and returns its quantiles at qs.
func Quantiles(xs []float64, qs ...float64) []float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	out := make([]float64, len(qs))
	for i, q := range qs {
		out[i] = Quantile(s, q)
	}
	return out
}
