package db_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db"
	"github.com/alignet/alignet/db/dbtest"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// judgment returns a judgment received sec seconds after t0.
func judgment(study, id, worker string, sec int) alignet.Judgment {
	return alignet.Judgment{
		ID: id, Study: study, Task: alignet.TaskOddOneOut, Worker: worker,
		Items: [3]string{"x-" + id, "y", "z"}, Odd: "y", RTMillis: int32(1000 + sec),
		QueryID: "q-" + id, ReceivedAt: t0.Add(time.Duration(sec) * time.Second),
	}
}

// batch returns judgments ids prefix-from .. prefix-(to-1).
func batch(study string, from, to int) []alignet.Judgment {
	var js []alignet.Judgment
	for i := from; i < to; i++ {
		js = append(js, judgment(study, fmt.Sprintf("j%06d", i), fmt.Sprintf("w%d", i%7), i))
	}
	return js
}

// inserters are the two InsertJudgments strategies; both must behave alike.
var inserters = []struct {
	name   string
	insert func(*db.DB, context.Context, []alignet.Judgment) (int64, error)
}{
	{"unnest", (*db.DB).InsertJudgments},
	{"copy", (*db.DB).InsertJudgmentsCopy},
}

func TestInsertJudgmentsIdempotent(t *testing.T) {
	t.Parallel()
	for _, in := range inserters {
		t.Run(in.name, func(t *testing.T) {
			t.Parallel()
			d := dbtest.New(t)
			ctx := context.Background()
			mustStudy(t, d, "s", 2)
			insert := func(js []alignet.Judgment) int64 {
				t.Helper()
				n, err := in.insert(d, ctx, js)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			count := func() int64 {
				t.Helper()
				n, err := d.CountJudgments(ctx, "s")
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			if n := insert(nil); n != 0 {
				t.Fatalf("empty batch inserted %d", n)
			}
			if n := insert(batch("s", 0, 100)); n != 100 {
				t.Fatalf("first batch inserted %d, want 100", n)
			}
			if n := insert(batch("s", 0, 100)); n != 0 || count() != 100 {
				t.Fatalf("same batch again inserted %d (count %d), want 0 (100)", n, count())
			}
			if n := insert(batch("s", 50, 150)); n != 50 || count() != 150 {
				t.Fatalf("overlapping batch inserted %d (count %d), want 50 (150)", n, count())
			}
			// Duplicates inside one batch: the first occurrence wins.
			first := judgment("s", "dup", "w-first", 500)
			second := judgment("s", "dup", "w-second", 501)
			js := append(batch("s", 150, 160), first, second, judgment("s", "j000150", "w", 0))
			if n := insert(js); n != 11 || count() != 161 {
				t.Fatalf("batch with inner duplicates inserted %d (count %d), want 11 (161)", n, count())
			}
			var got []alignet.Judgment
			err := d.ExportJudgments(ctx, alignet.JudgmentFilter{Study: "s", Since: t0.Add(500 * time.Second)}, func(j alignet.Judgment) error {
				got = append(got, j)
				return nil
			})
			if err != nil || len(got) != 1 || got[0].Worker != "w-first" {
				t.Fatalf("stored duplicate = %+v, %v; want the first occurrence", got, err)
			}
		})
	}
}

func TestInsertJudgmentsErrors(t *testing.T) {
	t.Parallel()
	for _, in := range inserters {
		t.Run(in.name, func(t *testing.T) {
			t.Parallel()
			d := dbtest.New(t)
			ctx := context.Background()
			mustStudy(t, d, "s", 2)
			js := append(batch("s", 0, 10), judgment("ghost", "g1", "w", 1))
			_, err := in.insert(d, ctx, js)
			if !errors.Is(err, alignet.ErrNotFound) || !strings.Contains(err.Error(), "ghost") {
				t.Fatalf("judgment for a missing study: err = %v, want ErrNotFound naming it", err)
			}
			if n, _ := d.CountJudgments(ctx, "s"); n != 0 {
				t.Fatalf("failed batch stored %d judgments, want 0", n)
			}
			if _, err := in.insert(d, ctx, []alignet.Judgment{judgment("s", "", "w", 1)}); err == nil {
				t.Fatal("judgment without id accepted")
			}
			if _, err := d.CountJudgments(ctx, "ghost"); !errors.Is(err, alignet.ErrNotFound) {
				t.Fatalf("CountJudgments of missing study: err = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestExportJudgments(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	mustStudy(t, d, "s", 2)
	mustStudy(t, d, "other", 2)
	// Inserted out of order, with ties on received_at broken by id.
	js := []alignet.Judgment{
		judgment("s", "c", "w1", 30), judgment("s", "b", "w2", 10), judgment("s", "a", "w1", 30),
		judgment("s", "d", "w1", 20), judgment("s", "e", "w2", 40), judgment("other", "a", "w1", 15),
	}
	js[1].Odd, js[1].QueryID, js[1].Task = "", "", alignet.TaskAnchor
	if n, err := d.InsertJudgments(ctx, js); err != nil || n != 6 {
		t.Fatalf("InsertJudgments = %d, %v", n, err)
	}
	export := func(f alignet.JudgmentFilter) []string {
		t.Helper()
		var ids []string
		err := d.ExportJudgments(ctx, f, func(j alignet.Judgment) error {
			ids = append(ids, j.Study+"/"+j.ID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	cases := []struct {
		f    alignet.JudgmentFilter
		want []string
	}{
		{alignet.JudgmentFilter{Study: "s"}, []string{"s/b", "s/d", "s/a", "s/c", "s/e"}},
		{alignet.JudgmentFilter{Study: "s", Since: t0.Add(20 * time.Second)}, []string{"s/d", "s/a", "s/c", "s/e"}},
		{alignet.JudgmentFilter{Study: "s", Until: t0.Add(30 * time.Second)}, []string{"s/b", "s/d"}},
		{alignet.JudgmentFilter{Study: "s", Since: t0.Add(20 * time.Second), Until: t0.Add(40 * time.Second)}, []string{"s/d", "s/a", "s/c"}},
		{alignet.JudgmentFilter{Study: "s", Worker: "w1"}, []string{"s/d", "s/a", "s/c"}},
		{alignet.JudgmentFilter{Worker: "w1"}, []string{"other/a", "s/d", "s/a", "s/c"}},
		{alignet.JudgmentFilter{}, []string{"s/b", "other/a", "s/d", "s/a", "s/c", "s/e"}},
	}
	for _, tc := range cases {
		if got := export(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("ExportJudgments(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}

	// Round trip of every field, including NULL odd and query id.
	var got []alignet.Judgment
	if err := d.ExportJudgments(ctx, alignet.JudgmentFilter{Study: "s", Until: t0.Add(20 * time.Second)}, func(j alignet.Judgment) error {
		got = append(got, j)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].ReceivedAt.Equal(js[1].ReceivedAt) {
		t.Fatalf("export = %+v", got)
	}
	got[0].ReceivedAt = js[1].ReceivedAt
	if got[0] != js[1] {
		t.Fatalf("exported %+v, want %+v", got[0], js[1])
	}
	var null int
	if err := d.Pool().QueryRow(ctx, "SELECT count(*) FROM judgments WHERE odd IS NULL AND query_id IS NULL").Scan(&null); err != nil || null != 1 {
		t.Fatalf("rows with NULL odd and query_id = %d, %v; want 1", null, err)
	}

	// fn's error stops the export and is returned.
	stop := errors.New("stop")
	calls := 0
	err := d.ExportJudgments(ctx, alignet.JudgmentFilter{Study: "s"}, func(alignet.Judgment) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("export with failing fn: err = %v after %d calls", err, calls)
	}
	if err := d.ExportJudgments(ctx, alignet.JudgmentFilter{Study: "ghost"}, func(alignet.Judgment) error { return nil }); !errors.Is(err, alignet.ErrNotFound) {
		t.Fatalf("export of missing study: err = %v, want ErrNotFound", err)
	}

	sum, err := d.WorkerSummary(ctx, "w1")
	want := []alignet.WorkerStudy{
		{Study: "other", Judgments: 1, First: t0.Add(15 * time.Second), Last: t0.Add(15 * time.Second)},
		{Study: "s", Judgments: 3, First: t0.Add(20 * time.Second), Last: t0.Add(30 * time.Second)},
	}
	if err != nil || !slices.EqualFunc(sum, want, func(a, b alignet.WorkerStudy) bool {
		return a.Study == b.Study && a.Judgments == b.Judgments && a.First.Equal(b.First) && a.Last.Equal(b.Last)
	}) {
		t.Fatalf("WorkerSummary(w1) = %+v, %v; want %+v", sum, err, want)
	}
	if sum, err := d.WorkerSummary(ctx, "nobody"); err != nil || sum == nil || len(sum) != 0 {
		t.Fatalf("WorkerSummary(nobody) = %#v, %v; want empty", sum, err)
	}
}

func TestInsertJudgmentsConcurrent(t *testing.T) {
	t.Parallel()
	for _, in := range inserters {
		t.Run(in.name, func(t *testing.T) {
			t.Parallel()
			d := dbtest.New(t)
			ctx := context.Background()
			mustStudy(t, d, "s", 2)
			// 8 workers, each inserting 10 batches of 200 from a window that
			// overlaps its neighbours'.
			const workers, batches, size = 8, 10, 200
			window := func(w, b int) int { return (w*100 + b*150) % 2000 }
			want := map[int]bool{}
			for w := range workers {
				for b := range batches {
					for i := window(w, b); i < window(w, b)+size; i++ {
						want[i] = true
					}
				}
			}
			total := make([]int64, workers)
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for b := range batches {
						from := window(w, b)
						js := batch("s", from, from+size)
						if w%2 == 1 {
							slices.Reverse(js)
						}
						n, err := in.insert(d, ctx, js)
						if err != nil {
							errs <- err
							return
						}
						total[w] += n
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			var sum int64
			for _, n := range total {
				sum += n
			}
			var rows, distinct int64
			if err := d.Pool().QueryRow(ctx, "SELECT count(*), count(DISTINCT id) FROM judgments").Scan(&rows, &distinct); err != nil {
				t.Fatal(err)
			}
			if sum != rows || rows != distinct || rows != int64(len(want)) {
				t.Fatalf("inserted %d by report, %d rows, %d distinct; want %d each", sum, rows, distinct, len(want))
			}
		})
	}
}

func BenchmarkInsertJudgments(b *testing.B) {
	for _, in := range inserters {
		for _, size := range []int{1000, 5000} {
			b.Run(fmt.Sprintf("%s/batch=%d", in.name, size), func(b *testing.B) {
				d := dbtest.New(b)
				ctx := context.Background()
				mustStudy(b, d, "s", 2)
				next := 0
				for b.Loop() {
					js := batch("s", next, next+size)
					next += size
					if n, err := in.insert(d, ctx, js); err != nil || n != int64(size) {
						b.Fatalf("insert = %d, %v", n, err)
					}
				}
				b.ReportMetric(float64(next)/b.Elapsed().Seconds(), "judgments/s")
			})
		}
	}
}

// TestExportsCannotStarveThePool: exports whose readers stall hold at most
// MaxExportConns connections, so inserts and queries still get one, and
// the waiting exports run once a slot is free.
func TestExportsCannotStarveThePool(t *testing.T) {
	t.Parallel()
	const maxConns, exports = 4, 6
	d := dbtest.Open(t, db.Config{MaxConns: maxConns})
	ctx := context.Background()
	mustStudy(t, d, "s", 2)
	if _, err := d.InsertJudgments(ctx, batch("s", 0, 20)); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	unstall := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unstall) // before the pool closes, which waits for the exports
	entered := make(chan struct{}, exports)
	errs := make(chan error, exports)
	rows := make([]int, exports)
	for i := range exports {
		go func() {
			errs <- d.ExportJudgments(ctx, alignet.JudgmentFilter{Study: "s"}, func(alignet.Judgment) error {
				if rows[i] == 0 {
					entered <- struct{}{}
					<-release // a client that does not read
				}
				rows[i]++
				return nil
			})
		}()
	}
	<-entered // at least one export holds a connection and stalls
	// More exports than the pool has connections are stalled or waiting;
	// the rest of the pool still serves.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i := 20; i < 40; i++ {
		if n, err := d.InsertJudgments(wctx, batch("s", i, i+1)); err != nil || n != 1 {
			t.Fatalf("insert while exports stall: %d, %v", n, err)
		}
		if n, err := d.CountJudgments(wctx, "s"); err != nil || n != int64(i+1) {
			t.Fatalf("count while exports stall: %d, %v", n, err)
		}
	}
	// A waiting export gives up with its context.
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if err := d.ExportJudgments(short, alignet.JudgmentFilter{}, func(alignet.Judgment) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("export with a cancelled context while the slots are taken: %v, want context.Canceled", err)
	}
	unstall()
	for range exports {
		if err := <-errs; err != nil {
			t.Fatalf("export: %v", err)
		}
	}
	for i, n := range rows {
		if n < 20 {
			t.Errorf("export %d saw %d judgments, want at least the 20 stored before it began", i, n)
		}
	}
}
