package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
)

// poisonQueryID is the query id that rejectingDB's Postgres refuses.
const poisonQueryID = "q-poison"

// rejectingDB returns a migrated database on a fresh schema with the
// studies, whose judgments table refuses rows with query id poisonQueryID
// by a check constraint: a judgment that decodes fine but that Postgres
// rejects (SQLSTATE 23514), standing for any such row.
func rejectingDB(t *testing.T, studies ...string) *db.DB {
	t.Helper()
	d := dbtest.New(t)
	ctx := context.Background()
	if _, _, err := d.PutSpace(ctx, "space", 2); err != nil {
		t.Fatal(err)
	}
	for _, s := range studies {
		if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: s, Task: alignet.TaskOddOneOut, Space: "space"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Pool().Exec(ctx, `ALTER TABLE judgments ADD CONSTRAINT test_poison CHECK (query_id IS DISTINCT FROM '`+poisonQueryID+`')`); err != nil {
		t.Fatal(err)
	}
	return d
}

// poison returns n judgments that rejectingDB refuses.
func poison(study, prefix string, n int) []alignet.Judgment {
	js := judgments(study, prefix, n)
	for i := range js {
		js[i].QueryID = poisonQueryID
	}
	return js
}

// storedIDs returns how often each judgment id of study is stored.
func storedIDs(t *testing.T, d *db.DB, study string) map[string]int {
	t.Helper()
	ids := map[string]int{}
	err := d.ExportJudgments(context.Background(), alignet.JudgmentFilter{Study: study}, func(j alignet.Judgment) error {
		ids[j.ID]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// checkStoredOnce fails unless exactly the judgments want of study are
// stored, each once.
func checkStoredOnce(t *testing.T, d *db.DB, study string, want []alignet.Judgment) {
	t.Helper()
	got := storedIDs(t, d, study)
	if len(got) != len(want) {
		t.Errorf("study %s: %d judgments stored, want %d", study, len(got), len(want))
	}
	for _, j := range want {
		if got[j.ID] != 1 {
			t.Errorf("study %s: judgment %s stored %d times, want once", study, j.ID, got[j.ID])
		}
	}
}

// readMessages reads n messages of topic from the start.
func readMessages(t *testing.T, brokers []string, topic string, n int) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, GroupID: uniqueName(t, "read"), StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var ms []kafka.Message
	for len(ms) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("read %d of %d messages of %s: %v", len(ms), n, topic, err)
		}
		ms = append(ms, m)
	}
	return ms
}

func headerMap(m kafka.Message) map[string]string {
	h := map[string]string{}
	for _, x := range m.Headers {
		h[x.Key] = string(x.Value)
	}
	return h
}

// TestPersisterDeadLettersRejectedJudgments: a message that decodes but
// that Postgres rejects goes to the dead-letter topic with reason
// db_rejected; every other judgment around it is stored exactly once, and
// judgments published later are stored too. A message whose query id holds
// a NUL, as the probe posted, is dead-lettered by the decoder.
func TestPersisterDeadLettersRejectedJudgments(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		d := rejectingDB(t, "s", "t")
		reg := prometheus.NewRegistry()
		prod := newTestProducer(t, brokers, topics.Judgments, nil, nil)
		raw := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topics.Judgments, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: newTransport()}
		defer raw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()

		before, bad, after := judgments("s", "before", 3), poison("s", "bad", 2), judgments("s", "after", 4)
		other := judgments("t", "other", 5)
		publishAll(t, prod, map[string][]alignet.Judgment{"t": other})
		publishAll(t, prod, map[string][]alignet.Judgment{"s": before})
		publishAll(t, prod, map[string][]alignet.Judgment{"s": bad})
		// The probe's judgment: EncodeBatch refuses it, so write it by hand.
		nul := judgments("s", "nul", 1)
		nul[0].QueryID = "q\x00"
		v, err := json.Marshal(envelope{V: EnvelopeVersion, Judgments: nul})
		if err != nil {
			t.Fatal(err)
		}
		if err := raw.WriteMessages(ctx, kafka.Message{Key: []byte("s"), Value: v}); err != nil {
			t.Fatal(err)
		}
		publishAll(t, prod, map[string][]alignet.Judgment{"s": after})

		group := uniqueName(t, "g")
		rp := startPersister(t, newTestPersister(t, brokers, topics, group, d, reg, nil))
		letters := readMessages(t, brokers, topics.DeadLetters, 2)
		reasons := map[string]kafka.Message{}
		for _, m := range letters {
			reasons[headerMap(m)[HeaderErrorReason]] = m
		}
		if m, ok := reasons[reasonDBRejected]; !ok {
			t.Errorf("no dead letter with reason %s; got %v", reasonDBRejected, reasons)
		} else {
			js, err := DecodeBatch(m)
			if err != nil || len(js) != len(bad) || js[0].ID != bad[0].ID {
				t.Errorf("db_rejected dead letter holds %v (%v), want the rejected batch", js, err)
			}
			h := headerMap(m)
			if !strings.Contains(h[HeaderError], "23514") || h[HeaderSourceTopic] != topics.Judgments {
				t.Errorf("db_rejected dead letter headers %v, want the Postgres error and the source", h)
			}
			if _, err := strconv.ParseInt(h[HeaderSourceOffset], 10, 64); err != nil {
				t.Errorf("db_rejected dead letter: source offset %q", h[HeaderSourceOffset])
			}
		}
		if _, ok := reasons["judgment"]; !ok {
			t.Errorf("the NUL query id was not dead-lettered by the decoder; got %v", reasons)
		}

		// The persister keeps storing.
		later := judgments("s", "later", 2)
		publishAll(t, prod, map[string][]alignet.Judgment{"s": later})
		eventually(t, waitLong, "later judgments stored", func() bool { return len(storedIDs(t, d, "s")) == len(before)+len(after)+len(later) })
		if err := rp.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
		checkStoredOnce(t, d, "s", append(append(before, after...), later...))
		checkStoredOnce(t, d, "t", other)
		for reason, want := range map[string]float64{reasonDBRejected: 1, "judgment": 1} {
			if n := metricValue(t, reg, "alignet_dead_letters_total", map[string]string{"reason": reason}); n != want {
				t.Errorf("dead_letters_total{reason=%q} = %v, want %v", reason, n, want)
			}
		}
		want := len(before) + len(after) + len(later) + len(other)
		if n := metricValue(t, reg, "alignet_judgments_persisted_total", nil); n != float64(want) {
			t.Errorf("persisted_total = %v, want %d", n, want)
		}
		assertOnlyMarker(t, brokers, topics, group, prod)
	})
}

