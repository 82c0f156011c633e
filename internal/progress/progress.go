// Package progress draws a single-line progress bar for long-running
// commands. It is safe for concurrent use.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Bar reports progress toward a known total on one terminal line.
type Bar struct {
	mu      sync.Mutex
	w       io.Writer
	label   string
	total   int64
	done    int64
	start   time.Time
	last    time.Time
	enabled bool
	// tty is true when w is a terminal; otherwise the bar prints one line
	// per tenth of the work, so logs stay readable.
	tty      bool
	lastTick int64
}

// New returns a bar writing to w. A nil w or total <= 0 disables drawing
// but keeps counting.
func New(w io.Writer, label string, total int64) *Bar {
	now := time.Now()
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &Bar{w: w, label: label, total: total, start: now, enabled: w != nil && total > 0, tty: tty}
}

// Add records n more units of work and redraws at most ten times a second.
func (b *Bar) Add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	if !b.enabled {
		return
	}
	if !b.tty {
		if tick := 10 * b.done / b.total; tick > b.lastTick && b.done < b.total {
			b.lastTick = tick
			b.draw()
			fmt.Fprintln(b.w)
		}
		return
	}
	if now := time.Now(); now.Sub(b.last) >= 100*time.Millisecond || b.done >= b.total {
		b.last = now
		b.draw()
	}
}

// Done returns the units recorded so far.
func (b *Bar) Done() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done
}

// Finish draws the final state and ends the line.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.enabled {
		return
	}
	b.draw()
	fmt.Fprintln(b.w)
	b.enabled = false
}

func (b *Bar) draw() {
	const width = 30
	frac := float64(b.done) / float64(b.total)
	if frac > 1 {
		frac = 1
	}
	fill := int(frac * width)
	elapsed := time.Since(b.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(b.done) / elapsed
	}
	eta := "--"
	if rate > 0 && b.done < b.total {
		eta = (time.Duration(float64(b.total-b.done)/rate) * time.Second).Round(time.Second).String()
	}
	cr := "\r"
	if !b.tty {
		cr = ""
	}
	fmt.Fprintf(b.w, "%s%s [%s%s] %5.1f%% %d/%d %.0f/s eta %s   ", cr, b.label,
		strings.Repeat("=", fill), strings.Repeat(" ", width-fill), 100*frac, b.done, b.total, rate, eta)
}
