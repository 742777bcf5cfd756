package main

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// stepResult is what one rate step measured.
type stepResult struct {
	Rate         float64        `json:"rate"`
	Sent         int            `json:"sent"`
	AchievedRate float64        `json:"achieved_rate"`
	ReplyRate    float64        `json:"reply_rate"`
	AckP50       float64        `json:"ack_p50_ms"`
	AckP99       float64        `json:"ack_p99_ms"`
	AckP999      float64        `json:"ack_p999_ms"`
	LagP99       float64        `json:"schedule_lag_p99_ms"`
	E2EP50       float64        `json:"e2e_p50_ms"`
	E2EP99       float64        `json:"e2e_p99_ms"`
	Replied      int            `json:"replied"`
	Unreplied    int            `json:"unreplied"`
	Errors       map[string]int `json:"errors"`
	// Late counts the answers that came after Zoom's 3 s (Zoom would have
	// given up on them); "no answer" in Errors, those never answered.
	Late         int                `json:"answered_late"`
	CPUPer1000   float64            `json:"cpu_s_per_1000"`
	LoadCPU1000  float64            `json:"load_cpu_s_per_1000"`
	CPUShare     map[string]float64 `json:"cpu_share,omitempty"`
	PeakRSSMB    float64            `json:"peak_rss_mb"`
	BacklogSlope float64            `json:"backlog_growth_per_s"`
	Sustained    bool               `json:"sustained"`
	RSSSeries    []float64          `json:"rss_mb_per_s,omitempty"`
}

// watched are the processes whose CPU and memory a step measures.
type watched struct {
	names []string
	pids  []int
}

func (w watched) cpu() []time.Duration {
	out := make([]time.Duration, len(w.pids))
	for i, pid := range w.pids {
		out[i], _ = cpuTime(pid)
	}
	return out
}

// rss is the summed resident memory of the processes.
func (w watched) rss() float64 {
	var sum float64
	for _, pid := range w.pids {
		r, _, _ := rssMB(pid)
		sum += r
	}
	return sum
}

// drainTimeout bounds the wait for a step's last replies: a pipeline that
// keeps up replies within milliseconds.
const drainTimeout = 5 * time.Second

// runStep sends rate events per second for d (open loop) and measures the
// answers, the replies, and the processes' CPU and memory; then it waits up
// to drainTimeout for the replies still on their way. With e2e false, no
// reply is expected (ingress alone).
func runStep(ctx context.Context, g *generator, w watched, rate float64, d time.Duration, e2e bool, rssEvery time.Duration) stepResult {
	t := g.t
	first := t.next.Load()
	cpu0 := w.cpu()
	self0, _ := cpuTime(os.Getpid())
	rec := newRecorder(int(rate * d.Seconds()))

	// Sample the backlog (accepted, not yet replied) and the memory while
	// sending, and the memory while draining.
	type sample struct {
		at   time.Duration
		back int64
	}
	var samples []sample
	var series []float64
	var peak float64
	stopSampling := make(chan struct{})
	sending := make(chan struct{})
	var sampled sync.WaitGroup
	start := time.Now()
	replied0 := t.replied.Load()
	sampled.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		lastSeries := start
		for {
			select {
			case <-stopSampling:
				return
			case now := <-tick.C:
				r := w.rss()
				peak = max(peak, r)
				if rssEvery > 0 && now.Sub(lastSeries) >= rssEvery {
					series = append(series, r)
					lastSeries = now
				}
				select {
				case <-sending:
				default:
					samples = append(samples, sample{now.Sub(start), t.outstanding()})
				}
			}
		}
	})
	g.openLoop(ctx, rate, d, rec)
	repliedInWindow := t.replied.Load() - replied0
	close(sending)
	if e2e {
		deadline := time.Now().Add(drainTimeout)
		for t.outstanding() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(stopSampling)
	sampled.Wait()
	cpu1 := w.cpu()
	self1, _ := cpuTime(os.Getpid())
	last := t.next.Load()

	res := stepResult{Rate: rate, Sent: int(last - first), Errors: map[string]int{}, PeakRSSMB: peak, RSSSeries: series, Late: rec.late}
	ok := 0
	for status, n := range rec.statuses {
		if status == http.StatusOK {
			ok = n
			continue
		}
		res.Errors[statusName(status)] = n
	}
	res.AchievedRate = float64(ok) / d.Seconds()
	res.ReplyRate = float64(repliedInWindow) / d.Seconds()
	ack := sortedCopy(rec.ack)
	res.AckP50, res.AckP99, res.AckP999 = percentile(ack, 0.50), percentile(ack, 0.99), percentile(ack, 0.999)
	res.LagP99 = percentile(sortedCopy(rec.lag), 0.99)
	var total time.Duration
	if len(w.names) > 1 {
		res.CPUShare = map[string]float64{}
	}
	for i := range cpu0 {
		used := cpu1[i] - cpu0[i]
		total += used
		if res.CPUShare != nil {
			res.CPUShare[w.names[i]] += used.Seconds()
		}
	}
	if ok > 0 {
		res.CPUPer1000 = total.Seconds() / float64(ok) * 1000
		res.LoadCPU1000 = (self1 - self0).Seconds() / float64(ok) * 1000
	}
	if e2e {
		var lat []time.Duration
		for seq := first; seq < last && seq < int64(len(t.e2e)); seq++ {
			if v := t.e2e[seq].Load(); v > 0 {
				lat = append(lat, time.Duration(v))
			}
		}
		res.Replied = len(lat)
		res.Unreplied = ok - len(lat)
		lat = sortedCopy(lat)
		res.E2EP50, res.E2EP99 = percentile(lat, 0.50), percentile(lat, 0.99)
	}
	// The backlog's growth: a least-squares slope over the window, past its
	// first fifth (the pipeline's warm-up).
	var xs, ys []float64
	for _, s := range samples {
		if s.at > d/5 {
			xs, ys = append(xs, s.at.Seconds()), append(ys, float64(s.back))
		}
	}
	res.BacklogSlope = slope(xs, ys)
	res.Sustained = len(res.Errors) == 0 && res.AckP99 < 50 &&
		(!e2e || (res.Unreplied == 0 && res.BacklogSlope < max(25, 0.02*rate)))
	return res
}

// statusName names an answer's status, 0 being none.
func statusName(status int) string {
	if status == 0 {
		return "no answer"
	}
	return strconv.Itoa(status)
}

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

// settle waits until every accepted event of t has its reply, up to
// timeout, so that a step does not start behind the last one's backlog.
func settle(ctx context.Context, t *tracker, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for t.outstanding() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

// drain waits until every accepted event of t has its reply, for as long as
// replies keep coming: it gives up after stall without one.
func drain(ctx context.Context, t *tracker, stall time.Duration) {
	last, since := t.replied.Load(), time.Now()
	for t.outstanding() > 0 && ctx.Err() == nil && time.Since(since) < stall {
		time.Sleep(50 * time.Millisecond)
		if r := t.replied.Load(); r != last {
			last, since = r, time.Now()
		}
	}
}
