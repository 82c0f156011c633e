package learner

import (
	"math"
	"sort"
)

// AllLogits returns the similarity logits of every triplet under the n×p
// representation z, computed in parallel.
func AllLogits(z []float32, p int, ts []Triplet) [][3]float64 {
	out := make([][3]float64, len(ts))
	allProcs.split(len(ts), func(lo, hi int) {
		for a := lo; a < hi; a++ {
			out[a] = Logits(z, p, ts[a])
		}
	})
	return out
}

// Correct reports whether the logits of a triplet predict the observed
// choice strictly: for odd-one-out s_IJ must exceed both s_IK and s_JK, for
// anchor s_IJ must exceed s_IK. Ties count as wrong, so a collapsed
// representation is never credited.
func Correct(task Task, l [3]float64) bool { return correct(task.isAnchor(), l) }

// correct is Correct for the anchor task when anchor is set and for
// odd-one-out otherwise.
func correct(anchor bool, l [3]float64) bool {
	if anchor {
		return l[0] > l[1]
	}
	return l[0] > l[1] && l[0] > l[2]
}

// AccuracyFromLogits returns the fraction of triplets whose logits predict
// the observed choice (see Correct), or NaN for no triplets.
func AccuracyFromLogits(task Task, logits [][3]float64) float64 {
	anchor := task.isAnchor()
	if len(logits) == 0 {
		return math.NaN()
	}
	c := 0
	for _, l := range logits {
		if correct(anchor, l) {
			c++
		}
	}
	return float64(c) / float64(len(logits))
}

// Accuracy returns the fraction of triplets ts whose observed choice is
// predicted strictly by the representation z (n×p); ties count as wrong.
func Accuracy(task Task, z []float32, p int, ts []Triplet) float64 {
	return AccuracyFromLogits(task, AllLogits(z, p, ts))
}

// NLL returns the mean negative log-likelihood of the observed choices
// (index 0) given the logits at temperature tau.
func NLL(task Task, logits [][3]float64, tau float64) float64 {
	return MeanCrossEntropy(task, logits, nil, tau)
}

// MeanCrossEntropy returns the mean cross-entropy of targets (nil means the
// observed hard choices) against the model distribution at temperature tau.
func MeanCrossEntropy(task Task, logits [][3]float64, targets [][3]float32, tau float64) float64 {
	task.check()
	if len(logits) == 0 {
		return math.NaN()
	}
	var s float64
	for a, l := range logits {
		q := HardTarget
		if targets != nil {
			q = targets[a]
		}
		ce, _ := TaskCrossEntropy(task, l, tau, q)
		s += ce
	}
	return s / float64(len(logits))
}

// ReliabilityBin is one bin of a reliability diagram: the predictions whose
// confidence lies in [Lo,Hi), their mean confidence and their accuracy.
type ReliabilityBin struct {
	// Lo and Hi bound the bin's confidence range [Lo,Hi).
	Lo float64 `json:"lo"`
	Hi float64 `json:"hi"`
	// Count is the number of predictions in the bin.
	Count int `json:"count"`
	// Confidence is their mean confidence and Accuracy their accuracy.
	Confidence float64 `json:"confidence"`
	Accuracy   float64 `json:"accuracy"`
}

