package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/internal/offline"
	"github.com/alignet/alignet/internal/testenv"
)

// BenchmarkPredictTHINGS posts predict requests of 1 and 100 triplets over
// loopback HTTP (auth, JSON in and out, the in-memory teacher) to a study
// of the 1,854 THINGS concepts with CLIP ViT-B/32 embeddings (512-d) and a
// fitted 512×512 teacher, one request at a time, and reports the latency
// percentiles of the requests.
//
//	go test -run '^$' -bench PredictTHINGS -benchtime 2000x ./api/
func BenchmarkPredictTHINGS(b *testing.B) {
	dir := testenv.SharedData(b, "things")
	x, n, d, err := offline.ReadEmbeddings(filepath.Join(dir, "clip_vit_b32.npy"))
	if err != nil {
		b.Fatal(err)
	}
	ids, err := offline.ReadIDs(filepath.Join(dir, "concepts.txt"))
	if err != nil || len(ids) != n {
		b.Fatalf("%d concepts for %d rows: %v", len(ids), n, err)
	}
	e := newEnv(b)
	ctx := context.Background()
	if _, _, err := e.store.PutSpace(ctx, "clip512", d); err != nil {
		b.Fatal(err)
	}
	if _, err := e.store.UpsertEmbeddings(ctx, "clip512", ids, x); err != nil {
		b.Fatal(err)
	}
	if _, _, err := e.store.CreateStudy(ctx, alignet.Study{ID: "things", Task: alignet.TaskOddOneOut, Space: "clip512"}); err != nil {
		b.Fatal(err)
	}
	if _, err := e.store.AddStudyItems(ctx, "things", ids); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, d*d)
	for i := range w {
		w[i] = float32(0.02 * rng.NormFloat64())
	}
	for a := range d {
		w[a*d+a] += 1
	}
	e.store.setState(alignet.TeacherState{Study: "things", Status: alignet.TeacherFitted, UpdatedAt: time.Now().UTC(),
		Params: alignet.TeacherParams{Task: alignet.TaskOddOneOut, D: d, P: d, W: w, B: make([]float32, d), Mean: 0, Std: 0.05, Tau: 0.5, Lambda: 0.1}})
	base := e.serve()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

	for _, size := range []int{1, 100} {
		bodies := make([][]byte, 64)
		for i := range bodies {
			ts := make([][3]string, size)
			for k := range ts {
				p := rng.Perm(n)[:3]
				ts[k] = [3]string{ids[p[0]], ids[p[1]], ids[p[2]]}
			}
			bodies[i], _ = json.Marshal(map[string]any{"triplets": ts})
		}
		post := func(body []byte) {
			req, _ := http.NewRequest("POST", base+"/v1/studies/things/predict", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+e.read)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		b.Run("triplets="+strconv.Itoa(size), func(b *testing.B) {
			for _, body := range bodies { // warm the cache and the connection
				post(body)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				post(bodies[i%len(bodies)])
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			at := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond) }
			b.ReportMetric(at(0.5), "p50-ms")
			b.ReportMetric(at(0.99), "p99-ms")
			b.ReportMetric(float64(size), "triplets/op")
		})
	}
}
