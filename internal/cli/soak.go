package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/alignet/alignet/client"
	"github.com/alignet/alignet/internal/cmdline"
	"github.com/alignet/alignet/internal/server"
)

// soakRoles are the roles a soak runs, each in its own `alignet serve`.
var soakRoles = []string{server.RoleAPI, server.RolePersister, server.RoleLearner, server.RoleTrainer}

// soakStudent is the student a soak with the trainer registers.
const soakStudent = "soak-student"

// soakReport is what a soak measured and verified.
type soakReport struct {
	Roles          []string     `json:"roles"`
	Load           loadReport   `json:"load"`
	StoredRows     int64        `json:"stored_rows"`
	DistinctIDs    int64        `json:"distinct_ids"`
	LearnerSeen    *int64       `json:"learner_judgments_seen,omitempty"`
	Trainer        *soakTrainer `json:"trainer,omitempty"`
	CountsVerified bool         `json:"counts_verified"`
	SampleEvery    float64      `json:"sample_every_seconds"`
	Tolerance      float64      `json:"tolerance"`
	SlackMB        float64      `json:"slack_mb"`
	RSS            []rssVerdict `json:"rss"`
	Flat           bool         `json:"flat"`
	CSV            string       `json:"csv"`
	Logs           string       `json:"logs"`
	Problems       []string     `json:"problems,omitempty"`
	samples        []rssSample  // of every process, in order
}

// soakTrainer is what the learner and the trainer stored during a soak:
// the newest version of each (versions are numbered from 1 per study, so
// these are also how many were made; older ones are pruned).
type soakTrainer struct {
	TeacherVersion int64 `json:"teacher_version"`
	RefitVersion   int64 `json:"refit_version"`
	Dataset        int64 `json:"dataset"`
	DatasetTeacher int64 `json:"dataset_teacher_version"`
	StudentVersion int64 `json:"student_version"`
	StudentDataset int64 `json:"student_dataset"`
	// CaughtUp is whether, by the end, the newest dataset was generated
	// from the newest refit or a later version (the trainer may skip online
	// versions that changed the teacher little) and the student was trained
	// on it.
	CaughtUp bool `json:"caught_up"`
}

// watchFlag collects --watch NAME=PID.
type watchFlag []watched

func (w *watchFlag) String() string { return "" }

func (w *watchFlag) Set(s string) error {
	name, p, ok := strings.Cut(s, "=")
	pid, err := strconv.Atoi(p)
	if !ok || name == "" || err != nil || pid <= 0 {
		return fmt.Errorf("want NAME=PID, got %q", s)
	}
	*w = append(*w, watched{name: name, pid: pid, tree: true})
	return nil
}

