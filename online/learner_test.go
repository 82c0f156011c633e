package online

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
)

// endOffsets returns the next offset of every partition of topic.
func endOffsets(t testing.TB, brokers []string, topic string, partitions int) map[int32]int64 {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	reqs := make([]kafka.OffsetRequest, partitions)
	for p := range partitions {
		reqs[p] = kafka.LastOffsetOf(p)
	}
	res, err := client.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	for _, o := range res.Topics[topic] {
		if o.Error != nil {
			t.Fatal(o.Error)
		}
		out[int32(o.Partition)] = o.LastOffset
	}
	return out
}

// TestLearnerFollowsStream runs the learner on both task types: every
// distinct judgment is counted once although the topic holds retried
// copies, a refit runs and is versioned with a held-out evaluation on
// which the teacher beats the raw embeddings, and the partition offsets
// are stored.
func TestLearnerFollowsStream(t *testing.T) {
	forEachBroker(t, func(t *testing.T, brokers []string) {
		d := newDB(t)
		const parts = 3
		topic := newTopic(t, brokers, parts)
		s := newSynth(40, 8, 1)
		settings := `{"learner":{"min_judgments":300,"version_interval":"1s","max_iter":40}}`
		studies := map[string]alignet.Task{"odd": alignet.TaskOddOneOut, "anchor": alignet.TaskAnchor}
		const n = 1500
		prod := newProducer(t, brokers, topic)
		for id, task := range studies {
			createStudy(t, d, s, id, task, settings, nil)
			js := s.judgments(id, task, id, n, 7)
			if _, err := d.InsertJudgments(context.Background(), js); err != nil {
				t.Fatal(err)
			}
			publish(t, prod, js, 50)
			publish(t, prod, js[:300], 30) // client retries: same ids again
		}
		run := startLearner(t, Config{Brokers: brokers, Topic: topic, Group: uniqueName(t, "g")}, d)
		for id := range studies {
			waitFor(t, 2*time.Minute, "refit of "+id, func() bool {
				st := state(t, d, id)
				return st.JudgmentsSeen == n && st.Status == alignet.TeacherFitted && st.Version > 0
			})
		}
		run.stop(t)
		ctx := context.Background()
		offs, err := d.LearnerOffsets(ctx, run.l.cfg.Group, topic)
		if err != nil {
			t.Fatal(err)
		}
		want := endOffsets(t, brokers, topic, parts)
		for p, o := range want {
			if o == 0 {
				delete(want, p) // nothing to store for an empty partition
			}
		}
		if !equalOffsets(offs, want) {
			t.Errorf("stored offsets %v, want the end of the topic %v", offs, want)
		}
		for id := range studies {
			st := state(t, d, id)
			if st.JudgmentsSeen != n {
				t.Errorf("%s: judgments_seen %d, want %d", id, st.JudgmentsSeen, n)
			}
			seen, err := d.LearnerSeen(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != n {
				t.Errorf("%s: %d applied ids stored, want %d", id, len(seen), n)
			}
			held := st.Skipped[reasonHeldOut]
			if held < n/20 || held > n/5 {
				t.Errorf("%s: %d held out of %d, want about 10%%", id, held, n)
			}
			if st.JudgmentsTrained+held != n {
				t.Errorf("%s: trained %d + held out %d != %d", id, st.JudgmentsTrained, held, n)
			}
			vs, err := d.TeacherVersions(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			var refit *alignet.TeacherVersion
			for i := range vs {
				if vs[i].Kind == alignet.VersionRefit {
					refit = &vs[i]
					break
				}
			}
			if refit == nil {
				t.Fatalf("%s: no refit version among %d", id, len(vs))
			}
			e := refit.Eval
			t.Logf("%s: version %d (%d judgments): teacher acc %.3f nll %.3f, raw acc %.3f nll %.3f on %d held out",
				id, refit.Version, refit.JudgmentsSeen, e.Teacher.Accuracy, e.Teacher.NLL, e.Raw.Accuracy, e.Raw.NLL, e.Teacher.N)
			if e.Teacher.N == 0 || e.Teacher.NLL >= e.Raw.NLL {
				t.Errorf("%s: refit teacher NLL %.3f is not below the raw embeddings' %.3f", id, e.Teacher.NLL, e.Raw.NLL)
			}
			if len(st.Prequential) != 2 || st.Prequential[0].N != 1000 {
				t.Errorf("%s: prequential windows %+v", id, st.Prequential)
			}
		}
	})
}

func equalOffsets(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
