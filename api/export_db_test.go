package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/api"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
)

// nopPublisher accepts every batch.
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, string, []alignet.Judgment) error { return nil }
func (nopPublisher) Ping(context.Context) error                                { return nil }

// TestStalledExportsLeaveDBPool is TestStalledExportsCannotStarveStore on
// a real *db.DB: twelve clients that never read their exports, against a
// pool of six connections, leave the persister room to store.
func TestStalledExportsLeaveDBPool(t *testing.T) {
	t.Parallel()
	const clients, maxExports, poolSize = 12, 4, 6
	// The database's own export cap is set to the API's, so the API cap is what
	// this test measures.
	d := dbtest.Open(t, db.Config{MaxConns: poolSize, MaxExportConns: maxExports})
	ctx := context.Background()
	if _, _, err := d.PutSpace(ctx, "sp", 2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: "s", Task: alignet.TaskOddOneOut, Space: "sp"}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Second)
	for b := range 6 {
		js := make([]alignet.Judgment, 5000)
		for i := range js {
			n := b*len(js) + i
			js[i] = alignet.Judgment{ID: fmt.Sprintf("j%07d", n), Study: "s", Task: alignet.TaskOddOneOut,
				Worker: strings.Repeat("a", 32), Items: [3]string{"item-one", "item-two", "item-three"}, Odd: "item-two",
				RTMillis: 1000, QueryID: "query-" + strings.Repeat("q", 40), ReceivedAt: t0.Add(time.Duration(n) * time.Microsecond)}
		}
		if _, err := d.InsertJudgments(ctx, js); err != nil {
			t.Fatal(err)
		}
	}
	const adminKey = "admin-key-0123456789abcdef"
	reg := prometheus.NewRegistry()
	srv, err := api.New(api.Config{
		AdminKey: adminKey, PseudonymKey: []byte("pseudonym-key-0123456789"),
		MaxExports: maxExports, ShutdownTimeout: time.Second,
		Registerer: reg, Logger: slog.New(slog.DiscardHandler),
	}, api.StoreDeps(d, nopPublisher{}))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-served
	})
	for range clients {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.(*net.TCPConn).SetReadBuffer(4096)
		if _, err := io.WriteString(c, "GET /v1/studies/s/judgments HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "+adminKey+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until every request was answered with 503 or holds an export.
	deadline := time.Now().Add(30 * time.Second)
	for d.Pool().Stat().AcquiredConns() < maxExports || refused(t, reg) < clients-maxExports {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections acquired by stalled exports, %d refused", d.Pool().Stat().AcquiredConns(), refused(t, reg))
		}
		time.Sleep(10 * time.Millisecond)
	}
	ictx, icancel := context.WithTimeout(ctx, 20*time.Second)
	defer icancel()
	j := alignet.Judgment{ID: "persisted", Study: "s", Task: alignet.TaskOddOneOut, Worker: "w",
		Items: [3]string{"a", "b", "c"}, Odd: "a", ReceivedAt: time.Now()}
	if _, err := d.InsertJudgments(ictx, []alignet.Judgment{j}); err != nil {
		t.Fatalf("persister starved by %d stalled exports: %v", clients, err)
	}
	if n := d.Pool().Stat().AcquiredConns(); n > maxExports {
		t.Fatalf("%d pool connections held by stalled exports, want at most %d", n, maxExports)
	}
}

// refused returns how many exports were answered with 503.
func refused(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != "alignet_http_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == "/v1/studies/:study/judgments" && labels["method"] == "GET" && labels["status"] == "503" {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}
