package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
	"github.com/alignet/alignet/internal/offline"
	"github.com/alignet/alignet/learner"
	"github.com/alignet/alignet/modelfile"
	"github.com/alignet/alignet/npy"
)

// teacherServer is an API on a real *db.DB, served on loopback.
type teacherServer struct {
	t     *testing.T
	d     *db.DB
	srv   *api.Server
	base  string
	admin string
}

const testAdmin = "admin-key-0123456789abcdef"

func newTeacherServer(t *testing.T) *teacherServer {
	t.Helper()
	d := dbtest.New(t)
	srv, err := api.New(api.Config{
		AdminKey: testAdmin, PseudonymKey: []byte("pseudonym-key-0123456789"), ShutdownTimeout: time.Second,
		TeacherPollInterval: 10 * time.Millisecond, Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
	}, api.StoreDeps(d, nopPublisher{}))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &teacherServer{t: t, d: d, srv: srv, base: "http://" + ln.Addr().String(), admin: testAdmin}
}

// do sends a request and fails the test unless the status is want; it
// returns the body.
func (s *teacherServer) do(method, path, body string, want int) []byte {
	s.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.admin)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
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
	if resp.StatusCode != want {
		s.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	return b
}

func (s *teacherServer) doJSON(method, path string, in any, want int, out any) {
	s.t.Helper()
	body := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			s.t.Fatal(err)
		}
		body = string(b)
	}
	b := s.do(method, path, body, want)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

// predictAnswer is the body of POST .../predict.
type predictAnswer struct {
	Study       string     `json:"study"`
	Status      string     `json:"status"`
	Version     int64      `json:"version"`
	UpdatedAt   *time.Time `json:"updated_at"`
	Tau         float64    `json:"tau"`
	Predictions []struct {
		Probs   []float64 `json:"probs"`
		Choice  string    `json:"choice"`
		Entropy float64   `json:"entropy"`
	} `json:"predictions"`
}

// randomParams returns a random teacher for d-dimensional inputs.
func randomParams(rng *rand.Rand, task alignet.Task, d, p int) alignet.TeacherParams {
	w := make([]float32, p*d)
	for i := range w {
		w[i] = float32(rng.NormFloat64() / math.Sqrt(float64(d)))
	}
	for a := range p {
		w[a*d+a] += 1
	}
	b := make([]float32, p)
	for i := range b {
		b[i] = float32(0.1 * rng.NormFloat64())
	}
	return alignet.TeacherParams{Task: task, D: d, P: p, W: w, B: b, Mean: 0.05, Std: 0.8, Tau: 0.6 + rng.Float64(), Lambda: 0.1}
}

