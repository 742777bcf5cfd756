package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// The realistic-load phases: beside the instant profile of the rate steps
// (backends and Zoom answering at once, nothing limited), geomux against
// backends and a Zoom that behave as real ones do: slow, long-tailed,
// rate-limited per account. Each phase starts a geomux of its own
// (everything in one process, embedded NATS), so that one phase's backlog,
// memory or learnt pace does not carry into the next. The load is per
// conversation, as people make it: each account's events come from
// usersPerAccount users in turn, each in a 1:1 chat with the bot (toJid is
// the user's JID), so that keeping a conversation in order need not
// serialise the account.

// The phases' settings (the rates and lengths of slow and realistic are
// flags).
const (
	slowBackend   = 2 * time.Second
	slowWarm      = 5 * time.Second  // left out of the steady state
	slowDrainMax  = 10 * time.Second // a pipeline that keeps up needs slowBackend
	burstBackend  = 200 * time.Millisecond
	burstEvents   = 3000
	burstSendFor  = time.Second // the noisy account's burst, as fast as that
	burstQuiet    = 300         // quiet accounts in the noisy one's region
	burstTrickle  = 50.0        // the quiet accounts' events per second, together
	burstMin      = 20 * time.Second
	burstMax      = 40 * time.Second // the trickle stops here, drained or not
	burstDrainMax = 20 * time.Second // then the rest may still drain this long
	burstTarget   = 1000.0           // quiet e2e p99, ms
	pacingEvents  = 300
	pacingLimit   = 10               // Zoom's messages per second for the account
	pacingMax     = 60 * time.Second // from the first event: twice what it takes at the limit
	pacingTarget  = 0.10             // most sends answered 429
	// realistic: backend p50 300 ms and p99 3 s (lognormal, sigma 0.99),
	// Zoom answering in 100 ms and limiting each account to Zoom Pro's 20
	// messages a second; 1,000 accounts, one of them sending noisyWeight
	// times what each other does.
	realisticMedian   = 300 * time.Millisecond
	realisticP99      = 3 * time.Second
	realisticCeiling  = 8 * time.Second // under geomux's 10 s backend timeout
	realisticZoom     = 100 * time.Millisecond
	realisticLimit    = 20
	realisticAccounts = 1000
	noisyWeight       = 20
	realisticWarm     = 10 * time.Second
	realisticDrainMax = 12 * time.Second // the backend's ceiling, and some
	// The realistic phase's targets are the benchmark's own: each region
	// replies at the rate it is offered (3 % slack for the steady state's
	// edges); a quiet account, sending 0.5 events/s over 20 chats, waits
	// for nothing but its backend (p99 3 s) and Zoom (0.1 s), with 0.4 s
	// for the pipeline; and sends refused 429 stay under pacing's bound.
	realisticKeepUp   = 0.97
	realisticQuietP99 = 3500.0 // ms
)

// phaseAccountsPerRegion is how many accounts each region has in the
// realistic-load phases: enough for burst's 301 in one region and
// realistic's 1,000 over three. The first accountsPerRegion of each are
// the rate steps' accounts.
const phaseAccountsPerRegion = (realisticAccounts + 2) / 3

// tagCount bounds the tags: 0 (not a realistic-load event), then
// 1 + 2 × region index + 1 if noisy.
const tagCount = 8

func tagOf(a account, noisy bool) uint32 {
	t := 1 + 2*uint32(slices.Index(benchRegions, a.region))
	if noisy {
		t++
	}
	return t
}

func tagRegion(t uint32) string { return benchRegions[(t-1)/2] }
func tagNoisy(t uint32) bool    { return t > 0 && (t-1)%2 == 1 }

// shot is one event of a phase's load: when it is due (from the phase's
// start), who writes it, and what it is counted under.
type shot struct {
	at   time.Duration
	a    account
	user int
	tag  uint32
}

// turns hands out each account's users in turn, for one stream of shots.
type turns map[string]int

func (t turns) next(a account) int {
	u := t[a.id]
	t[a.id] = u + 1
	return u % usersPerAccount
}

// steady yields n shots at rate per second, the i-th of pick(i).
func steady(rate float64, n int, pick func(i int) (account, bool)) func() (shot, bool) {
	users, i := turns{}, 0
	return func() (shot, bool) {
		if i >= n {
			return shot{}, false
		}
		a, noisy := pick(i)
		s := shot{at: time.Duration(float64(i) / rate * float64(time.Second)), a: a, user: users.next(a), tag: tagOf(a, noisy)}
		i++
		return s, true
	}
}