// countingSink counts the calls to a Sink.
type countingSink struct {
	Sink
	calls atomic.Int64
}

func (s *countingSink) InsertJudgments(ctx context.Context, js []alignet.Judgment) (int64, error) {
	s.calls.Add(1)
	return s.Sink.InsertJudgments(ctx, js)
}

// TestPersisterBisectsBatch: in one batch of many messages, the few that
// Postgres rejects (first, middle and last) are isolated by bisection with
// far fewer sink calls than one per message, the rest is stored exactly
// once, and the rejected ones are dead-lettered with their source offsets.
func TestPersisterBisectsBatch(t *testing.T) {
	t.Parallel()
	const messages, per = 64, 3
	for _, par := range []int{1, 4} {
		t.Run(fmt.Sprintf("parallelism=%d", par), func(t *testing.T) {
			t.Parallel()
			forEachBroker(t, func(t *testing.T, brokers []string) {
				topics := testTopics(t, brokers)
				d := rejectingDB(t, "s")
				sink := &countingSink{Sink: d}
				prod := newTestProducer(t, brokers, topics.Judgments, nil, nil)
				badAt := map[int]bool{0: true, messages / 2: true, messages - 1: true}
				var good []alignet.Judgment
				badIDs := map[string]bool{}
				for i := range messages {
					prefix := fmt.Sprintf("m%02d", i)
					js := judgments("s", prefix, per)
					if badAt[i] {
						js = poison("s", prefix, per)
						badIDs[js[0].ID] = true
					} else {
						good = append(good, js...)
					}
					publishAll(t, prod, map[string][]alignet.Judgment{"s": js})
				}
				added := make(chan kafka.Message, messages+1)
				p := newTestPersister(t, brokers, topics, uniqueName(t, "g"), sink, nil, func(c *PersisterConfig) {
					c.Parallelism = par
					c.MaxBatch = messages * per // the whole backlog is one batch
					c.FlushInterval = time.Hour
				})
				p.added = func(m kafka.Message) { added <- m }
				rp := startPersister(t, p)
				letters := readMessages(t, brokers, topics.DeadLetters, len(badAt))
				if n := len(added); n != messages {
					t.Errorf("%d messages joined batches before the flush, want all %d in one", n, messages)
				}
				calls := sink.calls.Load()
				later := judgments("s", "later", messages*per) // one message that fills a batch
				publishAll(t, prod, map[string][]alignet.Judgment{"s": later})
				eventually(t, waitLong, "later judgments stored", func() bool { return len(storedIDs(t, d, "s")) == len(good)+len(later) })
				if err := rp.stop(t); err != nil {
					t.Fatalf("run: %v", err)
				}
				checkStoredOnce(t, d, "s", append(good, later...))
				for _, m := range letters {
					h := headerMap(m)
					js, err := DecodeBatch(m)
					if err != nil || !badIDs[js[0].ID] || h[HeaderErrorReason] != reasonDBRejected {
						t.Errorf("dead letter %v with headers %v (%v), want one of the rejected messages with reason %s", js, h, err, reasonDBRejected)
						continue
					}
					delete(badIDs, js[0].ID)
				}
				if len(badIDs) > 0 {
					t.Errorf("rejected messages %v not dead-lettered", badIDs)
				}
				if calls >= messages {
					t.Errorf("isolating %d of %d messages took %d sink calls, want fewer than one per message", len(badAt), messages, calls)
				}
				t.Logf("%d sink calls to isolate %d of %d messages", calls, len(badAt), messages)
			})
		})
	}
}

