package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// progressLine is the one progress reporter of the commands (hunt,
// replay, simulate): every period it asks render for a status line and
// shows it — redrawn in place on a terminal, or written as a line of its
// own anywhere else (a log, a pipe), so that no log fills with carriage
// returns. It starts after a delay, so that short runs stay quiet; printf
// writes a message around it and stop clears what it drew.
type progressLine struct {
	w      io.Writer
	term   bool
	render func(elapsed time.Duration) string // "" when there is nothing to say yet
	mu     sync.Mutex                         // the line on the terminal
	shown  bool
	once   sync.Once
	done   chan struct{}
	exited chan struct{}
}

// startProgress starts reporting on w every period after delay; with on
// false it reports nothing (printf still writes).
func startProgress(w io.Writer, on bool, every, delay time.Duration, render func(time.Duration) string) *progressLine {
	p := &progressLine{w: w, term: isTerminal(w), render: render, done: make(chan struct{}), exited: make(chan struct{})}
	if !on {
		close(p.exited)
		return p
	}
	go p.loop(every, delay)
	return p
}

func (p *progressLine) loop(every, delay time.Duration) {
	defer close(p.exited)
	start := time.Now()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case now := <-t.C:
			el := now.Sub(start)
			if el < delay {
				continue
			}
			line := p.render(el)
			if line == "" {
				continue
			}
			p.mu.Lock()
			if p.term {
				fmt.Fprint(p.w, "\r"+line+"\x1b[K")
				p.shown = true
			} else {
				fmt.Fprintln(p.w, line)
			}
			p.mu.Unlock()
		}
	}
}

// printf writes a message, clearing the line first.
func (p *progressLine) printf(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.w, format, a...)
}

func (p *progressLine) clear() {
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}

// stop ends the reports and clears the line; it may be called again.
func (p *progressLine) stop() {
	p.once.Do(func() { close(p.done) })
	<-p.exited
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress is hunt's report: the file being read, how far, and the events
// decoded, once a second after the first two.
type progress struct {
	*progressLine
	read   atomic.Int64
	events atomic.Int64
	name   atomic.Pointer[string]
	size   atomic.Int64
}

func newProgress(w io.Writer, off bool) *progress {
	p := &progress{}
	p.progressLine = startProgress(w, !off, time.Second, 2*time.Second, p.line)
	return p
}

func (p *progress) begin(name string, size int64) {
	p.name.Store(&name)
	p.size.Store(size)
	p.read.Store(0)
}

func (p *progress) line(el time.Duration) string {
	name := ""
	if n := p.name.Load(); n != nil {
		name = *n
	}
	ev := p.events.Load()
	rate := float64(ev) / el.Seconds()
	if size := p.size.Load(); size > 0 {
		return fmt.Sprintf("beacon hunt: %s %3.0f%%  %d events  %.0f events/s", name,
			100*float64(p.read.Load())/float64(size), ev, rate)
	}
	return fmt.Sprintf("beacon hunt: %s  %d events  %.0f events/s", name, ev, rate)
}
