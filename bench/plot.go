package main

import (
	"cmp"
	"os/exec"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plot draws latency against offered rate, so that a reader sees the knee:
// ack p50/p99/p99.9 and end-to-end p50/p99, on a log scale; as SVG at path,
// and as PNG beside it. Without rate steps (--phases without e2e) there is
// nothing to draw: drawn is false and nothing is written.
func (r *result) plot(path string) (drawn bool, err error) {
	p := plot.New()
	p.Title.Text = "geomux: latency vs offered rate (" + strings.TrimSpace(r.Machine.CPU) + ")"
	p.X.Label.Text = "offered rate, events/s (open loop)"
	p.Y.Label.Text = "latency, ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	series := []struct {
		name string
		get  func(stepResult) float64
	}{
		{"ack p50", func(s stepResult) float64 { return s.AckP50 }},
		{"ack p99", func(s stepResult) float64 { return s.AckP99 }},
		{"ack p99.9", func(s stepResult) float64 { return s.AckP999 }},
		{"end to end p50", func(s stepResult) float64 { return s.E2EP50 }},
		{"end to end p99", func(s stepResult) float64 { return s.E2EP99 }},
	}
	var lines []any
	for _, s := range series {
		var xys plotter.XYs
		for _, st := range r.Steps {
			if v := s.get(st); v > 0 {
				xys = append(xys, plotter.XY{X: st.Rate, Y: v})
			}
		}
		if len(xys) > 0 {
			lines = append(lines, s.name, xys)
		}
	}
	if o := r.Overload; o != nil {
		// The overload run: one point each, at its rate.
		for _, s := range series[:3] {
			if v := s.get(o.stepResult); v > 0 {
				lines = append(lines, "overload "+s.name, plotter.XYs{{X: o.Rate, Y: v}})
			}
		}
	}
	if len(lines) == 0 {
		return false, nil
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return false, err
	}
	for _, ext := range []string{".svg", ".png"} {
		if err := p.Save(9*vg.Inch, 5.5*vg.Inch, strings.TrimSuffix(path, ".svg")+ext); err != nil {
			return false, err
		}
	}
	return true, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp.Compare[string])
	return keys
}

// natsServerVersion is the version of the pinned nats-server module, the
// one the chain baseline embeds and bin/nats-server is built from.
func natsServerVersion() string { return server.VERSION }

func geomuxVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "geomux"))
}