// play sends the shots next yields, each at its time from start and in a
// goroutine of its own whether or not earlier ones were answered (open
// loop), until next has no more; then it waits for their answers. next
// is called when the previous shot went out, so it may decide to stop on
// what has happened since.
func (g *generator) play(ctx context.Context, start time.Time, next func() (shot, bool), rec *recorder) {
	var wg sync.WaitGroup
	for ctx.Err() == nil {
		s, ok := next()
		if !ok {
			break
		}
		at := start.Add(s.at)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		wg.Go(func() {
			status, sent, _ := g.sendChat(s.a, s.user, s.tag)
			rec.add(status, time.Since(sent), sent.Sub(at))
		})
	}
	wg.Wait()
}

// phaseResult is what one realistic-load phase measured. Latencies in ms.
type phaseResult struct {
	Phase string `json:"phase"`
	// Setup says the phase's load and fakes in words.
	Setup       string         `json:"setup"`
	OfferedRate float64        `json:"offered_rate"`
	SendSeconds float64        `json:"send_seconds"`
	Sent        int            `json:"sent"`
	Errors      map[string]int `json:"errors"`
	// Replied counts events replied to at least once; Missing those sent
	// and not replied to by the end of the wait; Duplicates those replied
	// to more than once; BackendDuplicates those asked of a backend more
	// than once.
	Replied           int `json:"replied"`
	Missing           int `json:"missing"`
	Duplicates        int `json:"duplicates"`
	BackendDuplicates int `json:"backend_duplicates"`
	// Misrouted counts backend calls about another region's account.
	Misrouted int64   `json:"misrouted,omitempty"`
	E2EP50    float64 `json:"e2e_p50_ms"`
	E2EP99    float64 `json:"e2e_p99_ms"`
	// E2ELowerBound: some events were never replied to; they count as
	// replied to at the end of the wait, so the percentiles are at least
	// what they say.
	E2ELowerBound bool `json:"e2e_lower_bound,omitempty"`
	// DrainSeconds is from the end of sending to the last reply, or to the
	// end of the wait if some are missing.
	DrainSeconds float64 `json:"drain_s"`
	// ByRegion is the replies per second during the steady state (from
	// SteadyFromS to the end of sending), and OfferedByRegion the events
	// sent per second in it.
	SteadyFromS     float64            `json:"steady_from_s,omitempty"`
	ByRegion        map[string]float64 `json:"replies_per_s_by_region,omitempty"`
	OfferedByRegion map[string]float64 `json:"offered_per_s_by_region,omitempty"`
	// ZoomSends counts the chat messages Zoom was sent, Zoom429 those it
	// refused over the account's limit.
	ZoomSends    int64   `json:"zoom_sends"`
	Zoom429      int64   `json:"zoom_429s"`
	Zoom429Share float64 `json:"zoom_429_share"`
	// InHandPeak is the peak of geomux_worker_events_in_hand by region, and
	// of their sum ("total"), sampled every half second; InHandMissing says
	// geomux does not export it.
	InHandPeak    map[string]float64 `json:"events_in_hand_peak,omitempty"`
	InHandMissing bool               `json:"events_in_hand_missing,omitempty"`
	PeakRSSMB     float64            `json:"peak_rss_mb"`
	CPUPer1000    float64            `json:"cpu_s_per_1000"`
	// Quiet* are the quiet accounts' events (burst: those sent while the
	// noisy account's burst drained), Noisy* the noisy account's.
	QuietEvents int     `json:"quiet_events,omitempty"`
	QuietE2EP50 float64 `json:"quiet_e2e_p50_ms,omitempty"`
	QuietE2EP99 float64 `json:"quiet_e2e_p99_ms,omitempty"`
	NoisyEvents int     `json:"noisy_events,omitempty"`
	NoisyE2EP50 float64 `json:"noisy_e2e_p50_ms,omitempty"`
	NoisyE2EP99 float64 `json:"noisy_e2e_p99_ms,omitempty"`
	// NoisyDrainSeconds is from the phase's first event to the noisy
	// account's last reply (burst, and pacing, whose one account counts as
	// noisy), if every one came; NoisyLeft its events never replied to.
	NoisyDrainSeconds float64 `json:"noisy_drain_s,omitempty"`
	NoisyLeft         int     `json:"noisy_unreplied,omitempty"`
}

