package online

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/offline"
)

func expData(t *testing.T) (x []float32, n, d int, pool, ext []learner.Triplet) {
	x, n, d, err := offline.ReadEmbeddings("../../shared/data/things/clip_vit_b32.npy")
	if err != nil {
		t.Skip(err)
	}
	ts, _, err := offline.ReadTriplets("../../shared/data/things/triplets_train.txt", n)
	if err != nil {
		t.Fatal(err)
	}
	for i, tr := range ts {
		if (i+1)%10 == 0 {
			ext = append(ext, tr)
			continue
		}
		if alignet.HeldOut("things", fmt.Sprintf("t%06d", i), 0.1) {
			continue
		}
		pool = append(pool, tr)
	}
	return
}

func TestExpRefit(t *testing.T) {
	if os.Getenv("EXP") != "refit" {
		t.Skip()
	}
	x, n, d, pool, ext := expData(t)
	train, val := offline.SplitTriplets(pool, 0.1, 1)
	start := time.Now()
	cfg := learner.TeacherConfig{MaxIter: 60, Workers: 1}
	tch, scores, err := learner.SelectLambda(context.Background(), x, n, d, train, nil, val, nil, []float64{0.3, 0.1, 0.03}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("select %v: lambda %v tau %v scores %+v", time.Since(start), tch.Lambda, tch.Tau, scores)
	z := tch.Transform(x, n)
	t.Logf("ext acc %.4f (pool %d train %d)", learner.Accuracy("odd-one-out", z, tch.P, ext), len(pool), len(train))
	// refit on all pool
	c := cfg
	c.Lambda = tch.Lambda
	c.Init = tch
	c.MaxIter = 20
	start = time.Now()
	t2, _, err := learner.FitTeacher(x, n, d, pool, nil, c)
	if err != nil {
		t.Fatal(err)
	}
	z = t2.Transform(x, n)
	t.Logf("full refit %v ext acc %.4f", time.Since(start), learner.Accuracy("odd-one-out", z, tch.P, ext))
}

func TestExpOnline(t *testing.T) {
	if os.Getenv("EXP") != "online" {
		t.Skip()
	}
	x, n, d, pool, ext := expData(t)
	mean, std := learner.MeanStd(x)
	tch := &learner.Teacher{D: d, P: d, Mean: mean, Std: std, Tau: 1, Lambda: 0.1, Task: "odd-one-out"}
	// scale
	rng := rand.New(rand.NewPCG(1, 2))
	var s, ss float64
	m := 0
	for a := 0; a < 20000; a++ {
		tr := pool[rng.IntN(len(pool))]
		l := [3]float64{}
		for _, pr := range [][2]int32{{tr.I, tr.J}, {tr.I, tr.K}, {tr.J, tr.K}} {
			_ = pr
		}
		xi, xj, xk := x[int(tr.I)*d:int(tr.I+1)*d], x[int(tr.J)*d:int(tr.J+1)*d], x[int(tr.K)*d:int(tr.K+1)*d]
		for q := 0; q < d; q++ {
			a, b, c := (float64(xi[q])-mean)/std, (float64(xj[q])-mean)/std, (float64(xk[q])-mean)/std
			l[0] += a * b
			l[1] += a * c
			l[2] += b * c
		}
		for _, v := range []float64{l[0] - l[1], l[0] - l[2], l[1] - l[2]} {
			s += v
			ss += v * v
			m++
		}
	}
	mu := s / float64(m)
	c := math.Sqrt(1 / math.Sqrt(ss/float64(m)-mu*mu))
	tch.W = make([]float64, d*d)
	for a := 0; a < d; a++ {
		tch.W[a*d+a] = c
	}
	tch.B = make([]float64, d)
	lr := 1e-3
	if v := os.Getenv("LR"); v != "" {
		fmt.Sscan(v, &lr)
	}
	bs := 1024
	if v := os.Getenv("BS"); v != "" {
		fmt.Sscan(v, &bs)
	}
	var st learner.AdamState
	start := time.Now()
	decay := 0.0
	if v := os.Getenv("DECAY"); v != "" {
		fmt.Sscan(v, &decay)
	}
	emaB := []float64{0.98, 0.995}
	emas := make([]*learner.Teacher, len(emaB))
	for i := range emas {
		emas[i] = tch.Clone()
	}
	steps := 2000
	for step := 0; step <= steps; step++ {
		if step%250 == 0 {
			z := tch.Transform(x, n)
			msg := fmt.Sprintf("step %d (%v) ext acc %.4f", step, time.Since(start).Round(time.Millisecond), learner.Accuracy("odd-one-out", z, tch.P, ext))
			for i, e := range emas {
				z := e.Transform(x, n)
				msg += fmt.Sprintf(" ema%.3f %.4f", emaB[i], learner.Accuracy("odd-one-out", z, tch.P, ext))
			}
			t.Log(msg)
		}
		cur := lr
		if decay > 0 {
			cur = lr / (1 + float64(step)/decay)
		}
		lr := cur
		batch := make([]learner.Triplet, bs)
		for a := range batch {
			batch[a] = pool[rng.IntN(len(pool))]
		}
		if _, err := tch.Update(x, n, batch, nil, nil, nil, learner.OnlineConfig{LR: lr, BatchSize: bs, ReplayFraction: -1, Seed: uint64(step)}, &st); err != nil {
			t.Fatal(err)
		}
		for i, e := range emas {
			b := emaB[i]
			for k := range e.W {
				e.W[k] = b*e.W[k] + (1-b)*tch.W[k]
			}
			for k := range e.B {
				e.B[k] = b*e.B[k] + (1-b)*tch.B[k]
			}
		}
	}
}
