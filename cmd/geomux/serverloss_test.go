package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
)

// Losing one server of a three-server system, under load (issue 16): the
// deployment of deploy/supercluster with a three-server hub (R3, as
// deployer.yaml sets it) and eu on three servers.
//
//   - The hub server leading the transit stream is killed (SIGKILL) while
//     events of every region come at 200 a second: Zoom gets 200 for every
//     event, each within its 3 s, and every event is replied to once.
//   - The server leading eu's events stream (and, moved there by the
//     workers, its consumers and reply records) is killed the same way,
//     then one following it: every event is replied to once.
func TestServerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("the deployment takes a while")
	}
	d := newDeploymentOf(t, false, 3)
	t.Cleanup(func() {
		if t.Failed() {
			d.dumpLogs()
		}
	})
	var accounts []string
	for _, r := range scRegions {
		for i := range 5 {
			a := fmt.Sprintf("acct-%s-%d", r, i)
			d.setRegion(a, r)
			accounts = append(accounts, a)
		}
	}
	deployer := jsFor(t, d.hub, "deployer")
	transitLeaders := func() []string {
		var leaders []string
		for p := range 3 {
			st, err := deployer.Stream(t.Context(), proto.TransitStream(p))
			if err != nil {
				return nil
			}
			info, err := st.Info(t.Context())
			if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
				return nil
			}
			leaders = append(leaders, info.Cluster.Leader)
		}
		return leaders
	}
	natstest.Eventually(t, 90*time.Second, func() bool {
		l := transitLeaders()
		return len(l) == 3 && l[0] != l[1] && l[1] != l[2] && l[0] != l[2]
	}, "the transit streams' leaders on three different servers (%v)", transitLeaders())

	t.Run("the transit stream's leader is killed", func(t *testing.T) {
		leader := transitLeaders()[0]
		i := serverIndex(t, d.hub, leader)
		l := d.load(t, accounts, "hub transit leader", func() { d.hub.kill(i) })
		l.check(t, d)
		d.hub.restart(i)
	})

	euLeader := func() int {
		st, err := jsFor(t, d.regions["eu"], "deployer").Stream(t.Context(), proto.RegionEventsStream("eu"))
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(t.Context())
		if err != nil || info.Cluster == nil {
			t.Fatalf("eu's events stream: %v", err)
		}
		return serverIndex(t, d.regions["eu"], info.Cluster.Leader)
	}
	// The workers keep the leaders of eu's consumers and reply records on
	// the events stream's leader, so that losing another server costs
	// nothing.
	euDeployer := jsFor(t, d.regions["eu"], "deployer")
	euGathered := func() []string {
		st, err := euDeployer.Stream(t.Context(), proto.RegionEventsStream("eu"))
		if err != nil {
			return []string{err.Error()}
		}
		leader := st.CachedInfo().Cluster.Leader
		var elsewhere []string
		for name := range st.ConsumerNames(t.Context()).Name() {
			c, err := st.Consumer(t.Context(), name)
			if err != nil {
				return []string{err.Error()}
			}
			if strings.HasPrefix(name, "workers") && c.CachedInfo().Cluster.Leader != leader {
				elsewhere = append(elsewhere, name+" on "+c.CachedInfo().Cluster.Leader)
			}
		}
		kv, err := euDeployer.Stream(t.Context(), "KV_"+proto.RegionRepliesBucket("eu"))
		if err != nil {
			return []string{err.Error()}
		}
		if l := kv.CachedInfo().Cluster.Leader; l != leader {
			elsewhere = append(elsewhere, "replies on "+l)
		}
		if leader == "" {
			elsewhere = append(elsewhere, "no events leader")
		}
		return elsewhere
	}
	gathered := func() {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for elsewhere := euGathered(); len(elsewhere) > 0; elsewhere = euGathered() {
			if time.Now().After(deadline) {
				t.Fatalf("eu's consumers and reply records not led from the events stream's server after a minute: %v", elsewhere)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Run("the leader of eu's events stream is killed", func(t *testing.T) {
		gathered()
		i := euLeader()
		l := d.load(t, accounts, "eu leader", func() { d.regions["eu"].kill(i) })
		l.check(t, d)
		d.regions["eu"].restart(i)
	})

	t.Run("a follower of eu's events stream is killed", func(t *testing.T) {
		gathered()
		i := (euLeader() + 1) % 3
		l := d.load(t, accounts, "eu follower", func() { d.regions["eu"].kill(i) })
		l.check(t, d)
		d.regions["eu"].restart(i)
	})
}

// serverIndex is the index of a system's server from its name (<system>-<i>).
func serverIndex(t *testing.T, s *ncSystem, name string) int {
	t.Helper()
	i, err := strconv.Atoi(strings.TrimPrefix(name, s.name+"-"))
	if err != nil || i < 0 || i >= len(s.servers) || s.servers[i] == nil {
		t.Fatalf("no running server %q in %s", name, s.name)
	}
	return i
}

// lossRate is the events a second of the load; lossBefore and lossAfter
// are how long it runs before and after the loss.
const (
	lossRate   = 200
	lossBefore = 2 * time.Second
	lossAfter  = 10 * time.Second
)

// lossLoad is what a load through a server loss saw.
type lossLoad struct {
	name   string
	mu     sync.Mutex
	sent   map[string]time.Time // reply text → when its event was posted
	region map[string]string    // reply text → region
	bad    []string             // answers other than 200, or after 3 s
	slow   time.Duration
}

// load posts events of accounts at lossRate a second, each in its own
// goroutine as Zoom does, and calls lose after lossBefore.
func (d *deployment) load(t *testing.T, accounts []string, name string, lose func()) *lossLoad {
	t.Helper()
	l := &lossLoad{name: name, sent: map[string]time.Time{}, region: map[string]string{}}
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / lossRate)
	defer tick.Stop()
	start := time.Now()
	lost := false
	for n := 0; time.Since(start) < lossBefore+lossAfter; n++ {
		<-tick.C
		if !lost && time.Since(start) >= lossBefore {
			lost = true
			wg.Go(lose)
		}
		account := accounts[n%len(accounts)]
		region := strings.Split(account, "-")[1]
		text := fmt.Sprintf("loss %s %d", name, n)
		wg.Go(func() {
			at := time.Now()
			status := d.post(zoomtest.BotNotification(account, text, int64(1_000_000+n)))
			took := time.Since(at)
			l.mu.Lock()
			defer l.mu.Unlock()
			l.slow = max(l.slow, took)
			if status != 200 || took >= 3*time.Second {
				l.bad = append(l.bad, fmt.Sprintf("%d after %s", status, took.Round(time.Millisecond)))
				return
			}
			l.sent[region+": "+text] = at
			l.region[region+": "+text] = region
		})
	}
	wg.Wait()
	return l
}

// check fails on any answer but 200 within 3 s, and waits for every event
// to be replied to once.
func (l *lossLoad) check(t *testing.T, d *deployment) {
	t.Helper()
	if len(l.bad) > 0 {
		t.Errorf("%d of %d events answered other than 200 within 3 s, e.g. %v", len(l.bad), len(l.bad)+len(l.sent), l.bad[:min(5, len(l.bad))])
	}
	var missing []string
	replies := func() map[string][]time.Time {
		got := map[string][]time.Time{}
		for _, m := range d.zoom.sb.Delivered() {
			if _, ok := l.sent[m.Text]; ok {
				got[m.Text] = append(got[m.Text], m.At)
			}
		}
		return got
	}
	natstest.Eventually(t, 2*time.Minute, func() bool {
		got := replies()
		missing = missing[:0]
		for text := range l.sent {
			if len(got[text]) == 0 {
				missing = append(missing, text)
			}
		}
		return len(missing) == 0
	}, "every accepted event replied to (%d missing, e.g. %v)", len(missing), missing[:min(3, len(missing))])
	delay := map[string]time.Duration{}
	for text, at := range replies() {
		if len(at) > 1 {
			t.Errorf("%q replied to %d times", text, len(at))
		}
		r := l.region[text]
		delay[r] = max(delay[r], slices.MinFunc(at, time.Time.Compare).Sub(l.sent[text]))
	}
	t.Logf("%s server lost: %d events at %d/s, slowest answer %s, longest wait for a reply: us %s, uk %s, eu %s",
		l.name, len(l.sent), lossRate, l.slow.Round(time.Millisecond),
		delay["us"].Round(time.Millisecond), delay["uk"].Round(time.Millisecond), delay["eu"].Round(time.Millisecond))
}