// TestTeacherRoutesOnPostgres writes teacher states and versions the way
// the learner does (SaveLearnerProgress, InsertTeacherVersion) and checks
// what the API serves from them: the state, the versions, a teacher.npz
// that alignet eval and alignet generate read unchanged and that predicts
// what POST /predict answers to 1e-5, and a cache that follows new states.
func TestTeacherRoutesOnPostgres(t *testing.T) {
	t.Parallel()
	s := newTeacherServer(t)
	ctx := context.Background()
	const n, dim, p = 40, 8, 6
	rng := rand.New(rand.NewPCG(7, 11))
	ids := make([]string, n)
	x := make([]float32, n*dim)
	type item struct {
		ID     string    `json:"id"`
		Vector []float32 `json:"vector"`
	}
	var items []item
	for i := range ids {
		ids[i] = fmt.Sprintf("item-%02d", (i*17)%n) // not in sorted order
		for a := range dim {
			x[i*dim+a] = float32(rng.NormFloat64())
		}
		items = append(items, item{ids[i], x[i*dim : (i+1)*dim]})
	}
	s.doJSON("PUT", "/v1/spaces/sp", map[string]int{"dim": dim}, http.StatusCreated, nil)
	s.doJSON("POST", "/v1/spaces/sp/embeddings", map[string]any{"items": items}, http.StatusOK, nil)
	dir := t.TempDir()
	embPath := filepath.Join(dir, "emb.npy")
	writeFile(t, embPath, func(w io.Writer) error { return npy.Write(w, npy.FromFloat32(x, n, dim)) })
	idsPath := filepath.Join(dir, "ids.txt")
	writeFile(t, idsPath, func(w io.Writer) error { _, err := io.WriteString(w, strings.Join(ids, "\n")+"\n"); return err })

	for _, task := range []alignet.Task{alignet.TaskOddOneOut, alignet.TaskAnchor} {
		t.Run(string(task), func(t *testing.T) {
			s := *s
			s.t = t
			study := "st-" + string(task)
			s.doJSON("POST", "/v1/studies", map[string]any{"id": study, "task": task, "space": "sp",
				"settings": map[string]any{"learner": map[string]any{"keep_versions": 3}}}, http.StatusCreated, nil)
			s.doJSON("POST", "/v1/studies/"+study+"/items", map[string]any{"items": ids}, http.StatusOK, nil)

			// Triplets over rows, with a simulated human choice each: for
			// odd-one-out the last of the three is the odd one, as in the
			// text format "i j k"; for anchor "head close far".
			var lines strings.Builder
			var req [][3]string
			for range 300 {
				r := rng.Perm(n)[:3]
				fmt.Fprintf(&lines, "%d %d %d\n", r[0], r[1], r[2])
				// Shuffle the odd-one-out display order so that the odd
				// one is not always last in the request.
				order := []int{r[0], r[1], r[2]}
				if task == alignet.TaskOddOneOut {
					rng.Shuffle(3, func(a, b int) { order[a], order[b] = order[b], order[a] })
				}
				req = append(req, [3]string{ids[order[0]], ids[order[1]], ids[order[2]]})
			}
			tripPath := filepath.Join(dir, study+".txt")
			writeFile(t, tripPath, func(w io.Writer) error { _, err := io.WriteString(w, lines.String()); return err })

			// Before any state: the raw embeddings, in eval and predict alike.
			var raw predictAnswer
			s.doJSON("POST", "/v1/studies/"+study+"/predict", map[string]any{"triplets": req}, http.StatusOK, &raw)
			if raw.Status != "empty" || raw.Tau != 1 || raw.UpdatedAt != nil {
				t.Fatalf("raw teacher = %+v", raw)
			}
			checkAgainstEval(t, task, raw, req, ids, evalArgs{emb: embPath, triplets: tripPath})
			s.do("GET", "/v1/studies/"+study+"/teacher.npz", "", http.StatusNotFound)

			// The learner stores a state and a refit version.
			now := time.Now().UTC().Truncate(time.Microsecond)
			st := alignet.TeacherState{Study: study, Status: alignet.TeacherFitted, UpdatedAt: now, JudgmentsSeen: 321,
				JudgmentsTrained: 290, NewestAcceptedAt: now.Add(-400 * time.Millisecond), Params: randomParams(rng, task, dim, p),
				Hyper: alignet.TeacherHyper{Targets: "distilled", Lambdas: []float64{0.1}, LearningRate: 1e-3, Seed: 3},
				Eval:  &alignet.TeacherEval{Teacher: alignet.TeacherMetrics{N: 30, Accuracy: 0.6}, Raw: alignet.TeacherMetrics{N: 30, Accuracy: 0.5}}}
			if err := s.d.SaveLearnerProgress(ctx, alignet.LearnerProgress{Group: "g", Topic: "t", States: []alignet.TeacherState{st}}); err != nil {
				t.Fatal(err)
			}
			v1, err := s.d.InsertTeacherVersion(ctx, alignet.TeacherVersion{Study: study, Kind: alignet.VersionRefit, JudgmentsSeen: 321,
				Offsets: map[int32]int64{0: 321}, Params: st.Params, Hyper: st.Hyper, Eval: *st.Eval}, 3)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Status        string   `json:"status"`
				Version       int64    `json:"version"`
				JudgmentsSeen int64    `json:"judgments_seen"`
				Freshness     *float64 `json:"freshness_seconds"`
				Tau           float64  `json:"tau"`
				Dims          struct{ D, P int }
			}
			s.doJSON("GET", "/v1/studies/"+study+"/teacher", nil, http.StatusOK, &got)
			if got.Status != "fitted" || got.Version != v1.Version || got.JudgmentsSeen != 321 || got.Freshness == nil ||
				math.Abs(*got.Freshness-0.4) > 1e-9 || got.Tau != st.Params.Tau || got.Dims.D != dim || got.Dims.P != p {
				t.Fatalf("GET teacher = %+v", got)
			}
			var list struct {
				Versions []struct {
					Version int64  `json:"version"`
					Kind    string `json:"kind"`
				} `json:"versions"`
			}
			s.doJSON("GET", "/v1/studies/"+study+"/teacher/versions", nil, http.StatusOK, &list)
			if len(list.Versions) != 1 || list.Versions[0].Version != v1.Version || list.Versions[0].Kind != alignet.VersionRefit {
				t.Fatalf("versions = %+v", list)
			}

			// The cache follows: predict answers from the new state.
			ans := waitForTeacher(t, &s, study, req, now)
			teacherPath := filepath.Join(dir, study+"-teacher.npz")
			npz := s.do("GET", "/v1/studies/"+study+"/teacher.npz", "", http.StatusOK)
			writeFile(t, teacherPath, func(w io.Writer) error { _, err := w.Write(npz); return err })
			checkAgainstEval(t, task, ans, req, ids, evalArgs{emb: embPath, triplets: tripPath, teacher: teacherPath})
			checkAgainstFile(t, ans, req, ids, x, teacherPath)
			if task == alignet.TaskOddOneOut {
				checkGenerate(t, embPath, teacherPath, st.Params.Tau)
			}

			// A new state with other parameters: the cache follows again,
			// and version 1 still downloads as it was.
			st.Params, st.UpdatedAt, st.JudgmentsSeen = randomParams(rng, task, dim, p), now.Add(time.Second), 400
			if err := s.d.SaveLearnerProgress(ctx, alignet.LearnerProgress{Group: "g", Topic: "t", States: []alignet.TeacherState{st}}); err != nil {
				t.Fatal(err)
			}
			ans = waitForTeacher(t, &s, study, req, st.UpdatedAt)
			npz = s.do("GET", "/v1/studies/"+study+"/teacher.npz", "", http.StatusOK)
			writeFile(t, teacherPath, func(w io.Writer) error { _, err := w.Write(npz); return err })
			checkAgainstFile(t, ans, req, ids, x, teacherPath)
			v1Path := filepath.Join(dir, study+"-v1.npz")
			npz = s.do("GET", fmt.Sprintf("/v1/studies/%s/teacher.npz?version=%d", study, v1.Version), "", http.StatusOK)
			writeFile(t, v1Path, func(w io.Writer) error { _, err := w.Write(npz); return err })
			t1, _, err := modelfile.LoadTeacher(v1Path)
			if err != nil || t1.Tau != v1.Params.Tau || float32(t1.W[3]) != v1.Params.W[3] {
				t.Fatalf("version 1 download: %+v, %v", t1, err)
			}
			// A manual version through the API is stored in Postgres.
			s.do("POST", "/v1/studies/"+study+"/teacher/versions", "", http.StatusCreated)
			v2, err := s.d.TeacherVersion(ctx, study, 0)
			if err != nil || v2.Kind != alignet.VersionManual || v2.Parent != v1.Version || v2.JudgmentsSeen != 400 ||
				v2.Params.W[0] != st.Params.W[0] {
				t.Fatalf("manual version = %+v, %v", v2, err)
			}
		})
	}
}

