package main

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// metricName finds the metric names a PromQL expression uses, once
// labels (labelsOf) are taken out.
var (
	metricName = regexp.MustCompile(`\b(?:geomux|go|process)_[a-zA-Z0-9_]+\b`)
	labelsOf   = regexp.MustCompile(`\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
)

func metricNames(expr string) []string {
	return metricName.FindAllString(labelsOf.ReplaceAllString(expr, ""), -1)
}

// TestDashboardAndAlertsNameExportedMetrics checks that every metric the
// Grafana dashboard and the alert rules query is one geomux exports: a
// renamed metric must not leave a blank panel or an alert that never fires.
func TestDashboardAndAlertsNameExportedMetrics(t *testing.T) {
	p := newPipeline(t, t.TempDir())
	p.setRegion("acct-monitor", "eu")
	p.send("acct-monitor", "hi")
	p.waitDelivered(1)
	// The reply goes out before the event is acknowledged and its end to
	// end time observed: wait for that too.
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.metrics(), "geomux_worker_end_to_end_seconds_count")
	}, "the event's end to end time observed")
	// A refused request, so that the rejections' series exist.
	if status, err := zoomtest.Post(http.DefaultClient, p.webhook, "not-the-secret", zoomtest.BotNotification("acct-monitor", "x", 99)); err != nil || status != http.StatusUnauthorized {
		t.Fatalf("badly signed webhook: %d %v", status, err)
	}
	exported := map[string]string{} // name → type
	for _, l := range strings.Split(p.metrics(), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			exported[f[2]] = f[3]
		}
	}
	known := func(name string) bool {
		if _, ok := exported[name]; ok {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && exported[base] == "histogram" {
				return true
			}
		}
		return false
	}

	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err := os.ReadFile("../../deploy/grafana/geomux.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/geomux.json: %v", err)
	}
	queries := 0
	for _, panel := range dash.Panels {
		for _, q := range panel.Targets {
			queries++
			names := metricNames(q.Expr)
			if len(names) == 0 {
				t.Errorf("dashboard panel %q: query %q names no metric", panel.Title, q.Expr)
			}
			for _, n := range names {
				if !known(n) {
					t.Errorf("dashboard panel %q queries %s, which geomux does not export", panel.Title, n)
				}
			}
		}
	}
	if queries < 15 {
		t.Errorf("the dashboard has %d queries; it had more", queries)
	}

	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, l := range strings.Split(string(rules), "\n") {
		expr, ok := strings.CutPrefix(strings.TrimSpace(l), "expr:")
		if !ok {
			continue
		}
		alerts++
		for _, n := range metricNames(expr) {
			if !known(n) {
				t.Errorf("alert rule %q uses %s, which geomux does not export", strings.TrimSpace(expr), n)
			}
		}
	}
	if alerts < 10 {
		t.Errorf("alerts.yaml has %d rules; it had more", alerts)
	}
}
