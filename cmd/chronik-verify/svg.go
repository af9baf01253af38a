package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
)

// Plot geometry, in SVG user units; the image is meant for ~1000x640.
const (
	svgW, svgH   = 1000, 640
	padL, padR   = 78, 24
	eventRowH    = 14
	maxEventRows = 12
	panelGap     = 30
	padBottom    = 46
)

const (
	colAcked    = "#1f77b4"
	colConsumed = "#2ca02c"
	colP50      = "#1f77b4"
	colP99      = "#ff7f0e"
	colMax      = "#d62728"
	colFinal    = "#d62728"
	colRetried  = "#ff9f40"
	colConsume  = "#9467bd"
	colEvent    = "#444"
)

// svgDoc accumulates elements; every string that came from outside goes
// through esc.
type svgDoc struct{ strings.Builder }

func (d *svgDoc) f(format string, a ...any) { fmt.Fprintf(d, format, a...); d.WriteByte('\n') }

func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// panel maps data onto one horizontal strip of the plot.
type panel struct {
	top, h   float64
	x0, x1   float64 // plot area in pixels
	tmax     float64 // seconds shown
	ymin     float64
	ymax     float64
	log      bool
	title    string
	subtitle string
}

func (p panel) x(t float64) float64 { return p.x0 + (p.x1-p.x0)*t/p.tmax }

func (p panel) y(v float64) float64 {
	var f float64
	if p.log {
		v = max(v, p.ymin)
		f = (math.Log10(v) - math.Log10(p.ymin)) / (math.Log10(p.ymax) - math.Log10(p.ymin))
	} else {
		f = (v - p.ymin) / (p.ymax - p.ymin)
	}
	return p.top + p.h*(1-min(max(f, 0), 1))
}

