package router_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/router"
)

// publishTeamChat puts a team_chat event of account (empty: none, as Zoom
// sends an external user's mention) in channel on the transit subject, as
// the ingress does.
func (f *fixture) publishTeamChat(event, account, channel string) string {
	f.t.Helper()
	f.n++
	body := zoomtest.Event("team_chat_app_mention")
	body = bytes.Replace(body, []byte(`"asgVcjZnWWRLWvv_GtyGuaxg"`), []byte(`"`+account+`"`), 1)
	body = bytes.Replace(body, []byte(`"8AmQ0WOoQ1O3a84yYFc2xQ"`), []byte(`"`+channel+`"`), 1)
	body = bytes.Replace(body, []byte(`"team_chat.app_mention"`), []byte(`"`+event+`"`), 1)
	body = bytes.Replace(body, []byte("1696914490157"), []byte(time.Now().Format("150405.000000000")[7:]+"1"), 1) // a new event each time
	id := proto.EventID(append(body, byte(f.n)))
	m := nats.NewMsg(proto.IngressSubject)
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Header.Set(proto.HeaderEventID, id)
	m.Header.Set(proto.HeaderEventType, event)
	m.Header.Set(proto.HeaderReceivedAt, time.Now().UTC().Format(proto.TimeFormat))
	m.Header.Set(proto.HeaderChannel, proto.ConversationKey("channel:"+channel))
	if account != "" {
		m.Header.Set(proto.HeaderAccountID, account)
	}
	if _, err := f.nats.JS.PublishMsg(context.Background(), m); err != nil {
		f.t.Fatal(err)
	}
	return id
}

// An external user's app mention names no account: it is parked under its
// channel (listed, counted), routed as its channel's account's once an
// event of the channel names the account, and later ones go straight to
// the region. The account's uninstall erases what was learnt.
func TestEventWithoutAccountFollowsItsChannel(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	channels, err := directory.OpenChannels(ctx, f.nats.JS, topology.OptionsFrom(config.Default()))
	if err != nil {
		t.Fatal(err)
	}
	f.metrics = router.NewMetrics(prometheus.NewRegistry())
	r := router.New(f.nats.JS, directory.NewCache(f.dir, zap.NewNop()), router.Options{
		Regions:  regions,
		Streams:  topology.OptionsFrom(config.Default()),
		Channels: channels,
	}, f.metrics, zap.NewNop())
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, r) })
	f.setRegion("acct-host", "eu")

	f.publishTeamChat("team_chat.app_mention", "", "chanA")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.ParkedStream) == 1 }, "the mention parked")
	if got := testutil.ToFloat64(f.metrics.ParkedNoAccount); got != 1 {
		t.Errorf("parked without account = %v, want 1", got)
	}
	listed, err := directory.ParkedWithoutAccount(ctx, f.nats.JS)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].Channel != proto.ConversationKey("channel:chanA") || listed[0].Events != 1 {
		t.Errorf("parked without account: %+v", listed)
	}

	// The app is added to the channel by the host account: the channel is
	// the account's, and the mention follows.
	f.publishTeamChat("team_chat.channel_app_added", "acct-host", "chanA")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.RegionEventsStream("eu")) == 2 }, "both events in eu")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.ParkedStream) == 0 }, "parked stream emptied")
	for _, h := range f.messages(proto.RegionEventsStream("eu")) {
		if h.Get(proto.HeaderAccountID) != "acct-host" {
			t.Errorf("event %s in eu with account %q", h.Get(proto.HeaderEventID), h.Get(proto.HeaderAccountID))
		}
	}
	// The next mention goes straight to the region; another channel's waits.
	f.publishTeamChat("team_chat.app_mention", "", "chanA")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.RegionEventsStream("eu")) == 3 }, "a later mention routed directly")
	f.publishTeamChat("team_chat.app_mention", "", "chanB")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.ParkedStream) == 1 }, "another channel's mention parked")

	// A channel learnt for an account without a region yet: its mention
	// moves to the account's parked events, and flows with them.
	f.publishTeamChat("team_chat.channel_app_added", "acct-new", "chanB")
	natstest.Eventually(t, 10*time.Second, func() bool {
		hs := f.messages(proto.ParkedStream)
		n := 0
		for _, h := range hs {
			if h.Get(proto.HeaderAccountID) == "acct-new" && h.Get(proto.HeaderParkReason) == router.ParkNoRegion {
				n++
			}
		}
		if n != 2 {
			for _, h := range hs {
				t.Logf("parked: %v", h)
			}
		}
		return n == 2
	}, "chanB's mention parked as acct-new's")
	f.setRegion("acct-new", "us")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.RegionEventsStream("us")) == 2 }, "acct-new's events in us")

	// Uninstall: the account's channels are forgotten.
	if _, ok, _ := channels.Account(ctx, proto.ConversationKey("channel:chanA")); !ok {
		t.Fatal("chanA's account not recorded")
	}
	if n, err := channels.Forget(ctx, "acct-host"); err != nil || n != 1 {
		t.Errorf("forget acct-host: %d, %v", n, err)
	}
	if _, ok, _ := channels.Account(ctx, proto.ConversationKey("channel:chanA")); ok {
		t.Error("chanA's account still known after its account was forgotten")
	}
}