// flakySink fails every call with a transient error while failing is set,
// and waits for release (or the end of ctx) while hanging is set; otherwise
// it stores in a memSink.
type flakySink struct {
	*memSink
	failing, hanging atomic.Bool
	release          chan struct{}
}

func (s *flakySink) InsertJudgments(ctx context.Context, js []alignet.Judgment) (int64, error) {
	if s.failing.Load() {
		return 0, fmt.Errorf("sink: %w: connection refused", alignet.ErrUnavailable)
	}
	if s.hanging.Load() {
		select {
		case <-s.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return s.memSink.InsertJudgments(ctx, js)
}

// TestPersisterReportsStuck: while a transient sink error keeps one batch
// uncommitted longer than StuckAfter, Ready fails naming the error and the
// stuck gauge is 1; once the sink recovers, both clear and the batch is
// stored. A hung sink is reported the same way.
func TestPersisterReportsStuck(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		topics := testTopics(t, brokers)
		reg := prometheus.NewRegistry()
		prod := newTestProducer(t, brokers, topics.Judgments, nil, nil)
		sink := &flakySink{memSink: newMemSink(), release: make(chan struct{})}
		sink.failing.Store(true)
		const stuckAfter = 200 * time.Millisecond
		p := newTestPersister(t, brokers, topics, uniqueName(t, "g"), sink, reg, func(c *PersisterConfig) { c.StuckAfter = stuckAfter })
		ctx := context.Background()
		if err := p.Ready(ctx); err != nil {
			t.Fatalf("Ready before Run: %v", err)
		}
		gauge := func(name string) float64 { return metricValue(t, reg, name, nil) }
		rp := startPersister(t, p)
		publishAll(t, prod, map[string][]alignet.Judgment{"s": judgments("s", "a", 3)})
		eventually(t, waitLong, "Ready failing", func() bool { return p.Ready(ctx) != nil })
		err := p.Ready(ctx)
		if !errors.Is(err, alignet.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "stuck after "+stuckAfter.String()) {
			t.Errorf("Ready of a stuck persister = %v, want ErrUnavailable naming the threshold and the last error", err)
		}
		eventually(t, waitLong, "stuck gauge 1", func() bool { return gauge("alignet_persister_stuck") == 1 })
		if age := gauge("alignet_persister_oldest_unflushed_seconds"); age < stuckAfter.Seconds() {
			t.Errorf("oldest unflushed = %vs while stuck for longer than %v", age, stuckAfter)
		}

		sink.failing.Store(false)
		eventually(t, waitLong, "batch stored", func() bool { return sink.count() == 3 })
		eventually(t, waitLong, "Ready after the batch was committed", func() bool { return p.Ready(ctx) == nil })
		eventually(t, waitLong, "stuck gauge 0", func() bool {
			return gauge("alignet_persister_stuck") == 0 && gauge("alignet_persister_oldest_unflushed_seconds") == 0
		})

		// A sink that hangs without an error.
		sink.hanging.Store(true)
		publishAll(t, prod, map[string][]alignet.Judgment{"s": judgments("s", "b", 2)})
		eventually(t, waitLong, "Ready failing on a hung sink", func() bool { return p.Ready(ctx) != nil })
		if err := p.Ready(ctx); !errors.Is(err, alignet.ErrUnavailable) || !strings.Contains(err.Error(), "not answered") {
			t.Errorf("Ready with a hung sink = %v, want ErrUnavailable saying it has not answered", err)
		}
		sink.hanging.Store(false)
		close(sink.release)
		eventually(t, waitLong, "batch stored after the hang", func() bool { return sink.count() == 5 })
		eventually(t, waitLong, "Ready after the hang", func() bool { return p.Ready(ctx) == nil })
		if err := rp.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
		if err := p.Ready(ctx); err != nil {
			t.Errorf("Ready after Run returned: %v", err)
		}
	})
}

