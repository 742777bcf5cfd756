package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

var benchRegions = []string{"us", "uk", "eu"}

// accountsPerRegion spreads the load over many accounts.
const accountsPerRegion = 200

// saturation settings: connections kept busy, warm-up, measured time.
const (
	satConns = 64
	satWarm  = 500 * time.Millisecond
	satTime  = 2500 * time.Millisecond
)

// bench holds what every part of the run shares.
type bench struct {
	o        options
	dir      string
	accounts []account
	// phaseAccounts are the realistic-load phases' accounts, the first of
	// which are accounts.
	phaseAccounts []account
	tmpl          *eventTemplate
	fakes         *fakes
	log           func(format string, args ...any)
}

func benchmark(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "geomux-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{o: o, dir: dir, accounts: newAccounts(benchRegions, accountsPerRegion),
		phaseAccounts: newAccounts(benchRegions, phaseAccountsPerRegion),
		log:           func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }}
	if b.tmpl, err = newTemplate(); err != nil {
		return err
	}
	if b.fakes, err = startFakes(b.phaseAccounts, benchRegions); err != nil {
		return err
	}
	defer b.fakes.close()

	res := &result{Machine: readMachine(o.geomux), Started: time.Now().UTC()}
	began := time.Now()
	if o.phases["saturation"] {
		if res.Saturation, err = b.saturation(ctx); err != nil {
			return err
		}
	}
	if o.phases["e2e"] {
		if res.Steps, res.PeakRSSMB, err = b.endToEnd(ctx, false, o.rates); err != nil {
			return err
		}
	}
	if o.phases["sync"] {
		if res.SyncAlways, _, err = b.endToEnd(ctx, true, rateList{1000, 2000}); err != nil {
			return err
		}
	}
	if o.phases["soak"] && o.soak > 0 {
		soak, hwm, err := b.endToEnd(ctx, false, rateList{o.soakRate}, withDuration(o.soak))
		if err != nil {
			return err
		}
		res.Soak = newSoak(soak[0], b.o.soak)
		res.PeakRSSMB = max(res.PeakRSSMB, hwm)
	}
	if o.phases["overload"] {
		if res.Overload, err = b.overloadPhase(ctx, b.overloadRate(res.Steps), 0); err != nil {
			return fmt.Errorf("overload: %w", err)
		}
	}
	if o.phases["neighbour"] {
		if res.Neighbour, err = b.overloadPhase(ctx, b.overloadRate(res.Steps), o.neighbourCores); err != nil {
			return fmt.Errorf("neighbour: %w", err)
		}
	}
	if o.phases["scaling"] {
		if res.Scaling, err = b.scalingPhase(ctx, res.Steps); err != nil {
			return fmt.Errorf("scaling: %w", err)
		}
	}
	if o.phases["scale-out"] {
		for _, n := range []int{1, 2} {
			s, err := b.scaleOut(ctx, n)
			if err != nil {
				return err
			}
			res.ScaleOut = append(res.ScaleOut, s)
		}
	}
	for _, ph := range []struct {
		name string
		run  func(context.Context) (*phaseResult, error)
	}{
		{"slow", b.slowPhase},
		{"burst", b.burstPhase},
		{"pacing", b.pacingPhase},
		{"realistic", b.realisticPhase},
	} {
		if !o.phases[ph.name] {
			continue
		}
		p, err := ph.run(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", ph.name, err)
		}
		if p.Misrouted > 0 {
			return fmt.Errorf("%s: %d events reached another region's backend", ph.name, p.Misrouted)
		}
		if res.Realistic == nil {
			res.Realistic = &realisticResult{}
		}
		res.Realistic.set(p)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	res.Seconds = time.Since(began).Seconds()
	res.summarise()
	return res.write(o.out, os.Stdout)
}

