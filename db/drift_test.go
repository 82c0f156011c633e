package db_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/alignet/alignet"
	"github.com/alignet/alignet/db/dbtest"
)

func TestDriftSnapshots(t *testing.T) {
	t.Parallel()
	d := dbtest.New(t)
	ctx := context.Background()
	if _, _, err := d.PutSpace(ctx, "clip", 3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.CreateStudy(ctx, alignet.Study{ID: "s", Task: alignet.TaskOddOneOut, Space: "clip"}); err != nil {
		t.Fatal(err)
	}
	base := time.Now().UTC().Truncate(time.Minute).Add(-30 * time.Minute)
	var js []alignet.Judgment
	for i := range 30 {
		js = append(js, alignet.Judgment{ID: fmt.Sprintf("j%02d", i), Study: "s", Task: alignet.TaskOddOneOut, Worker: "w",
			Items: [3]string{"a", "b", "c"}, Odd: "c", RTMillis: int32(100 + i), QueryID: "q" + fmt.Sprint(i), QueryKind: alignet.QueryRandom,
			ReceivedAt: base.Add(time.Duration(i) * 20 * time.Second)})
	}
	if _, err := d.InsertJudgments(ctx, js); err != nil {
		t.Fatal(err)
	}
	recent, err := d.RecentJudgments(ctx, "s", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != 10 || recent[0].ID != "j20" || recent[9].ID != "j29" || recent[9].StoredAt.IsZero() ||
		recent[9].QueryKind != alignet.QueryRandom || recent[9].RTMillis != 129 || recent[9].Odd != "c" {
		t.Fatalf("recent %+v", recent)
	}
	// 30 judgments every 20 s: three a minute over ten minutes.
	pm, err := d.JudgmentsPerMinute(ctx, "s", base)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, m := range pm {
		total += m.Count
		if m.Count != 3 {
			t.Errorf("minute %v: %d", m.Minute, m.Count)
		}
	}
	if len(pm) != 10 || total != 30 {
		t.Errorf("per minute %+v", pm)
	}

	snap := func(at time.Time, acc float64) alignet.DriftSnapshot {
		return alignet.DriftSnapshot{Study: "s", TakenAt: at, Judgments: 30,
			Signals:     []alignet.DriftSignal{{Name: alignet.SignalTeacherAccuracy, Value: &acc, N: 10}},
			PerMinute:   pm,
			Reliability: []alignet.ReliabilityBin{{Lo: 0, Hi: 0.1, Count: 3}},
			Quality:     alignet.DriftQuality{Window: 10, WorkerList: []alignet.WorkerAgreement{{Worker: "w", N: 10}}}}
	}
	t0 := base
	for i := range 5 {
		ok, err := d.InsertDriftSnapshot(ctx, snap(t0.Add(time.Duration(i)*time.Minute), 0.5+float64(i)/10), 30*time.Second, 3*time.Minute)
		if err != nil || !ok {
			t.Fatalf("insert %d: %v %v", i, ok, err)
		}
	}
	// Another replica 10 s later is too early.
	if ok, err := d.InsertDriftSnapshot(ctx, snap(t0.Add(4*time.Minute+10*time.Second), 0), 30*time.Second, 3*time.Minute); err != nil || ok {
		t.Fatalf("early insert: %v %v", ok, err)
	}
	got, err := d.DriftSnapshots(ctx, "s", time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	// Retention 3 minutes before the newest (4 min): 1, 2, 3 and 4 stay.
	if len(got) != 4 || !got[0].TakenAt.Equal(t0.Add(time.Minute)) || !got[3].TakenAt.Equal(t0.Add(4*time.Minute)) {
		t.Fatalf("got %d snapshots: %+v", len(got), got)
	}
	for i, s := range got {
		if want := 0.5 + float64(i+1)/10; *s.Signals[0].Value != want {
			t.Errorf("snapshot %d value %v, want %v", i, *s.Signals[0].Value, want)
		}
		newest := i == len(got)-1
		if (s.PerMinute != nil) != newest || (s.Reliability != nil) != newest || (s.Quality.WorkerList != nil) != newest {
			t.Errorf("snapshot %d (newest %v) detail: %d minutes, %d bins, %d workers", i, newest, len(s.PerMinute), len(s.Reliability), len(s.Quality.WorkerList))
		}
	}
	got, err = d.DriftSnapshots(ctx, "s", t0.Add(2*time.Minute), 1)
	if err != nil || len(got) != 1 || !got[0].TakenAt.Equal(t0.Add(4*time.Minute)) {
		t.Fatalf("limited: %+v %v", got, err)
	}
	if _, err := d.DriftSnapshots(ctx, "ghost", time.Time{}, 10); !errors.Is(err, alignet.ErrNotFound) {
		t.Errorf("missing study: %v", err)
	}
	if _, err := d.InsertDriftSnapshot(ctx, alignet.DriftSnapshot{Study: "ghost", TakenAt: t0}, 0, time.Hour); !errors.Is(err, alignet.ErrNotFound) {
		t.Errorf("missing study insert: %v", err)
	}
}