// realisticResult is the realistic-load phases that ran.
type realisticResult struct {
	Slow      *phaseResult `json:"slow,omitempty"`
	Burst     *phaseResult `json:"burst,omitempty"`
	Pacing    *phaseResult `json:"pacing,omitempty"`
	Realistic *phaseResult `json:"realistic,omitempty"`
}

// set files p under its phase.
func (r *realisticResult) set(p *phaseResult) {
	switch p.Phase {
	case "slow":
		r.Slow = p
	case "burst":
		r.Burst = p
	case "pacing":
		r.Pacing = p
	case "realistic":
		r.Realistic = p
	}
}

func (r *realisticResult) phases() []*phaseResult {
	var out []*phaseResult
	for _, p := range []*phaseResult{r.Slow, r.Burst, r.Pacing, r.Realistic} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// phaseRun is one realistic-load phase under way: its geomux, tracker,
// load and the fakes' profile.
type phaseRun struct {
	b     *bench
	store string
	g     *geomuxProc
	t     *tracker
	gen   *generator
	p     *profile
	rec   *recorder
	first int64 // the phase's first event (after the warm-up's)
	start time.Time
	cpu0  time.Duration

	stopSampling chan struct{}
	sampled      sync.WaitGroup
	inHand       map[string]float64
	inHandFound  bool
}

// startPhase starts a geomux that knows accounts (and the warm-up's),
// warms it up with the instant profile, then gives the fakes profile p.
// capacity is how many events the phase may send.
func (b *bench) startPhase(ctx context.Context, name string, accounts []account, capacity int, p *profile) (*phaseRun, error) {
	store, err := os.MkdirTemp(b.dir, "store-")
	if err != nil {
		return nil, err
	}
	cfg, err := b.fakes.writeConfig(b.dir, name, geomuxConfig{storeDir: store})
	if err != nil {
		return nil, err
	}
	g, err := startGeomux(b.o, b.dir, "geomux-"+name, cfg)
	if err != nil {
		return nil, err
	}
	run := &phaseRun{b: b, store: store, g: g, p: p, stopSampling: make(chan struct{}), inHand: map[string]float64{}}
	known := map[string]bool{}
	var all []account
	for _, a := range append(slices.Clone(b.accounts), accounts...) {
		if !known[a.id] {
			known[a.id] = true
			all = append(all, a)
		}
	}
	if err := g.assignRegions(all); err != nil {
		run.stop()
		return nil, err
	}
	const warm = 50
	run.t = newTracker(warm + capacity + 1024)
	b.fakes.profile.Store(nil)
	b.fakes.t.Store(run.t)
	// The warm-up (the chatbot token, connections), with the instant
	// profile: a few of the rate steps' accounts, in their channels.
	run.gen = newGenerator(g.webhookURL(), b.accounts, b.tmpl, run.t)
	run.gen.openLoop(ctx, 200, warm*time.Second/200, newRecorder(warm))
	settle(ctx, run.t, 10*time.Second)
	if ctx.Err() != nil {
		run.stop()
		return nil, ctx.Err()
	}
	run.first = run.t.next.Load()
	run.rec = newRecorder(capacity)
	b.fakes.profile.Store(p)
	run.cpu0, _ = cpuTime(g.pid())
	run.start = time.Now()
	run.sampled.Go(run.sample)
	return run, nil
}

// sample keeps the peak of the events in hand, by region and in all.
func (r *phaseRun) sample() {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.stopSampling:
			return
		case <-tick.C:
			v, found, err := r.g.metricByLabel("geomux_worker_events_in_hand", "region")
			if err != nil || !found {
				continue
			}
			r.inHandFound = true
			var sum float64
			for region, n := range v {
				r.inHand[region] = max(r.inHand[region], n)
				sum += n
			}
			r.inHand["total"] = max(r.inHand["total"], sum)
		}
	}
}

// stop ends the phase: geomux is stopped (killed past 10 s) and its store
// thrown away, the fakes go back to the instant profile.
func (r *phaseRun) stop() {
	select {
	case <-r.stopSampling:
	default:
		close(r.stopSampling)
	}
	r.sampled.Wait()
	r.b.fakes.profile.Store(nil)
	if r.gen != nil {
		r.gen.close()
	}
	r.g.stop(10 * time.Second)
	_ = os.RemoveAll(r.store)
}

// waitReplies waits until every event sent has a reply, up to max, or
// until stall passes without one (0: no such limit).
func (r *phaseRun) waitReplies(ctx context.Context, max, stall time.Duration) {
	deadline := time.Now().Add(max)
	last, since := r.t.replied.Load(), time.Now()
	for r.t.replied.Load() < r.t.next.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		if stall > 0 && time.Since(since) > stall {
			return
		}
		time.Sleep(50 * time.Millisecond)
		if n := r.t.replied.Load(); n != last {
			last, since = n, time.Now()
		}
	}
}