// saturation measures each ingress at saturation: many connections, each
// sending as soon as its last event was answered. The five run side by side,
// idle but for the one measured, and are measured in turns, --rounds times
// each, the geomux ingress right after (or, every other round, right
// before) the baseline it is compared with. On a shared machine whose speed
// drifts by tens of percent from one minute to the next, the ratio of two
// neighbouring measurements is what is stable: the result is the median of
// the rounds' ratios, beside the median throughputs. The CPU each server
// used per event, the physical cost, is measured too.
func (b *bench) saturation(ctx context.Context) (saturation, error) {
	var s saturation
	self, err := os.Executable()
	if err != nil {
		return s, err
	}
	type server struct {
		url     string
		pid     int
		profile func()
	}
	baseline := func(cmd string, syncAlways bool) func(string) (server, func(), error) {
		return func(store string) (server, func(), error) {
			addr, err := freePort()
			if err != nil {
				return server{}, nil, err
			}
			args := []string{cmd, "--listen", addr, "--store", store}
			if syncAlways {
				args = append(args, "--sync")
			}
			p, err := startProc(filepath.Base(store)+"-"+cmd, b.dir, nil, self, args...)
			if err != nil {
				return server{}, nil, err
			}
			if err := p.waitReady("http://"+addr+"/ready", 30*time.Second); err != nil {
				p.stop(5 * time.Second)
				return server{}, nil, err
			}
			profile := func() {
				b.save(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, profileSeconds(satWarm+satTime)), cmd+"-cpu.pprof")
			}
			return server{url: "http://" + addr + "/zoom/webhook", pid: p.pid(), profile: profile}, func() { p.stop(10 * time.Second) }, nil
		}
	}
	ingress := func(syncAlways bool) func(string) (server, func(), error) {
		return func(store string) (server, func(), error) {
			cfg, err := b.fakes.writeConfig(b.dir, filepath.Base(store)+"-ingress", geomuxConfig{storeDir: store, syncAlways: syncAlways})
			if err != nil {
				return server{}, nil, err
			}
			g, err := startGeomux(b.o, b.dir, filepath.Base(store)+"-geomux-ingress", cfg, "--target", "ingress")
			if err != nil {
				return server{}, nil, err
			}
			return server{url: g.webhookURL(), pid: g.pid(), profile: func() { b.profile(g, "ingress-", satWarm+satTime) }},
				func() { g.stop(30 * time.Second) }, nil
		}
	}
	const (
		http = iota
		chain
		ingr
		chainSync
		ingrSync
	)
	targets := []struct {
		name  string
		start func(store string) (server, func(), error)
		srv   server
		runs  []float64
		cpu   []float64
	}{
		http:      {name: "net/http baseline", start: baseline(baselineHTTPCmd, false)},
		chain:     {name: "chain baseline", start: baseline(baselineChainCmd, false)},
		ingr:      {name: "geomux ingress", start: ingress(false)},
		chainSync: {name: "chain baseline, sync_always", start: baseline(baselineChainCmd, true)},
		ingrSync:  {name: "geomux ingress, sync_always", start: ingress(true)},
	}
	for i := range targets {
		store, err := os.MkdirTemp(b.dir, "store-")
		if err != nil {
			return s, err
		}
		srv, stop, err := targets[i].start(store)
		if err != nil {
			return s, fmt.Errorf("%s: %w", targets[i].name, err)
		}
		defer stop()
		targets[i].srv = srv
	}
	measure := func(i int, profile bool) error {
		t := &targets[i]
		var profiled sync.WaitGroup
		if profile && t.srv.profile != nil {
			profiled.Go(t.srv.profile)
		}
		g := newGenerator(t.srv.url, b.accounts, b.tmpl, newTracker(0))
		cpu0, _ := cpuTime(t.srv.pid)
		rate, statuses := g.closedLoop(ctx, satConns, satWarm, satTime)
		cpu1, _ := cpuTime(t.srv.pid)
		g.close()
		profiled.Wait()
		t.runs = append(t.runs, rate)
		// CPU over warm-up and window, per event of the window: a slight
		// overestimate, the same for every server.
		t.cpu = append(t.cpu, (cpu1-cpu0).Seconds()/(rate*satTime.Seconds())*1e6)
		b.log("saturation  %-30s %8.0f events/s  %5.1f µs CPU/event  %v", t.name, rate, t.cpu[len(t.cpu)-1], statuses)
		if len(statuses) != 1 || statuses[200] == 0 {
			return fmt.Errorf("%s answered %v at saturation, want only 200s", t.name, statuses)
		}
		return ctx.Err()
	}
	var vsChain, vsHTTP, vsChainSync []float64
	for round := range b.o.rounds {
		order := []int{chain, ingr, http, chainSync, ingrSync}
		if round%2 == 1 {
			order = []int{ingr, chain, http, ingrSync, chainSync}
		}
		for _, i := range order {
			if err := measure(i, b.o.profile != "" && round == 0 && (i == chain || i == ingr)); err != nil {
				return s, err
			}
		}
		last := func(i int) float64 { return targets[i].runs[round] }
		vsChain = append(vsChain, last(ingr)/last(chain))
		vsHTTP = append(vsHTTP, last(ingr)/last(http))
		vsChainSync = append(vsChainSync, last(ingrSync)/last(chainSync))
	}
	s.HTTP, s.Chain, s.Ingress = median(targets[http].runs), median(targets[chain].runs), median(targets[ingr].runs)
	s.ChainSync, s.IngressSync = median(targets[chainSync].runs), median(targets[ingrSync].runs)
	s.Rounds.HTTP, s.Rounds.Chain, s.Rounds.Ingress = targets[http].runs, targets[chain].runs, targets[ingr].runs
	s.Rounds.ChainSync, s.Rounds.IngressSync = targets[chainSync].runs, targets[ingrSync].runs
	s.IngressVsChain, s.IngressVsHTTP, s.IngressSyncVsChainSync = median(vsChain), median(vsHTTP), median(vsChainSync)
	s.CPUMicros = map[string]float64{}
	for _, t := range targets {
		s.CPUMicros[t.name] = median(t.cpu)
	}
	return s, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type stepOption func(*stepPlan)

