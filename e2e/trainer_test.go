package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/client"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/internal/offline"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
)

// api sends an authenticated JSON request and decodes the answer into out
// (when not nil), failing the test unless the status is want.
func (s *stack) api(base, method, path string, in, out any, want int) {
	s.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, body)
	req.Header.Set("Authorization", "Bearer "+s.adminKey)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		s.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// download fetches path whole, checking Content-Length, and then its
// second half with a Range request, which must be a 206 of the same bytes.
func (s *stack) download(base, path string) []byte {
	s.t.Helper()
	get := func(rng string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.adminKey)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			s.t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			s.t.Fatal(err)
		}
		return resp, b
	}
	resp, all := get("")
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(all)) || resp.Header.Get("Accept-Ranges") != "bytes" {
		s.t.Fatalf("GET %s: %d, Content-Length %d for %d bytes, Accept-Ranges %q", path, resp.StatusCode, resp.ContentLength, len(all), resp.Header.Get("Accept-Ranges"))
	}
	half := len(all) / 2
	resp, part := get(fmt.Sprintf("bytes=%d-", half))
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, all[half:]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", half, len(all)-1, len(all)) {
		s.t.Fatalf("ranged GET %s: %d, %d bytes, Content-Range %q", path, resp.StatusCode, len(part), resp.Header.Get("Content-Range"))
	}
	return all
}

// setTrainer merges settings into the study's trainer settings, as PATCH
// /v1/studies/{study} does.
func (s *stack) setTrainer(study string, settings map[string]any) {
	s.t.Helper()
	s.setSettings(study, map[string]any{"trainer": settings})
}

