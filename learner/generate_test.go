package learner

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

func randomReps(n, p int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 9))
	z := make([]float32, n*p)
	for i := range z {
		z[i] = float32(rng.NormFloat64())
	}
	return z
}

func groupsOf(n, k int, seed uint64) []int32 {
	rng := rand.New(rand.NewPCG(seed, 10))
	g := make([]int32, n)
	for i := range g {
		g[i] = int32(rng.IntN(k))
	}
	return g
}

func TestGeneratorStrategiesObeyDefinitions(t *testing.T) {
	const n, p = 400, 8
	z := randomReps(n, p, 1)
	clusters := groupsOf(n, 10, 2)
	labels := groupsOf(n, 6, 3)
	labels[0], labels[1] = -1, -1 // unlabelled items are never drawn
	for _, s := range Strategies() {
		g, err := NewGenerator(z, n, p, GeneratorConfig{Strategy: s, Seed: 4, Clusters: clusters, Labels: labels})
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		idx, sims := g.Next(3000)
		for tr := 0; tr < 3000; tr++ {
			a, b, c := idx[3*tr], idx[3*tr+1], idx[3*tr+2]
			if a == b || a == c || b == c {
				t.Fatalf("%s: repeated item in %v", s, idx[3*tr:3*tr+3])
			}
			var grp []int32
			switch s {
			case StrategyClusterBorder, StrategyWithinCluster:
				grp = clusters
			case StrategyRandom:
			default:
				grp = labels
				if labels[a] < 0 || labels[b] < 0 || labels[c] < 0 {
					t.Fatalf("%s: drew an unlabelled item", s)
				}
			}
			if grp != nil {
				same := 0
				if grp[a] == grp[b] {
					same++
				}
				if grp[a] == grp[c] {
					same++
				}
				if grp[b] == grp[c] {
					same++
				}
				want := map[string]int{StrategyClusterBorder: 1, StrategyClassBorder: 1,
					StrategyWithinCluster: 3, StrategyWithinClass: 3, StrategyBetweenClass: 0}[s]
				if same != want {
					t.Fatalf("%s: %d equal-group pairs in %v, want %d", s, same, idx[3*tr:3*tr+3], want)
				}
			}
			// The stored similarities are the teacher's logits of the stored
			// order, and the odd one (last) is the teacher's argmax choice.
			l := Logits(z, p, Triplet{a, b, c})
			for m := 0; m < 3; m++ {
				if math.Abs(l[m]-float64(sims[3*tr+m])) > 1e-4*(1+math.Abs(l[m])) {
					t.Fatalf("%s: sims %v, Logits %v", s, sims[3*tr:3*tr+3], l)
				}
			}
			if sims[3*tr] < sims[3*tr+1] || sims[3*tr] < sims[3*tr+2] {
				t.Fatalf("%s: first similarity %v is not the largest", s, sims[3*tr:3*tr+3])
			}
		}
	}
}

func TestGeneratorClusterBorderOddIsOutsider(t *testing.T) {
	// With tight, well-separated clusters the teacher's odd one out of a
	// cluster_border triplet is the item from the other cluster.
	const n, d, k = 600, 12, 8
	x, _ := plantedClusters(n, d, k, 0.3, 21)
	// Centre the data so dot products behave like negative distances.
	mean := make([]float64, d)
	for i := 0; i < n; i++ {
		for q := 0; q < d; q++ {
			mean[q] += float64(x[i*d+q]) / n
		}
	}
	for i := 0; i < n; i++ {
		for q := 0; q < d; q++ {
			x[i*d+q] -= float32(mean[q])
		}
	}
	res := kmeansLabels(t, x, n, d, k)
	g, err := NewGenerator(x, n, d, GeneratorConfig{Seed: 8, Clusters: res})
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := g.Next(2000)
	agree := 0
	for tr := 0; tr < 2000; tr++ {
		a, b, c := idx[3*tr], idx[3*tr+1], idx[3*tr+2]
		if res[a] == res[b] && res[c] != res[a] {
			agree++
		}
	}
	if frac := float64(agree) / 2000; frac < 0.8 {
		t.Errorf("outsider is the teacher's odd one in %.2f of triplets, want ≥ 0.8", frac)
	}
}

// kmeansLabels clusters x with Lloyd k-means for a test.
func kmeansLabels(t *testing.T, x []float32, n, d, k int) []int32 {
	t.Helper()
	res, err := KMeans(t.Context(), x, n, d, KMeansConfig{K: k, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	return res.Assign
}

func TestGeneratorStreamingMatchesOneShot(t *testing.T) {
	const n, p = 300, 6
	z := randomReps(n, p, 5)
	clusters := groupsOf(n, 7, 6)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(1)
	g1, _ := NewGenerator(z, n, p, GeneratorConfig{Seed: 42, Clusters: clusters, Workers: 1})
	allIdx, allSims := g1.Next(5000)
	runtime.GOMAXPROCS(4)
	g2, _ := NewGenerator(z, n, p, GeneratorConfig{Seed: 42, Clusters: clusters, Workers: 4})
	var idx []int32
	var sims []float32
	for _, c := range []int{1, 999, 1024, 3, 2000, 973} {
		a, b := g2.Next(c)
		idx = append(idx, a...)
		sims = append(sims, b...)
	}
	if !slices.Equal(idx, allIdx) || !slices.Equal(sims, allSims) {
		t.Fatal("chunked stream differs from one-shot generation")
	}
	if tr, s := g1.At(1234); tr != (Triplet{allIdx[3*1234], allIdx[3*1234+1], allIdx[3*1234+2]}) || s[0] != allSims[3*1234] {
		t.Errorf("At(1234) = %v %v disagrees with the stream", tr, s)
	}
	g3, _ := NewGenerator(z, n, p, GeneratorConfig{Seed: 43, Clusters: clusters})
	other, _ := g3.Next(5000)
	if slices.Equal(other, allIdx) {
		t.Error("different seeds gave identical triplets")
	}
}

func TestGeneratorRejectsBadConfig(t *testing.T) {
	z := randomReps(10, 2, 1)
	one := make([]int32, 10)
	cases := []GeneratorConfig{
		{Strategy: "nope"},
		{Strategy: StrategyClusterBorder},                                 // no clusters
		{Strategy: StrategyClusterBorder, Clusters: one},                  // one cluster only
		{Strategy: StrategyBetweenClass, Labels: groupsOf(10, 2, 1)[:10]}, // may have < 3 classes
		{Strategy: StrategyWithinClass},                                   // no labels
	}
	for i, c := range cases {
		if i == 3 {
			c.Labels = []int32{0, 0, 0, 0, 0, 1, 1, 1, 1, 1}
		}
		if _, err := NewGenerator(z, 10, 2, c); err == nil {
			t.Errorf("case %d (%+v): no error", i, c.Strategy)
		}
	}
}
