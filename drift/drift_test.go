package drift

import (
	"math"
	"math/rand/v2"
	"testing"
)

// bernoulli returns n seeded draws with success rate p.
func bernoulli(r *rand.Rand, n int, p float64) []bool {
	xs := make([]bool, n)
	for i := range xs {
		xs[i] = r.Float64() < p
	}
	return xs
}

func TestTwoProportionZFormula(t *testing.T) {
	recent, ref := Proportion{Successes: 30, Trials: 100}, Proportion{Successes: 120, Trials: 200}
	z, p, ok := TwoProportionZ(recent, ref)
	if !ok {
		t.Fatal("undefined")
	}
	p1, p0 := 30.0/100, 120.0/200
	pool := (30.0 + 120) / (100 + 200)
	want := (p1 - p0) / math.Sqrt(pool*(1-pool)*(1.0/100+1.0/200))
	if math.Abs(z-want) > 1e-12 {
		t.Errorf("z = %v, want %v", z, want)
	}
	if math.Abs(p-0.5*math.Erfc(-want/math.Sqrt2)) > 1e-15 {
		t.Errorf("p = %v for z %v", p, want)
	}
	if p >= 0.5 || z >= 0 {
		t.Errorf("a drop gives z %v, p %v", z, p)
	}
	// Φ(−3) is the stated false-alarm rate of the default threshold.
	if got := NormalCDF(DefaultZ); math.Abs(got-0.0013499) > 1e-6 {
		t.Errorf("Φ(-3) = %v", got)
	}
	for _, c := range [][2]Proportion{
		{{0, 0}, {5, 10}},
		{{5, 10}, {0, 0}},
		{{10, 10}, {20, 20}}, // pooled rate 1: nothing varies
	} {
		if _, _, ok := TwoProportionZ(c[0], c[1]); ok {
			t.Errorf("TwoProportionZ(%v, %v) is defined", c[0], c[1])
		}
	}
}

func TestCUSUMFormula(t *testing.T) {
	p0, delta := 0.6, 0.05
	c, err := NewCUSUM(p0, delta, 10000)
	if err != nil {
		t.Fatal(err)
	}
	p1 := p0 - delta
	if c.P1 != p1 || c.H != math.Log(10000) {
		t.Fatalf("cusum %+v", c)
	}
	ws, wf := math.Log(p1/p0), math.Log((1-p1)/(1-p0))
	if c.Weight(true) != ws || c.Weight(false) != wf {
		t.Errorf("weights %v %v, want %v %v", c.Weight(true), c.Weight(false), ws, wf)
	}
	// By hand: F F S F S S S, clipped at zero.
	xs := []bool{false, false, true, false, true, true, true}
	s, peak := 0.0, 0.0
	for _, x := range xs {
		w := wf
		if x {
			w = ws
		}
		s = math.Max(0, s+w)
		peak = math.Max(peak, s)
	}
	final, gotPeak, alarm := c.Run(xs)
	if math.Abs(final-s) > 1e-12 || math.Abs(gotPeak-peak) > 1e-12 || alarm != -1 {
		t.Errorf("Run = %v %v %d, want %v %v -1", final, gotPeak, alarm, s, peak)
	}
	if c.Step(0, true) != 0 {
		t.Errorf("a success from 0 gives %v, want the clip at 0", c.Step(0, true))
	}
	for _, bad := range []struct{ p0, d, arl float64 }{{0, 0.05, 100}, {1, 0.05, 100}, {0.5, 0, 100}, {0.5, 0.1, 1}} {
		if _, err := NewCUSUM(bad.p0, bad.d, bad.arl); err == nil {
			t.Errorf("NewCUSUM(%v) accepted", bad)
		}
	}
	// A shift larger than half the rate is capped at p0/2.
	if c, _ := NewCUSUM(0.1, 0.5, 100); c.P1 != 0.05 {
		t.Errorf("P1 = %v, want 0.05", c.P1)
	}
}

// TestCUSUMInControlARL checks Lorden's bound by simulation: with
// h = ln(ARL0) the mean run length to a false alarm on stationary data is
// at least ARL0.
func TestCUSUMInControlARL(t *testing.T) {
	const arl0, p0, runs, limit = 500.0, 0.6, 60, 20000
	c, err := NewCUSUM(p0, 0.05, arl0)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	total := 0
	for range runs {
		s, n := 0.0, 0
		for n < limit {
			n++
			if s = c.Step(s, r.Float64() < p0); s >= c.H {
				break
			}
		}
		total += n
	}
	mean := float64(total) / runs
	t.Logf("in-control mean run length %.0f (bound %v)", mean, arl0)
	if mean < arl0 {
		t.Errorf("mean run length %.0f is below the bound %v", mean, arl0)
	}
}

func TestCompareStationaryNoAlarm(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const p0 = 0.6
	ref := Count(bernoulli(r, 5000, p0))
	for run := range 50 {
		res := Compare(bernoulli(r, 1000, p0), ref, Config{})
		if !res.Enough || math.IsNaN(res.Z) || res.H == 0 {
			t.Fatalf("run %d: %+v", run, res)
		}
		if res.Change {
			t.Errorf("run %d: stationary data flagged a change: %+v", run, res)
		}
	}
}

