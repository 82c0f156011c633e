package online

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
	"github.com/alignet/alignet/internal/testenv"
	"github.com/alignet/alignet/stream"
)

// Environment of a learner child process (see TestMain).
const (
	childEnv       = "ALIGNET_TEST_LEARNER_CHILD"
	childURLEnv    = "ALIGNET_TEST_LEARNER_URL"
	childSchemaEnv = "ALIGNET_TEST_LEARNER_SCHEMA"
	childTopicEnv  = "ALIGNET_TEST_LEARNER_TOPIC"
	childGroupEnv  = "ALIGNET_TEST_LEARNER_GROUP"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// runChild runs a learner until SIGTERM (graceful) or SIGKILL.
func runChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := db.Open(ctx, db.Config{URL: os.Getenv(childURLEnv), Schema: os.Getenv(childSchemaEnv), Logger: log})
	if err != nil {
		log.Error("open database", "err", err)
		return 1
	}
	defer d.Close()
	l, err := New(Config{
		Brokers: strings.Split(os.Getenv(testenv.EnvKafkaBrokers), ","), Topic: os.Getenv(childTopicEnv), Group: os.Getenv(childGroupEnv),
		Logger: log,
	}, d)
	if err != nil {
		log.Error("new learner", "err", err)
		return 1
	}
	if err := l.Run(ctx); err != nil {
		log.Error("learner", "err", err)
		return 1
	}
	return 0
}

// child is a learner running in a child process of the test binary.
type child struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startChild(t *testing.T, url, schema, topic, group string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childURLEnv+"="+url, childSchemaEnv+"="+schema,
		childTopicEnv+"="+topic, childGroupEnv+"="+group)
	c := &child{cmd: cmd, out: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			t.Logf("learner child output:\n%s", c.out.String())
		}
	})
	return c
}

// kill ends the child with SIGKILL: nothing is flushed.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.done
	c.done <- nil // for the cleanup
}

// versionDigests returns a digest of every stored version of study.
func versionDigests(t *testing.T, d *db.DB, study string) map[int64][32]byte {
	t.Helper()
	ctx := context.Background()
	vs, err := d.TeacherVersions(ctx, study)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64][32]byte{}
	for _, meta := range vs {
		v, err := d.TeacherVersion(ctx, study, meta.Version)
		if err != nil {
			t.Fatal(err)
		}
		out[meta.Version] = sha256.Sum256(fmt.Appendf(nil, "%+v", v)) // with W and b
	}
	return out
}

// TestKillAndResume kills a learner process with SIGKILL mid-stream and
// starts another: after the stream drains, judgments_seen equals the
// number of distinct judgment ids stored, every version stored before the
// kill is unchanged, and re-posting judgments with the same ids changes
// nothing.
func TestKillAndResume(t *testing.T) {
	brokers := realBrokers(t)
	url, schema := dbtest.Schema(t)
	ctx := context.Background()
	d, err := db.Open(ctx, db.Config{URL: url, Schema: schema, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	topic := newTopic(t, brokers, 2)
	group := uniqueName(t, "g")
	s := newSynth(60, 16, 3)
	for _, id := range []string{"k1", "k2"} {
		createStudy(t, d, s, id, alignet.TaskOddOneOut, `{"learner":{"min_judgments":200,"version_interval":"1s","max_iter":20}}`, nil)
	}
	pers, err := stream.NewPersister(stream.PersisterConfig{Brokers: brokers, Topic: topic, GroupID: uniqueName(t, "p"), Logger: testLogger(t)}, d)
	if err != nil {
		t.Fatal(err)
	}
	pctx, pstop := context.WithCancel(ctx)
	pdone := make(chan error, 1)
	go func() { pdone <- pers.Run(pctx) }()
	t.Cleanup(func() { pstop(); <-pdone })

	const total = 6000
	all := map[string][]alignet.Judgment{}
	for _, id := range []string{"k1", "k2"} {
		all[id] = s.judgments(id, alignet.TaskOddOneOut, id, total, 11)
	}
	prod := newProducer(t, brokers, topic)
	// The stream: messages of 20, a little at a time, with retried copies.
	feed := func(from, to int) {
		for lo := from; lo < to; lo += 20 {
			for _, id := range []string{"k1", "k2"} {
				publish(t, prod, all[id][lo:lo+20], 20)
				if lo%200 == 0 && lo >= 100 {
					publish(t, prod, all[id][lo-100:lo-80], 20) // a client retry
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	first := startChild(t, url, schema, topic, group)
	feed(0, 2000)
	waitFor(t, 2*time.Minute, "the first learner to store versions", func() bool {
		st := state(t, d, "k1")
		return st.JudgmentsSeen >= 1000 && st.Version >= 2
	})
	fedMore := make(chan struct{})
	go func() { defer close(fedMore); feed(2000, 3000) }()
	time.Sleep(300 * time.Millisecond)
	first.kill(t) // mid-stream
	<-fedMore
	before := map[string]map[int64][32]byte{}
	seenAtKill := map[string]int64{}
	for _, id := range []string{"k1", "k2"} {
		before[id] = versionDigests(t, d, id)
		seenAtKill[id] = state(t, d, id).JudgmentsSeen
	}
	t.Logf("killed with judgments_seen %v; versions stored %d and %d", seenAtKill, len(before["k1"]), len(before["k2"]))

	startChild(t, url, schema, topic, group)
	feed(3000, total)
	for _, id := range []string{"k1", "k2"} {
		waitFor(t, 3*time.Minute, id+" to drain", func() bool {
			n, err := d.CountJudgments(ctx, id)
			return err == nil && n == total && state(t, d, id).JudgmentsSeen == total
		})
	}
	check := func(when string) {
		t.Helper()
		for _, id := range []string{"k1", "k2"} {
			st := state(t, d, id)
			seen, err := d.LearnerSeen(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if st.JudgmentsSeen != total || len(seen) != total {
				t.Errorf("%s %s: judgments_seen %d, %d applied ids stored; want %d distinct", when, id, st.JudgmentsSeen, len(seen), total)
			}
			after := versionDigests(t, d, id)
			for v, dg := range before[id] {
				if got, ok := after[v]; !ok || got != dg {
					t.Errorf("%s %s: version %d stored before the kill changed or vanished", when, id, v)
				}
			}
		}
	}
	check("after the restart")
	// Re-post a batch with the same ids: nothing changes.
	for _, id := range []string{"k1", "k2"} {
		publish(t, prod, all[id][1000:1500], 100)
	}
	end := endOffsets(t, brokers, topic, 2)
	waitFor(t, 2*time.Minute, "the learner to pass the re-posted batch", func() bool {
		offs, err := d.LearnerOffsets(ctx, group, topic)
		if err != nil {
			return false
		}
		for p, o := range end {
			if o > 0 && offs[p] != o {
				return false
			}
		}
		return true
	})
	check("after re-posting")
}
