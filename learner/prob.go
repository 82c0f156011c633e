package learner

import "math"

// HardTarget is the one-hot target of an observed choice: index 0, meaning
// the pair (I,J) was kept together (odd-one-out) or J was judged closer to
// the head I (anchor).
var HardTarget = [3]float32{1, 0, 0}

// LogSoftmax3 returns log softmax(l/tau), computed stably with log-sum-exp.
func LogSoftmax3(l [3]float64, tau float64) [3]float64 {
	a, b, c := l[0]/tau, l[1]/tau, l[2]/tau
	m := math.Max(a, math.Max(b, c))
	lse := m + math.Log(math.Exp(a-m)+math.Exp(b-m)+math.Exp(c-m))
	return [3]float64{a - lse, b - lse, c - lse}
}

// OddOneOutLogLik returns log p(K is odd) = log softmax(l/tau)[0] for the
// logits of a triplet (I,J,K).
func OddOneOutLogLik(l [3]float64, tau float64) float64 {
	return LogSoftmax3(l, tau)[0]
}

// logSigmoid returns log(1/(1+exp(−x))) without overflow.
func logSigmoid(x float64) float64 {
	if x >= 0 {
		return -math.Log1p(math.Exp(-x))
	}
	return x - math.Log1p(math.Exp(x))
}

// sigmoid returns 1/(1+exp(−x)) without overflow.
func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// AnchorLogLik returns log p(J judged closer to the head I than K) =
// log sigmoid((s_IJ − s_IK)/tau) for the logits of a triplet (I,J,K).
func AnchorLogLik(l [3]float64, tau float64) float64 {
	return logSigmoid((l[0] - l[1]) / tau)
}

// AnchorProbs returns the anchor-task distribution in the three-slot layout
// used for targets: index 0 is p(J closer), index 1 is p(K closer) and
// index 2 is always 0.
func AnchorProbs(l [3]float64, tau float64) [3]float64 {
	d := (l[0] - l[1]) / tau
	return [3]float64{sigmoid(d), sigmoid(-d), 0}
}

// TaskProbs returns the model distribution over the three outcome slots for
// a task: Softmax3 for odd-one-out and AnchorProbs for anchor.
func TaskProbs(task Task, l [3]float64, tau float64) [3]float64 {
	if task.isAnchor() {
		return AnchorProbs(l, tau)
	}
	return Softmax3(l, tau)
}

// CrossEntropy3 returns the odd-one-out cross-entropy −Σ_a q_a log p_a of
// the target q (normalised to sum to one) against p = softmax(l/tau), and
// its gradient with respect to the logits l, (p − q)/tau.
func CrossEntropy3(l [3]float64, tau float64, q [3]float32) (float64, [3]float64) {
	lp := LogSoftmax3(l, tau)
	qs := float64(q[0]) + float64(q[1]) + float64(q[2])
	var loss float64
	var g [3]float64
	for a := 0; a < 3; a++ {
		qa := float64(q[a]) / qs
		if qa != 0 {
			loss -= qa * lp[a]
		}
		g[a] = (math.Exp(lp[a]) - qa) / tau
	}
	return loss, g
}

// AnchorCrossEntropy returns the anchor cross-entropy −q_0 log p − q_1
// log(1−p) with p = sigmoid((l_0 − l_1)/tau) and q normalised over its first
// two entries, and its gradient with respect to the three logits (the third
// component is always 0).
func AnchorCrossEntropy(l [3]float64, tau float64, q [3]float32) (float64, [3]float64) {
	qs := float64(q[0]) + float64(q[1])
	q0, q1 := float64(q[0])/qs, float64(q[1])/qs
	d := (l[0] - l[1]) / tau
	var loss float64
	if q0 != 0 {
		loss -= q0 * logSigmoid(d)
	}
	if q1 != 0 {
		loss -= q1 * logSigmoid(-d)
	}
	gd := (sigmoid(d) - q0) / tau
	return loss, [3]float64{gd, -gd, 0}
}

// TaskCrossEntropy dispatches to CrossEntropy3 or AnchorCrossEntropy.
func TaskCrossEntropy(task Task, l [3]float64, tau float64, q [3]float32) (float64, [3]float64) {
	if task.isAnchor() {
		return AnchorCrossEntropy(l, tau, q)
	}
	return CrossEntropy3(l, tau, q)
}

// Entropy3 returns the entropy −Σ q_a log q_a of a target distribution
// (normalised to sum to one), with 0·log 0 = 0.
func Entropy3(q [3]float32) float64 {
	qs := float64(q[0]) + float64(q[1]) + float64(q[2])
	var h float64
	for _, v := range q {
		if v > 0 {
			x := float64(v) / qs
			h -= x * math.Log(x)
		}
	}
	return h
}

// KL3 returns KL(q‖softmax(l/tau)) = CrossEntropy3 − Entropy3(q), and its
// gradient with respect to the logits (equal to that of the cross-entropy).
func KL3(l [3]float64, tau float64, q [3]float32) (float64, [3]float64) {
	ce, g := CrossEntropy3(l, tau, q)
	return ce - Entropy3(q), g
}

// KLProbs returns KL(q‖p) for two distributions over three outcomes, with
// 0·log 0 = 0. Entries of p are floored at 1e-300 to keep the result finite.
func KLProbs(q, p [3]float64) float64 {
	var kl float64
	for a := 0; a < 3; a++ {
		if q[a] > 0 {
			kl += q[a] * (math.Log(q[a]) - math.Log(math.Max(p[a], 1e-300)))
		}
	}
	return kl
}

// AddRepGrad accumulates into dz (n×p row-major, float64) the gradient with
// respect to the rows of z of a loss whose gradient with respect to the
// logits (s_IJ, s_IK, s_JK) of triplet t is g.
func AddRepGrad(z []float32, p int, t Triplet, g [3]float64, dz []float64) {
	i, j, k := int(t.I)*p, int(t.J)*p, int(t.K)*p
	zi, zj, zk := z[i:i+p], z[j:j+p], z[k:k+p]
	di, dj, dk := dz[i:i+p], dz[j:j+p], dz[k:k+p]
	for a := 0; a < p; a++ {
		xi, xj, xk := float64(zi[a]), float64(zj[a]), float64(zk[a])
		di[a] += g[0]*xj + g[1]*xk
		dj[a] += g[0]*xi + g[2]*xk
		dk[a] += g[1]*xi + g[2]*xj
	}
}

// TripletLoss returns the cross-entropy of triplet t under representation z
// (n×p) for the given task, temperature and target, and accumulates its
// gradient with respect to z into dz when dz is not nil.
func TripletLoss(task Task, z []float32, p int, t Triplet, tau float64, q [3]float32, dz []float64) float64 {
	loss, g := TaskCrossEntropy(task, Logits(z, p, t), tau, q)
	if dz != nil {
		AddRepGrad(z, p, t, g, dz)
	}
	return loss
}

// logits64 is Logits for a float64 representation.
func logits64(z []float64, p int, t Triplet) [3]float64 {
	zi := z[int(t.I)*p : int(t.I)*p+p]
	zj := z[int(t.J)*p : int(t.J)*p+p]
	zk := z[int(t.K)*p : int(t.K)*p+p]
	var sij, sik, sjk float64
	for a := 0; a < p; a++ {
		xi, xj, xk := zi[a], zj[a], zk[a]
		sij += xi * xj
		sik += xi * xk
		sjk += xj * xk
	}
	return [3]float64{sij, sik, sjk}
}
