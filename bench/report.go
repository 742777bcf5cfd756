package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// result is everything one run measured; written as bench/results/latest.json.
type result struct {
	Machine    machine      `json:"machine"`
	Started    time.Time    `json:"started"`
	Seconds    float64      `json:"seconds"`
	Saturation saturation   `json:"saturation_events_per_s"`
	Steps      []stepResult `json:"steps"`
	SyncAlways []stepResult `json:"sync_always_steps"`
	Soak       *soak        `json:"soak,omitempty"`
	// Overload is twice the sustained rate, for minutes (overload.go).
	Overload *overloadResult `json:"overload,omitempty"`
	// Neighbour is the overload run again beside a noisy neighbour that
	// takes cores away (overload.go).
	Neighbour *overloadResult `json:"neighbour,omitempty"`
	// Scaling is the e2e steps at GOMAXPROCS 2, 4, 8 and all cores.
	Scaling  []scalingResult `json:"scaling,omitempty"`
	ScaleOut []scaleResult   `json:"scale_out,omitempty"`
	// Realistic is the realistic-load phases (slow, burst, pacing,
	// realistic).
	Realistic *realisticResult `json:"realistic_load,omitempty"`

	// The summary the issue asks for, by name.
	IngressVsChain     float64            `json:"ingress_vs_chain"`
	IngressVsHTTP      float64            `json:"ingress_vs_http"`
	IngressSyncVsChain float64            `json:"ingress_sync_vs_chain_sync"`
	AckP99             map[string]float64 `json:"ack_p99_ms"`
	E2EP99             map[string]float64 `json:"e2e_p99_ms"`
	E2EMaxRate         float64            `json:"e2e_max_rate"`
	PeakRSSMB          float64            `json:"peak_rss_mb"`
	Cores              int                `json:"cores"`
	Targets            []target           `json:"targets"`
}

// machine is what the numbers were measured on.
type machine struct {
	Cores      int    `json:"cores"`
	CPU        string `json:"cpu"`
	Go         string `json:"go"`
	Geomux     string `json:"geomux"`
	NATSServer string `json:"nats_server"`
}

// saturation is each ingress's throughput with every connection busy.
type saturation struct {
	HTTP        float64 `json:"http_baseline"`
	Chain       float64 `json:"chain_baseline"`
	Ingress     float64 `json:"geomux_ingress"`
	ChainSync   float64 `json:"chain_baseline_sync_always"`
	IngressSync float64 `json:"geomux_ingress_sync_always"`
	// The geomux ingress's throughput as a fraction of a baseline's: the
	// median of the rounds' ratios.
	IngressVsChain         float64 `json:"ingress_vs_chain"`
	IngressVsHTTP          float64 `json:"ingress_vs_http"`
	IngressSyncVsChainSync float64 `json:"ingress_sync_vs_chain_sync"`
	// CPUMicros is each server's CPU time per event, microseconds (median).
	CPUMicros map[string]float64 `json:"cpu_us_per_event"`
	// Rounds are the measurements, in the order taken; each throughput above
	// is the median of its rounds.
	Rounds struct {
		HTTP        []float64 `json:"http_baseline"`
		Chain       []float64 `json:"chain_baseline"`
		Ingress     []float64 `json:"geomux_ingress"`
		ChainSync   []float64 `json:"chain_baseline_sync_always"`
		IngressSync []float64 `json:"geomux_ingress_sync_always"`
	} `json:"rounds"`
}

// soak is the memory run: one rate for minutes, RSS sampled each second.
type soak struct {
	stepResult
	Seconds float64 `json:"seconds"`
	// GrowthMBPerMin is the RSS's least-squares slope after the first
	// 30 s (start-up and warm-up).
	GrowthMBPerMin float64 `json:"rss_growth_mb_per_min"`
	Flat           bool    `json:"flat"`
}

func newSoak(st stepResult, d time.Duration) *soak {
	s := &soak{stepResult: st, Seconds: d.Seconds()}
	var xs, ys []float64
	for i, v := range st.RSSSeries {
		if i >= 30 {
			xs, ys = append(xs, float64(i)/60), append(ys, v)
		}
	}
	s.GrowthMBPerMin = slope(xs, ys)
	// Flat: grows less than 5% of the peak per minute.
	s.Flat = len(xs) >= 2 && s.GrowthMBPerMin < 0.05*st.PeakRSSMB
	return s
}

// target is one of the targets, with what this run measured.
type target struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Unit string  `json:"unit"`
	Met  bool    `json:"met"`
}

