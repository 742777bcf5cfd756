// Package governor keeps acknowledging Zoom ahead of processing when both
// share a process (`geomux run --target all`).
//
// Zoom waits 3 s for an answer and retries only 5, 20 and 60 minutes later,
// so an ingress slowed down by routing and replying turns an overload into
// hour-long delays. The Governor watches how long the ingress takes to
// answer (Observe) and, while its 99th percentile is above a target, lowers
// the rate at which the router and the workers take events (Wait), down to
// a floor: the CPU goes to acknowledging, and the backlog waits in
// JetStream, on disk. As the ingress recovers it raises the rate again, and
// while the ingress is quiet or alone it lets processing run unlimited.
//
// Control is AIMD on 200 ms windows: above the target, the limit drops to
// three quarters of what processing achieved in the window; below half the
// target, it grows by a tenth (and a floor's worth), until it no longer
// binds.
package governor

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Options configure a Governor.
type Options struct {
	// Target is the ingress's answer time, 99th percentile, that processing
	// must not push it over.
	Target time.Duration
	// Floor is the lowest processing rate (events a second) the Governor
	// sets: processing always moves, however loaded the ingress.
	Floor float64
	// Window is how often the limit is adjusted; 200 ms when 0.
	Window time.Duration
	// Quiet is how long the ingress answers nothing before processing runs
	// unlimited again: a pause between bursts keeps the limit. 1 s when 0.
	Quiet time.Duration
	// SchedTarget is how long the process's goroutines may wait, runnable,
	// for a CPU (99th percentile) while the ingress answers: past it, the
	// CPUs are taken and processing yields. 0: Target / 4.
	SchedTarget time.Duration
}

// DefaultOptions: a 40 ms target (Zoom waits 3 s; the ack path's own
// publish takes 1 to 5 ms on a quiet machine) and a floor of 100 events a
// second.
func DefaultOptions() Options {
	return Options{Target: 40 * time.Millisecond, Floor: 100, Window: 200 * time.Millisecond, Quiet: time.Second}
}

// Governor is safe for concurrent use. Its zero value is not usable: use New.
type Governor struct {
	o Options
	// lim holds processing to the limit while unlimited is false. It is
	// never given rate.Inf: a Limiter switched to Inf and back can be left
	// with NaN tokens (time passing at an infinite rate, for no time, is
	// NaN), and from then on lets every event through, a Governor turned
	// off for good without a sign.
	lim       *rate.Limiter
	unlimited atomic.Bool

	hist  histogram
	taken atomic.Uint64 // events processing took in the current window
	// schedP99 is the goroutines' wait for a CPU since its last call
	// (schedLatency's; a test's own).
	schedP99 func() time.Duration

	quietFor time.Duration // since the ingress last answered; adjust's own

	mu    sync.Mutex
	state State

	stop chan struct{}
	done chan struct{}
}

// State is the Governor's last decision, for metrics.
type State struct {
	// Limit is the processing rate allowed (events a second); +Inf when
	// unlimited.
	Limit float64
	// IngressP99 is the ingress's answer time, 99th percentile, in the last
	// window (0 with no request).
	IngressP99 time.Duration
	// SchedP99 is how long goroutines waited for a CPU, 99th percentile,
	// in the last window.
	SchedP99 time.Duration
	// Throttled counts the windows in which the limit was lowered.
	Throttled uint64
}

// New returns a Governor that lets processing run unlimited until it sees
// the ingress slow down. Start runs its control loop.
func New(o Options) *Governor {
	d := DefaultOptions()
	if o.Target <= 0 {
		o.Target = d.Target
	}
	if o.Floor <= 0 {
		o.Floor = d.Floor
	}
	if o.Window <= 0 {
		o.Window = d.Window
	}
	if o.Quiet <= 0 {
		o.Quiet = d.Quiet
	}
	if o.SchedTarget <= 0 {
		o.SchedTarget = o.Target / 4
	}
	sl := newSchedLatency()
	g := &Governor{schedP99: func() time.Duration { return sl.quantile(0.99) }, o: o, lim: rate.NewLimiter(rate.Limit(o.Floor), burst(o.Floor)), state: State{Limit: math.Inf(1)}}
	g.unlimited.Store(true)
	return g
}

// burst lets a limit's events come in small groups rather than one by one.
func burst(limit float64) int {
	return max(1, int(limit/20))
}

// Observe records one answer of the ingress, how long it took. A nil
// Governor ignores it.
func (g *Governor) Observe(d time.Duration) {
	if g != nil {
		g.hist.add(d)
	}
}

// Wait returns when processing may take its next event, and how long it
// waited; an error only when ctx ends first. A nil Governor never waits.
func (g *Governor) Wait(ctx context.Context) (time.Duration, error) {
	if g == nil {
		return 0, nil
	}
	g.taken.Add(1)
	if g.unlimited.Load() {
		return 0, nil
	}
	start := time.Now()
	err := g.lim.Wait(ctx)
	return time.Since(start), err
}

// State is the last decision.
func (g *Governor) State() State {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}

// Start runs the control loop until Stop.
func (g *Governor) Start() {
	g.stop, g.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(g.done)
		t := time.NewTicker(g.o.Window)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-t.C:
				g.adjust(g.o.Window)
			}
		}
	}()
}

// Stop ends the control loop and lets processing run unlimited (a stopping
// ingress no longer needs the CPU: the drain must not wait).
func (g *Governor) Stop() {
	if g.stop == nil {
		return
	}
	close(g.stop)
	<-g.done
	g.unlimited.Store(true)
}

// adjust is one step of the control loop, at the end of a window of length
// w.
func (g *Governor) adjust(w time.Duration) {
	n, p99 := g.hist.drain(0.99)
	sched := g.schedP99()
	achieved := float64(g.taken.Swap(0)) / w.Seconds()
	limit := g.limit()
	slow := p99 > g.o.Target || sched > g.o.SchedTarget
	fast := p99 < g.o.Target/2 && sched < g.o.SchedTarget/2
	if n == 0 {
		g.quietFor += w
	} else {
		g.quietFor = 0
	}
	switch {
	case n == 0 && g.quietFor >= g.o.Quiet:
		limit = math.Inf(1) // the ingress is quiet, or not in this process
	case n == 0:
		// A pause: keep the limit.
	case slow:
		base := achieved
		if !math.IsInf(limit, 1) {
			base = min(limit, achieved)
		}
		limit = max(g.o.Floor, 0.75*base)
	case fast && !math.IsInf(limit, 1):
		limit = limit*1.1 + g.o.Floor
		if limit > 2*achieved+g.o.Floor && achieved > 0 {
			limit = math.Inf(1) // it no longer binds
		}
	}
	g.setLimit(limit)
	g.mu.Lock()
	g.state.Limit, g.state.IngressP99, g.state.SchedP99 = limit, p99, sched
	if slow && n > 0 {
		g.state.Throttled++
	}
	g.mu.Unlock()
}

// limit is the processing rate allowed now; +Inf when unlimited.
func (g *Governor) limit() float64 {
	if g.unlimited.Load() {
		return math.Inf(1)
	}
	return float64(g.lim.Limit())
}

// setLimit allows processing limit events a second (+Inf: unlimited).
// Only the control loop calls it.
func (g *Governor) setLimit(limit float64) {
	if math.IsInf(limit, 1) {
		g.unlimited.Store(true)
		return
	}
	if limit != float64(g.lim.Limit()) {
		g.lim.SetLimit(rate.Limit(limit))
		g.lim.SetBurst(burst(limit))
	}
	g.unlimited.Store(false)
}