// writeSVG draws the timeline: throughput, latency and errors per bucket,
// with the events file's lines as labelled dashed verticals.
func writeSVG(w io.Writer, tl *Timeline) error {
	var d svgDoc
	n := len(tl.Acked)
	bs := tl.Bucket.Seconds()
	tmax := math.Max(float64(n)*bs, 1)

	// Event labels are laid out first: their rows decide where panels start.
	type label struct {
		x    float64
		row  int
		text string
	}
	x0, x1 := float64(padL), float64(svgW-padR)
	var labels []label
	rowEnd := make([]float64, maxEventRows)
	for i := range rowEnd {
		rowEnd[i] = -1
	}
	for i, e := range tl.Events {
		if e.AtSec < 0 || e.AtSec > tmax {
			continue
		}
		x := x0 + (x1-x0)*e.AtSec/tmax
		text := fmt.Sprintf("%d %s", i+1, e.Text)
		width := float64(len([]rune(text)))*6.2 + 8
		row := 0
		for row < maxEventRows-1 && rowEnd[row] > x {
			row++
		}
		rowEnd[row] = x + width
		labels = append(labels, label{x: x, row: row, text: text})
	}
	rows := 1
	for _, l := range labels {
		rows = max(rows, l.row+1)
	}
	top := 58.0 + float64(rows)*eventRowH + 22
	avail := float64(svgH) - top - padBottom - 2*panelGap
	p1 := panel{top: top, h: avail * 0.42, x0: x0, x1: x1, tmax: tmax}
	p2 := panel{top: p1.top + p1.h + panelGap, h: avail * 0.34, x0: x0, x1: x1, tmax: tmax}
	p3 := panel{top: p2.top + p2.h + panelGap, h: avail * 0.24, x0: x0, x1: x1, tmax: tmax}

	d.f(`<?xml version="1.0" encoding="UTF-8"?>`)
	d.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif">`, svgW, svgH, svgW, svgH)
	d.f(`<rect width="100%%" height="100%%" fill="white"/>`)
	d.f(`<text x="%d" y="26" font-size="18" font-weight="bold">%s</text>`, padL, esc(tl.Title))
	d.f(`<text x="%d" y="46" font-size="12" fill="#333">%s</text>`, padL, esc(tl.Subtitle))

	// Panel 1: throughput. The scale follows the acked rate: a burst of
	// redeliveries after a rebalance can be 20x that and would flatten the
	// plot, so consumed is clipped and its peak labelled.
	ackedMax, consMax, consPeak := 0.0, 0.0, 0
	for i := range n {
		ackedMax = max(ackedMax, tl.Acked[i])
		if tl.Consumed[i] > consMax {
			consMax, consPeak = tl.Consumed[i], i
		}
	}
	ref := ackedMax
	if ref == 0 {
		ref = consMax
	}
	p1.ymax = niceCeil(max(ref*1.3, 1))
	p1.title = fmt.Sprintf("records/s (per %s bucket)", tl.Bucket)
	frame(&d, p1, linearTicks(0, p1.ymax), fmtCount)
	series(&d, p1, tl.Acked, bs, colAcked, 1.4, "")
	series(&d, p1, tl.Consumed, bs, colConsumed, 1.2, "4 2")
	if consMax > p1.ymax {
		d.f(`<text x="%.1f" y="%.1f" font-size="10" fill="%s">consumed peak %s/s (clipped)</text>`,
			p1.x((float64(consPeak)+0.5)*bs)+4, p1.top+11, colConsumed, fmtCount(consMax))
	}
	legend(&d, p1, []legendItem{{"acked", colAcked, ""}, {"consumed", colConsumed, "4 2"}})

	// Panel 2: latency on a log scale; it spans from sub-ms to seconds
	// during a failover, which a linear axis would flatten.
	lo, hi := math.Inf(1), 0.0
	for i := range n {
		for _, v := range []float64{tl.P50[i], tl.Max[i]} {
			if !math.IsNaN(v) && v > 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	p2.log = true
	p2.ymin = math.Pow(10, math.Floor(math.Log10(max(lo, 0.01))))
	p2.ymax = math.Pow(10, math.Ceil(math.Log10(hi)))
	if p2.ymax <= p2.ymin {
		p2.ymax = p2.ymin * 10
	}
	p2.title = "produce latency, send→ack (log scale)"
	var decades []float64
	for v := p2.ymin; v <= p2.ymax*1.001; v *= 10 {
		decades = append(decades, v)
	}
	frame(&d, p2, decades, fmtMs)
	// max last and dotted: in a 100ms bucket it often equals p99.
	series(&d, p2, tl.P99, bs, colP99, 1.4, "")
	series(&d, p2, tl.P50, bs, colP50, 1.4, "")
	series(&d, p2, tl.Max, bs, colMax, 1, "2 2")
	legend(&d, p2, []legendItem{{"p50", colP50, ""}, {"p99", colP99, ""}, {"max", colMax, "2 2"}})

	// Panel 3: errors, stacked bars.
	ymax3, total := 1.0, 0
	for i := range n {
		s := tl.FinalErr[i] + tl.RetriedErr[i] + tl.ConsumeErr[i]
		total += s
		ymax3 = max(ymax3, float64(s))
	}
	p3.ymax = niceCeil(ymax3)
	p3.title = "errors per bucket"
	ticks3 := linearTicks(0, p3.ymax)
	if p3.ymax < 5 {
		ticks3 = nil
		for v := 0.0; v <= p3.ymax; v++ {
			ticks3 = append(ticks3, v) // counts: no half errors
		}
	}
	frame(&d, p3, ticks3, fmtCount)
	bw := math.Max((p3.x1-p3.x0)*bs/tmax-0.5, 1)
	for i := range n {
		base := 0.0
		for _, s := range []struct {
			v   int
			col string
		}{{tl.FinalErr[i], colFinal}, {tl.RetriedErr[i], colRetried}, {tl.ConsumeErr[i], colConsume}} {
			if s.v == 0 {
				continue
			}
			yTop, yBot := p3.y(base+float64(s.v)), p3.y(base)
			d.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, p3.x(float64(i)*bs), yTop, bw, yBot-yTop, s.col)
			base += float64(s.v)
		}
	}
	if total == 0 {
		d.f(`<text x="%.1f" y="%.1f" font-size="12" fill="#888" text-anchor="middle">no errors</text>`, (p3.x0+p3.x1)/2, p3.top+p3.h/2+4)
	}
	legend(&d, p3, []legendItem{{"record failed", colFinal, ""}, {"produce error, retried", colRetried, ""}, {"consume error", colConsume, ""}})

	// Time axis under the last panel, grid through all of them.
	step := niceStep(tmax, 10)
	for t := 0.0; t <= tmax+1e-9; t += step {
		x := p1.x(t)
		for _, p := range []panel{p1, p2, p3} {
			d.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`, x, p.top, x, p.top+p.h)
		}
		d.f(`<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`, x, p3.top+p3.h+15, trimFloat(t))
	}
	d.f(`<text x="%.1f" y="%d" font-size="12" text-anchor="middle">time since producing started (s)</text>`, (x0+x1)/2, svgH-10)

	// When producing stopped: the rest is the settle phase.
	if tl.ProduceEnd > 0 && tl.ProduceEnd < tmax {
		x := p1.x(tl.ProduceEnd)
		for _, p := range []panel{p1, p2, p3} {
			d.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#000" fill-opacity="0.05"/>`, x, p.top, x1-x, p.h)
		}
		if x1-x > 40 {
			d.f(`<text x="%.1f" y="%.1f" font-size="10" fill="#666">settle</text>`, x+3, p1.top+11)
		}
	}

	// Events on top of everything.
	for _, l := range labels {
		ly := 58 + float64(l.row+1)*eventRowH
		d.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1" stroke-dasharray="5 3"/>`, l.x, ly+2, l.x, p3.top+p3.h, colEvent)
		d.f(`<text x="%.1f" y="%.1f" font-size="11" fill="%s">%s</text>`, l.x+2, ly, colEvent, esc(l.text))
	}
	d.f(`</svg>`)
	_, err := io.WriteString(w, d.String())
	return err
}