// event is one event of a phase, as the tracker saw it.
type event struct {
	tag     uint32
	sent    time.Time
	replied time.Time // zero: never
	replies int32
	backend int32
}

// events are the phase's events, in the order sent.
func (r *phaseRun) events() []event {
	var out []event
	for seq := r.first; seq < r.t.next.Load() && seq < int64(len(r.t.sentAt)); seq++ {
		s := r.t.sentAt[seq].Load()
		if s == 0 {
			continue
		}
		e := event{tag: r.t.tags[seq].Load(), sent: time.Unix(0, s), replies: r.t.replies[seq].Load(), backend: r.t.backend[seq].Load()}
		if d := r.t.e2e[seq].Load(); d > 0 {
			e.replied = e.sent.Add(time.Duration(d))
		}
		out = append(out, e)
	}
	return out
}

// latencies are the e2e percentiles (ms) of the events keep selects; an
// event not replied to counts as replied to at end, and then lower is true.
func latencies(evs []event, end time.Time, keep func(event) bool) (n int, p50, p99 float64, lower bool) {
	var lat []time.Duration
	for _, e := range evs {
		if !keep(e) {
			continue
		}
		if e.replied.IsZero() {
			lat, lower = append(lat, end.Sub(e.sent)), true
			continue
		}
		lat = append(lat, e.replied.Sub(e.sent))
	}
	lat = sortedCopy(lat)
	return len(lat), percentile(lat, 0.50), percentile(lat, 0.99), lower
}

// result measures the phase, whose replies were waited for until now;
// steadyFrom (from start) begins the steady state whose per-region reply
// rates are measured (0: none). Sending ended with the last event sent
// (the last answers from the ingress are not waited for).
func (r *phaseRun) result(name, setup string, steadyFrom time.Duration) (res *phaseResult, evs []event, sendEnd time.Time) {
	end := time.Now()
	cpu1, _ := cpuTime(r.g.pid())
	zoomSends, zoom429 := r.p.zoomSends.Load(), r.p.zoom429.Load()
	close(r.stopSampling)
	r.sampled.Wait()
	evs = r.events()
	sendEnd = r.start
	for _, e := range evs {
		if e.sent.After(sendEnd) {
			sendEnd = e.sent
		}
	}
	res = &phaseResult{Phase: name, Setup: setup, Errors: map[string]int{}, Sent: len(evs),
		SendSeconds: sendEnd.Sub(r.start).Seconds()}
	res.OfferedRate = float64(res.Sent) / max(res.SendSeconds, 0.001)
	for status, n := range r.rec.statuses {
		if status != 200 {
			res.Errors[statusName(status)] = n
		}
	}
	var last time.Time
	for _, e := range evs {
		switch {
		case e.replies == 0:
			res.Missing++
		case e.replies > 1:
			res.Duplicates++
		}
		if e.replies > 0 {
			res.Replied++
			if e.replied.After(last) {
				last = e.replied
			}
		}
		if e.backend > 1 {
			res.BackendDuplicates++
		}
	}
	_, res.E2EP50, res.E2EP99, res.E2ELowerBound = latencies(evs, end, func(event) bool { return true })
	if res.Missing > 0 {
		last = end
	}
	res.DrainSeconds = max(0, last.Sub(sendEnd).Seconds())
	if steadyFrom > 0 && sendEnd.Sub(r.start) > steadyFrom {
		from := r.start.Add(steadyFrom)
		window := sendEnd.Sub(from).Seconds()
		res.SteadyFromS = steadyFrom.Seconds()
		res.ByRegion, res.OfferedByRegion = map[string]float64{}, map[string]float64{}
		for _, region := range benchRegions {
			res.ByRegion[region], res.OfferedByRegion[region] = 0, 0
		}
		for _, e := range evs {
			if e.tag == 0 {
				continue
			}
			region := tagRegion(e.tag)
			if !e.sent.Before(from) && !e.sent.After(sendEnd) {
				res.OfferedByRegion[region] += 1 / window
			}
			if !e.replied.IsZero() && !e.replied.Before(from) && !e.replied.After(sendEnd) {
				res.ByRegion[region] += 1 / window
			}
		}
	}
	res.ZoomSends, res.Zoom429 = zoomSends, zoom429
	res.Misrouted = r.t.misroute.Load()
	if res.ZoomSends > 0 {
		res.Zoom429Share = float64(res.Zoom429) / float64(res.ZoomSends)
	}
	if r.inHandFound {
		res.InHandPeak = r.inHand
	} else {
		res.InHandMissing = true
	}
	_, res.PeakRSSMB, _ = rssMB(r.g.pid())
	if res.Replied > 0 {
		res.CPUPer1000 = (cpu1 - r.cpu0).Seconds() / float64(res.Replied) * 1000
	}
	return res, evs, sendEnd
}