func rateKey(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

// summarise derives the summary and checks the targets.
func (r *result) summarise() {
	r.Cores = r.Machine.Cores
	s := r.Saturation
	r.IngressVsChain, r.IngressVsHTTP, r.IngressSyncVsChain = s.IngressVsChain, s.IngressVsHTTP, s.IngressSyncVsChainSync
	r.AckP99, r.E2EP99 = map[string]float64{}, map[string]float64{}
	byRate := map[float64]stepResult{}
	for _, st := range r.Steps {
		r.AckP99[rateKey(st.Rate)] = st.AckP99
		r.E2EP99[rateKey(st.Rate)] = st.E2EP99
		byRate[st.Rate] = st
		if st.Sustained && st.Rate > r.E2EMaxRate {
			r.E2EMaxRate = st.Rate
		}
	}
	add := func(name, want, unit string, got float64, met bool) {
		r.Targets = append(r.Targets, target{Name: name, Want: want, Got: got, Unit: unit, Met: met})
	}
	// A phase left out of --phases has no targets.
	if len(s.Rounds.Ingress) > 0 {
		add("ingress throughput vs chain baseline", ">= 0.95", "ratio", r.IngressVsChain, r.IngressVsChain >= 0.95)
		add("ingress throughput vs net/http baseline", ">= 0.40", "ratio", r.IngressVsHTTP, r.IngressVsHTTP >= 0.40)
	}
	for _, c := range []struct{ rate, max float64 }{{2000, 2}, {8000, 10}} {
		if st, ok := byRate[c.rate]; ok {
			add(fmt.Sprintf("ack p99 at %.0f events/s", c.rate), fmt.Sprintf("<= %.0f", c.max), "ms", st.AckP99, st.AckP99 <= c.max && len(st.Errors) == 0)
		}
	}
	if len(r.Steps) > 0 {
		add("end-to-end sustained rate", ">= 4000", "events/s", r.E2EMaxRate, r.E2EMaxRate >= 4000)
	}
	if st, ok := byRate[2000]; ok {
		add("end-to-end p99 at 2000 events/s", "<= 50", "ms", st.E2EP99, st.E2EP99 <= 50 && st.Sustained)
	}
	if r.Soak != nil {
		add(fmt.Sprintf("RSS at %.0f events/s", r.Soak.Rate), "< 200", "MB", r.Soak.PeakRSSMB, r.Soak.PeakRSSMB < 200)
		add(fmt.Sprintf("RSS growth over %.0f s", r.Soak.Seconds), "flat (< 5% of peak per minute)", "MB/min", r.Soak.GrowthMBPerMin, r.Soak.Flat)
	}
	for _, o := range []*overloadResult{r.Overload, r.Neighbour} {
		if o != nil {
			o.targets(add)
		}
	}
	scalingTargets(r.Scaling, add)
	for _, so := range r.ScaleOut {
		ok := so.Lost == 0 && so.Duplicates == 0 && so.BackendDuplicates == 0 && len(so.Idle) == 0
		add(fmt.Sprintf("scale-out x%d: every event once, no instance idle", so.Instances), "0 lost, 0 duplicates, 0 idle", "events",
			float64(so.Lost+so.Duplicates+so.BackendDuplicates), ok)
	}
	if len(r.ScaleOut) == 2 {
		one, two := r.ScaleOut[0], r.ScaleOut[1]
		ratio := two.TopReplyRate / max(one.TopReplyRate, 1)
		add(fmt.Sprintf("scale-out: replies/s at %.0f offered, 2 instances vs 1", two.Steps[len(two.Steps)-1].Rate), ">= 1 (within 5%)", "ratio", ratio, ratio >= 0.95)
	}
	if r.Realistic != nil {
		for _, p := range r.Realistic.phases() {
			r.Targets = append(r.Targets, p.targets()...)
		}
	}
}

// write saves latest.json, latest.md and latency.svg (and .png, when there
// are rate steps) under dir, and prints the table to w.
func (r *result) write(dir string, w io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	md := r.table()
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(md), 0o644); err != nil {
		return err
	}
	drawn, err := r.plot(filepath.Join(dir, "latency.svg"))
	if err != nil {
		return err
	}
	plotted := ", latency.svg, latency.png"
	if !drawn {
		plotted = " (no rate steps: no latency plot)"
	}
	_, err = fmt.Fprintf(w, "\n%s\nWritten: %s, latest.md%s\n", md, filepath.Join(dir, "latest.json"), plotted)
	return err
}