// ECE returns the expected calibration error of the model's top choice over
// bins equal-width confidence bins (default 10 when bins ≤ 0), and the
// bins. The confidence is the largest outcome probability; the prediction is
// correct when that outcome is the observed one and strictly the largest.
// Empty bins are returned with Count 0 and NaN means.
func ECE(task Task, logits [][3]float64, tau float64, bins int) (float64, []ReliabilityBin) {
	anchor := task.isAnchor()
	if bins <= 0 {
		bins = 10
	}
	out := make([]ReliabilityBin, bins)
	lo := 1.0 / 3
	if anchor {
		lo = 0.5
	}
	for b := range out {
		out[b].Lo = lo + (1-lo)*float64(b)/float64(bins)
		out[b].Hi = lo + (1-lo)*float64(b+1)/float64(bins)
	}
	for _, l := range logits {
		pr := TaskProbs(task, l, tau)
		conf := math.Max(pr[0], math.Max(pr[1], pr[2]))
		b := int((conf - lo) / (1 - lo) * float64(bins))
		b = min(max(b, 0), bins-1)
		out[b].Count++
		out[b].Confidence += conf
		if correct(anchor, l) {
			out[b].Accuracy++
		}
	}
	var ece float64
	for b := range out {
		if out[b].Count == 0 {
			out[b].Confidence, out[b].Accuracy = math.NaN(), math.NaN()
			continue
		}
		c := float64(out[b].Count)
		out[b].Confidence /= c
		out[b].Accuracy /= c
		ece += c / float64(len(logits)) * math.Abs(out[b].Confidence-out[b].Accuracy)
	}
	if len(logits) == 0 {
		ece = math.NaN()
	}
	return ece, out
}

// RepeatTriplet returns the triplet (Items[0], Items[1], Items[2]) whose
// Softmax3 order is (Items[2] odd, Items[1] odd, Items[0] odd).
func RepeatTriplet(r RepeatedTriplet) Triplet {
	return Triplet{I: r.Items[0], J: r.Items[1], K: r.Items[2]}
}

// HumanOddDistribution returns the human distribution over which item of a
// repeated triplet is odd, in Softmax3 order of RepeatTriplet: index 0 is
// Items[2], index 1 Items[1] and index 2 Items[0].
func HumanOddDistribution(r RepeatedTriplet) [3]float64 {
	s := float64(r.Counts[0] + r.Counts[1] + r.Counts[2])
	if s == 0 {
		return [3]float64{1.0 / 3, 1.0 / 3, 1.0 / 3}
	}
	return [3]float64{float64(r.Counts[2]) / s, float64(r.Counts[1]) / s, float64(r.Counts[0]) / s}
}

// KLHuman returns the mean KL(human‖model) over repeated triplets, where
// the human distribution comes from the counts and the model's from the
// representation z (n×p) at temperature tau.
func KLHuman(reps []RepeatedTriplet, z []float32, p int, tau float64) float64 {
	if len(reps) == 0 {
		return math.NaN()
	}
	var s float64
	for _, r := range reps {
		s += KLProbs(HumanOddDistribution(r), Softmax3(Logits(z, p, RepeatTriplet(r)), tau))
	}
	return s / float64(len(reps))
}

// MajorityAgreement returns the fraction of repeated triplets with a strict
// human majority on which the model's odd one out (strictly most probable)
// is the majority's. Triplets without a strict human majority are skipped;
// NaN is returned when none remain.
func MajorityAgreement(reps []RepeatedTriplet, z []float32, p int) float64 {
	agree, total := 0, 0
	for _, r := range reps {
		h := HumanOddDistribution(r)
		hm := strictArgmax(h)
		if hm < 0 {
			continue
		}
		total++
		if strictArgmax(Logits(z, p, RepeatTriplet(r))) == hm {
			agree++
		}
	}
	if total == 0 {
		return math.NaN()
	}
	return float64(agree) / float64(total)
}

// strictArgmax returns the index of the strictly largest entry, or −1 on a
// tie for the maximum.
func strictArgmax(v [3]float64) int {
	best := 0
	for a := 1; a < 3; a++ {
		if v[a] > v[best] {
			best = a
		}
	}
	for a := 0; a < 3; a++ {
		if a != best && v[a] == v[best] {
			return -1
		}
	}
	return best
}

// Levels holds accuracy per abstraction level.
type Levels struct {
	// Coarse is the accuracy on coarse triplets and NCoarse their number.
	Coarse  float64 `json:"coarse"`
	NCoarse int     `json:"n_coarse"`
	// Fine is the accuracy on fine triplets and NFine their number.
	Fine  float64 `json:"fine"`
	NFine int     `json:"n_fine"`
}