func (r *phaseRun) log(p *phaseResult) {
	inHand := "missing"
	if !p.InHandMissing {
		inHand = fmt.Sprintf("%.0f", p.InHandPeak["total"])
	}
	r.b.log("%-10s sent %6d at %6.0f/s  replied %6d  missing %6d  twice %d  e2e p50 %8.1f p99 %8.1f ms  drain %5.1f s  by region %v  zoom %d sends, %d 429s  in hand %s  rss %.0f MB  errors %v",
		p.Phase, p.Sent, p.OfferedRate, p.Replied, p.Missing, p.Duplicates, p.E2EP50, p.E2EP99, p.DrainSeconds, rounded(p.ByRegion), p.ZoomSends, p.Zoom429, inHand, p.PeakRSSMB, p.Errors)
}

func rounded(m map[string]float64) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = int(v + 0.5)
	}
	return out
}

// slowPhase: every backend answers after slowBackend; each region is
// offered --slow-rate events per second for --slow-for, at once. Every
// event must be replied to once, each region at the offered rate.
func (b *bench) slowPhase(ctx context.Context) (*phaseResult, error) {
	rate := b.o.slowRate * float64(len(benchRegions))
	n := int(rate * b.o.slowFor.Seconds())
	run, err := b.startPhase(ctx, "slow", b.accounts, n, &profile{backendLatency: fixedLatency(slowBackend)})
	if err != nil {
		return nil, err
	}
	defer run.stop()
	// b.accounts alternate between the regions: us, uk, eu, us, …
	run.gen.play(ctx, run.start, steady(rate, n, func(i int) (account, bool) { return b.accounts[i%len(b.accounts)], false }), run.rec)
	run.waitReplies(ctx, slowDrainMax, 0)
	res, _, _ := run.result("slow", fmt.Sprintf("backends answer in %s; %.0f events/s per region (%d accounts, %d users each) for %s; Zoom instant, unlimited",
		slowBackend, b.o.slowRate, len(b.accounts), usersPerAccount, b.o.slowFor), slowWarm)
	run.log(res)
	return res, ctx.Err()
}

// burstPhase: backends answer in burstBackend; one account sends
// burstEvents at once while burstQuiet accounts of its region send a
// trickle, for as long as the burst drains (burstMin to burstMax). The
// quiet accounts' replies must not wait behind the burst.
func (b *bench) burstPhase(ctx context.Context) (*phaseResult, error) {
	region := benchRegions[0]
	var mine []account
	for _, a := range b.phaseAccounts {
		if a.region == region {
			mine = append(mine, a)
		}
	}
	quiet, noisy := mine[:burstQuiet], mine[len(mine)-1]
	trickleMax := int(burstTrickle * burstMax.Seconds())
	run, err := b.startPhase(ctx, "burst", append(slices.Clone(quiet), noisy), burstEvents+trickleMax, &profile{backendLatency: fixedLatency(burstBackend)})
	if err != nil {
		return nil, err
	}
	defer run.stop()
	noisyTag := tagOf(noisy, true)
	var wg sync.WaitGroup
	wg.Go(func() {
		run.gen.play(ctx, run.start, steady(burstEvents/burstSendFor.Seconds(), burstEvents, func(int) (account, bool) { return noisy, true }), run.rec)
	})
	// The trickle: round the quiet accounts, until the burst has drained
	// (at least burstMin) or burstMax.
	trickle := steady(burstTrickle, trickleMax, func(i int) (account, bool) { return quiet[i%len(quiet)], false })
	wg.Go(func() {
		run.gen.play(ctx, run.start, func() (shot, bool) {
			drained := run.t.byTag[noisyTag].Load() >= burstEvents
			if since := time.Since(run.start); since >= burstMax || (since >= burstMin && drained) {
				return shot{}, false
			}
			return trickle()
		}, run.rec)
	})
	wg.Wait()
	run.waitReplies(ctx, burstDrainMax, 0)
	res, evs, sendEnd := run.result("burst", fmt.Sprintf("backends answer in %s; one account sends %d events within %s while %d accounts of the same region send %.0f events/s together, %s to %s; Zoom instant, unlimited",
		burstBackend, burstEvents, burstSendFor, burstQuiet, burstTrickle, burstMin, burstMax), 0)
	// The burst drained when its last reply came; the quiet events that
	// count are those sent until then (all of them if it never did).
	until := sendEnd
	if last := res.noisyDrain(evs, run.start); !last.IsZero() {
		until = last
	}
	res.QuietEvents, res.QuietE2EP50, res.QuietE2EP99, _ = latencies(evs, time.Now(), func(e event) bool {
		return e.tag != 0 && !tagNoisy(e.tag) && !e.sent.After(until)
	})
	run.log(res)
	b.log("burst      noisy drained in %.1f s (0: not all, %d of %d unreplied); quiet e2e p50 %.1f p99 %.1f ms over %d events",
		res.NoisyDrainSeconds, res.NoisyLeft, res.NoisyEvents, res.QuietE2EP50, res.QuietE2EP99, res.QuietEvents)
	return res, ctx.Err()
}

