package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSoakShort runs `alignet soak` for a short while: every role in its
// own process (api, persister, learner, trainer), the load, the RSS
// sampling of every process (and of Postgres, when its pid file is
// readable), the final counts, and the trainer catching up with the
// learner (a dataset from the newest refit, a student trained on it). A short
// run cannot tell warm-up from growth, so flatness is reported, not
// required; the 1M-judgment soak (scripts/soak.sh) requires it.
func TestSoakShort(t *testing.T) {
	e := setup(t)
	s := newStack(t, e, e.brokers)
	dir := t.TempDir()
	const total = 20000
	args := []string{"soak", "--database-url", s.dbURL, "--kafka-brokers", e.brokers,
		"--judgments", strconv.Itoa(total), "--workers", "8", "--batch", "50",
		"--sample-every", "250ms", "--require-flat=false", "--json", "--dir", dir,
		"--trainer-triplets", "20000", "--trainer-interval", "1s"}
	watched := map[string]bool{}
	if pid, ok := postmasterPID(t, s); ok {
		args = append(args, "--watch", fmt.Sprintf("postgres=%d", pid))
		watched["postgres"] = true
	}
	cmd := exec.Command(e.bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("alignet soak: %v\n%s\n%s", err, out, tail(stderr.String(), 3000))
	}
	var rep struct {
		Roles []string `json:"roles"`
		Load  struct {
			Accepted int64 `json:"judgments_accepted"`
			Verified bool  `json:"verified"`
		} `json:"load"`
		StoredRows     int64  `json:"stored_rows"`
		DistinctIDs    int64  `json:"distinct_ids"`
		LearnerSeen    *int64 `json:"learner_judgments_seen"`
		CountsVerified bool   `json:"counts_verified"`
		Trainer        *struct {
			RefitVersion   int64 `json:"refit_version"`
			Dataset        int64 `json:"dataset"`
			StudentVersion int64 `json:"student_version"`
			CaughtUp       bool  `json:"caught_up"`
		} `json:"trainer"`
		RSS []struct {
			Name    string  `json:"name"`
			Samples int     `json:"samples"`
			FirstMB float64 `json:"first_mb"`
			MaxMB   float64 `json:"max_mb"`
		} `json:"rss"`
		CSV string `json:"csv"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("soak report: %v\n%s", err, out)
	}
	if !rep.CountsVerified || !rep.Load.Verified || rep.Load.Accepted != total || rep.StoredRows != total || rep.DistinctIDs != total {
		t.Fatalf("counts: %s", out)
	}
	for _, r := range rep.Roles {
		watched[r] = true
	}
	if slices.Contains(rep.Roles, "learner") && (rep.LearnerSeen == nil || *rep.LearnerSeen != total) {
		t.Errorf("the learner counted %v of %d judgments", rep.LearnerSeen, total)
	}
	if slices.Contains(rep.Roles, "trainer") && (rep.Trainer == nil || !rep.Trainer.CaughtUp || rep.Trainer.RefitVersion == 0 ||
		rep.Trainer.Dataset == 0 || rep.Trainer.StudentVersion == 0) {
		t.Errorf("the trainer did not catch up with the learner: %+v", rep.Trainer)
	}
	samples := 0
	for _, v := range rep.RSS {
		if !watched[v.Name] {
			t.Errorf("RSS of %s, which is neither a role nor watched", v.Name)
		}
		delete(watched, v.Name)
		if v.Samples < 3 || v.FirstMB <= 0 || v.MaxMB < v.FirstMB {
			t.Errorf("RSS of %s: %+v", v.Name, v)
		}
		samples = max(samples, v.Samples)
	}
	if len(watched) > 0 {
		t.Errorf("no RSS of %v", watched)
	}
	csv, err := os.ReadFile(rep.CSV)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(csv)), "\n"); len(lines) != samples+1 ||
		!strings.HasPrefix(lines[0], "seconds,judgments_accepted,") {
		t.Errorf("%s: %d lines for %d samples, header %q", rep.CSV, len(lines), samples, lines[0])
	}
	if filepath.Dir(rep.CSV) != dir {
		t.Errorf("samples written to %s, not to --dir %s", rep.CSV, dir)
	}
}

// postmasterPID returns the pid of the Postgres server of s when its data
// directory is readable from here (a local server).
func postmasterPID(t *testing.T, s *stack) (int, bool) {
	t.Helper()
	var dataDir string
	if err := s.pool.QueryRow(context.Background(), "SHOW data_directory").Scan(&dataDir); err != nil {
		t.Logf("Postgres data directory unknown (%v): its memory is not sampled", err)
		return 0, false
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Logf("Postgres pid unknown (%v): its memory is not sampled", err)
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	return pid, err == nil
}
