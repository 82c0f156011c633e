package cli

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// watched is a process whose resident set the soak samples.
type watched struct {
	name string
	pid  int
	// tree sums the proportional set size (PSS) of the process and all
	// its descendants: Postgres runs one process per connection, and their
	// resident sets would each count the shared buffers again.
	tree bool
}

// rssSample is one sampling of every watched process.
type rssSample struct {
	at       time.Duration // since the start of the load
	accepted int64         // judgments accepted so far
	kb       []int64       // VmRSS per watched process, in kB; -1 when gone
}

// vmRSS returns the VmRSS of pid in kB, from /proc/PID/status.
func vmRSS(pid int) (int64, error) { return procKB(pid, "status", "VmRSS:") }

// pss returns the proportional set size of pid in kB, from
// /proc/PID/smaps_rollup: its resident pages, each shared one divided by
// the number of processes that map it, so that the PSS of a group of
// processes adds up to the memory they hold.
func pss(pid int) (int64, error) { return procKB(pid, "smaps_rollup", "Pss:") }

// procKB reads the kB value of field from /proc/PID/file.
func procKB(pid int, file, field string) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), file))
	if err != nil {
		return 0, err
	}
	return parseKB(b, field)
}

// parseKB reads the value of the line starting with field ("VmRSS:") of
// a /proc status or smaps_rollup file, in kB.
func parseKB(text []byte, field string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s (a kernel thread or a zombie)", strings.TrimSuffix(field, ":"))
}

// children maps every process to its children, from /proc/*/stat.
func children() map[int][]int {
	out := map[int][]int{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		rest := b[bytes.LastIndexByte(b, ')')+1:]
		f := strings.Fields(string(rest))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			out[ppid] = append(out[ppid], pid)
		}
	}
	return out
}

// sampleRSS reads the resident set of every process of ws: VmRSS, or for
// a tree the sum of the PSS of its processes (their VmRSS where the
// kernel has no smaps_rollup).
func sampleRSS(ws []watched) []int64 {
	var kids map[int][]int
	out := make([]int64, len(ws))
	for i, w := range ws {
		kb, err := vmRSS(w.pid)
		if err != nil {
			out[i] = -1
			continue
		}
		if w.tree {
			if kids == nil {
				kids = children()
			}
			mem := pss
			if p, err := pss(w.pid); err == nil {
				kb = p
			} else {
				mem = vmRSS
			}
			stack := slices.Clone(kids[w.pid])
			for len(stack) > 0 {
				p := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if k, err := mem(p); err == nil {
					kb += k
				}
				stack = append(stack, kids[p]...)
			}
		}
		out[i] = kb
	}
	return out
}

// rssVerdict summarises one process's resident set over a soak. The run
// is cut into thirds: the first is warm-up (pools, caches and heaps
// filling); the process is flat when the median of the last third is at
// most Tolerance above the median of the middle third, or at most Slack
// above it for small processes.
type rssVerdict struct {
	Name     string  `json:"name"`
	PID      int     `json:"pid"`
	Samples  int     `json:"samples"`
	FirstMB  float64 `json:"first_mb"`
	HalfMB   float64 `json:"half_mb"` // the sample half way through
	EndMB    float64 `json:"end_mb"`  // the last sample
	MaxMB    float64 `json:"max_mb"`
	MiddleMB float64 `json:"middle_third_median_mb"`
	LastMB   float64 `json:"last_third_median_mb"`
	Growth   float64 `json:"growth"` // LastMB/MiddleMB − 1
	Flat     bool    `json:"flat"`
	// Judged is false when there were too few samples (fewer than 6) to
	// tell warm-up from growth.
	Judged bool `json:"judged"`
}

// judgeRSS judges process i of samples; tolerance is relative (0.1 is
// 10%), slackMB absolute.
func judgeRSS(w watched, i int, samples []rssSample, tolerance, slackMB float64) rssVerdict {
	var mbs []float64
	for _, s := range samples {
		if s.kb[i] >= 0 {
			mbs = append(mbs, float64(s.kb[i])/1024)
		}
	}
	v := rssVerdict{Name: w.name, PID: w.pid, Samples: len(mbs)}
	if len(mbs) == 0 {
		return v
	}
	v.FirstMB, v.HalfMB, v.EndMB, v.MaxMB = mbs[0], mbs[len(mbs)/2], mbs[len(mbs)-1], slices.Max(mbs)
	third := len(mbs) / 3
	if third < 2 {
		v.MiddleMB, v.LastMB = mbs[0], mbs[len(mbs)-1]
	} else {
		v.MiddleMB, v.LastMB = median(mbs[third:2*third]), median(mbs[2*third:])
		v.Judged = true
	}
	if v.MiddleMB > 0 {
		v.Growth = v.LastMB/v.MiddleMB - 1
	}
	v.Flat = v.LastMB <= v.MiddleMB*(1+tolerance) || v.LastMB-v.MiddleMB <= slackMB
	return v
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// writeRSSCSV writes one row per sample: seconds, judgments accepted, and
// each process's VmRSS in MB (empty when it was gone).
func writeRSSCSV(w io.Writer, ws []watched, samples []rssSample) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("seconds,judgments_accepted")
	for _, p := range ws {
		bw.WriteString("," + p.name + "_rss_mb")
	}
	bw.WriteString("\n")
	for _, s := range samples {
		fmt.Fprintf(bw, "%.1f,%d", s.at.Seconds(), s.accepted)
		for _, kb := range s.kb {
			if kb < 0 {
				bw.WriteString(",")
			} else {
				fmt.Fprintf(bw, ",%.1f", float64(kb)/1024)
			}
		}
		bw.WriteString("\n")
	}
	return bw.Flush()
}