func writeFile(t *testing.T, path string, write func(io.Writer) error) {
	t.Helper()
	var b bytes.Buffer
	if err := write(&b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitForTeacher predicts until the answer comes from the state stored at
// updatedAt.
func waitForTeacher(t *testing.T, s *teacherServer, study string, req [][3]string, updatedAt time.Time) predictAnswer {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ans predictAnswer
		s.doJSON("POST", "/v1/studies/"+study+"/predict", map[string]any{"triplets": req}, http.StatusOK, &ans)
		if ans.UpdatedAt != nil && ans.UpdatedAt.Equal(updatedAt) {
			return ans
		}
		if time.Now().After(deadline) {
			t.Fatalf("the teacher cache never served the state of %v: %+v", updatedAt, ans)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type evalArgs struct{ emb, triplets, teacher string }

// choiceProb returns predict's probability of the simulated human choice
// of triplet i: the odd item for odd-one-out, the close item (the second
// of the request) for anchor.
func choiceProb(task alignet.Task, ans predictAnswer, req [][3]string, i int, odd string) float64 {
	pr := ans.Predictions[i].Probs
	if task == alignet.TaskAnchor {
		return pr[0]
	}
	for a, it := range req[i] {
		if it == odd {
			return pr[a]
		}
	}
	panic("odd item not in the triplet")
}

// checkAgainstEval runs alignet eval (internal/offline RunEval) on the
// triplets and compares its NLL and accuracy with those predict's
// probabilities give.
func checkAgainstEval(t *testing.T, task alignet.Task, ans predictAnswer, req [][3]string, ids []string, a evalArgs) {
	t.Helper()
	lines, err := os.ReadFile(a.triplets)
	if err != nil {
		t.Fatal(err)
	}
	var nll float64
	correct := 0
	recs := strings.Split(strings.TrimSpace(string(lines)), "\n")
	for i, line := range recs {
		var r [3]int
		if _, err := fmt.Sscanf(line, "%d %d %d", &r[0], &r[1], &r[2]); err != nil {
			t.Fatal(err)
		}
		pc := choiceProb(task, ans, req, i, ids[r[2]])
		nll -= math.Log(pc)
		atLeast := 0 // the choice is right when it alone is the most probable
		for _, q := range ans.Predictions[i].Probs {
			if q >= pc {
				atLeast++
			}
		}
		if atLeast == 1 {
			correct++
		}
	}
	nll /= float64(len(recs))
	args := []string{"--embeddings", a.emb, "--triplets", a.triplets, "--task", string(task), "--json"}
	if a.teacher != "" {
		args = append(args, "--teacher", a.teacher)
	}
	var out bytes.Buffer
	if err := offline.RunEval(context.Background(), args, &out, io.Discard); err != nil {
		t.Fatalf("alignet eval %v: %v", args, err)
	}
	var rep offline.EvalReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.NTriplets != len(recs) || math.Abs(*rep.NLL-nll) > 1e-5 || rep.Tau != ans.Tau {
		t.Fatalf("alignet eval: %d triplets, NLL %v, τ %v; predict gives NLL %v, τ %v", rep.NTriplets, *rep.NLL, rep.Tau, nll, ans.Tau)
	}
	if want := float64(correct) / float64(len(recs)); math.Abs(*rep.Accuracy-want) > 1e-9 {
		t.Fatalf("alignet eval accuracy %v, predict gives %v", *rep.Accuracy, want)
	}
}

// checkAgainstFile loads the downloaded teacher with the offline code
// (modelfile, learner) and compares every probability with predict's.
func checkAgainstFile(t *testing.T, ans predictAnswer, req [][3]string, ids []string, x []float32, path string) {
	t.Helper()
	tch, prov, err := modelfile.LoadTeacher(path)
	if err != nil {
		t.Fatal(err)
	}
	if prov.Extra["judgments_seen"] == nil || prov.Extra["study"] != ans.Study {
		t.Fatalf("provenance %+v", prov)
	}
	row := map[string]int32{}
	for i, id := range ids {
		row[id] = int32(i)
	}
	ts := make([]learner.Triplet, len(req))
	for i, r := range req {
		ts[i] = learner.Triplet{I: row[r[0]], J: row[r[1]], K: row[r[2]]}
	}
	probs := tch.Probs(x, len(ids), ts)
	for i, q := range probs {
		want := []float64{q[2], q[1], q[0]} // p(I odd), p(J odd), p(K odd)
		if tch.Task == learner.TaskAnchor {
			want = []float64{q[0], q[1]}
		}
		got := ans.Predictions[i].Probs
		for a := range want {
			if math.Abs(got[a]-want[a]) > 1e-5 {
				t.Fatalf("triplet %v: predict %v, offline %v", req[i], got, want)
			}
		}
	}
}

// checkGenerate runs alignet generate on the downloaded teacher.
func checkGenerate(t *testing.T, emb, teacher string, tau float64) {
	t.Helper()
	out := filepath.Join(filepath.Dir(teacher), "alignet.npz")
	if err := offline.RunGenerate(context.Background(), []string{"--teacher", teacher, "--embeddings", emb,
		"--n", "500", "--clusters", "4", "--out", out, "--json"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("alignet generate --teacher on the download: %v", err)
	}
	ds, err := modelfile.LoadDataset(out)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Provenance.Extra["teacher_tau"] != tau {
		t.Fatalf("dataset provenance %+v, want teacher τ %v", ds.Provenance, tau)
	}
}

// TestQueriesRescoreUnderStoredTeacherOnPostgres goes through the server's
// teacher cache on Postgres: active queries are first scored by the raw
// embeddings; once a teacher state and version are stored the way the
// learner stores them, the engine rescores its candidates and every
// served query (as recorded in the query log) carries the new version and
// the entropy of that teacher's probabilities.
func TestQueriesRescoreUnderStoredTeacherOnPostgres(t *testing.T) {
	t.Parallel()
	s := newTeacherServer(t)
	ctx := context.Background()
	const n, dim, p = 30, 8, 6
	rng := rand.New(rand.NewPCG(31, 7))
	x := map[string][]float32{}
	var ids []string
	type item struct {
		ID     string    `json:"id"`
		Vector []float32 `json:"vector"`
	}
	var items []item
	for i := range n {
		id := fmt.Sprintf("it-%02d", i)
		v := make([]float32, dim)
		for a := range v {
			v[a] = float32(rng.NormFloat64())
		}
		ids, x[id] = append(ids, id), v
		items = append(items, item{id, v})
	}
	s.doJSON("PUT", "/v1/spaces/rs", map[string]int{"dim": dim}, http.StatusCreated, nil)
	s.doJSON("POST", "/v1/spaces/rs/embeddings", map[string]any{"items": items}, http.StatusOK, nil)
	s.doJSON("POST", "/v1/studies", map[string]any{"id": "rq", "task": alignet.TaskOddOneOut, "space": "rs",
		"settings": map[string]any{"queries": map[string]any{"mix": map[string]float64{"active": 1, "random": 0, "repeat": 0, "check": 0}, "repeats": 0, "pool_size": 2000}}},
		http.StatusCreated, nil)
	s.doJSON("POST", "/v1/studies/rq/items", map[string]any{"items": ids}, http.StatusOK, nil)

	// entropy is the served score of q under representations z at tau.
	entropy := func(z map[string][]float32, tau float64, q alignet.Query) float64 {
		var flat []float32
		for _, it := range q.Items {
			flat = append(flat, z[it]...)
		}
		pr := learner.TaskProbs(learner.TaskOddOneOut, learner.Logits(flat, len(z[q.Items[0]]), learner.Triplet{I: 0, J: 1, K: 2}), tau)
		h := 0.0
		for _, v := range pr {
			h -= v * math.Log(v)
		}
		return h
	}
	workers := 0
	// serve opens a session, takes one query and returns it as logged.
	serve := func() alignet.Query {
		t.Helper()
		workers++
		var sess struct {
			ID string `json:"id"`
		}
		s.doJSON("POST", "/v1/studies/rq/sessions", map[string]string{"worker": fmt.Sprint("w", workers)}, http.StatusCreated, &sess)
		var next struct {
			Queries []struct {
				QueryID string `json:"query_id"`
			} `json:"queries"`
		}
		s.doJSON("GET", "/v1/studies/rq/sessions/"+sess.ID+"/next?n=1", nil, http.StatusOK, &next)
		if len(next.Queries) != 1 {
			t.Fatalf("next served %d queries", len(next.Queries))
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			q, err := s.d.GetQuery(ctx, "rq", next.Queries[0].QueryID)
			if err == nil {
				if q.Kind != alignet.QueryActive {
					t.Fatalf("served a %s query with an active-only mix", q.Kind)
				}
				return q
			}
			if time.Now().After(deadline) {
				t.Fatalf("query %s never reached the query log: %v", next.Queries[0].QueryID, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	raw := serve()
	if raw.TeacherVersion != 0 || math.Abs(raw.Score-entropy(x, 1, raw)) > 1e-4 {
		t.Fatalf("raw query %+v: want version 0 and the entropy of the raw embeddings at τ=1 (%g)", raw, entropy(x, 1, raw))
	}

	params := randomParams(rng, alignet.TaskOddOneOut, dim, p)
	now := time.Now().UTC().Truncate(time.Microsecond)
	st := alignet.TeacherState{Study: "rq", Status: alignet.TeacherFitted, UpdatedAt: now, JudgmentsSeen: 50, NewestAcceptedAt: now,
		Params: params, Hyper: alignet.TeacherHyper{Targets: "hard", LearningRate: 1e-3, Seed: 1}}
	if err := s.d.SaveLearnerProgress(ctx, alignet.LearnerProgress{Group: "g", Topic: "t", States: []alignet.TeacherState{st}}); err != nil {
		t.Fatal(err)
	}
	v, err := s.d.InsertTeacherVersion(ctx, alignet.TeacherVersion{Study: "rq", Kind: alignet.VersionRefit, JudgmentsSeen: 50,
		Params: params, Hyper: st.Hyper}, 3)
	if err != nil {
		t.Fatal(err)
	}
	lt := &learner.Teacher{D: dim, P: p, W: make([]float64, p*dim), B: make([]float64, p), Mean: params.Mean, Std: params.Std,
		Tau: params.Tau, Task: learner.TaskOddOneOut}
	for i, w := range params.W {
		lt.W[i] = float64(w)
	}
	for i, b := range params.B {
		lt.B[i] = float64(b)
	}
	z := map[string][]float32{}
	for _, id := range ids {
		z[id] = lt.Transform(x[id], 1)
	}
	// The cache polls the new stamp and the engine rescores; until then
	// queries keep the raw basis.
	deadline := time.Now().Add(30 * time.Second)
	q := serve()
	for q.TeacherVersion != v.Version {
		if q.TeacherVersion != 0 {
			t.Fatalf("query %+v of version %d, want 0 or %d", q, q.TeacherVersion, v.Version)
		}
		if time.Now().After(deadline) {
			t.Fatalf("queries never moved to the stored teacher version %d", v.Version)
		}
		time.Sleep(20 * time.Millisecond)
		q = serve()
	}
	for i := range 10 {
		if i > 0 {
			q = serve()
		}
		if want := entropy(z, params.Tau, q); q.TeacherVersion != v.Version || math.Abs(q.Score-want) > 1e-4 {
			t.Fatalf("query %+v: want version %d and score %g, the entropy of the stored teacher's probabilities", q, v.Version, want)
		}
		if math.Abs(q.Score-entropy(x, 1, q)) < 1e-6 {
			t.Fatalf("query %+v still scored in the raw basis", q)
		}
	}
}