// noisyDrain counts the noisy account's events and those never replied
// to, and if none is, sets how long from start its last reply took, and
// returns when that was.
func (p *phaseResult) noisyDrain(evs []event, start time.Time) (last time.Time) {
	for _, e := range evs {
		if !tagNoisy(e.tag) {
			continue
		}
		p.NoisyEvents++
		if e.replied.IsZero() {
			p.NoisyLeft++
		} else if e.replied.After(last) {
			last = e.replied
		}
	}
	if p.NoisyLeft > 0 || last.IsZero() {
		return time.Time{}
	}
	p.NoisyDrainSeconds = last.Sub(start).Seconds()
	return last
}

// pacingPhase: one account's pacingEvents at once, backend instant, Zoom
// allowing the account pacingLimit messages a second. Every reply must get
// through, without hammering Zoom past its limit.
func (b *bench) pacingPhase(ctx context.Context) (*phaseResult, error) {
	var one account
	for _, a := range b.phaseAccounts {
		if a.region == benchRegions[1] {
			one = a // the region's last: not one the warm-up uses
		}
	}
	run, err := b.startPhase(ctx, "pacing", []account{one}, pacingEvents, &profile{zoomLimit: newZoomLimiter(pacingLimit)})
	if err != nil {
		return nil, err
	}
	defer run.stop()
	users, i := turns{}, 0
	run.gen.play(ctx, run.start, func() (shot, bool) {
		if i == pacingEvents {
			return shot{}, false
		}
		i++
		return shot{a: one, user: users.next(one), tag: tagOf(one, true)}, true
	}, run.rec)
	run.waitReplies(ctx, pacingMax-time.Since(run.start), 0)
	res, evs, _ := run.result("pacing", fmt.Sprintf("one account sends %d events at once; backend instant; Zoom allows the account %d messages/s (429 over it)",
		pacingEvents, pacingLimit), 0)
	res.noisyDrain(evs, run.start)
	run.log(res)
	if res.NoisyLeft == 0 {
		b.log("pacing     the account's %d events drained in %.1f s", res.NoisyEvents, res.NoisyDrainSeconds)
	} else {
		b.log("pacing     the account's %d events did not drain in %s: %d unreplied", res.NoisyEvents, pacingMax, res.NoisyLeft)
	}
	return res, ctx.Err()
}