type stepPlan struct {
	d   time.Duration
	env []string // of the geomux process, e.g. GOMAXPROCS=4
}

func withDuration(d time.Duration) stepOption { return func(p *stepPlan) { p.d = d } }

func withEnv(env ...string) stepOption { return func(p *stepPlan) { p.env = append(p.env, env...) } }

// allInOne is a geomux with everything in one process on its embedded
// NATS, its accounts assigned, warmed up, with the generator aimed at it.
type allInOne struct {
	g   *geomuxProc
	t   *tracker
	gen *generator
	rm  func()
}

// startAllInOne starts it for about events events.
func (b *bench) startAllInOne(ctx context.Context, syncAlways bool, events float64, env []string) (*allInOne, error) {
	store, err := os.MkdirTemp(b.dir, "store-")
	if err != nil {
		return nil, err
	}
	rm := func() { _ = os.RemoveAll(store) }
	cfg, err := b.fakes.writeConfig(b.dir, "all", geomuxConfig{storeDir: store, syncAlways: syncAlways})
	if err != nil {
		rm()
		return nil, err
	}
	g, err := startGeomuxEnv(b.o, b.dir, "geomux-all", cfg, env)
	if err != nil {
		rm()
		return nil, err
	}
	a := &allInOne{g: g, rm: rm}
	if err := g.assignRegions(b.accounts); err != nil {
		a.close()
		return nil, err
	}
	a.t = newTracker(int(events) + 1024)
	b.fakes.t.Store(a.t)
	a.gen = newGenerator(g.webhookURL(), b.accounts, b.tmpl, a.t)
	// A short warm-up: the chatbot token, connections, the JIT of caches.
	a.gen.openLoop(ctx, 200, 500*time.Millisecond, newRecorder(100))
	settle(ctx, a.t, 10*time.Second)
	return a, nil
}