// TestPersisterDeadLetterTooLarge: a letter the dead-letter topic refuses
// for its size is written without its value instead of retried forever,
// and the persister goes on.
func TestPersisterDeadLetterTooLarge(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, brokers []string) {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		topics := TopicConfig{Judgments: uniqueName(t, "j"), DeadLetters: uniqueName(t, "dlq"), Partitions: 1}
		tr := newTransport()
		defer tr.CloseIdleConnections()
		client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
		resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic: topics.DeadLetters, NumPartitions: 1, ReplicationFactor: 1,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "4096"}},
		}}})
		if err != nil || resp.Errors[topics.DeadLetters] != nil {
			t.Fatalf("create dead-letter topic: %v %v", err, resp)
		}
		if err := EnsureTopics(ctx, brokers, topics); err != nil {
			t.Fatal(err)
		}
		raw := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topics.Judgments, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: newTransport()}
		defer raw.Close()
		big := kafka.Message{Key: []byte("big"), Value: []byte(`{"v":1,"judgments":[` + strings.Repeat(" ", 8000))}
		small := kafka.Message{Key: []byte("small"), Value: []byte(`{"v":1,"judgments":[`)}
		if err := raw.WriteMessages(ctx, big, small); err != nil {
			t.Fatal(err)
		}
		prod := newTestProducer(t, brokers, topics.Judgments, nil, nil)
		publishAll(t, prod, map[string][]alignet.Judgment{"s": judgments("s", "after", 2)})
		sink := newMemSink()
		rp := startPersister(t, newTestPersister(t, brokers, topics, uniqueName(t, "g"), sink, nil, nil))
		eventually(t, waitLong, "judgments after the letters stored", func() bool { return sink.count() == 2 })
		got := map[string]kafka.Message{}
		for _, m := range readMessages(t, brokers, topics.DeadLetters, 2) {
			got[string(m.Key)] = m
		}
		if h := headerMap(got["big"]); len(got["big"].Value) != 0 || h[HeaderValueDropped] != strconv.Itoa(len(big.Value)) || h[HeaderErrorReason] != "json" {
			t.Errorf("oversized dead letter: value of %d bytes, headers %v; want no value, its size and the reason", len(got["big"].Value), h)
		}
		if h := headerMap(got["small"]); string(got["small"].Value) != string(small.Value) || h[HeaderValueDropped] != "" {
			t.Errorf("small dead letter: value %q, headers %v; want the original value", got["small"].Value, h)
		}
		if err := rp.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
	})
}
