package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/proto"
)

// TestE2EUninstallAfterAMoveErasesEveryRegion: an account installed in eu,
// then moved by an operator to us, leaves tokens, a dead letter and reply
// records in eu. Its uninstall reaches us, and a copy of it every other
// region: afterwards the inventory shows nothing held anywhere, and an
// erase record in each region's audit.
func TestE2EUninstallAfterAMoveErasesEveryRegion(t *testing.T) {
	t.Parallel()
	const account = "acct-moved"
	p := newPipelineWith(t, t.TempDir(), pipelineOptions{install: true})
	p.installByHTTP(account, "admin-moved", "eu")
	refuse := func(req proto.BackendRequest) int {
		if req.Event == "bot_notification" && bytes.Contains(req.Payload, []byte("please fail")) {
			return http.StatusBadRequest
		}
		return 0
	}
	p.backends["eu"].refuse, p.backends["us"].refuse = refuse, refuse

	p.send(account, "please fail in eu")
	p.send(account, "hello from eu")
	natstest.Eventually(t, 20*time.Second, func() bool {
		return len(p.deadLetters("eu", account)) == 1 && len(p.replyKeys("eu", account)) == 2 && p.regionIdle("eu")
	}, "a dead letter and two reply records of %s in eu", account)

	// The operator moves the account; its next events are handled in us.
	p.setRegion(account, "us")
	p.send(account, "please fail in us")
	natstest.Eventually(t, 20*time.Second, func() bool { return len(p.deadLetters("us", account)) == 1 && p.regionIdle("us") },
		"a dead letter of %s in us", account)
	before := p.inventory(account)
	if eu := before.Regions["eu"]; !eu.Tokens || eu.DeadLetters != 1 || eu.ReplyRecords != 2 {
		t.Fatalf("inventory before the uninstall: eu holds %+v, want tokens, 1 dead letter, 2 reply records", eu)
	}
	if us := before.Regions["us"]; us.Tokens || us.DeadLetters != 1 || us.ReplyRecords != 1 {
		t.Fatalf("inventory before the uninstall: us holds %+v, want no tokens, 1 dead letter, 1 reply record", us)
	}

	p.post(accountEvent(t, "app_deauthorized_2", account, 0))
	natstest.Eventually(t, 20*time.Second, func() bool {
		for _, r := range e2eRegions {
			if len(p.erasures(r, account)) != 1 || !p.regionIdle(r) {
				return false
			}
		}
		return true
	}, "an erase of %s recorded in every region", account)

	after := p.inventory(account)
	if !after.Empty() || len(after.Regions) != len(e2eRegions) {
		t.Errorf("inventory after the uninstall: %+v, want nothing held in %d regions", after, len(e2eRegions))
	}
	for _, r := range e2eRegions {
		if n := after.Regions[r].AuditEntries; n < 1 {
			t.Errorf("region %s: %d audit entries name %s, want its erase at least", r, n, account)
		}
		p.assertErased(r, account)
	}
	if e := p.erasures("eu", account)[0].Erased; e == nil || !e.Tokens || e.DeadLetters != 1 || e.ReplyRecords != 2 || e.Directory {
		t.Errorf("eu's erase record: %+v, want tokens, 1 dead letter, 2 reply records, and the directory left to us", e)
	}
	if e := p.erasures("us", account)[0].Erased; e == nil || e.DeadLetters != 1 || !e.Directory {
		t.Errorf("us's erase record: %+v, want 1 dead letter and the directory entry", e)
	}
	// The account's region's backend is told; the others' are not asked.
	if n := p.backendSaw("us", account, "app_deauthorized"); n != 1 {
		t.Errorf("the us backend got app_deauthorized %d times, want 1", n)
	}
	for _, r := range []string{"eu", "uk"} {
		if n := p.backendSaw(r, account, "app_deauthorized"); n != 0 {
			t.Errorf("the %s backend got app_deauthorized %d times, want 0", r, n)
		}
	}
}

// inventory is GET /admin/v1/accounts/{id}/inventory, which must answer 200.
func (p *pipeline) inventory(account string) directory.AccountInventory {
	p.t.Helper()
	status, body := p.adminDo(http.MethodGet, "/admin/v1/accounts/"+account+"/inventory", "")
	if status != http.StatusOK {
		p.t.Fatalf("inventory of %s: %d %s", account, status, body)
	}
	var inv directory.AccountInventory
	dec := json.NewDecoder(strings.NewReader(body))
	if err := dec.Decode(&inv); err != nil {
		p.t.Fatalf("inventory of %s: %v\n%s", account, err, body)
	}
	return inv
}