// realisticPhase: long-tailed backends, a Zoom that takes realisticZoom
// and limits each account, realisticAccounts accounts over the regions,
// one of them noisy, Poisson arrivals at --realistic-rate for
// --realistic-for.
//
// Its default, 500 events/s, is a load this pipeline should hold: the
// noisy account then sends 500 × 20/1019 ≈ 9.8 messages/s, half of Zoom
// Pro's 20, so pacing each account holds it without a backlog (over
// 1,019/s nothing could); at the backend's mean of 0.49 s about 250 events
// are in hand (Little's law), with the long tail several times that; and it
// is an eighth of the 4,000/s that the instant profile sustains on 2 cores,
// which leaves room for the waiting and for the load generator.
func (b *bench) realisticPhase(ctx context.Context) (*phaseResult, error) {
	accounts := b.phaseAccounts[:realisticAccounts]
	noisy := accounts[len(accounts)-1]
	quiet := accounts[:len(accounts)-1]
	rate, d := b.o.realisticRate, b.o.realisticFor
	n := int(rate*d.Seconds()*1.1) + 100
	p := &profile{backendLatency: lognormalLatency(realisticMedian, realisticP99, realisticCeiling),
		zoomLatency: realisticZoom, zoomLimit: newZoomLimiter(realisticLimit)}
	run, err := b.startPhase(ctx, "realistic", accounts, n, p)
	if err != nil {
		return nil, err
	}
	defer run.stop()
	// Poisson arrivals, each of the noisy account with probability
	// noisyWeight/(noisyWeight + quiet accounts), of a quiet one otherwise;
	// seeded, so that every run offers the same load.
	rng := rand.New(rand.NewPCG(1, 2))
	users := turns{}
	var at time.Duration
	sent := 0
	weights := float64(noisyWeight + len(quiet))
	run.gen.play(ctx, run.start, func() (shot, bool) {
		at += time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		if at >= d || sent >= n {
			return shot{}, false
		}
		sent++
		if u := rng.Float64() * weights; u >= noisyWeight {
			a := quiet[min(int(u)-noisyWeight, len(quiet)-1)]
			return shot{at: at, a: a, user: users.next(a), tag: tagOf(a, false)}, true
		}
		return shot{at: at, a: noisy, user: users.next(noisy), tag: tagOf(noisy, true)}, true
	}, run.rec)
	run.waitReplies(ctx, realisticDrainMax, 0)
	res, evs, _ := run.result("realistic", fmt.Sprintf("backends lognormal, p50 %s p99 %s (at most %s); Zoom answers in %s, %d messages/s per account; %d accounts, one sending %d× each other's; Poisson, %.0f events/s for %s",
		realisticMedian, realisticP99, realisticCeiling, realisticZoom, realisticLimit, len(accounts), noisyWeight, rate, d), realisticWarm)
	end := time.Now()
	res.QuietEvents, res.QuietE2EP50, res.QuietE2EP99, _ = latencies(evs, end, func(e event) bool { return e.tag != 0 && !tagNoisy(e.tag) })
	res.NoisyEvents, res.NoisyE2EP50, res.NoisyE2EP99, _ = latencies(evs, end, func(e event) bool { return tagNoisy(e.tag) })
	run.log(res)
	b.log("realistic  quiet e2e p50 %.1f p99 %.1f ms (%d events); noisy p50 %.1f p99 %.1f ms (%d events); 429s %.2f %%",
		res.QuietE2EP50, res.QuietE2EP99, res.QuietEvents, res.NoisyE2EP50, res.NoisyE2EP99, res.NoisyEvents, 100*res.Zoom429Share)
	return res, ctx.Err()
}

// targets are the phase's targets, with what it measured.
func (p *phaseResult) targets() []target {
	var out []target
	add := func(name, want, unit string, got float64, met bool) {
		out = append(out, target{Name: p.Phase + ": " + name, Want: want, Got: got, Unit: unit, Met: met})
	}
	once := func() {
		add("every event replied to once", "0 missing, 0 twice", "events", float64(p.Missing+p.Duplicates),
			p.Missing == 0 && p.Duplicates == 0 && len(p.Errors) == 0)
	}
	switch p.Phase {
	case "slow":
		// The offered rate is kept to within the timer's granularity: 1 %.
		offered := p.OfferedRate / float64(len(benchRegions))
		least, _ := leastRegion(p.ByRegion)
		add("replies/s of the slowest region in the steady state (the offered rate; 1 % slack for the schedule)", fmt.Sprintf(">= %.0f", offered), "replies/s", least, least >= 0.99*offered)
		once()
	case "burst":
		add("quiet accounts' e2e p99 while the burst drains", fmt.Sprintf("<= %.0f", burstTarget), "ms", p.QuietE2EP99, p.QuietE2EP99 <= burstTarget && p.QuietEvents > 0)
	case "pacing":
		add("replies delivered, none twice", fmt.Sprintf("= %d", pacingEvents), "replies", float64(p.Replied), p.Replied == p.Sent && p.Sent == pacingEvents && p.Duplicates == 0)
		add("share of sends answered 429", fmt.Sprintf("<= %.0f", 100*pacingTarget), "%", 100*p.Zoom429Share, p.Zoom429Share <= pacingTarget && p.ZoomSends > 0)
	case "realistic":
		worst := 1.0
		for region, offered := range p.OfferedByRegion {
			if offered > 0 {
				worst = min(worst, p.ByRegion[region]/offered)
			}
		}
		add("replies/s over offered, worst region, steady state", fmt.Sprintf(">= %.2f", realisticKeepUp), "ratio", worst, worst >= realisticKeepUp)
		once()
		add("quiet accounts' e2e p99", fmt.Sprintf("<= %.0f", realisticQuietP99), "ms", p.QuietE2EP99, p.QuietE2EP99 <= realisticQuietP99 && p.QuietEvents > 0)
		add("share of sends answered 429", fmt.Sprintf("<= %.0f", 100*pacingTarget), "%", 100*p.Zoom429Share, p.Zoom429Share <= pacingTarget && p.ZoomSends > 0)
	}
	return out
}

