package workers_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// An account held by Zoom's daily limit uninstalls: the uninstall is not
// held with its events; its held events, its hold and its reply records
// are erased at once, and the region's inventory says so.
func TestUninstallErasesHeldEvents(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	daily := &dailyZoom{z: z, account: "held", until: time.Now().Add(time.Hour).Truncate(time.Second), onSend: func(time.Time) {}}
	srv := newServer(t, daily)
	zc := zoom.NewClient(zoom.ClientConfig{ClientID: clientID, ClientSecret: clientSecret, APIBaseURL: srv + "/v2", OAuthBaseURL: srv}, newHTTPClient(t, 0))
	startWorker(t, ns.JS, workers.Echo, zc, loadOptions("us"))
	for i := range 3 {
		publish(t, ns.JS, "us", zoom.EventBotNotification, "held", userEvent("held", i, fmt.Sprintf("held %d", i), int64(i)))
	}
	publish(t, ns.JS, "us", zoom.EventBotNotification, "other", userEvent("other", 0, "other 0", 10))
	natstest.Eventually(t, waitFor, func() bool {
		inv := askInventory(t, ns, "us", "held")
		other := askInventory(t, ns, "us", "other")
		return daily.limited.Load() >= 1 && inv.ParkedEvents == 3 && inv.Pace && inv.ReplyRecords >= 1 &&
			other.ReplyRecords == 1 && other.ParkedEvents == 0
	}, "the held account's three events waiting in the region, the other account's handled")

	publish(t, ns.JS, "us", zoom.EventAppDeauthorized, "held", zoomtest.Event("app_deauthorized"))
	var inv proto.Inventory
	natstest.Eventually(t, waitFor, func() bool {
		inv = askInventory(t, ns, "us", "held")
		return inv.AuditEntries == 1 && inv.ParkedEvents == 0
	}, "the erase recorded, and no event of the account left in the region (the uninstall's own acknowledged)")
	if inv.Pace || inv.ReplyRecords != 0 || inv.DeadLetters != 0 || inv.Tokens {
		t.Errorf("after the uninstall the region holds %+v of the account, want nothing", inv)
	}
	if other := askInventory(t, ns, "us", "other"); other.ReplyRecords != 1 || other.AuditEntries != 0 {
		t.Errorf("the other account: %+v, want its reply record and no audit entry", other)
	}
	if n := len(z.SB.Delivered()); n != 1 {
		t.Errorf("%d replies at Zoom, want the other account's only", n)
	}
}

// askInventory asks region what it holds of account.
func askInventory(t *testing.T, ns *natstest.Server, region, account string) proto.Inventory {
	t.Helper()
	req, _ := json.Marshal(proto.InventoryRequest{AccountID: account})
	m, err := ns.Conn.Request(proto.RegionInventorySubject(region), req, waitFor)
	if err != nil {
		t.Fatalf("ask %s for its inventory: %v", region, err)
	}
	var a proto.InventoryAnswer
	if err := json.Unmarshal(m.Data, &a); err != nil || a.Error != "" {
		t.Fatalf("inventory answer %s: %v %s", m.Data, err, a.Error)
	}
	return a.Inventory
}