func (a *allInOne) close() {
	if a.gen != nil {
		a.gen.close()
	}
	a.g.stop(30 * time.Second)
	a.rm()
}

func (a *allInOne) watched() watched {
	return watched{names: []string{"geomux"}, pids: []int{a.g.pid()}}
}

// endToEnd starts geomux with everything in one process on its embedded
// NATS, and runs the rate steps against it, end to end.
func (b *bench) endToEnd(ctx context.Context, syncAlways bool, rates rateList, opts ...stepOption) (steps []stepResult, peakRSS float64, err error) {
	plan := stepPlan{d: b.o.step}
	for _, o := range opts {
		o(&plan)
	}
	total := 0.0
	for _, r := range rates {
		total += r * plan.d.Seconds()
	}
	a, err := b.startAllInOne(ctx, syncAlways, total, plan.env)
	if err != nil {
		return nil, 0, err
	}
	defer a.close()
	rssEvery := time.Duration(0)
	if plan.d >= 30*time.Second {
		rssEvery = time.Second
	}
	var out []stepResult
	for _, rate := range rates {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		var profiled sync.WaitGroup
		if b.o.profile != "" && rate == b.o.profileRate && !syncAlways {
			profiled.Go(func() { b.profile(a.g, "", plan.d) })
		}
		st := runStep(ctx, a.gen, a.watched(), rate, plan.d, true, rssEvery)
		profiled.Wait()
		name := "end to end"
		if syncAlways {
			name += ", sync_always"
		}
		if len(plan.env) > 0 {
			name += ", " + strings.Join(plan.env, " ")
		}
		b.log("%-24s %6.0f/s  ack p50 %6.2f p99 %7.2f p99.9 %7.2f ms  e2e p50 %7.2f p99 %8.2f ms  sustained %-5t  cpu %.3f s/1000 (load %.3f)  rss %.0f MB  errors %v",
			name, rate, st.AckP50, st.AckP99, st.AckP999, st.E2EP50, st.E2EP99, st.Sustained, st.CPUPer1000, st.LoadCPU1000, st.PeakRSSMB, st.Errors)
		out = append(out, st)
		if rate != rates[len(rates)-1] {
			settle(ctx, a.t, 10*time.Second)
		}
	}
	if misrouted := a.t.misroute.Load(); misrouted > 0 {
		return nil, 0, fmt.Errorf("%d events reached another region's backend", misrouted)
	}
	_, hwm, _ := rssMB(a.g.pid())
	return out, hwm, nil
}

// profile saves geomux's CPU profile over most of a step, and its
// allocations during it, its heap and metrics after it, under --profile.
func (b *bench) profile(g *geomuxProc, prefix string, d time.Duration) {
	admin := "http://" + g.admin + "/admin/debug/pprof/"
	var wg sync.WaitGroup
	wg.Go(func() { b.save(fmt.Sprintf("%sprofile?seconds=%d", admin, profileSeconds(d)), prefix+"cpu.pprof") })
	wg.Go(func() { b.save(fmt.Sprintf("%sallocs?seconds=%d", admin, profileSeconds(d)), prefix+"allocs.pprof") })
	wg.Wait()
	b.save(admin+"heap", prefix+"heap.pprof")
	b.save("http://"+g.admin+"/metrics", prefix+"metrics.txt")
}

func profileSeconds(d time.Duration) int { return max(1, int((d - 500*time.Millisecond).Seconds())) }

// save writes what url answers (with the admin token) to file under
// --profile.
func (b *bench) save(url, file string) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+benchAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.log("profile %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	if err := os.MkdirAll(b.o.profile, 0o755); err != nil {
		b.log("profile: %v", err)
		return
	}
	f, err := os.Create(filepath.Join(b.o.profile, file))
	if err != nil {
		b.log("profile: %v", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}
