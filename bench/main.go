// Command geomux-bench measures geomux against the physical limit of the
// machine it runs on: an open-loop load of signed Zoom events against a
// freshly started geomux, with fakes of Zoom and of three regional backends
// in this process, and two baselines measured in the same run (a bare
// net/http server, and the minimal chain geomux's ingress cannot do less
// than: verify, one JetStream publish, wait for the ack, answer). See
// bench/README.md.
//
//	geomux-bench [--geomux bin/geomux] [--nats-server bin/nats-server] [--out bench/results]
//
// The baselines run as child processes of this same binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case baselineHTTPCmd:
			return serveBaseline(args[1:], httpBaseline)
		case baselineChainCmd:
			return serveBaseline(args[1:], chainBaseline)
		case "report":
			// Renders latest.json of a directory again (after a change of
			// the report's form): geomux-bench report bench/results
			if len(args) != 2 {
				fmt.Fprintln(os.Stderr, "geomux-bench: usage: geomux-bench report DIR (the directory of latest.json)")
				return 2
			}
			if err := rerender(args[1]); err != nil {
				fmt.Fprintln(os.Stderr, "geomux-bench:", err)
				return 1
			}
			return 0
		}
	}
	fs := flag.NewFlagSet("geomux-bench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.geomux, "geomux", "bin/geomux", "the geomux binary to measure (make build)")
	fs.StringVar(&o.natsServer, "nats-server", "bin/nats-server", "the nats-server binary for the scale-out runs (make bench builds it from the pinned module)")
	fs.StringVar(&o.out, "out", "bench/results", "where latest.json, latest.md and latency.svg are written")
	fs.DurationVar(&o.step, "step", 4*time.Second, "how long each rate step sends")
	fs.DurationVar(&o.soak, "soak", 2*time.Minute, "how long the memory run sends at --soak-rate")
	fs.Float64Var(&o.soakRate, "soak-rate", 5000, "events per second of the memory run")
	fs.Var(&o.rates, "rates", "the rate steps, events per second, comma-separated")
	fs.Var(&o.scaleRates, "scale-rates", "the rate steps of the scale-out runs")
	fs.BoolVar(&o.skipScale, "skip-scale-out", false, "skip the runs against separate processes (same as leaving scale-out out of --phases)")
	fs.Var(&o.phases, "phases", "the phases to run, comma-separated: saturation, e2e, sync, soak, overload, neighbour, scaling, scale-out, and the realistic-load ones slow, burst, pacing, realistic (default all)")
	fs.Float64Var(&o.overloadRate, "overload-rate", 0, "overload: events per second (0: twice the highest rate the e2e phase sustained, or 6000 without it)")
	fs.DurationVar(&o.overloadFor, "overload-for", 2*time.Minute, "overload: how long the load is sent")
	fs.IntVar(&o.neighbourCores, "neighbour-cores", 1, "neighbour: how many cores a noisy neighbour (busy loops in other processes) takes during the overload run again")
	fs.StringVar(&o.memoryLimit, "overload-memory-limit", "256MiB", "memory_limit of geomux in the overload and neighbour runs (docs/how-it-works.md, \"Overload\"); empty: geomux's default, as in the other phases")
	fs.IntVar(&o.rounds, "rounds", 3, "saturation: how many times each ingress is measured, in turns; the median counts")
	fs.StringVar(&o.profile, "profile", "", "save CPU and allocation profiles of the all-in-one geomux here, taken during the --profile-rate step")
	fs.Float64Var(&o.profileRate, "profile-rate", 2000, "the end-to-end step to profile")
	fs.Float64Var(&o.slowRate, "slow-rate", 500, "slow: events per second offered to each region, whose backend answers in 2 s")
	fs.DurationVar(&o.slowFor, "slow-for", 30*time.Second, "slow: how long the load is sent")
	fs.Float64Var(&o.realisticRate, "realistic-rate", 500, "realistic: events per second, all regions together (Poisson arrivals; 500 keeps the noisy account at half Zoom Pro's 20 messages/s)")
	fs.DurationVar(&o.realisticFor, "realistic-for", time.Minute, "realistic: how long the load is sent")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: geomux-bench [flags]\n\nRuns the load benchmark against a freshly started geomux and writes its results.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "geomux-bench: unexpected argument %q (see --help)\n", fs.Arg(0))
		return 2
	}
	o.defaults()
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "geomux-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := benchmark(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "geomux-bench:", err)
		return 1
	}
	return 0
}
