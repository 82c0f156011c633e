package learner

import "testing"

func TestCompactMapsBack(t *testing.T) {
	ts := []Triplet{{I: 7, J: 3, K: 9}, {I: 3, J: 12, K: 7}, {I: 9, J: 12, K: 40}}
	rows, local := Compact(ts)
	seen := map[int32]bool{}
	for _, r := range rows {
		if seen[r] {
			t.Fatalf("row %d twice in %v", r, rows)
		}
		seen[r] = true
	}
	if len(rows) != 5 || len(local) != len(ts) {
		t.Fatalf("rows %v, local %v", rows, local)
	}
	for a, l := range local {
		if got := (Triplet{I: rows[l.I], J: rows[l.J], K: rows[l.K]}); got != ts[a] {
			t.Errorf("triplet %d maps back to %v, want %v", a, got, ts[a])
		}
	}
}
