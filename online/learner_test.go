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

// TestMissingEmbeddingsArePickedUp starts a study whose space lacks the
// embeddings of a third of its items: judgments over them are counted
// (no_embedding) but not trained on; once the embeddings are uploaded,
// the learner finds them without a restart and trains on new judgments
// over those items, and a refit reads the earlier ones from the record.
func TestMissingEmbeddingsArePickedUp(t *testing.T) {
	brokers := realBrokers(t)
	d := newDB(t)
	topic := newTopic(t, brokers, 1)
	s := newSynth(30, 8, 5)
	embedded := func(r int) bool { return r%3 != 0 }
	createStudy(t, d, s, "m", alignet.TaskOddOneOut, `{"learner":{"refits":false,"held_out_share":0}}`, embedded)
	prod := newProducer(t, brokers, topic)
	run := startLearner(t, Config{Brokers: brokers, Topic: topic, Group: uniqueName(t, "g"), EmbeddingsRetry: 100 * time.Millisecond}, d)
	ctx := context.Background()
	js := s.judgments("m", alignet.TaskOddOneOut, "a", 600, 8)
	missing := 0
	for _, j := range js {
		for _, it := range j.Items {
			if r := s.index(it); !embedded(r) {
				missing++
				break
			}
		}
	}
	if _, err := d.InsertJudgments(ctx, js); err != nil {
		t.Fatal(err)
	}
	publish(t, prod, js, 50)
	waitFor(t, time.Minute, "the first judgments", func() bool { return state(t, d, "m").JudgmentsSeen == 600 })
	st := state(t, d, "m")
	if st.Skipped[reasonNoEmbedding] != int64(missing) || st.JudgmentsTrained != int64(600-missing) {
		t.Fatalf("skipped %v, trained %d; want %d without embeddings, %d trained", st.Skipped, st.JudgmentsTrained, missing, 600-missing)
	}
	// Upload the missing embeddings; new judgments over those items train.
	var ids []string
	var vecs []float32
	for r, it := range s.items {
		if !embedded(r) {
			ids = append(ids, it)
			vecs = append(vecs, s.x[r*s.d:(r+1)*s.d]...)
		}
	}
	if _, err := d.UpsertEmbeddings(ctx, "m-space", ids, vecs); err != nil {
		t.Fatal(err)
	}
	more := s.judgments("m", alignet.TaskOddOneOut, "b", 600, 9)
	if _, err := d.InsertJudgments(ctx, more); err != nil {
		t.Fatal(err)
	}
	// Probe one judgment at a time until one over a formerly missing item
	// is trained on, then send the rest.
	sent, probes := 0, 0
	for ; sent < len(more); sent++ {
		skipped := state(t, d, "m").Skipped[reasonNoEmbedding]
		publish(t, prod, more[sent:sent+1], 1)
		waitFor(t, time.Minute, "a probe", func() bool { return state(t, d, "m").JudgmentsSeen == int64(600+sent+1) })
		hasMissing := false
		for _, it := range more[sent].Items {
			hasMissing = hasMissing || !embedded(s.index(it))
		}
		if !hasMissing {
			continue
		}
		probes++
		if state(t, d, "m").Skipped[reasonNoEmbedding] == skipped {
			sent++
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	publish(t, prod, more[sent:], 50)
	waitFor(t, time.Minute, "the second judgments", func() bool { return state(t, d, "m").JudgmentsSeen == 1200 })
	st = state(t, d, "m")
	late := st.Skipped[reasonNoEmbedding] - int64(missing)
	t.Logf("embeddings found after %d probes (%d skipped meanwhile)", probes, late)
	if late >= int64(probes) || st.JudgmentsTrained != 1200-st.Skipped[reasonNoEmbedding] {
		t.Fatalf("after the upload: %d more skipped for missing embeddings (%d probes), trained %d", late, probes, st.JudgmentsTrained)
	}
	// A refit on request reads every stored judgment, the skipped ones too.
	if err := d.RequestRefit(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the refit", func() bool { return state(t, d, "m").LastRefitJudgments == 1200 })
	run.stop(t)
}

// TestSettingsTakeEffect changes a study's settings while the learner
// runs: switching online learning off stops the Adam steps (judgments are
// still counted), and a refit request is honoured although automatic
// refits are off.
func TestSettingsTakeEffect(t *testing.T) {
	brokers := realBrokers(t)
	d := newDB(t)
	topic := newTopic(t, brokers, 1)
	s := newSynth(30, 8, 6)
	createStudy(t, d, s, "p", alignet.TaskOddOneOut, `{"learner":{"refits":false}}`, nil)
	prod := newProducer(t, brokers, topic)
	run := startLearner(t, Config{Brokers: brokers, Topic: topic, Group: uniqueName(t, "g"), SettingsInterval: 100 * time.Millisecond, PollInterval: 100 * time.Millisecond}, d)
	ctx := context.Background()
	js := s.judgments("p", alignet.TaskOddOneOut, "p", 800, 10)
	if _, err := d.InsertJudgments(ctx, js); err != nil {
		t.Fatal(err)
	}
	publish(t, prod, js[:400], 40)
	waitFor(t, time.Minute, "the first judgments", func() bool { return state(t, d, "p").JudgmentsSeen == 400 })
	trained := state(t, d, "p").JudgmentsTrained
	if _, err := d.UpdateStudySettings(ctx, "p", func(st alignet.StudySettings) (alignet.StudySettings, error) {
		return st.Patch([]byte(`{"learner":{"online":false}}`))
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // several settings polls
	publish(t, prod, js[400:], 40)
	waitFor(t, time.Minute, "the second judgments", func() bool { return state(t, d, "p").JudgmentsSeen == 800 })
	st := state(t, d, "p")
	if st.JudgmentsTrained != trained || st.Skipped[reasonOnlineOff] == 0 {
		t.Fatalf("online off: trained %d (was %d), skipped %v", st.JudgmentsTrained, trained, st.Skipped)
	}
	if st.LastRefitAt != nil {
		t.Fatal("refitted although refits are off")
	}
	if err := d.RequestRefit(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the requested refit", func() bool {
		st := state(t, d, "p")
		return st.Status == alignet.TeacherFitted && st.LastRefitJudgments == 800
	})
	run.stop(t)
}

// TestLearnersSplitStudies runs two learners in one group over four
// studies; one stops mid-stream and the other takes its partitions over
// from the stored progress: every judgment is counted exactly once.
func TestLearnersSplitStudies(t *testing.T) {
	brokers := realBrokers(t)
	d := newDB(t)
	topic := newTopic(t, brokers, 4)
	s := newSynth(30, 8, 7)
	ids := []string{"s1", "s2", "s3", "s4"}
	all := map[string][]alignet.Judgment{}
	for i, id := range ids {
		createStudy(t, d, s, id, alignet.TaskOddOneOut, `{"learner":{"refits":false}}`, nil)
		all[id] = s.judgments(id, alignet.TaskOddOneOut, id, 2000, uint64(20+i))
	}
	prod := newProducer(t, brokers, topic)
	group := uniqueName(t, "g")
	a := startLearner(t, Config{Brokers: brokers, Topic: topic, Group: group}, d)
	b := startLearner(t, Config{Brokers: brokers, Topic: topic, Group: group}, d)
	for lo := 0; lo < 1000; lo += 50 {
		for _, id := range ids {
			publish(t, prod, all[id][lo:lo+50], 50)
		}
	}
	waitFor(t, time.Minute, "both learners to own studies", func() bool {
		return gaugeValue(t, a, "alignet_learner_studies") > 0 && gaugeValue(t, b, "alignet_learner_studies") > 0
	})
	a.stop(t)
	for lo := 1000; lo < 2000; lo += 50 {
		for _, id := range ids {
			publish(t, prod, all[id][lo:lo+50], 50)
			publish(t, prod, all[id][lo-500:lo-450], 50) // retried copies
		}
	}
	for _, id := range ids {
		waitFor(t, 2*time.Minute, id+" to drain", func() bool { return state(t, d, id).JudgmentsSeen >= 2000 })
	}
	b.stop(t)
	for _, id := range ids {
		if st := state(t, d, id); st.JudgmentsSeen != 2000 {
			t.Errorf("%s: judgments_seen %d, want 2000", id, st.JudgmentsSeen)
		}
	}
}

// gaugeValue returns the sum of a gauge's series on the learner's registry.
func gaugeValue(t testing.TB, r *running, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetGauge().GetValue()
			}
		}
	}
	return v
}

// TestRestartResumesFromStoredState stops a learner gracefully and starts
// another: it continues from the stored teacher, counts and versions
// instead of starting over.
func TestRestartResumesFromStoredState(t *testing.T) {
	brokers := realBrokers(t)
	d := newDB(t)
	topic := newTopic(t, brokers, 1)
	s := newSynth(30, 8, 8)
	createStudy(t, d, s, "g", alignet.TaskOddOneOut, `{"learner":{"min_judgments":200,"max_iter":20}}`, nil)
	prod := newProducer(t, brokers, topic)
	group := uniqueName(t, "g")
	ctx := context.Background()
	js := s.judgments("g", alignet.TaskOddOneOut, "g", 700, 12)
	if _, err := d.InsertJudgments(ctx, js); err != nil {
		t.Fatal(err)
	}
	publish(t, prod, js[:500], 50)
	first := startLearner(t, Config{Brokers: brokers, Topic: topic, Group: group}, d)
	waitFor(t, time.Minute, "a refit", func() bool {
		st := state(t, d, "g")
		return st.JudgmentsSeen == 500 && st.Status == alignet.TeacherFitted && st.Version > 0
	})
	first.stop(t)
	before := state(t, d, "g")
	second := startLearner(t, Config{Brokers: brokers, Topic: topic, Group: group}, d)
	publish(t, prod, js[500:], 50)
	waitFor(t, time.Minute, "the new judgments", func() bool { return state(t, d, "g").JudgmentsSeen == 700 })
	second.stop(t)
	after := state(t, d, "g")
	if after.Status != alignet.TeacherFitted || after.Version < before.Version ||
		after.JudgmentsTrained <= before.JudgmentsTrained || after.Prequential[0].N != 700 {
		t.Fatalf("restart did not resume: before %s v%d trained %d, after %s v%d trained %d, window %d",
			before.Status, before.Version, before.JudgmentsTrained, after.Status, after.Version, after.JudgmentsTrained, after.Prequential[0].N)
	}
	vs, err := d.TeacherVersions(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(vs); i++ {
		if vs[i-1].Version != vs[i].Version+1 {
			t.Fatalf("version numbers %d, %d are not consecutive", vs[i].Version, vs[i-1].Version)
		}
	}
}