func runSoak(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cmdline.New("soak", "Start every alignet role in its own process against an external Postgres and Kafka, push judgments through the whole stack, sample the resident memory of every process over time (VmRSS; for a watched process with its descendants the sum of their PSS), and verify the final counts: stored equals accepted, every id once, the learner counted each, and the trainer caught up with the learner.", stdout)
	dbURL := fs.String("database-url", "", "Postgres `URL`")
	fs.Env("database-url", getenv, "DATABASE_URL")
	fs.Require("database-url")
	var brokers string
	fs.StringVar(&brokers, "kafka-brokers", "", "comma-separated Kafka brokers")
	fs.Placeholder("kafka-brokers", "LIST")
	fs.Env("kafka-brokers", getenv, "KAFKA_BROKERS")
	fs.Require("kafka-brokers")
	lc := loadConfig{Dim: 16, Seed: 1, VerifyTimeout: 10 * time.Minute, Poll: 250 * time.Millisecond, Sample: 100, FreshnessTimeout: 10 * time.Minute}
	fs.IntVar(&lc.Total, "judgments", 1_000_000, "judgments to push through")
	fs.IntVar(&lc.Workers, "workers", 16, "concurrent simulated workers")
	fs.IntVar(&lc.Batch, "batch", 100, "judgments per request")
	fs.IntVar(&lc.Items, "items", 1000, "size of the study's item pool")
	fs.Float64Var(&lc.Rate, "rate", 0, "target judgments per second (0: as fast as the stack takes them)")
	every := fs.Duration("sample-every", 5*time.Second, "how often the resident memory of every process is sampled")
	var watch watchFlag
	fs.Var(&watch, "watch", "another process to sample with its descendants, given as NAME=PID (repeatable; scripts/soak.sh passes Postgres and Kafka)")
	fs.Placeholder("watch", "PROCESS")
	rolesFlag := fs.String("roles", strings.Join(soakRoles, ","), "roles to start, each in its own process")
	fs.Placeholder("roles", "LIST")
	tolerance := fs.Float64("tolerance", 0.10, "flat: the last third's median RSS is at most this much (relative) above the middle third's")
	slack := fs.Float64("slack-mb", 32, "flat also when the last third's median is at most this many MB above the middle third's")
	requireFlat := fs.Bool("require-flat", true, "fail when a process's RSS did not stay flat")
	trainerTriplets := fs.Int64("trainer-triplets", 100_000, "with the trainer, triplets per AligNet regeneration of the soak's study")
	trainerInterval := fs.Duration("trainer-interval", time.Minute, "with the trainer, the least time between two regenerations")
	logDir := fs.String("dir", "", "`DIR` for the processes' logs and the RSS samples (default: a new temporary directory)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Example("scripts/soak.sh",
		"alignet soak --database-url postgres://postgres@127.0.0.1:55432/alignet --kafka-brokers 127.0.0.1:19092 --watch kafka=4242")
	fs.Note("scripts/soak.sh starts Postgres and Kafka (scripts/postgres.sh, scripts/kafka.sh), builds alignet and runs this with both watched.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	roles := splitComma(*rolesFlag)
	for _, r := range roles {
		if !slices.Contains(soakRoles, r) {
			return &cmdline.UsageError{Command: "soak", Err: fmt.Errorf("--roles: unknown role %q (want %s)", r, strings.Join(soakRoles, ", "))}
		}
	}
	if !slices.Contains(roles, server.RoleAPI) {
		return &cmdline.UsageError{Command: "soak", Err: errors.New("--roles must include api: the load goes through it")}
	}
	learner, trainer := slices.Contains(roles, server.RoleLearner), slices.Contains(roles, server.RoleTrainer)
	if trainer && !learner {
		return &cmdline.UsageError{Command: "soak", Err: errors.New("--roles: the trainer needs the learner, whose teacher versions it generates data from")}
	}
	if *trainerTriplets < 1 || *trainerInterval <= 0 {
		return &cmdline.UsageError{Command: "soak", Err: errors.New("--trainer-triplets and --trainer-interval must be positive")}
	}
	if *every <= 0 {
		return &cmdline.UsageError{Command: "soak", Err: errors.New("--sample-every must be positive")}
	}
	if *logDir == "" {
		d, err := os.MkdirTemp("", "alignet-soak-")
		if err != nil {
			return err
		}
		*logDir = d
	} else if err := os.MkdirAll(*logDir, 0o755); err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the alignet binary: %w", err)
	}

	runID := randomHex(6)
	adminKey := "alg_admin_soak_" + randomHex(16)
	st := soakStack{bin: bin, dir: *logDir, env: []string{
		"DATABASE_URL=" + *dbURL,
		"KAFKA_BROKERS=" + brokers,
		"ALIGNET_ADMIN_KEY=" + adminKey,
		"ALIGNET_PSEUDONYM_KEY=" + randomHex(16),
		"ALIGNET_KAFKA_TOPIC=soak-" + runID,
		"ALIGNET_KAFKA_DLQ_TOPIC=soak-" + runID + ".dlq",
		"ALIGNET_KAFKA_GROUP=soak-" + runID + ".persister",
		"ALIGNET_LEARNER_GROUP=soak-" + runID + ".learner",
		"ALIGNET_KAFKA_TRIPLETS_TOPIC=soak-" + runID + ".triplets",
		"ALIGNET_LOG_FORMAT=json",
	}}
	defer st.stop(stderr)
	var apiURL string
	for _, r := range roles { // the consumers first, so nothing waits for them
		if r == server.RoleAPI {
			continue
		}
		if _, err := st.start(ctx, r); err != nil {
			return err
		}
	}
	if apiURL, err = st.start(ctx, server.RoleAPI); err != nil {
		return err
	}
	ws := append(st.watched(), watch...)
	for _, w := range ws {
		if _, err := vmRSS(w.pid); err != nil {
			return fmt.Errorf("cannot read the memory of %s (pid %d): %w", w.name, w.pid, err)
		}
	}

	c := client.New(apiURL, adminKey, nil)
	lc.Study = "soak-" + runID
	var accepted atomic.Int64
	lc.Accepted = &accepted
	// With the learner, the study's items get embeddings and the load
	// waits for the teacher to count every judgment; with the trainer,
	// the study gets a generation pool and a student before the load.
	lc.Freshness = learner
	if trainer {
		lc.Prepare = func(ctx context.Context, study, space string) error {
			if err := c.PatchStudySettings(ctx, study, map[string]any{"trainer": map[string]any{
				"triplets": *trainerTriplets, "min_interval": trainerInterval.String()}}); err != nil {
				return fmt.Errorf("set the trainer settings: %w", err)
			}
			if err := c.PutPool(ctx, study, space, nil); err != nil {
				return fmt.Errorf("set the generation pool: %w", err)
			}
			if err := c.CreateStudent(ctx, study, soakStudent, space); err != nil {
				return fmt.Errorf("create the student: %w", err)
			}
			return nil
		}
	}
	rep := soakReport{Roles: roles, SampleEvery: every.Seconds(), Tolerance: *tolerance, SlackMB: *slack,
		Logs: *logDir}
	fmt.Fprintf(stderr, "soak: %d judgments through %s; logs in %s\n", lc.Total, strings.Join(roles, ", "), *logDir)
	start := time.Now()
	sample := func() {
		rep.samples = append(rep.samples, rssSample{at: time.Since(start), accepted: accepted.Load(), kb: sampleRSS(ws)})
	}
	sample()
	sctx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(*every)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	load, err := generateLoad(ctx, c, lc, stderr)
	if err == nil && trainer {
		// The memory is sampled on while the trainer catches up.
		rep.Trainer, err = waitTrainer(ctx, *dbURL, lc.Study, lc.VerifyTimeout)
	}
	stopSampling()
	wg.Wait()
	sample()
	if err != nil {
		return err
	}
	rep.Load = load
	if err := load.verifyErr(lc.FreshnessTimeout); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	if err := rep.verifyCounts(ctx, *dbURL, c, lc.Study); err != nil {
		return err
	}
	if tr := rep.Trainer; tr != nil && !tr.CaughtUp {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the trainer did not catch up: teacher version %d (refit %d), dataset %d of teacher version %d, student version %d on dataset %d",
			tr.TeacherVersion, tr.RefitVersion, tr.Dataset, tr.DatasetTeacher, tr.StudentVersion, tr.StudentDataset))
	}
	rep.Flat = true
	for i, w := range ws {
		v := judgeRSS(w, i, rep.samples, *tolerance, *slack)
		rep.RSS = append(rep.RSS, v)
		if !v.Flat || !v.Judged {
			rep.Flat = false
		}
	}
	rep.CSV = filepath.Join(*logDir, "rss.csv")
	f, err := os.Create(rep.CSV)
	if err != nil {
		return err
	}
	if err := writeRSSCSV(f, ws, rep.samples); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.print(stdout)
	}
	switch {
	case len(rep.Problems) > 0:
		return fmt.Errorf("verification failed: %s", strings.Join(rep.Problems, "; "))
	case *requireFlat && !rep.Flat:
		return errors.New("the resident memory of a process did not stay flat (see the table)")
	}
	return nil
}