func writeSVGFile(path string, tl *Timeline) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeSVG(f, tl); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// frame draws a panel's box, horizontal grid, y labels and title.
func frame(d *svgDoc, p panel, ticks []float64, label func(float64) string) {
	for _, v := range ticks {
		y := p.y(v)
		d.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`, p.x0, y, p.x1, y)
		d.f(`<text x="%.1f" y="%.1f" font-size="11" text-anchor="end">%s</text>`, p.x0-5, y+4, label(v))
	}
	d.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#999"/>`, p.x0, p.top, p.x1-p.x0, p.h)
	d.f(`<text x="%.1f" y="%.1f" font-size="12" font-weight="bold">%s</text>`, p.x0, p.top-6, esc(p.title))
}

// series draws one line; NaN values break it.
func series(d *svgDoc, p panel, vs []float64, bs float64, col string, width float64, dash string) {
	var b strings.Builder
	pen := false
	for i, v := range vs {
		if math.IsNaN(v) {
			pen = false
			continue
		}
		cmd := "L"
		if !pen {
			cmd = "M"
		}
		fmt.Fprintf(&b, "%s%.1f %.1f ", cmd, p.x((float64(i)+0.5)*bs), p.y(v))
		pen = true
	}
	if b.Len() == 0 {
		return
	}
	extra := ""
	if dash != "" {
		extra = fmt.Sprintf(` stroke-dasharray="%s"`, dash)
	}
	d.f(`<path d="%s" fill="none" stroke="%s" stroke-width="%.1f" stroke-linejoin="round"%s/>`, strings.TrimSpace(b.String()), col, width, extra)
}

type legendItem struct{ name, col, dash string }

// legend is right-aligned on the panel's title line.
func legend(d *svgDoc, p panel, items []legendItem) {
	x := p.x1
	for i := len(items) - 1; i >= 0; i-- {
		it := items[i]
		x -= float64(len([]rune(it.name)))*6 + 6
		d.f(`<text x="%.1f" y="%.1f" font-size="11">%s</text>`, x, p.top-6, esc(it.name))
		x -= 22
		dash := ""
		if it.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, it.dash)
		}
		d.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2.5"%s/>`, x, p.top-10, x+18, p.top-10, it.col, dash)
		x -= 10
	}
}

// niceStep returns a 1-2-5 step giving about n ticks over span.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// niceCeil rounds v up to a multiple of its own 1-2-5 step.
func niceCeil(v float64) float64 {
	s := niceStep(v, 5)
	return math.Ceil(v/s) * s
}

func linearTicks(lo, hi float64) []float64 {
	s := niceStep(hi-lo, 5)
	var out []float64
	for v := lo; v <= hi+s*1e-6; v += s {
		out = append(out, v)
	}
	return out
}

func fmtCount(v float64) string {
	if v >= 10000 {
		return trimFloat(math.Round(v/100)/10) + "k"
	}
	return trimFloat(v)
}

func fmtMs(v float64) string {
	if v >= 1000 {
		return trimFloat(v/1000) + "s"
	}
	return trimFloat(v) + "ms"
}

func trimFloat(v float64) string { return fmt.Sprintf("%.6g", math.Round(v*1000)/1000) }