func TestCompareShiftAlarms(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const p0, p1, before = 0.6, 0.5, 500
	ref := Count(bernoulli(r, 5000, p0))
	c, _ := NewCUSUM(ref.Rate(), DefaultDelta, DefaultARL0)
	// The expected drift per outcome after the shift, and the delay it
	// implies to reach h (Wald's approximation); allow three times it.
	drift := p1*c.Weight(true) + (1-p1)*c.Weight(false)
	bound := int(3 * c.H / drift)
	for run := range 20 {
		xs := append(bernoulli(r, before, p0), bernoulli(r, 3*bound, p1)...)
		res := Compare(xs, ref, Config{})
		if res.Alarm < 0 {
			t.Fatalf("run %d: no CUSUM alarm after a drop to %v: %+v", run, p1, res)
		}
		if delay := res.Alarm - before; delay > bound {
			t.Errorf("run %d: alarm %d outcomes after the shift, bound %d", run, delay, bound)
		}
		if !res.Change || !res.ZChange {
			t.Errorf("run %d: %+v", run, res)
		}
	}
	// Too few recent outcomes never flag, however bad.
	if res := Compare(make([]bool, 50), ref, Config{}); res.Enough || res.Change {
		t.Errorf("50 failures: %+v", res)
	}
	// No reference, no test.
	if res := Compare(make([]bool, 500), Proportion{}, Config{}); res.Change || !math.IsNaN(res.Z) {
		t.Errorf("no reference: %+v", res)
	}
}

func TestMeanShiftZ(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 6}
	z, ok := MeanShiftZ(xs, 2)
	mean := (1.0 + 2 + 3 + 4 + 6) / 5
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	want := (mean - 2) / (math.Sqrt(ss/4) / math.Sqrt(5))
	if !ok || math.Abs(z-want) > 1e-12 {
		t.Errorf("z = %v, want %v", z, want)
	}
	if _, ok := MeanShiftZ([]float64{1, 1, 1}, 0); ok {
		t.Error("no spread gives a z")
	}
}

func TestBinomialCDF(t *testing.T) {
	choose := func(n, k int) float64 {
		c := 1.0
		for i := 1; i <= k; i++ {
			c = c * float64(n-k+i) / float64(i)
		}
		return c
	}
	for _, c := range []struct {
		x, n int
		p    float64
	}{{0, 10, 0.3}, {3, 10, 0.3}, {7, 20, 0.55}, {19, 20, 0.9}} {
		var want float64
		for k := 0; k <= c.x; k++ {
			want += choose(c.n, k) * math.Pow(c.p, float64(k)) * math.Pow(1-c.p, float64(c.n-k))
		}
		if got := BinomialCDF(c.x, c.n, c.p); math.Abs(got-want) > 1e-12 {
			t.Errorf("BinomialCDF(%d, %d, %v) = %v, want %v", c.x, c.n, c.p, got, want)
		}
	}
	if BinomialCDF(-1, 5, 0.5) != 0 || BinomialCDF(5, 5, 0.5) != 1 {
		t.Error("edges")
	}
}

func TestLowAgreement(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var ws []Worker
	for w := range 40 {
		p := 0.6
		if w == 7 {
			p = 0.2 // one careless worker
		}
		ws = append(ws, Worker{ID: string(rune('a' + w%26)), Agree: Count(bernoulli(r, 150, p)).Successes, N: 150})
	}
	ws = append(ws, Worker{ID: "few", Agree: 0, N: 5}) // too few to test
	out, m := LowAgreement(ws, 20, 0.01)
	if m != 40 {
		t.Errorf("tested %d workers, want 40", m)
	}
	if len(out) != 1 || out[0].Worker != ws[7] {
		t.Fatalf("flagged %+v, want worker 7 only", out)
	}
	// Its pooled rate leaves it out.
	var agree, n int
	for i, w := range ws[:40] {
		if i != 7 {
			agree += w.Agree
			n += w.N
		}
	}
	if out[0].Pooled != float64(agree)/float64(n) || out[0].P != BinomialCDF(ws[7].Agree, 150, out[0].Pooled) {
		t.Errorf("outlier %+v", out[0])
	}
	// A homogeneous pool flags nobody (seeded).
	for run := range 20 {
		var hom []Worker
		for range 40 {
			hom = append(hom, Worker{Agree: Count(bernoulli(r, 100, 0.55)).Successes, N: 100})
		}
		if out, _ := LowAgreement(hom, 20, 0.01); len(out) > 0 {
			t.Errorf("run %d: homogeneous pool flagged %+v", run, out)
		}
	}
}

func TestReliability(t *testing.T) {
	probs := [][3]float64{{0.7, 0.2, 0.1}, {0.15, 0.8, 0.05}, {0.72, 0.18, 0.1}}
	outcomes := []int{0, 0, 1}
	bins := Reliability(probs, outcomes, 3, 10)
	// Bin 7 holds 0.7 (happened) and 0.72 (did not).
	if b := bins[7]; b.Count != 2 || math.Abs(b.Predicted-(0.7+0.72)/2) > 1e-12 || b.Observed != 0.5 {
		t.Errorf("bin 7 %+v", b)
	}
	// Bin 1 holds 0.15 (happened), 0.18 (happened) and 0.1, 0.1 (did not).
	if b := bins[1]; b.Count != 4 || b.Observed != 0.5 {
		t.Errorf("bin 1 %+v", b)
	}
	total := 0
	for _, b := range bins {
		total += b.Count
	}
	if total != 9 {
		t.Errorf("%d predictions binned, want 9", total)
	}
	if !math.IsNaN(bins[4].Predicted) {
		t.Errorf("empty bin %+v", bins[4])
	}
}

func TestQuantile(t *testing.T) {
	xs := []float64{5, 1, 3, 2, 4}
	q := Quantiles(xs, 0, 0.5, 0.9, 1)
	// Type 7: h = q(n−1); x[⌊h⌋] + frac·(x[⌊h⌋+1] − x[⌊h⌋]).
	if q[0] != 1 || q[1] != 3 || math.Abs(q[2]-(4+0.6*(5-4))) > 1e-12 || q[3] != 5 {
		t.Errorf("quantiles %v", q)
	}
	if !math.IsNaN(Quantile(nil, 0.5)) {
		t.Error("empty")
	}
}