// table is the human report, in Markdown.
func (r *result) table() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# geomux benchmark, %s\n\n", r.Started.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "%d cores (%s), %s, nats-server %s, geomux %s; everything on this machine; %.0f s.\n\n", m.Cores, m.CPU, m.Go, m.NATSServer, m.Geomux, r.Seconds)
	// The sections of the phases left out of --phases are left out.
	if s := r.Saturation; len(s.Rounds.Ingress) > 0 {
		fmt.Fprintf(&b, "## Ingress at saturation (%d connections, closed loop; %d rounds, medians)\n\n| | events/s | CPU µs/event | geomux ingress's throughput as a fraction (median of the rounds' ratios) |\n|---|---:|---:|---:|\n", satConns, len(s.Rounds.Ingress))
		cpu := func(name string) float64 { return s.CPUMicros[name] }
		fmt.Fprintf(&b, "| (a) net/http answering 200 | %.0f | %.1f | %.2f |\n", s.HTTP, cpu("net/http baseline"), r.IngressVsHTTP)
		fmt.Fprintf(&b, "| (b) verify + JetStream publish + ack | %.0f | %.1f | %.2f |\n", s.Chain, cpu("chain baseline"), r.IngressVsChain)
		fmt.Fprintf(&b, "| geomux ingress | %.0f | %.1f | |\n", s.Ingress, cpu("geomux ingress"))
		fmt.Fprintf(&b, "| (b) with sync_always | %.0f | %.1f | %.2f |\n", s.ChainSync, cpu("chain baseline, sync_always"), r.IngressSyncVsChain)
		fmt.Fprintf(&b, "| geomux ingress with sync_always | %.0f | %.1f | |\n\n", s.IngressSync, cpu("geomux ingress, sync_always"))
	}
	if len(r.Steps) > 0 || len(r.SyncAlways) > 0 {
		b.WriteString("## End to end, open loop (everything in one process, embedded NATS)\n\n")
	}
	steps := func(title string, steps []stepResult) {
		if len(steps) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s\n\n| offered/s | accepted/s | ack p50 | ack p99 | ack p99.9 | e2e p50 | e2e p99 | errors | CPU s/1000 | peak RSS MB | backlog/s | sustained |\n|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|\n", title)
		for _, st := range steps {
			fmt.Fprintf(&b, "| %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %.3f | %.0f | %.0f | %s |\n",
				st.Rate, st.AchievedRate, st.AckP50, st.AckP99, st.AckP999, st.E2EP50, st.E2EP99, errString(st.Errors),
				st.CPUPer1000, st.PeakRSSMB, st.BacklogSlope, yes(st.Sustained))
		}
		b.WriteString("\nLatencies in ms. ack: from sending the webhook to its complete answer; e2e: from sending it to the reply reaching (fake) Zoom.\n\n")
	}
	steps("Default durability:", r.Steps)
	steps("With `nats.sync_always: true`:", r.SyncAlways)
	if r.Soak != nil {
		fmt.Fprintf(&b, "## Memory: %.0f events/s for %.0f s\n\npeak RSS %.0f MB, growth after the first 30 s %.1f MB/min (flat: %s); ack p99 %.2f ms, e2e p99 %.2f ms, sustained %s\n\n",
			r.Soak.Rate, r.Soak.Seconds, r.Soak.PeakRSSMB, r.Soak.GrowthMBPerMin, yes(r.Soak.Flat), r.Soak.AckP99, r.Soak.E2EP99, yes(r.Soak.Sustained))
	}
	for _, o := range []*overloadResult{r.Overload, r.Neighbour} {
		if o != nil {
			o.markdown(&b)
		}
	}
	scalingMarkdown(&b, r.Scaling)
	for _, so := range r.ScaleOut {
		fmt.Fprintf(&b, "## Scale-out: separate processes, %d router(s) and %d worker(s) per region, external nats-server\n\n", so.Instances, so.Instances)
		b.WriteString("| offered/s | accepted/s | replied/s | ack p99 | e2e p50 | e2e p99 | errors | CPU s/1000 | sustained |\n|---:|---:|---:|---:|---:|---:|---|---:|---|\n")
		for _, st := range so.Steps {
			fmt.Fprintf(&b, "| %.0f | %.0f | %.0f | %.2f | %.2f | %.2f | %s | %.3f | %s |\n", st.Rate, st.AchievedRate, st.ReplyRate, st.AckP99, st.E2EP50, st.E2EP99, errString(st.Errors), st.CPUPer1000, yes(st.Sustained))
		}
		fmt.Fprintf(&b, "\naccepted %d, lost %d, replied twice %d, asked of a backend twice %d; idle instances: %s; most CPU at the top step: %s\n\nper instance:", so.Accepted, so.Lost, so.Duplicates, so.BackendDuplicates, orNone(so.Idle), so.Saturates)
		for _, name := range sortedKeys(so.Handled) {
			fmt.Fprintf(&b, " %s %.0f,", name, so.Handled[name])
		}
		b.WriteString("\n\n")
		if top := so.Steps[len(so.Steps)-1]; top.CPUShare != nil {
			b.WriteString("CPU seconds at the top step:")
			for _, name := range sortedKeys(top.CPUShare) {
				fmt.Fprintf(&b, " %s %.2f,", name, top.CPUShare[name])
			}
			b.WriteString("\n\n")
		}
	}
	if r.Realistic != nil {
		for _, p := range r.Realistic.phases() {
			p.markdown(&b)
		}
	}
	b.WriteString("## Targets\n\n| target | want | got | met |\n|---|---|---:|---|\n")
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "| %s | %s %s | %.2f | %s |\n", t.Name, t.Want, t.Unit, t.Got, yes(t.Met))
	}
	return b.String()
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func errString(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// readMachine describes this machine and the binaries measured.
func readMachine(geomux string) machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version(), NATSServer: natsServerVersion()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	m.Geomux = geomuxVersion(geomux)
	return m
}

// rerender writes the report of dir's latest.json again.
func rerender(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "latest.json"))
	if err != nil {
		return err
	}
	var r result
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s/latest.json: %w", dir, err)
	}
	r.Targets = nil
	r.summarise()
	return r.write(dir, io.Discard)
}
