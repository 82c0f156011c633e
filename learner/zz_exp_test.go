package learner

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
)

// expSoft builds targets from predictions pred (Softmax3 order per fit row).
func expSoft(fit []Triplet, pred [][3]float64, reps []RepeatedTriplet, kappa, alpha float64, repRows bool, repPred func([]Triplet) [][3]float64) ([]Triplet, [][3]float32) {
	counts := map[[3]int32][3]float64{}
	for _, r := range reps {
		key, perm := viceSortedItems(r.Items)
		c := counts[key]
		for s := 0; s < 3; s++ {
			c[s] += float64(r.Counts[perm[s]])
		}
		counts[key] = c
	}
	ts := append([]Triplet(nil), fit...)
	q := make([][3]float32, len(fit))
	for a, t := range fit {
		p := pred[a]
		key, _ := viceSortedItems([3]int32{t.I, t.J, t.K})
		if c, ok := counts[key]; ok {
			cs := [3]float64{c[viceSlotOf(key, t.K)], c[viceSlotOf(key, t.J)], c[viceSlotOf(key, t.I)]}
			tot := cs[0] + cs[1] + cs[2]
			for s := range q[a] {
				q[a][s] = float32((cs[s] + kappa*p[s]) / (tot + kappa))
			}
			continue
		}
		for s := range q[a] {
			q[a][s] = float32((1 - alpha) * p[s])
		}
		q[a][0] += float32(alpha)
	}
	if repRows {
		rt := make([]Triplet, len(reps))
		for a, r := range reps {
			rt[a] = RepeatTriplet(r)
		}
		rp := repPred(rt)
		for a, r := range reps {
			h := [3]float64{float64(r.Counts[2]), float64(r.Counts[1]), float64(r.Counts[0])}
			tot := h[0] + h[1] + h[2]
			var tq [3]float32
			for s := range tq {
				tq[s] = float32((h[s] + kappa*rp[a][s]) / (tot + kappa))
			}
			for c := 0; c < int(tot); c++ {
				ts = append(ts, rt[a])
				q = append(q, tq)
			}
		}
	}
	return ts, q
}

func TestZZExp(t *testing.T) {
	vs := os.Getenv("EXP_VARIANTS")
	if vs == "" {
		t.Skip()
	}
	seed, _ := strconv.Atoi(os.Getenv("EXP_SEED"))
	if seed == 0 {
		seed = 1
	}
	td := loadDistillThings(t)
	s := distillSplitThings(td, uint64(seed))
	ctx := context.Background()
	tcfg := distillProofTeacherConfig()
	lams := distillProofLambdas()
	if e := os.Getenv("EXP_LAMS"); e != "" {
		lams = nil
		for _, x := range strings.Split(e, ",") {
			f, _ := strconv.ParseFloat(x, 64)
			lams = append(lams, f)
		}
	}
	thA, scA, err := SelectLambda(ctx, td.x, td.n, td.d, s.fit, nil, s.val, nil, lams, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	a := distillEvalTeacher(td, s, thA)
	t.Logf("A λ %g scores %+v", thA.Lambda, scA)
	t.Logf("A: acc %.4f NLL %.4f KL %.4f", a.acc, a.repNLL, a.repKL)
	hcfg := distillProofHumanConfig(int64(seed))

	var v *VICE
	getV := func() *VICE {
		if v == nil {
			v, _, err = FitVICE(td.n, s.fit, hcfg)
			if err != nil {
				t.Fatal(err)
			}
		}
		return v
	}
	vpred := func(ts []Triplet) [][3]float64 {
		p, err := getV().PredictBatch(ts, hcfg.PredictSamples, hcfg.Seed)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	apred := func(ts []Triplet) [][3]float64 { return thA.Probs(td.x, td.n, ts) }
	// cross-fitted hard teachers, 2 folds
	var cfA [][3]float64
	var cfT [2]*Teacher
	cfPred := func() [][3]float64 {
		if cfA != nil {
			return cfA
		}
		cfA = make([][3]float64, len(s.fit))
		for f := 0; f < 2; f++ {
			var tr, he []Triplet
			var idx []int
			for i, tt := range s.fit {
				if i%2 == f {
					he = append(he, tt)
					idx = append(idx, i)
				} else {
					tr = append(tr, tt)
				}
			}
			c := tcfg
			c.Lambda = thA.Lambda
			th, _, err := FitTeacher(td.x, td.n, td.d, tr, nil, c)
			if err != nil {
				t.Fatal(err)
			}
			th.Tau = CalibrateTemperature(TaskOddOneOut, th.Logits(td.x, td.n, s.val), nil)
			cfT[f] = th
			p := th.Probs(td.x, td.n, he)
			for a, i := range idx {
				cfA[i] = p[a]
			}
		}
		return cfA
	}
	cfRep := func(ts []Triplet) [][3]float64 {
		cfPred()
		p0, p1 := cfT[0].Probs(td.x, td.n, ts), cfT[1].Probs(td.x, td.n, ts)
		for i := range p0 {
			for k := 0; k < 3; k++ {
				p0[i][k] = (p0[i][k] + p1[i][k]) / 2
			}
		}
		return p0
	}
	mix := func(p, q [][3]float64, w float64) [][3]float64 {
		o := make([][3]float64, len(p))
		for i := range p {
			for k := 0; k < 3; k++ {
				o[i][k] = w*p[i][k] + (1-w)*q[i][k]
			}
		}
		return o
	}
	for _, spec := range strings.Split(vs, ",") {
		// spec: source:alpha:rep  source in vice, a, cf, vice+a, vice+cf
		f := strings.Split(spec, ":")
		alpha, _ := strconv.ParseFloat(f[1], 64)
		rep := len(f) > 2 && f[2] == "r"
		var pred [][3]float64
		var rp func([]Triplet) [][3]float64
		switch f[0] {
		case "vice":
			pred, rp = vpred(s.fit), vpred
		case "a":
			pred, rp = apred(s.fit), apred
		case "cf":
			pred, rp = cfPred(), cfRep
		case "vice+a":
			pred = mix(vpred(s.fit), apred(s.fit), 0.5)
			rp = func(ts []Triplet) [][3]float64 { return mix(vpred(ts), apred(ts), 0.5) }
		case "vice+cf":
			pred = mix(vpred(s.fit), cfPred(), 0.5)
			rp = func(ts []Triplet) [][3]float64 { return mix(vpred(ts), cfRep(ts), 0.5) }
		}
		ts, q := expSoft(s.fit, pred, s.repFit, 3, alpha, rep, rp)
		thB, scB, err := SelectLambda(ctx, td.x, td.n, td.d, ts, q, s.val, nil, lams, tcfg)
		if err != nil {
			t.Fatal(err)
		}
		b := distillEvalTeacher(td, s, thB)
		best := 1e9
		for _, x := range scB {
			best = min(best, x.ValNLL)
		}
		t.Logf("B[%s] λ %g valNLL %.5f (A %.5f): acc %.4f NLL %.4f KL %.4f | dAcc %+.4f dNLL %+.4f dKL %+.4f", spec, thB.Lambda, best, min(scA[0].ValNLL, scA[len(scA)-1].ValNLL), b.acc, b.repNLL, b.repKL, b.acc-a.acc, b.repNLL-a.repNLL, b.repKL-a.repKL)
	}
}