// verifyCounts checks, in Postgres, that the study holds exactly the
// accepted judgments, each id once, and that the learner counted each.
func (rep *soakReport) verifyCounts(ctx context.Context, dbURL string, c *client.Client, study string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to Postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT id) FROM judgments WHERE study = $1`, study).
		Scan(&rep.StoredRows, &rep.DistinctIDs); err != nil {
		return fmt.Errorf("count the stored judgments: %w", err)
	}
	acc := rep.Load.Accepted
	if rep.StoredRows != acc || rep.DistinctIDs != acc {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d accepted but %d rows with %d distinct ids stored", acc, rep.StoredRows, rep.DistinctIDs))
	}
	if rep.Load.Freshness != nil {
		t, err := c.Teacher(ctx, study)
		if err != nil {
			return fmt.Errorf("read the teacher: %w", err)
		}
		rep.LearnerSeen = &t.JudgmentsSeen
		if t.JudgmentsSeen != rep.DistinctIDs {
			rep.Problems = append(rep.Problems, fmt.Sprintf("the learner counted %d judgments, %d distinct ids are stored", t.JudgmentsSeen, rep.DistinctIDs))
		}
	}
	rep.CountsVerified = len(rep.Problems) == 0
	return nil
}

// waitTrainer waits up to timeout until the trainer has caught up with the
// learner (see soakTrainer.CaughtUp), and reports what both stored.
func waitTrainer(ctx context.Context, dbURL, study string, timeout time.Duration) (*soakTrainer, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("connect to Postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(timeout)
	for {
		var tr soakTrainer
		err := conn.QueryRow(ctx, `SELECT
			(SELECT coalesce(max(version), 0) FROM teacher_versions WHERE study = $1),
			(SELECT coalesce(max(version), 0) FROM teacher_versions WHERE study = $1 AND kind = 'refit'),
			coalesce((SELECT version FROM datasets WHERE study = $1 ORDER BY version DESC LIMIT 1), 0),
			coalesce((SELECT teacher_version FROM datasets WHERE study = $1 ORDER BY version DESC LIMIT 1), 0),
			coalesce((SELECT version FROM student_versions WHERE study = $1 AND student = $2 ORDER BY version DESC LIMIT 1), 0),
			coalesce((SELECT dataset FROM student_versions WHERE study = $1 AND student = $2 ORDER BY version DESC LIMIT 1), 0)`,
			study, soakStudent).
			Scan(&tr.TeacherVersion, &tr.RefitVersion, &tr.Dataset, &tr.DatasetTeacher, &tr.StudentVersion, &tr.StudentDataset)
		if err != nil {
			return nil, fmt.Errorf("read the trainer's progress: %w", err)
		}
		tr.CaughtUp = tr.Dataset > 0 && tr.DatasetTeacher >= tr.RefitVersion && tr.StudentDataset == tr.Dataset
		if tr.CaughtUp || time.Now().After(deadline) {
			return &tr, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (rep *soakReport) print(w io.Writer) {
	l := rep.Load
	fmt.Fprintf(w, "soak        %d judgments through %s in %.0fs (%.0f judgments/s, p99 %.1f ms per request of %d)\n",
		l.Accepted, strings.Join(rep.Roles, ", "), l.Seconds, l.JudgmentsPerSec, l.P99Millis, l.Batch)
	seen := "-"
	if rep.LearnerSeen != nil {
		seen = strconv.FormatInt(*rep.LearnerSeen, 10)
	}
	fmt.Fprintf(w, "counts      accepted %d, stored rows %d, distinct ids %d, learner judgments_seen %s: %s\n",
		l.Accepted, rep.StoredRows, rep.DistinctIDs, seen, map[bool]string{true: "verified", false: "NOT verified"}[rep.CountsVerified && l.Verified])
	if tr := rep.Trainer; tr != nil {
		fmt.Fprintf(w, "trainer     teacher version %d (refit %d), dataset %d of teacher version %d, student version %d on dataset %d: %s\n",
			tr.TeacherVersion, tr.RefitVersion, tr.Dataset, tr.DatasetTeacher, tr.StudentVersion, tr.StudentDataset,
			map[bool]string{true: "caught up", false: "NOT caught up"}[tr.CaughtUp])
	}
	fmt.Fprintf(w, "\nRSS (MB; PSS summed over a process tree), sampled every %gs (%d samples)\n", rep.SampleEvery, len(rep.samples))
	fmt.Fprintf(w, "%-12s %8s %9s %9s %9s %9s %14s %14s %8s  %s\n", "process", "pid", "first", "half", "end", "max", "middle third", "last third", "growth", "flat")
	for _, v := range rep.RSS {
		flat := map[bool]string{true: "yes", false: "NO"}[v.Flat]
		if !v.Judged {
			flat = "too short to tell"
		}
		fmt.Fprintf(w, "%-12s %8d %9.1f %9.1f %9.1f %9.1f %14.1f %14.1f %+7.1f%%  %s\n", v.Name, v.PID, v.FirstMB, v.HalfMB, v.EndMB, v.MaxMB, v.MiddleMB, v.LastMB, 100*v.Growth, flat)
	}
	fmt.Fprintf(w, "\nflat        %v: the median of the last third of the samples is at most %.0f%% or %.0f MB above that of the middle third (the first third is warm-up)\n",
		rep.Flat, 100*rep.Tolerance, rep.SlackMB)
	fmt.Fprintf(w, "samples     %s\nlogs        %s\n", rep.CSV, rep.Logs)
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "problem     %s\n", p)
	}
}

// soakStack is the `alignet serve` processes of a soak.
type soakStack struct {
	bin, dir string
	env      []string
	procs    []*soakProc
}

// soakProc is one running role.
type soakProc struct {
	role string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start runs role in its own process on a free port, waits until it is
// healthy (the api role: ready), and returns its base URL.
func (s *soakStack) start(ctx context.Context, role string) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	logf, err := os.Create(filepath.Join(s.dir, role+".log"))
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, "serve")
	cmd.Env = append(append(os.Environ(), s.env...), "ALIGNET_ROLES="+role, "ALIGNET_LISTEN="+addr, "ALIGNET_METRICS_LISTEN=")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start the %s role: %w", role, err)
	}
	p := &soakProc{role: role, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.procs = append(s.procs, p)
	base := "http://" + addr
	probe := "/healthz"
	if role == server.RoleAPI {
		probe = "/readyz"
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(base + probe)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base, nil
			}
		}
		select {
		case <-p.done:
			return "", fmt.Errorf("the %s role exited: %v (log: %s)", role, p.err, logf.Name())
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the %s role did not answer %s within 2 minutes (log: %s)", role, probe, logf.Name())
		}
	}
}

// watched returns the role processes.
func (s *soakStack) watched() []watched {
	out := make([]watched, len(s.procs))
	for i, p := range s.procs {
		out[i] = watched{name: p.role, pid: p.cmd.Process.Pid}
	}
	return out
}

// stop ends the roles gracefully, the API first.
func (s *soakStack) stop(stderr io.Writer) {
	for _, p := range slices.Backward(s.procs) {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			fmt.Fprintf(stderr, "soak: the %s role did not stop within 30s; killed\n", p.role)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
