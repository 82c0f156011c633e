package trainer

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
	"github.com/alignet/alignet/stream"
)

// nopPublisher drops triplets (the benchmark times storing, not Kafka,
// unless ALIGNET_TEST_KAFKA_BROKERS is set).
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, []stream.TripletChunk) error { return nil }
func (nopPublisher) Ping(context.Context) error                           { return nil }

// peakRSS returns the process's peak resident set (VmHWM) in bytes.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkTrainerImageNet runs one regeneration of the trainer role at
// ImageNet scale on synthetic data: a generation pool of 1.28M × 768
// embeddings already in Postgres is read, transformed by a 768×768
// teacher, clustered with mini-batch k-means (k = 500), sampled into 10M
// labelled cluster_border triplets and stored as a dataset artifact (and
// published, when ALIGNET_TEST_KAFKA_BROKERS is set). It reports each
// stage's seconds and the peak RSS. Seeding the pool is not timed.
//
//	ALIGNET_BENCH_IMAGENET=1 scripts/test.sh -run '^$' -bench TrainerImageNet -benchtime 1x -timeout 1h ./trainer/
//
// ALIGNET_BENCH_N and ALIGNET_BENCH_TRIPLETS scale it down.
func BenchmarkTrainerImageNet(b *testing.B) {
	if os.Getenv("ALIGNET_BENCH_IMAGENET") == "" {
		b.Skip("set ALIGNET_BENCH_IMAGENET=1")
	}
	n, d, triplets := 1_280_000, 768, int64(10_000_000)
	if v, err := strconv.Atoi(os.Getenv("ALIGNET_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.ParseInt(os.Getenv("ALIGNET_BENCH_TRIPLETS"), 10, 64); err == nil && v > 0 {
		triplets = v
	}
	ctx := context.Background()
	store := dbtest.Open(b, db.Config{MaxConns: 8})
	if _, _, err := store.PutSpace(ctx, "imagenet", d); err != nil {
		b.Fatal(err)
	}
	seedStart := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	centres := make([]float32, 1000*d)
	for i := range centres {
		centres[i] = float32(rng.NormFloat64())
	}
	const chunk = 20000
	ids := make([]string, chunk)
	x := make([]float32, chunk*d)
	for lo := 0; lo < n; lo += chunk {
		m := min(chunk, n-lo)
		for i := 0; i < m; i++ {
			ids[i] = fmt.Sprintf("n%08d.JPEG", lo+i)
			// Clustered data: 1,000 class centres plus noise.
			c := (lo + i) % 1000
			for k := 0; k < d; k++ {
				x[i*d+k] = centres[c*d+k] + 0.5*float32(rng.NormFloat64())
			}
		}
		if _, err := store.UpsertEmbeddings(ctx, "imagenet", ids[:m], x[:m*d]); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("seeded %d × %d embeddings in %v", n, d, time.Since(seedStart).Round(time.Second))
	if _, _, err := store.CreateStudy(ctx, alignet.Study{ID: "imagenet", Task: alignet.TaskOddOneOut, Space: "imagenet"}); err != nil {
		b.Fatal(err)
	}
	if _, err := store.UpdateStudySettings(ctx, "imagenet", func(s alignet.StudySettings) (alignet.StudySettings, error) {
		s.Trainer.Triplets = triplets
		return s, nil
	}); err != nil {
		b.Fatal(err)
	}
	if _, err := store.PutPool(ctx, alignet.Pool{Study: "imagenet", Space: "imagenet"}); err != nil {
		b.Fatal(err)
	}
	p := alignet.TeacherParams{Task: alignet.TaskOddOneOut, D: d, P: d, Mean: 0, Std: 1, Tau: 1, W: make([]float32, d*d), B: make([]float32, d)}
	for k := 0; k < d; k++ {
		p.W[k*d+k] = 1
		p.W[k*d+(k+1)%d] = 0.1
	}
	if _, err := store.InsertTeacherVersion(ctx, alignet.TeacherVersion{Study: "imagenet", Kind: alignet.VersionRefit, Params: p}, 10); err != nil {
		b.Fatal(err)
	}
	var pub Publisher = nopPublisher{}
	if brokers := os.Getenv("ALIGNET_TEST_KAFKA_BROKERS"); brokers != "" {
		tw, err := stream.NewTripletWriter(stream.TripletWriterConfig{Brokers: strings.Split(brokers, ","), Topic: "bench.triplets." + strconv.FormatInt(time.Now().UnixNano(), 36)})
		if err != nil {
			b.Fatal(err)
		}
		defer tw.Close()
		if err := tw.EnsureTopic(ctx); err != nil {
			b.Fatal(err)
		}
		pub = tw
	}
	tr, err := New(Config{Logger: slog.New(slog.DiscardHandler)}, store, AdaptArtifacts[*db.ArtifactWriter](store), pub)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	made, err := tr.Study(ctx, "imagenet", true)
	if err != nil || !made {
		b.Fatalf("regeneration: %v, %v", made, err)
	}
	total := time.Since(start)
	b.StopTimer()
	ds, err := store.GetDataset(ctx, "imagenet", 0)
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range []string{"load", "transform", "cluster", "sample", "store"} {
		b.ReportMetric(ds.Info.Stages[s], s+"-s")
	}
	b.ReportMetric(total.Seconds(), "total-s")
	b.ReportMetric(float64(peakRSS())/(1<<30), "peak-GiB")
	b.ReportMetric(float64(ds.Size)/(1<<20), "dataset-MiB")
	b.Logf("%d triplets over %d items, k=%d (%s): %v total, stages %s, dataset %d bytes, peak RSS %.2f GiB",
		ds.Triplets, ds.Items, ds.Info.Clusters, ds.Info.KMeans, total.Round(time.Millisecond), stageSummary(ds.Info.Stages),
		ds.Size, float64(peakRSS())/(1<<30))
}
