package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/db/dbtest"
	"github.com/alignet/alignet/internal/testenv"
	"github.com/alignet/alignet/stream"
)

// manualClock is a clock the test advances.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestLinkedJudgmentsEndToEnd runs participant sessions against a server
// on a real Postgres, publishing to a real Kafka topic that a real
// persister stores: every accepted linked judgment is stored and joined to
// its query in the export, and replayed, foreign and expired query ids are
// refused with nothing on the topic or in the database.
func TestLinkedJudgmentsEndToEnd(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	d := dbtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	topics := stream.TopicConfig{Judgments: "t.linking." + suffix, DeadLetters: "t.linking.dlq." + suffix, Partitions: 2, ReplicationFactor: 1}
	tctx, tcancel := context.WithTimeout(ctx, time.Minute)
	defer tcancel()
	if err := stream.EnsureTopics(tctx, brokers, topics); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	producer, err := stream.NewProducer(stream.ProducerConfig{Brokers: brokers, Topic: topics.Judgments, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	persister, err := stream.NewPersister(stream.PersisterConfig{Brokers: brokers, Topic: topics.Judgments,
		DeadLetterTopic: topics.DeadLetters, GroupID: "t.linking." + suffix, Logger: log}, d)
	if err != nil {
		t.Fatal(err)
	}
	persisted := make(chan error, 1)
	go func() { persisted <- persister.Run(ctx) }()
	defer func() { cancel(); <-persisted }()

	clock := &manualClock{t: time.Now().UTC()}
	const adminKey = "admin-key-0123456789abcdef"
	srv, err := api.New(api.Config{AdminKey: adminKey, PseudonymKey: []byte("pseudonym-key-0123456789"),
		QueryLogInterval: 20 * time.Millisecond, Registerer: prometheus.NewRegistry(), Logger: log, Now: clock.Now},
		api.Deps{Spaces: d, Studies: d, Settings: d, Teachers: d, TeacherSource: d, Judgments: d, Keys: d, Workers: d, Items: d,
			Ready: d, Trainer: d, Sessions: d, Flags: d, Publisher: producer})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	sctx, stopServer := context.WithCancel(ctx)
	go func() { served <- srv.Serve(sctx, ln) }()
	defer func() { stopServer(); <-served }()
	base := "http://" + ln.Addr().String()
	call := func(method, path, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	must := func(status int, method, path, body string) []byte {
		t.Helper()
		code, b := call(method, path, body)
		if code != status {
			t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, status)
		}
		return b
	}

	must(http.StatusCreated, "PUT", "/v1/spaces/emb", `{"dim":8}`)
	rng := rand.New(rand.NewPCG(1, 2))
	var emb []map[string]any
	var ids []string
	for i := range 40 {
		v := make([]float32, 8)
		for k := range v {
			v[k] = float32(rng.NormFloat64())
		}
		emb = append(emb, map[string]any{"id": "i" + strconv.Itoa(i), "vector": v})
		ids = append(ids, "i"+strconv.Itoa(i))
	}
	b, _ := json.Marshal(map[string]any{"items": emb})
	must(http.StatusOK, "POST", "/v1/spaces/emb/embeddings", string(b))
	settings := alignet.DefaultStudySettings()
	settings.Queries.PoolSize, settings.Queries.Trials, settings.Queries.TTL = 1000, 8, alignet.Duration(time.Minute)
	if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: "qs", Task: alignet.TaskOddOneOut, Space: "emb", Settings: settings}); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(map[string]any{"items": ids})
	must(http.StatusOK, "POST", "/v1/studies/qs/items", string(b))

	type query struct {
		QueryID string    `json:"query_id"`
		Items   [3]string `json:"items"`
	}
	open := func(worker string) string {
		var s struct{ ID string }
		_ = json.Unmarshal(must(http.StatusCreated, "POST", "/v1/studies/qs/sessions", `{"worker":"`+worker+`"}`), &s)
		return s.ID
	}
	next := func(session string, n int) []query {
		var r struct{ Queries []query }
		_ = json.Unmarshal(must(http.StatusOK, "GET", fmt.Sprintf("/v1/studies/qs/sessions/%s/next?n=%d", session, n), ""), &r)
		return r.Queries
	}
	answer := func(id, worker string, q query) string {
		b, _ := json.Marshal(map[string]any{"id": id, "worker": worker, "items": q.Items, "odd": q.Items[1], "rt_ms": 1500, "query_id": q.QueryID})
		return string(b)
	}
	alice, bob := open("alice"), open("bob")
	aq, bq := next(alice, 8), next(bob, 2)
	accepted := map[string]string{} // judgment id -> query id
	for i, q := range aq[:5] {
		id := "a" + strconv.Itoa(i)
		must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", answer(id, "alice", q))
		accepted[id] = q.QueryID
	}
	// Batched answers, and a retry of one, are accepted.
	batch := "[" + answer("b0", "bob", bq[0]) + "," + answer("b1", "bob", bq[1]) + "]"
	must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", batch)
	must(http.StatusAccepted, "POST", "/v1/studies/qs/judgments", batch)
	accepted["b0"], accepted["b1"] = bq[0].QueryID, bq[1].QueryID
	refused := map[string]int{
		answer("r-replay", "alice", aq[0]):                                       http.StatusConflict,
		answer("r-foreign", "bob", aq[5]):                                        http.StatusConflict,
		answer("r-unknown", "alice", query{QueryID: "nope", Items: aq[5].Items}): http.StatusUnprocessableEntity,
	}
	for body, status := range refused {
		must(status, "POST", "/v1/studies/qs/judgments", body)
	}
	clock.Advance(2 * time.Minute)
	must(http.StatusGone, "POST", "/v1/studies/qs/judgments", answer("r-expired", "alice", aq[6]))

	// Every accepted judgment is stored once, and nothing refused.
	deadline := time.Now().Add(time.Minute)
	for {
		n, err := d.CountJudgments(ctx, "qs")
		if err != nil {
			t.Fatal(err)
		}
		if n == int64(len(accepted)) {
			break
		}
		if n > int64(len(accepted)) || time.Now().After(deadline) {
			t.Fatalf("%d judgments stored, want %d", n, len(accepted))
		}
		time.Sleep(20 * time.Millisecond)
	}
	body := must(http.StatusOK, "GET", "/v1/studies/qs/judgments?format=jsonl&join=queries", "")
	lines := bytes.Split(bytes.TrimSpace(body), []byte("\n"))
	if len(lines) != len(accepted) {
		t.Fatalf("export has %d rows, want %d", len(lines), len(accepted))
	}
	for _, l := range lines {
		var row struct {
			alignet.Judgment
			Query *struct {
				Session        string    `json:"session"`
				Kind           string    `json:"kind"`
				TeacherVersion int64     `json:"teacher_version"`
				ServedAt       time.Time `json:"served_at"`
			} `json:"query"`
		}
		if err := json.Unmarshal(l, &row); err != nil {
			t.Fatal(err)
		}
		qid, ok := accepted[row.ID]
		if !ok || row.QueryID != qid || row.Query == nil || row.Query.Kind != string(row.QueryKind) || !row.QueryKind.Valid() ||
			row.Query.ServedAt.IsZero() || (row.Query.Session != alice && row.Query.Session != bob) {
			t.Fatalf("export row %s: want judgment %s joined to query %s", l, row.ID, qid)
		}
	}
	// The topic holds exactly the accepted judgments (the retried batch
	// twice, as published; the persister stored it once).
	onTopic := map[string]int{}
	for p := range 2 {
		conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], topics.Judgments, p)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		_ = conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topics.Judgments, Partition: p})
		for off := int64(0); off < last; off++ {
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			m, err := r.ReadMessage(rctx)
			rcancel()
			if err != nil {
				t.Fatal(err)
			}
			js, err := stream.DecodeBatch(m)
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range js {
				onTopic[j.ID]++
			}
		}
		_ = r.Close()
	}
	for id := range onTopic {
		if _, ok := accepted[id]; !ok {
			t.Fatalf("refused judgment %s reached the topic", id)
		}
	}
	if len(onTopic) != len(accepted) || onTopic["b0"] != 2 {
		t.Fatalf("topic holds %v, want every accepted judgment (b0, b1 twice)", onTopic)
	}
	// The query log holds every served query, answered or not.
	for _, q := range append(aq, bq...) {
		if _, err := d.GetQuery(ctx, "qs", q.QueryID); err != nil {
			t.Fatalf("served query %s not in the query log: %v", q.QueryID, err)
		}
	}
}
