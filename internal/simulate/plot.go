package simulate

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// WriteSVG plots the learning curves (held-out accuracy against
// judgments, judgments on a log scale) as a standalone SVG document, with
// the raw embeddings' accuracy as a dashed line.
func WriteSVG(w io.Writer, title string, results []Result) error {
	const width, height = 760.0, 460.0
	const left, right, top, bottom = 70.0, 200.0, 50.0, 60.0
	palette := [...]string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}
	pw, ph := width-left-right, height-top-bottom
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, r := range results {
		ymin, ymax = math.Min(ymin, r.Raw.Accuracy), math.Max(ymax, r.Raw.Accuracy)
		for _, p := range r.Points {
			xmin, xmax = math.Min(xmin, float64(p.Judgments)), math.Max(xmax, float64(p.Judgments))
			ymin, ymax = math.Min(ymin, p.Accuracy), math.Max(ymax, p.Accuracy)
		}
	}
	if math.IsInf(xmin, 0) {
		return fmt.Errorf("plot: no points")
	}
	if xmax <= xmin {
		xmax = xmin * 2
	}
	ystep := niceStep((ymax - ymin) / 6)
	ymin, ymax = math.Floor(ymin/ystep)*ystep, math.Ceil(ymax/ystep)*ystep
	if ymax <= ymin {
		ymax = ymin + ystep
	}
	lx0, lx1 := math.Log10(xmin), math.Log10(xmax)
	px := func(x float64) float64 { return left + (math.Log10(x)-lx0)/(lx1-lx0)*pw }
	py := func(y float64) float64 { return top + (ymax-y)/(ymax-ymin)*ph }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="28" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	// Grid and ticks.
	for y := ymin; y <= ymax+ystep/2; y += ystep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", left, py(y), left+pw, py(y))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%.1f%%</text>`+"\n", left-6, py(y)+4, 100*y)
	}
	for _, x := range logTicks(xmin, xmax) {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", px(x), top, px(x), top+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px(x), top+ph+18, humanCount(x))
	}
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">judgments (log scale)</text>`+"\n", left+pw/2, height-16)
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">accuracy on real held-out triplets</text>`+"\n", top+ph/2)
	// Curves and legend.
	for i, r := range results {
		c := palette[i%len(palette)]
		var pts []string
		for _, p := range r.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(float64(p.Judgments)), py(p.Accuracy)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		for _, p := range r.Points {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(float64(p.Judgments)), py(p.Accuracy), c)
		}
		ly := top + 16 + 22*float64(i)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", left+pw+14, ly, left+pw+38, ly, c)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", left+pw+44, ly+4, html.EscapeString(r.Label()))
	}
	if len(results) > 0 {
		raw := results[0].Raw.Accuracy
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#777" stroke-dasharray="5,4"/>`+"\n", left, py(raw), left+pw, py(raw))
		ly := top + 16 + 22*float64(len(results))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#777" stroke-dasharray="5,4"/>`+"\n", left+pw+14, ly, left+pw+38, ly)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">raw embeddings</text>`+"\n", left+pw+44, ly+4)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// Label names a curve: the policy, and the scorer of an active one.
func (r Result) Label() string {
	if r.Scorer == "" {
		return r.Policy
	}
	return r.Policy + " (" + r.Scorer + ")"
}

// niceStep rounds a step up to 1, 2 or 5 times a power of ten.
func niceStep(s float64) float64 {
	if !(s > 0) {
		return 0.01
	}
	p := math.Pow(10, math.Floor(math.Log10(s)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= s {
			return m * p
		}
	}
	return 10 * p
}

// logTicks returns 1, 2 and 5 times powers of ten within [lo, hi].
func logTicks(lo, hi float64) []float64 {
	var out []float64
	for p := math.Pow(10, math.Floor(math.Log10(lo))); p <= hi; p *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := m * p; v >= lo && v <= hi {
				out = append(out, v)
			}
		}
	}
	return out
}

// humanCount writes 500, 2k, 10k.
func humanCount(x float64) string {
	if x >= 1000 {
		return fmt.Sprintf("%gk", x/1000)
	}
	return fmt.Sprintf("%g", x)
}
