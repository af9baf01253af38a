package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows how a run of moves goes: a bar on a terminal, a plain
// line per change otherwise (logs, CI, pipes). Events (a move started,
// finished, failed) are lines either way.
type progress struct {
	w     io.Writer
	tty   bool                     // draw a bar
	bar   *progressbar.ProgressBar // from start, when tty
	total int64                    // bytes to copy
	moves int
	last  string // the last plain status line, not repeated
}

// newProgress writes to w (stderr); a bar only when it is a terminal and
// --no-progress-bar was not given.
func newProgress(w io.Writer, noBar bool) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && !noBar && term.IsTerminal(int(f.Fd()))}
}

// start sets the work: moves partitions, bytes to copy in all. The bar
// counts bytes, or moves when none copies data (leadership reorders).
func (p *progress) start(moves int, bytes int64) {
	p.moves, p.total = moves, bytes
	if !p.tty {
		return
	}
	opts := []progressbar.Option{progressbar.OptionSetWriter(p.w), progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(200 * time.Millisecond), progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(), progressbar.OptionSetDescription(fmt.Sprintf("0/%d moves", moves))}
	if bytes > 0 {
		p.bar = progressbar.NewOptions64(bytes, append(opts, progressbar.OptionShowBytes(true))...)
	} else {
		p.bar = progressbar.NewOptions64(int64(max(moves, 1)), opts...)
	}
}

// update reports done moves finished, inflight running, copied bytes so far.
func (p *progress) update(done, inflight int, copied int64) {
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("%d/%d moves, %d running", done, p.moves, inflight))
		if p.total > 0 {
			p.bar.Set64(min(copied, p.total))
		} else {
			p.bar.Set(done)
		}
		return
	}
	line := fmt.Sprintf("progress: %d/%d moves done, %d running, %s of %s copied", done, p.moves, inflight,
		humanBytes(copied), humanBytes(p.total))
	if line != p.last {
		p.last = line
		fmt.Fprintln(p.w, line)
	}
}

// event prints a line above the bar.
func (p *progress) event(format string, args ...any) {
	if p.bar != nil {
		p.bar.Clear()
	}
	fmt.Fprintf(p.w, format+"\n", args...)
	if p.bar != nil {
		p.bar.RenderBlank()
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