// leastRegion is the region with the fewest replies per second.
func leastRegion(m map[string]float64) (float64, string) {
	least, name := 0.0, ""
	for _, k := range sortedKeys(m) {
		if name == "" || m[k] < least {
			least, name = m[k], k
		}
	}
	return least, name
}

// markdown writes the phase's section of the report.
func (p *phaseResult) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "## Realistic load: %s\n\n%s.\n\n| | target | measured | |\n|---|---|---:|---|\n", p.Phase, p.Setup)
	for _, t := range p.targets() {
		verdict := "MISS"
		if t.Met {
			verdict = "PASS"
		}
		fmt.Fprintf(b, "| %s | %s %s | %.2f | %s |\n", strings.TrimPrefix(t.Name, p.Phase+": "), t.Want, t.Unit, t.Got, verdict)
	}
	fmt.Fprintf(b, "\nsent %d (%.0f/s for %.1f s); replied %d, missing %d, replied twice %d, asked of a backend twice %d; ingress errors: %s\n\n",
		p.Sent, p.OfferedRate, p.SendSeconds, p.Replied, p.Missing, p.Duplicates, p.BackendDuplicates, errString(p.Errors))
	atLeast := ""
	if p.E2ELowerBound {
		atLeast = " (at least: events never replied to count at the end of the wait)"
	}
	fmt.Fprintf(b, "e2e p50 %.1f ms, p99 %.1f ms%s; drain after the last send %.1f s\n\n", p.E2EP50, p.E2EP99, atLeast, p.DrainSeconds)
	if p.QuietEvents > 0 {
		fmt.Fprintf(b, "quiet accounts: %d events, e2e p50 %.1f ms, p99 %.1f ms\n\n", p.QuietEvents, p.QuietE2EP50, p.QuietE2EP99)
	}
	switch {
	case p.Phase == "burst" || p.Phase == "pacing":
		who, least := "the noisy account's", ""
		if p.Phase == "pacing" {
			who, least = "the account's", fmt.Sprintf(" (no less than %.0f s at %d messages/s)", float64(pacingEvents)/pacingLimit, pacingLimit)
		}
		if p.NoisyLeft == 0 {
			fmt.Fprintf(b, "%s %d events drained in %.1f s from the first%s\n\n", who, p.NoisyEvents, p.NoisyDrainSeconds, least)
		} else {
			fmt.Fprintf(b, "%s %d events did not drain%s: %d never replied to\n\n", who, p.NoisyEvents, least, p.NoisyLeft)
		}
	case p.NoisyEvents > 0:
		fmt.Fprintf(b, "the noisy account: %d events, e2e p50 %.1f ms, p99 %.1f ms\n\n", p.NoisyEvents, p.NoisyE2EP50, p.NoisyE2EP99)
	}
	if p.ByRegion != nil {
		fmt.Fprintf(b, "replies/s in the steady state (from %.0f s to the last send):", p.SteadyFromS)
		for _, region := range sortedKeys(p.ByRegion) {
			fmt.Fprintf(b, " %s %.1f (offered %.1f),", region, p.ByRegion[region], p.OfferedByRegion[region])
		}
		b.WriteString("\n\n")
	}
	fmt.Fprintf(b, "Zoom: %d sends, %d answered 429 (%.1f %%)\n\n", p.ZoomSends, p.Zoom429, 100*p.Zoom429Share)
	if p.InHandMissing {
		b.WriteString("events in hand: missing (geomux exports no geomux_worker_events_in_hand)\n\n")
	} else {
		b.WriteString("events in hand, peak:")
		for _, k := range sortedKeys(p.InHandPeak) {
			fmt.Fprintf(b, " %s %.0f,", k, p.InHandPeak[k])
		}
		b.WriteString("\n\n")
	}
	fmt.Fprintf(b, "geomux peak RSS %.0f MB, CPU %.3f s per 1000 replies\n\n", p.PeakRSSMB, p.CPUPer1000)
}
