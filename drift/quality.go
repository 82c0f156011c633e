package drift

import "math"

// Bin is one bin of a reliability diagram: the predicted probabilities in
// [Lo, Hi), their mean and the observed frequency of the outcomes they
// predicted.
type Bin struct {
	// Lo and Hi bound the bin.
	Lo, Hi float64
	// Count is the number of predictions in the bin.
	Count int
	// Predicted is their mean probability and Observed the share of them
	// whose outcome happened (both NaN for an empty bin).
	Predicted, Observed float64
}

// Reliability bins every outcome probability of every judgment (classwise
// calibration): probs[j][a] is the model's probability of outcome a of
// judgment j, of which outcomes[j] happened; outcomes with index ≥ k are
// ignored, so k = 2 serves two-alternative tasks. Bins are nbins
// equal-width intervals of [0, 1]. A calibrated model has Observed ≈
// Predicted in every bin.
func Reliability(probs [][3]float64, outcomes []int, k, nbins int) []Bin {
	out := make([]Bin, nbins)
	for b := range out {
		out[b].Lo, out[b].Hi = float64(b)/float64(nbins), float64(b+1)/float64(nbins)
	}
	for j, pr := range probs {
		for a := 0; a < k && a < 3; a++ {
			b := min(max(int(pr[a]*float64(nbins)), 0), nbins-1)
			out[b].Count++
			out[b].Predicted += pr[a]
			if outcomes[j] == a {
				out[b].Observed++
			}
		}
	}
	for b := range out {
		if out[b].Count == 0 {
			out[b].Predicted, out[b].Observed = math.NaN(), math.NaN()
			continue
		}
		out[b].Predicted /= float64(out[b].Count)
		out[b].Observed /= float64(out[b].Count)
	}
	return out
}

// Worker is one worker's agreement with the model: how many of their
// judgments the model predicted.
type Worker struct {
	// ID names the worker.
	ID string
	// Agree counts the judgments the model predicted among N.
	Agree, N int
}

// WorkerOutlier is a worker whose agreement is far below the others'.
type WorkerOutlier struct {
	Worker
	// Pooled is the agreement of every other tested worker together and P
	// the binomial lower tail P(X ≤ Agree) under it.
	Pooled, P float64
}

// LowAgreement flags the workers far below everyone else. Each worker with
// at least minN judgments is tested against the pooled agreement of the
// other such workers, p₋w = Σ_{v≠w} Agree_v / Σ_{v≠w} N_v, with the exact
// one-sided binomial test P(X ≤ Agree_w | N_w, p₋w), and flagged when that
// is below alpha/m, m the number of tested workers (Bonferroni, so the
// chance of flagging anyone in a homogeneous pool is at most alpha). It
// returns the flagged workers, in the order given, and m.
func LowAgreement(ws []Worker, minN int, alpha float64) ([]WorkerOutlier, int) {
	var agree, n, m int
	for _, w := range ws {
		if w.N >= minN {
			agree += w.Agree
			n += w.N
			m++
		}
	}
	var out []WorkerOutlier
	if m < 2 {
		return nil, m
	}
	for _, w := range ws {
		if w.N < minN {
			continue
		}
		pooled := float64(agree-w.Agree) / float64(n-w.N)
		p := BinomialCDF(w.Agree, w.N, pooled)
		if p < alpha/float64(m) {
			out = append(out, WorkerOutlier{Worker: w, Pooled: pooled, P: p})
		}
	}
	return out, m
}