// TripletLevel classifies a triplet (pair I,J kept together, K odd) by
// multi-label categories, where two items "share" a category when their
// category lists have at least one entry in common. It returns "fine" when
// some category is shared by all three items, "coarse" when the pair I,J
// shares a category that K does not have and no category is common to all
// three, and "" otherwise.
func TripletLevel(t Triplet, cats [][]int32) string {
	ci, cj, ck := cats[t.I], cats[t.J], cats[t.K]
	pair := intersect(ci, cj)
	if len(pair) == 0 {
		return ""
	}
	if len(intersect(pair, ck)) > 0 {
		return "fine"
	}
	return "coarse"
}

// intersect returns the common entries of two ascending lists.
func intersect(a, b []int32) []int32 {
	var out []int32
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			i++
		case a[i] > b[j]:
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// LevelAccuracy returns the odd-one-out accuracy of z (n×p) on the coarse
// and fine triplets of ts as classified by TripletLevel; cats lists each
// item's categories in ascending order. Levels with no triplets have NaN
// accuracy.
func LevelAccuracy(z []float32, p int, ts []Triplet, cats [][]int32) Levels {
	var lv Levels
	var cc, cf int
	for _, t := range ts {
		if int(t.I) >= len(cats) || int(t.J) >= len(cats) || int(t.K) >= len(cats) {
			continue
		}
		switch TripletLevel(t, cats) {
		case "coarse":
			lv.NCoarse++
			if Correct(TaskOddOneOut, Logits(z, p, t)) {
				cc++
			}
		case "fine":
			lv.NFine++
			if Correct(TaskOddOneOut, Logits(z, p, t)) {
				cf++
			}
		}
	}
	lv.Coarse, lv.Fine = math.NaN(), math.NaN()
	if lv.NCoarse > 0 {
		lv.Coarse = float64(cc) / float64(lv.NCoarse)
	}
	if lv.NFine > 0 {
		lv.Fine = float64(cf) / float64(lv.NFine)
	}
	return lv
}

// Ranks returns the 1-based ranks of v with ties given their average rank.
func Ranks(v []float64) []float64 {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return v[idx[a]] < v[idx[b]] })
	r := make([]float64, len(v))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && v[idx[j+1]] == v[idx[i]] {
			j++
		}
		avg := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			r[idx[k]] = avg
		}
		i = j + 1
	}
	return r
}

// Pearson returns the Pearson correlation of two equal-length samples, or
// NaN when either is constant.
func Pearson(a, b []float64) float64 {
	n := float64(len(a))
	if len(a) != len(b) || len(a) < 2 {
		return math.NaN()
	}
	var ma, mb float64
	for i := range a {
		ma += a[i]
		mb += b[i]
	}
	ma /= n
	mb /= n
	var sab, saa, sbb float64
	for i := range a {
		da, db := a[i]-ma, b[i]-mb
		sab += da * db
		saa += da * da
		sbb += db * db
	}
	if saa == 0 || sbb == 0 {
		return math.NaN()
	}
	return sab / math.Sqrt(saa*sbb)
}

// SpearmanRSA returns the Spearman rank correlation (Pearson correlation of
// tie-averaged ranks) between two representational similarity structures
// given as equal-length vectors, normally the upper triangles (without the
// diagonal) of two similarity matrices; see UpperTriangle.
func SpearmanRSA(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.NaN()
	}
	return Pearson(Ranks(a), Ranks(b))
}

// UpperTriangle returns the entries above the diagonal of the n×n
// row-major matrix m, row by row.
func UpperTriangle(m []float64, n int) []float64 {
	out := make([]float64, 0, n*(n-1)/2)
	for i := 0; i < n; i++ {
		out = append(out, m[i*n+i+1:(i+1)*n]...)
	}
	return out
}
