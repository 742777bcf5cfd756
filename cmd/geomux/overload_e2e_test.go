package main

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/geomux/geomux/pkg/governor"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// While the ingress of `--target all` answers slowly, the router and the
// workers of its process are held back, down to the governor's floor: every
// request is still answered 200 (the events wait in JetStream), and once
// the ingress has been quiet for a while every event is replied to, once.
func TestE2EOverloadedIngressHoldsProcessingBack(t *testing.T) {
	t.Parallel()
	// Every answer counts as slow.
	const floor, quiet = 10, 3 * time.Second
	// Short windows: the limit comes down by a quarter per slow window
	// with requests, so the posts below span many windows however fast
	// the machine answers them.
	slow := governor.Options{Target: time.Nanosecond, Floor: floor, Window: 5 * time.Millisecond, Quiet: quiet}
	p := newPipeline(t, t.TempDir(), fx.Replace(slow))
	const accounts = 25
	for a := range accounts {
		p.setRegion(fmt.Sprintf("acct-busy-%02d", a), "eu")
	}
	sent := 0
	post := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := sent; i < sent+n; i++ {
			wg.Go(func() {
				body := zoomtest.BotNotification(fmt.Sprintf("acct-busy-%02d", i%accounts), fmt.Sprintf("busy %03d", i), int64(i+1))
				status, err := zoomtest.Post(http.DefaultClient, p.webhook, e2eSecret, body)
				if err == nil && status != http.StatusOK {
					err = fmt.Errorf("event %d answered %d", i, status)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		sent += n
	}
	// Zoom keeps posting until processing is held at the floor.
	atFloor := regexp.MustCompile(fmt.Sprintf(`(?m)^geomux_processing_limit_per_second %d$`, floor))
	deadline := time.Now().Add(20 * time.Second)
	for !atFloor.MatchString(p.metrics()) {
		if time.Now().After(deadline) || sent >= 400 {
			t.Fatalf("processing not held at the floor after %d events: %s", sent, regexp.MustCompile(`(?m)^geomux_processing.*$`).FindAllString(p.metrics(), -1))
		}
		post(2)
	}
	post(50)
	held := time.Now()
	metrics := p.metrics()
	if left := sent - len(p.delivered()); left < 30 {
		t.Errorf("only %d of %d events left to reply to while the ingress was busy: processing was not held back", left, sent)
	}
	// The operator sees the backlog, and how long it has waited.
	backlog := metricValue(t, metrics, "geomux_router_backlog_messages") + metricValue(t, metrics, `geomux_region_pending_events{region="eu"}`)
	oldest := max(metricValue(t, metrics, "geomux_router_backlog_oldest_seconds"), metricValue(t, metrics, `geomux_region_oldest_pending_seconds{region="eu"}`))
	if backlog < 30 || oldest <= 0 {
		t.Errorf("backlog metrics: %v events, the oldest %v s old; want at least 30, and an age", backlog, oldest)
	}
	got := p.waitDelivered(sent)
	// At the floor, the backlog waits until the ingress has been quiet for
	// a while; unheld, it is replied to at once.
	if took := time.Since(held); took < quiet*2/3 {
		t.Errorf("the backlog was replied to %v after the ingress went quiet, want it held for about %v", took, quiet)
	}
	seen := map[string]int{}
	for _, d := range got {
		seen[d.Text]++
	}
	for i := range sent {
		if c := seen[fmt.Sprintf("eu: busy %03d", i)]; c != 1 {
			t.Errorf("event %d replied to %d times, want once", i, c)
		}
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return !atFloor.MatchString(p.metrics()) }, "processing unlimited again")
	natstest.Eventually(t, 5*time.Second, func() bool {
		m := p.metrics()
		return metricValue(t, m, "geomux_router_backlog_messages") == 0 && metricValue(t, m, `geomux_region_pending_events{region="eu"}`) == 0 &&
			metricValue(t, m, `geomux_region_oldest_pending_seconds{region="eu"}`) == 0
	}, "no backlog left")
}

// metricValue is the value of series (name and labels, as exposed) in a
// scrape; the test fails without it.
func metricValue(t *testing.T, scrape, series string) float64 {
	t.Helper()
	for _, l := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in the metrics", series)
	return 0
}