// setSettings merges a settings patch into the study's settings, as PATCH
// /v1/studies/{study} does.
func (s *stack) setSettings(study string, patch map[string]any) {
	s.t.Helper()
	d := s.openDB()
	raw, _ := json.Marshal(patch)
	if _, err := d.UpdateStudySettings(context.Background(), study, func(cur alignet.StudySettings) (alignet.StudySettings, error) {
		return cur.Patch(raw)
	}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) openDB() *db.DB {
	s.t.Helper()
	d, err := db.Open(context.Background(), db.Config{URL: s.dbURL})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(d.Close)
	return d
}

// fitTeacher fits a teacher offline on the study's stored judgments that
// are not held out and stores it as a refit version, as the learner role
// does after a refit.
func (s *stack) fitTeacher(study, space string, ids []string, x []float32, d int, iters int) alignet.TeacherVersion {
	s.t.Helper()
	ctx := context.Background()
	row := map[string]int32{}
	for i, id := range ids {
		row[id] = int32(i)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, item_a, item_b, item_c, odd FROM judgments WHERE study = $1 ORDER BY id`, study)
	if err != nil {
		s.t.Fatal(err)
	}
	var train []learner.Triplet
	for rows.Next() {
		var id, a, b, c, odd string
		if err := rows.Scan(&id, &a, &b, &c, &odd); err != nil {
			s.t.Fatal(err)
		}
		if alignet.HeldOut(study, id, alignet.DefaultLearnerSettings().HeldOutShare) {
			continue
		}
		var pair []int32
		for _, it := range []string{a, b, c} {
			if it != odd {
				pair = append(pair, row[it])
			}
		}
		train = append(train, learner.Triplet{I: pair[0], J: pair[1], K: row[odd]})
	}
	rows.Close()
	fit, val := offline.SplitTriplets(train, 0.1, 2)
	t, _, err := learner.SelectLambda(ctx, x, len(ids), d, fit, nil, val, nil, []float64{0.1}, learner.TeacherConfig{MaxIter: iters, Seed: 1})
	if err != nil {
		s.t.Fatal(err)
	}
	p := alignet.TeacherParams{Task: alignet.TaskOddOneOut, D: t.D, P: t.P, Mean: t.Mean, Std: t.Std, Tau: t.Tau, Lambda: t.Lambda}
	for _, v := range t.W {
		p.W = append(p.W, float32(v))
	}
	for _, v := range t.B {
		p.B = append(p.B, float32(v))
	}
	v, err := s.openDB().InsertTeacherVersion(ctx, alignet.TeacherVersion{Study: study, Kind: alignet.VersionRefit,
		JudgmentsSeen: int64(len(train)), Params: p, Hyper: alignet.TeacherHyper{Targets: "hard", Seed: 1}}, 100)
	if err != nil {
		s.t.Fatal(err)
	}
	return v
}

// waitStudent waits until the student has a version trained on dataset ds.
func (s *stack) waitStudent(base, study, student string, ds int64, timeout time.Duration) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var b struct {
			Versions []map[string]any `json:"versions"`
		}
		s.api(base, "GET", "/v1/studies/"+study+"/students/"+student, nil, &b, 200)
		if len(b.Versions) > 0 && b.Versions[0]["dataset"].(float64) >= float64(ds) {
			return b.Versions[0]
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("student %s has no version on dataset %d after %v", student, ds, timeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitDataset waits until the study's newest dataset is at least version v.
func (s *stack) waitDataset(base, study string, v int64, timeout time.Duration) alignet.Dataset {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var b struct {
			Datasets []alignet.Dataset `json:"datasets"`
		}
		s.api(base, "GET", "/v1/studies/"+study+"/datasets", nil, &b, 200)
		if len(b.Datasets) > 0 && b.Datasets[0].Version >= v {
			return b.Datasets[0]
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no dataset %d of %s after %v", v, study, timeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestTrainerTHINGS is the end-to-end proof of the trainer on real data
// (THINGS; Hebart et al. 2023, CC-BY 4.0): the server imports the CLIP
// embeddings and 90% of the human triplets, a teacher fitted on them is
// stored as a refit version (what the learner role does), and the trainer
// role, by itself, generates an AligNet dataset over the 1,854 items and
// distils a word2vec student. The student must score clearly above raw
// word2vec on the other 10% of the triplets, and exactly what `alignet
// distill` reaches offline on the downloaded dataset with the same seed.
func TestTrainerTHINGS(t *testing.T) {
	e := setup(t)
	src := filepath.Join("..", "..", "shared", "data", "things")
	if _, err := os.Stat(src); os.IsNotExist(err) {
		t.Skip("shared THINGS data missing")
	}
	dir := t.TempDir()
	abs, _ := filepath.Abs(src)
	for _, f := range []string{"concepts.txt", "clip_vit_b32.npy"} {
		if err := os.Symlink(filepath.Join(abs, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	// 90% to import, the other 10% for the final check.
	in, err := os.Open(filepath.Join(src, "triplets_train.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var imported, held bytes.Buffer
	sc := bufio.NewScanner(in)
	for line := 1; sc.Scan(); line++ {
		w := &imported
		if line%10 == 0 {
			w = &held
		}
		w.WriteString(sc.Text() + "\n")
	}
	in.Close()
	heldPath := filepath.Join(dir, "held.txt")
	if err := os.WriteFile(filepath.Join(dir, "triplets_train.txt"), imported.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(heldPath, held.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	s := newStack(t, e, e.brokers)
	srv := s.startEnv("api,persister,trainer", "ALIGNET_KAFKA_TRIPLETS_TOPIC="+s.topic+".triplets")
	waitReady(t, srv.url())
	run := func(args ...string) string {
		t.Helper()
		var stderr bytes.Buffer
		cmd := exec.Command(e.bin, args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("alignet %s: %v\n%s%s", strings.Join(args, " "), err, out, tail(stderr.String(), 2000))
		}
		return string(out)
	}
	run("import", "things", "--dir", dir, "--server", srv.url(), "--key", s.adminKey)
	nImported := int64(strings.Count(imported.String(), "\n"))
	s.waitCount("things", nImported, 3*time.Minute)
	run("import", "embeddings", "--space", "word2vec", "--npy", filepath.Join(src, "word2vec.npy"), "--ids", filepath.Join(src, "concepts.txt"),
		"--server", srv.url(), "--key", s.adminKey)

	concepts, err := offline.ReadIDs(filepath.Join(src, "concepts.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cats, err := offline.ReadCategories(filepath.Join(src, "categories.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	var labels []map[string]any
	for i, cs := range cats.Items {
		names := []string{}
		for _, c := range cs {
			names = append(names, cats.Names[c])
		}
		labels = append(labels, map[string]any{"id": concepts[i], "labels": names})
	}
	s.api(srv.url(), "POST", "/v1/spaces/clip-vit-b32/labels", map[string]any{"items": labels}, nil, 200)
	// The default strategy mix (cluster_border, k capped at 1854/200 = 9).
	s.setTrainer("things", map[string]any{"triplets": 200000, "min_interval": "1s"})
	// The pool lists the items in file order, so pool indices are the
	// rows of the THINGS matrices.
	var pool map[string]any
	s.api(srv.url(), "PUT", "/v1/studies/things/pool", map[string]any{"space": "clip-vit-b32", "items": concepts}, &pool, 200)
	if pool["size"].(float64) != 1854 {
		t.Fatalf("pool %v", pool)
	}
	s.api(srv.url(), "POST", "/v1/studies/things/students", map[string]any{"id": "w2v", "space": "word2vec"}, nil, 201)

	x, n, d, err := offline.ReadEmbeddings(filepath.Join(src, "clip_vit_b32.npy"))
	if err != nil || n != len(concepts) {
		t.Fatal(err)
	}
	tv := s.fitTeacher("things", "clip-vit-b32", concepts, x, d, 40)
	ds := s.waitDataset(srv.url(), "things", 1, 5*time.Minute)
	if ds.TeacherVersion != tv.Version || ds.Triplets != 200000 || ds.Items != 1854 || ds.Info.Strategies[0].Strategy != "cluster_border" || ds.Info.Clusters != 9 {
		t.Fatalf("dataset %+v", ds)
	}
	ver := s.waitStudent(srv.url(), "things", "w2v", ds.Version, 5*time.Minute)
	t.Logf("student version: %v", ver)

	// The official layout, read as data.py reads it (np.load, no pickle).
	raw := s.download(srv.url(), "/v1/studies/things/datasets/current.npz")
	dsPath := filepath.Join(dir, "dataset.npz")
	if err := os.WriteFile(dsPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := modelfile.LoadDataset(dsPath)
	if err != nil {
		t.Fatal(err)
	}
	if got.Len() != 200000 || len(got.Filenames) != 3*got.Len() {
		t.Fatalf("dataset of %d triplets, %d filenames", got.Len(), len(got.Filenames))
	}
	for r := 0; r < got.Len(); r++ {
		s01, s02, s12 := got.Similarities[3*r], got.Similarities[3*r+1], got.Similarities[3*r+2]
		if s01 < s02 || s01 < s12 {
			t.Fatalf("row %d: similarities %v, s01 not the largest", r, got.Similarities[3*r:3*r+3])
		}
		for k := 0; k < 3; k++ {
			if got.Filenames[3*r+k] != concepts[got.Indices[3*r+k]] {
				t.Fatalf("row %d: filename %q for index %d (%q)", r, got.Filenames[3*r+k], got.Indices[3*r+k], concepts[got.Indices[3*r+k]])
			}
		}
	}

	// The student's head, scored on the 10% never imported, against raw
	// word2vec and against alignet distill run offline on the download.
	headPath := filepath.Join(dir, "head.npz")
	if err := os.WriteFile(headPath, s.download(srv.url(), "/v1/studies/things/students/w2v.npz"), 0o644); err != nil {
		t.Fatal(err)
	}
	w2v := filepath.Join(src, "word2vec.npy")
	eval := func(args ...string) float64 {
		var r struct {
			Accuracy float64 `json:"accuracy"`
		}
		out := run(append([]string{"eval", "--embeddings", w2v, "--triplets", heldPath, "--json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("eval output %q: %v", out, err)
		}
		return r.Accuracy
	}
	rawAcc, studentAcc := eval(), eval("--student", headPath)
	set := alignet.DefaultStudentSettings()
	out := run("distill", "--student", w2v, "--ids", filepath.Join(src, "concepts.txt"), "--dataset", dsPath,
		"--seed", fmt.Sprint(set.Seed), "--epochs", fmt.Sprint(set.Epochs), "--lr", fmt.Sprint(set.LearningRate),
		"--decay", fmt.Sprint(set.Decay), "--batch", fmt.Sprint(set.BatchSize), "--val", fmt.Sprint(set.ValShare),
		"--loss", set.Loss, "--init", set.Init, "--tau", fmt.Sprint(set.Temperature),
		"--triplets", heldPath, "--out", filepath.Join(dir, "offline.npz"), "--json")
	var sum offline.DistillSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("distill output %q: %v", out, err)
	}
	t.Logf("held-out 10%%: raw word2vec %.4f, trainer student %.4f, offline distill %.4f", rawAcc, studentAcc, *sum.HumanAfter)
	if studentAcc < rawAcc+0.05 {
		t.Errorf("student %.4f is not clearly above raw word2vec %.4f", studentAcc, rawAcc)
	}
	if math.Abs(studentAcc-*sum.HumanAfter) > 1.0/float64(strings.Count(held.String(), "\n")) {
		t.Errorf("trainer student %.4f and offline distill %.4f differ", studentAcc, *sum.HumanAfter)
	}
	metrics := ver["metrics"].(map[string]any)
	agree := metrics["teacher_agreement"].(float64)
	if math.Abs(agree-*sum.AgreeAfter) > 1e-3 {
		t.Errorf("teacher agreement: trainer %.4f, offline %.4f", agree, *sum.AgreeAfter)
	}
	levels, _ := metrics["levels"].(map[string]any)
	if levels == nil || levels["n_coarse"].(float64) == 0 {
		t.Errorf("no per-level accuracy in %v", metrics)
	}
	// The aligned representations of the items.
	var emb struct {
		Dim   int `json:"dim"`
		Items []struct {
			ID     string    `json:"id"`
			Vector []float32 `json:"vector"`
		} `json:"items"`
	}
	s.api(srv.url(), "GET", "/v1/studies/things/students/w2v/embeddings?items="+concepts[0]+","+concepts[5], nil, &emb, 200)
	h, _, err := modelfile.LoadStudent(headPath)
	if err != nil {
		t.Fatal(err)
	}
	wx, wn, _, _ := offline.ReadEmbeddings(w2v)
	z := h.Transform(wx, wn)
	if len(emb.Items) != 2 || emb.Items[1].ID != concepts[5] || !slices.Equal(emb.Items[1].Vector, z[5*h.P:6*h.P]) {
		t.Errorf("embeddings of %s differ from the head's transform", concepts[5])
	}
}

// TestTrainerCrashResume kills the trainer with SIGKILL while it stores a
// regeneration: the previous dataset must stay the current one, nothing
// of the half-written one may be visible, and a restarted trainer must
// complete the regeneration.
func TestTrainerCrashResume(t *testing.T) {
	e := setup(t)
	s := newStack(t, e, e.brokers)
	srv := s.start("api,persister")
	waitReady(t, srv.url())
	triplets := s.topic + ".triplets"
	trainer := s.startEnv("trainer", "ALIGNET_KAFKA_TRIPLETS_TOPIC="+triplets)
	const n, d = 3000, 16
	ids := make([]string, n)
	x := make([]float32, n*d)
	rng := uint64(7)
	for i := range ids {
		ids[i] = fmt.Sprintf("s%05d", i)
		for k := 0; k < d; k++ {
			rng = rng*6364136223846793005 + 1442695040888963407
			x[i*d+k] = float32(int64(rng>>40)%2000-1000) / 1000
		}
	}
	c := client.New(srv.url(), s.adminKey, nil)
	ctx := context.Background()
	if err := c.PutSpace(ctx, "syn", d); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UploadEmbeddings(ctx, "syn", ids, x, d); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateStudy(ctx, "crash", "odd-one-out", "syn"); err != nil {
		t.Fatal(err)
	}
	s.setTrainer("crash", map[string]any{"triplets": 4000000, "clusters": 10, "min_interval": "1s"})
	s.api(srv.url(), "PUT", "/v1/studies/crash/pool", map[string]any{"space": "syn"}, nil, 200)
	teacher := func(scale float32) {
		p := alignet.TeacherParams{Task: alignet.TaskOddOneOut, D: d, P: d, Mean: 0, Std: 1, Tau: 1, W: make([]float32, d*d), B: make([]float32, d)}
		for k := 0; k < d; k++ {
			p.W[k*d+k] = scale * float32(1+k%3)
		}
		if _, err := s.openDB().InsertTeacherVersion(ctx, alignet.TeacherVersion{Study: "crash", Kind: alignet.VersionRefit, Params: p}, 10); err != nil {
			t.Fatal(err)
		}
	}
	teacher(1)
	first := s.waitDataset(srv.url(), "crash", 1, 5*time.Minute)
	teacher(2)
	// Kill the trainer once it is writing the second dataset's artifact.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var chunks int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM artifact_chunks c JOIN artifacts a ON a.id = c.artifact WHERE NOT a.complete`).Scan(&chunks); err != nil {
			t.Fatal(err)
		}
		if chunks > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the trainer never started writing the second dataset")
		}
		time.Sleep(20 * time.Millisecond)
	}
	trainer.kill()
	var list struct {
		Datasets []alignet.Dataset `json:"datasets"`
	}
	s.api(srv.url(), "GET", "/v1/studies/crash/datasets", nil, &list, 200)
	if len(list.Datasets) != 1 || list.Datasets[0].Version != first.Version {
		t.Fatalf("after the crash the datasets are %+v, want only version %d", list.Datasets, first.Version)
	}
	req, _ := http.NewRequest("GET", srv.url()+"/v1/studies/crash/datasets/current.npz", nil)
	req.Header.Set("Authorization", "Bearer "+s.adminKey)
	req.Header.Set("Range", "bytes=0-3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("X-Alignet-Dataset-Version") != fmt.Sprint(first.Version) || string(head) != "PK\x03\x04" ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 0-3/%d", first.Size) {
		t.Fatalf("current.npz after the crash: version %q, Content-Range %q; want %d of %d bytes", resp.Header.Get("X-Alignet-Dataset-Version"), resp.Header.Get("Content-Range"), first.Version, first.Size)
	}
	// A new trainer process finishes the job.
	s.startEnv("trainer", "ALIGNET_KAFKA_TRIPLETS_TOPIC="+triplets)
	second := s.waitDataset(srv.url(), "crash", first.Version+1, 5*time.Minute)
	if second.TeacherVersion != 2 || second.Triplets != 4000000 {
		t.Fatalf("second dataset %+v", second)
	}
	raw := s.download(srv.url(), "/v1/studies/crash/datasets/current.npz")
	if int64(len(raw)) != second.Size {
		t.Fatalf("downloaded %d bytes of a %d-byte dataset", len(raw), second.Size)
	}
}
