package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// scaleResult is one scale-out run: separate geomux processes per role on an
// external nats-server, n routers and n workers per region.
type scaleResult struct {
	Instances int          `json:"instances"`
	Steps     []stepResult `json:"steps"`
	// Handled counts, per process, what it did: events routed (routers) or
	// handled (workers). No instance may be idle.
	Handled    map[string]float64 `json:"handled"`
	Idle       []string           `json:"idle,omitempty"`
	Accepted   int64              `json:"accepted"`
	Lost       int64              `json:"lost"`
	Duplicates int64              `json:"duplicates"`
	// BackendDuplicates counts events a backend was asked about twice.
	BackendDuplicates int64   `json:"backend_duplicates"`
	MaxRate           float64 `json:"max_sustained_rate"`
	// TopReplyRate is the rate of replies during the highest step.
	TopReplyRate float64 `json:"top_reply_rate"`
	Saturates    string  `json:"saturates_first"`
}

// scaleOut runs the scale-out rates against ingress, n routers and n
// workers per region, each a geomux process, on a nats-server process built
// from the pinned module.
func (b *bench) scaleOut(ctx context.Context, n int) (scaleResult, error) {
	res := scaleResult{Instances: n, Handled: map[string]float64{}}
	natsAddr, err := freePort()
	if err != nil {
		return res, err
	}
	store := filepath.Join(b.dir, fmt.Sprintf("nats-scale-%d", n))
	conf := filepath.Join(b.dir, fmt.Sprintf("nats-scale-%d.conf", n))
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: %q\nmax_payload: 2MB\njetstream {store_dir: %q}\n", natsAddr, store)), 0o600); err != nil {
		return res, err
	}
	ns, err := startProc(fmt.Sprintf("nats-server-%d", n), b.dir, nil, b.o.natsServer, "-c", conf)
	if err != nil {
		return res, err
	}
	defer func() { ns.stop(30 * time.Second); _ = os.RemoveAll(store) }()
	if err := waitTCP(natsAddr, 15*time.Second); err != nil {
		return res, fmt.Errorf("nats-server: %w\n%s", err, ns.logTail())
	}
	cfg, err := b.fakes.writeConfig(b.dir, fmt.Sprintf("scale-%d", n), geomuxConfig{natsURL: "nats://" + natsAddr})
	if err != nil {
		return res, err
	}
	var procs []*geomuxProc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop(30 * time.Second)
		}
	}()
	start := func(name string, args ...string) (*geomuxProc, error) {
		g, err := startGeomux(b.o, b.dir, name, cfg, args...)
		if err == nil {
			procs = append(procs, g)
		}
		return g, err
	}
	var routers, workers []*geomuxProc
	for _, r := range benchRegions {
		for i := range n {
			g, err := start(fmt.Sprintf("worker-%s-%d", r, i+1), "--target", "worker", "--region", r)
			if err != nil {
				return res, err
			}
			workers = append(workers, g)
		}
	}
	for i := range n {
		g, err := start(fmt.Sprintf("router-%d", i+1), "--target", "router")
		if err != nil {
			return res, err
		}
		routers = append(routers, g)
	}
	in, err := start("ingress", "--target", "ingress")
	if err != nil {
		return res, err
	}
	if err := routers[0].assignRegions(b.accounts); err != nil {
		return res, err
	}
	total := 0.0
	for _, r := range b.o.scaleRates {
		total += r * b.o.step.Seconds()
	}
	t := newTracker(int(total) + 1024)
	b.fakes.t.Store(t)
	gen := newGenerator(in.webhookURL(), b.accounts, b.tmpl, t)
	defer gen.close()
	gen.openLoop(ctx, 200, 500*time.Millisecond, newRecorder(100))
	settle(ctx, t, 10*time.Second)

	w := watched{names: []string{"nats-server"}, pids: []int{ns.pid()}}
	for _, g := range procs {
		w.names, w.pids = append(w.names, g.name), append(w.pids, g.pid())
	}
	for _, rate := range b.o.scaleRates {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		st := runStep(ctx, gen, w, rate, b.o.step, true, 0)
		b.log("scale-out x%d %6.0f/s  ack p99 %7.2f ms  e2e p50 %7.2f p99 %8.2f ms  accepted %6.0f/s  replied %6.0f/s  sustained %-5t  errors %v",
			n, rate, st.AckP99, st.E2EP50, st.E2EP99, st.AchievedRate, st.ReplyRate, st.Sustained, st.Errors)
		res.Steps = append(res.Steps, st)
		if st.Sustained {
			res.MaxRate = rate
		}
		if rate != b.o.scaleRates[len(b.o.scaleRates)-1] {
			settle(ctx, t, 10*time.Second)
		}
	}
	// Every event answered 200 is replied to exactly once, and asked of
	// its backend exactly once: wait for the backlog of the last step, for
	// as long as it shrinks.
	drain(ctx, t, 5*time.Second)
	res.Accepted = t.accepted.Load()
	res.Lost = t.outstanding()
	for seq := range t.next.Load() {
		if seq >= int64(len(t.replies)) {
			break
		}
		if t.replies[seq].Load() > 1 {
			res.Duplicates++
		}
		if t.backend[seq].Load() > 1 {
			res.BackendDuplicates++
		}
	}
	if m := t.misroute.Load(); m > 0 {
		return res, fmt.Errorf("scale-out x%d: %d events reached another region's backend", n, m)
	}
	for _, g := range routers {
		v, err := g.metric("geomux_router_routed_total")
		if err != nil {
			return res, err
		}
		res.Handled[g.name] = v
	}
	for _, g := range workers {
		v, err := g.metric("geomux_worker_handled_total", `outcome="ok"`)
		if err != nil {
			return res, err
		}
		res.Handled[g.name] = v
	}
	for _, g := range append(routers, workers...) {
		if res.Handled[g.name] == 0 {
			res.Idle = append(res.Idle, g.name)
		}
	}
	// What saturates first: the process that used the most CPU in the
	// highest step.
	top := res.Steps[len(res.Steps)-1]
	res.TopReplyRate = top.ReplyRate
	if top.CPUShare != nil {
		var most float64
		for name, s := range top.CPUShare {
			if s > most {
				most, res.Saturates = s, name
			}
		}
	}
	return res, nil
}
