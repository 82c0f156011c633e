package api

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// guard bounds waits for something that must happen; it is not a speed
// requirement, only a way to fail instead of hanging.
const guard = 20 * time.Second

// slowPost sends a request head announcing a body of n bytes, then the body
// one byte every interval until the connection fails or stop is closed, and
// returns the connection and the response read from it.
func slowPost(t *testing.T, base, path, key string, n int, interval time.Duration, stop <-chan struct{}) (*http.Response, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, n)
	if key != "" {
		head += "Authorization: Bearer " + key + "\r\n"
	}
	if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range n {
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(guard))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response to a slow body: %v", err)
	}
	return resp, conn
}

// TestSlowBodyCutOff sends bodies one byte at a time, with and without a
// key: the server answers once ReadTimeout has passed and closes the
// connection, instead of waiting for the body for as long as it trickles.
func TestSlowBodyCutOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.ReadTimeout = 300 * time.Millisecond })
	base := e.serve()
	for _, tc := range []struct {
		name, key string
		status    int
	}{
		{"without a key", "", http.StatusUnauthorized},
		{"with a key", e.collect, http.StatusRequestTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop := make(chan struct{})
			defer close(stop)
			// 100 KB at 20 bytes a second would take more than an hour.
			resp, conn := slowPost(t, base, "/v1/studies/s1/judgments", tc.key, 100_000, 50*time.Millisecond, stop)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// The connection is closed, not kept for the rest of the body.
			if _, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Fatalf("connection still open after the response: %v", err)
			}
		})
	}
	if len(e.pub.published()) != 0 {
		t.Fatal("a slow body was published")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestReadDeadlineLiftedAfterBody checks that a handler still running
// after ReadTimeout, its body read, is not cancelled by the read deadline.
func TestReadDeadlineLiftedAfterBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.ReadTimeout = 100 * time.Millisecond })
	base := e.serve()
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	e.pub.mu.Lock()
	e.pub.gate, e.pub.entered = gate, entered
	e.pub.mu.Unlock()
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/v1/studies/s1/judgments", strings.NewReader(okOdd))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+e.collect)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-entered
	time.Sleep(300 * time.Millisecond) // past ReadTimeout, inside Publish
	close(gate)
	if status := <-done; status != http.StatusAccepted {
		t.Fatalf("status %d after a publish longer than ReadTimeout, want 202", status)
	}
}

// TestMaxConns checks that connections beyond MaxConns wait until one
// closes.
func TestMaxConns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxConns = 2 })
	base := e.serve()
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Both are accepted: they get answers.
	for _, c := range held {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(guard))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection: %v", err)
		}
		resp.Body.Close()
	}
	got := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Timeout: guard}).Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a third connection was served while two were open (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	held[0].Close()
	if err := <-got; err != nil {
		t.Fatalf("third connection after one closed: %v", err)
	}
}

// manyJudgments stores n judgments of study s1, enough CSV to fill the
// socket buffers of a client that does not read.
func manyJudgments(e *env, n int) {
	js := make([]alignet.Judgment, n)
	t0 := e.clock.Now().UTC()
	for i := range js {
		js[i] = alignet.Judgment{ID: fmt.Sprintf("bulk-%07d", i), Study: "s1", Task: alignet.TaskOddOneOut,
			Worker: strings.Repeat("f", 32), Items: [3]string{"c1", "c2", "c3"}, Odd: "c1", RTMillis: 1234,
			QueryID: "query-" + strings.Repeat("q", 40), ReceivedAt: t0.Add(time.Duration(i) * time.Microsecond)}
	}
	e.store.addJudgments(js)
}

// stalledExport requests an export over a raw connection with a tiny
// receive buffer and never reads the answer.
func stalledExport(t *testing.T, base, key string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	req := "GET /v1/studies/s1/judgments?format=csv HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + key + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return c
}

// requestCount returns how many requests of route got status.
func requestCount(t *testing.T, e *env, method, route string, status int) uint64 {
	t.Helper()
	var m dto.Metric
	if err := e.s.metrics.duration.WithLabelValues(route, method, fmt.Sprint(status)).(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// waitFor polls cond until it holds, failing after guard.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStalledExportsCannotStarveStore opens more exports than the store
// has connections, from clients that never read. At most MaxExports hold a
// connection, the others are refused with 503, and the persister can
// still store.
func TestStalledExportsCannotStarveStore(t *testing.T) {
	t.Parallel()
	const clients, maxExports = 20, 4
	e := newEnv(t, func(c *Config) {
		c.MaxExports = maxExports
		c.ShutdownTimeout = time.Second
	})
	manyJudgments(e, 60_000)
	base := e.serve()
	const route = "/v1/studies/:study/judgments"
	for range clients {
		stalledExport(t, base, e.read)
	}
	waitFor(t, "every export to start or be refused", func() bool {
		return e.store.callCount("ExportJudgments") == maxExports &&
			requestCount(t, e, "GET", route, http.StatusServiceUnavailable) == clients-maxExports
	})
	if inUse, _ := e.store.connStats(); inUse > maxExports {
		t.Fatalf("%d store connections in use by %d stalled exports, want at most %d", inUse, clients, maxExports)
	}
	// A reading client is refused with Retry-After while all slots are taken.
	resp := getWithKey(t, base+"/v1/studies/s1/judgments", e.read)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" {
		t.Fatalf("export beyond MaxExports: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	resp.Body.Close()
	// The persister is not starved.
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	j := alignet.Judgment{ID: "persisted", Study: "s1", Task: alignet.TaskOddOneOut, Worker: "w",
		Items: [3]string{"c1", "c2", "c3"}, Odd: "c1", ReceivedAt: time.Now()}
	if _, err := e.store.InsertJudgments(ctx, []alignet.Judgment{j}); err != nil {
		t.Fatalf("persister starved by stalled exports: %v", err)
	}
	if _, peak := e.store.connStats(); peak > maxExports+1 {
		t.Fatalf("peak %d store connections, want at most %d exports and the insert", peak, maxExports+1)
	}
}

// TestStalledExportDropped checks that an export to a client that stopped
// reading fails after WriteTimeout and frees its store connection and its
// export slot.
func TestStalledExportDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.MaxExports = 1
		c.WriteTimeout = 300 * time.Millisecond
	})
	manyJudgments(e, 60_000)
	base := e.serve()
	stalledExport(t, base, e.read)
	waitFor(t, "the export to start", func() bool { return e.store.callCount("ExportJudgments") == 1 })
	waitFor(t, "the stalled export to be dropped", func() bool {
		inUse, _ := e.store.connStats()
		return inUse == 0 && len(e.s.exports) == 0
	})
	resp := getWithKey(t, base+"/v1/studies/s1/judgments", e.read)
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || n < 60_000*50 {
		t.Fatalf("export after the stalled one was dropped: %d, %d bytes, %v", resp.StatusCode, n, err)
	}
}

func getWithKey(t *testing.T, url, key string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Timeout: guard}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestExportSlotReleased checks that failed and finished exports give
// their slot back.
func TestExportSlotReleased(t *testing.T) {
	t.Parallel()
	e, _ := exportSetup(t, func(c *Config) { c.MaxExports = 1 })
	for range 3 {
		e.must(http.StatusOK, "GET", "/v1/studies/s1/judgments", e.read, "")
		e.must(http.StatusNotFound, "GET", "/v1/studies/zz/judgments", e.read, "")
	}
	if len(e.s.exports) != 0 {
		t.Fatalf("%d export slots still taken", len(e.s.exports))
	}
}
