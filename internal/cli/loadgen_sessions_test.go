package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/client"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
)

// storingPublisher stores published judgments at once, as a persister
// would a moment later.
type storingPublisher struct{ d *db.DB }

func (p storingPublisher) Publish(ctx context.Context, _ string, js []alignet.Judgment) error {
	_, err := p.d.InsertJudgments(ctx, js)
	return err
}

func (storingPublisher) Ping(context.Context) error { return nil }

// TestSessionLoad runs loadgen's sessions mode for a second against an
// API on a real Postgres: participants open, answer and complete
// sessions, and every accepted judgment is stored.
func TestSessionLoad(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	const adminKey = "admin-key-0123456789abcdef"
	srv, err := api.New(api.Config{AdminKey: adminKey, PseudonymKey: []byte("pseudonym-key-0123456789"),
		Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)},
		api.StoreDeps(d, storingPublisher{d}))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	var out bytes.Buffer
	c := client.New("http://"+ln.Addr().String(), adminKey, nil)
	err = runSessionLoad(ctx, c, sessionLoad{items: 60, dim: 4, participants: 8, n: 2, rate: 400, duration: time.Second,
		warmup: 200 * time.Millisecond, answerBatch: 10, answerPosts: 2, seed: 1, verifyWait: 10 * time.Second}, &out, io.Discard, true)
	if err != nil {
		t.Fatalf("sessions mode: %v\n%s", err, out.String())
	}
	var rep sessionReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Verified || rep.Next.Count == 0 || rep.JudgmentsAccepted == 0 || rep.Stored != rep.JudgmentsAccepted ||
		rep.SessionsOpened == 0 || rep.QueriesServed != rep.JudgmentsAccepted {
		t.Fatalf("report %+v", rep)
	}
	// Nothing was refused, and every stored judgment answers a query.
	linked := 0
	if err := d.ExportJudgmentQueries(ctx, alignet.JudgmentFilter{Study: rep.Study}, func(j alignet.Judgment, q *alignet.Query) error {
		if q != nil && q.ID == j.QueryID {
			linked++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if int64(linked) != rep.Stored || rep.Errors != 0 {
		t.Fatalf("%d of %d stored judgments linked, %d errors", linked, rep.Stored, rep.Errors)
	}
}
