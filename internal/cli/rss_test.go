package cli

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParseKB(t *testing.T) {
	kb, err := parseKB([]byte("Name:\talignet\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n"), "VmRSS:")
	if err != nil || kb != 12345 {
		t.Fatalf("parseKB VmRSS = %d, %v; want 12345", kb, err)
	}
	kb, err = parseKB([]byte("55d2-7ffe ---p 00000000 00:00 0   [rollup]\nRss:   1628 kB\nPss:    185 kB\nPss_Dirty:  108 kB\n"), "Pss:")
	if err != nil || kb != 185 {
		t.Fatalf("parseKB Pss = %d, %v; want 185", kb, err)
	}
	if _, err := parseKB([]byte("Name:\tkthreadd\n"), "VmRSS:"); err == nil {
		t.Fatal("a status without VmRSS parsed")
	}
}

func TestSampleRSSSumsTheTree(t *testing.T) {
	// A child holding 8 MB of its own, so that its PSS is not just a share
	// of libraries mapped by everyone.
	child := exec.Command("sh", "-c", `x=$(head -c 8000000 /dev/zero | tr '\0' a); sleep 30`)
	if err := child.Start(); err != nil {
		t.Skipf("cannot start sh: %v", err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	self := os.Getpid()
	var kid int64
	for deadline := time.Now().Add(10 * time.Second); kid < 4<<10; time.Sleep(20 * time.Millisecond) {
		k, err := pss(child.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		kid = k
		if time.Now().After(deadline) {
			t.Skipf("the child never held 4 MB (PSS %d kB)", kid)
		}
	}
	// A tree is measured in PSS, which is at most the RSS.
	alone, err := pss(self)
	if err != nil {
		t.Fatal(err)
	}
	got := sampleRSS([]watched{{name: "self", pid: self}, {name: "tree", pid: self, tree: true}, {name: "gone", pid: 1 << 30}})
	if got[0] <= 0 || got[2] != -1 {
		t.Fatalf("samples %v: want a positive RSS for self and -1 for a missing process", got)
	}
	// The tree holds this process and its child.
	if got[1] < alone+kid/2 {
		t.Fatalf("tree %d kB does not include the child (%d kB) beside self (%d kB)", got[1], kid, alone)
	}
}

// series makes samples of one process from MB values.
func series(mbs ...float64) []rssSample {
	out := make([]rssSample, len(mbs))
	for i, mb := range mbs {
		out[i] = rssSample{at: time.Duration(i) * time.Second, accepted: int64(1000 * i), kb: []int64{int64(mb * 1024)}}
	}
	return out
}

func TestJudgeRSS(t *testing.T) {
	w := watched{name: "api", pid: 7}
	for _, tc := range []struct {
		name  string
		mbs   []float64
		flat  bool
		judge bool
	}{
		// Warm-up growth in the first third does not count.
		{"warm-up then flat", []float64{20, 60, 90, 100, 101, 99, 100, 102, 101}, true, true},
		{"steady growth", []float64{100, 150, 200, 250, 300, 350, 400, 450, 500}, false, true},
		// 8% above the middle: within 10%.
		{"small drift", []float64{400, 400, 400, 400, 400, 400, 432, 432, 432}, true, true},
		// 40 MB but 10× above: beyond both.
		{"small process doubling", []float64{4, 4, 4, 4, 4, 4, 44, 44, 44}, false, true},
		// 20 MB above a 50 MB process: within the 32 MB slack.
		{"small process, small step", []float64{50, 50, 50, 50, 50, 50, 70, 70, 70}, true, true},
		{"too few samples", []float64{10, 10, 10, 10, 10}, true, false},
	} {
		v := judgeRSS(w, 0, series(tc.mbs...), 0.10, 32)
		if v.Flat != tc.flat || v.Judged != tc.judge {
			t.Errorf("%s: flat %v judged %v (middle %.1f, last %.1f), want flat %v judged %v",
				tc.name, v.Flat, v.Judged, v.MiddleMB, v.LastMB, tc.flat, tc.judge)
		}
		if v.Samples != len(tc.mbs) || v.FirstMB != tc.mbs[0] || v.HalfMB != tc.mbs[len(tc.mbs)/2] ||
			v.EndMB != tc.mbs[len(tc.mbs)-1] || v.Name != "api" || v.PID != 7 {
			t.Errorf("%s: %+v", tc.name, v)
		}
	}
	// A process gone for some samples is judged on the others.
	s := series(10, 10, 10, 10, 10, 10, 10)
	s[3].kb[0] = -1
	if v := judgeRSS(w, 0, s, 0.1, 0); v.Samples != 6 || !v.Flat || v.MaxMB != 10 {
		t.Errorf("with a missing sample: %+v", v)
	}
}

func TestWriteRSSCSV(t *testing.T) {
	var b strings.Builder
	s := series(1.5, 2)
	s[1].kb[0] = -1
	if err := writeRSSCSV(&b, []watched{{name: "api"}}, s); err != nil {
		t.Fatal(err)
	}
	if want := "seconds,judgments_accepted,api_rss_mb\n0.0,0,1.5\n1.0,1000,\n"; b.String() != want {
		t.Fatalf("csv\n%s\nwant\n%s", b.String(), want)
	}
}

func TestWatchFlag(t *testing.T) {
	var w watchFlag
	if err := w.Set("kafka=42"); err != nil || len(w) != 1 || w[0].name != "kafka" || w[0].pid != 42 || !w[0].tree {
		t.Fatalf("Set(kafka=42): %v %+v", err, w)
	}
	for _, bad := range []string{"kafka", "=1", "kafka=x", "kafka=0"} {
		if err := w.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
