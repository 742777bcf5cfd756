package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// deployment is deploy/supercluster/ running: four NATS systems and the
// geomux processes of every role, talking to a fake Zoom and a fake backend
// per region.
type deployment struct {
	t        *testing.T
	dir      string
	hub      *ncSystem
	regions  map[string]*ncSystem
	zoom     *fakeZoom
	backends map[string]*fakeBackend
	ingress  string // host:port
	admin    string // the router's admin listener
	roles    map[string]*role
}

var scRegions = []string{"us", "uk", "eu"}

// newDeployment starts the deployment; eu runs three servers (R3), the
// others one. With encrypted false, JetStream stores are plaintext, so that
// the canary search can see what a leak would leave.
func newDeployment(t *testing.T, encrypted bool) *deployment {
	t.Helper()
	return newDeploymentOf(t, encrypted, 1)
}

// newDeploymentOf is newDeployment with a hub of hubServers servers, its
// streams with as many replicas.
func newDeploymentOf(t *testing.T, encrypted bool, hubServers int) *deployment {
	t.Helper()
	d := &deployment{t: t, dir: t.TempDir(), regions: map[string]*ncSystem{}, backends: map[string]*fakeBackend{}, roles: map[string]*role{}}
	keys := t.TempDir()
	d.hub = startSystem(t, "hub", hubServers, keys, encrypted)
	for _, r := range scRegions {
		n := 1
		if r == "eu" {
			n = 3
		}
		d.regions[r] = startSystem(t, r, n, keys, encrypted)
	}
	d.zoom = newFakeZoom(t)
	for _, r := range scRegions {
		d.backends[r] = newFakeBackend(t, r)
	}
	if code, out := runTool(d.env("deployer"), "setup", "--config", scConfig("deployer.yaml")); code != 0 {
		t.Fatalf("geomux setup: exit %d\n%s", code, out)
	}
	free := ports(t, 3)
	ingressPort, ingressAdmin, routerAdmin := free[0], free[1], free[2]
	d.ingress = fmt.Sprintf("127.0.0.1:%d", ingressPort)
	d.admin = fmt.Sprintf("127.0.0.1:%d", routerAdmin)
	for _, r := range scRegions {
		a := fmt.Sprintf("127.0.0.1:%d", port(t))
		d.roles["worker-"+r] = startRole(t, "worker-"+r, d.dir, append(d.env("worker-"+r), "GEOMUX_ADMIN_LISTEN="+a),
			"http://"+a+"/readyz", "run", "--config", scConfig("worker-"+r+".yaml"), "--target", "worker", "--region", r)
	}
	d.roles["router"] = startRole(t, "router", d.dir, append(d.env("router"), "GEOMUX_ADMIN_LISTEN="+d.admin),
		"http://"+d.admin+"/readyz", "run", "--config", scConfig("hub-router.yaml"), "--target", "router")
	d.roles["ingress"] = startRole(t, "ingress", d.dir, append(d.env("ingress"), "GEOMUX_INGRESS_LISTEN="+d.ingress,
		fmt.Sprintf("GEOMUX_ADMIN_LISTEN=127.0.0.1:%d", ingressAdmin), "GEOMUX_INSTALL_PUBLIC_URL=http://"+d.ingress),
		"http://"+d.ingress+"/readyz", "run", "--config", scConfig("hub-ingress.yaml"), "--target", "ingress")
	return d
}

func scConfig(name string) string { return filepath.Join("..", "..", "deploy", "supercluster", name) }

var vaultKeys = func() map[string]string {
	out := map[string]string{}
	for _, r := range scRegions {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		out[r] = base64.StdEncoding.EncodeToString(b)
	}
	return out
}()

// env is the site values of a role's process, as GEOMUX_* variables.
func (d *deployment) env(who string) []string {
	env := []string{
		"GEOMUX_LOG_LEVEL=info",
		"GEOMUX_ADMIN_TOKEN=" + e2eAdminToken,
		"GEOMUX_ZOOM_WEBHOOK_SECRET_TOKENS=" + e2eSecret,
		"GEOMUX_ZOOM_CLIENT_ID=e2e-id", "GEOMUX_ZOOM_CLIENT_SECRET=e2e-secret", "GEOMUX_ZOOM_BOT_JID=" + e2eBotJID,
		"GEOMUX_ZOOM_API_BASE_URL=" + d.zoom.srv.URL + "/v2", "GEOMUX_ZOOM_OAUTH_BASE_URL=" + d.zoom.srv.URL,
		"GEOMUX_INSTALL_STATE_KEY=e2e-state-key-0123456789-0123456789",
		"GEOMUX_INGRESS_SHUTDOWN_DELAY=0s",
		"GEOMUX_NATS_REPLICAS=" + strconv.Itoa(len(d.hub.servers)),
		"GEOMUX_RETRY_BACKOFF=100ms",
		"GEOMUX_SHUTDOWN_TIMEOUT=25s",
	}
	hubRole, perRegion, only := who, who, ""
	switch {
	case strings.HasPrefix(who, "worker-"):
		hubRole, perRegion, only = "", "worker", strings.TrimPrefix(who, "worker-")
	case strings.HasPrefix(who, "operator-"):
		hubRole, perRegion, only = "", "operator", strings.TrimPrefix(who, "operator-")
	case who == "ingress":
		perRegion = ""
	}
	if hubRole != "" {
		env = append(env, "GEOMUX_NATS_URL="+d.hub.url(), "GEOMUX_NATS_AUTH_NKEY_SEED_FILE="+d.hub.seeds[hubRole], "GEOMUX_NATS_AUTH_CA_FILE="+d.hub.tls.ca)
	}
	for _, r := range scRegions {
		up := strings.ToUpper(r)
		if only != "" && only != r {
			continue
		}
		if perRegion != "" {
			env = append(env,
				"GEOMUX_REGIONS_"+up+"_NATS_URL="+d.regions[r].url(),
				"GEOMUX_REGIONS_"+up+"_NATS_AUTH_CA_FILE="+d.regions[r].tls.ca,
				"GEOMUX_REGIONS_"+up+"_NATS_AUTH_NKEY_SEED_FILE="+d.regions[r].seeds[perRegion])
		}
		replicas := "1"
		if r == "eu" {
			replicas = "3"
		}
		env = append(env, "GEOMUX_REGIONS_"+up+"_NATS_REPLICAS="+replicas)
		if strings.HasPrefix(who, "worker-") {
			env = append(env, "GEOMUX_REGIONS_"+up+"_BACKEND_URL="+d.backends[r].srv.URL, "GEOMUX_REGIONS_"+up+"_VAULT_KEY="+vaultKeys[r])
		}
	}
	return env
}

func (d *deployment) setRegion(account, region string) {
	d.t.Helper()
	adminPut(d.t, d.admin, account, region)
}

// adminGet reads an account's directory entry from the router's admin API
// (zero if it has none).
func adminGet(t *testing.T, admin, account string) accountRecord {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+admin+"/admin/v1/accounts/"+account, nil)
	req.Header.Set("Authorization", "Bearer "+e2eAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rec accountRecord
	switch resp.StatusCode {
	case http.StatusNotFound:
	case http.StatusOK:
		if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("account %s: %d", account, resp.StatusCode)
	}
	return rec
}

func (d *deployment) post(body []byte) int {
	status, err := zoomtest.Post(http.DefaultClient, "http://"+d.ingress+"/zoom/webhook", e2eSecret, body)
	if err != nil {
		return 0
	}
	return status
}

// delivered reports whether Zoom got a reply with text.
func (d *deployment) delivered(text string) bool {
	for _, m := range d.zoom.sb.Delivered() {
		if m.Text == text {
			return true
		}
	}
	return false
}

// canary is a string that appears only in one region's events.
func canary(region string, i int) string {
	return fmt.Sprintf("CANARY-%s-%04d-7f3a", strings.ToUpper(region), i)
}

func TestSupercluster(t *testing.T) {
	if testing.Short() {
		t.Skip("the deployment takes a while")
	}
	d := newDeployment(t, false)
	t.Cleanup(func() {
		if t.Failed() {
			d.dumpLogs()
		}
	})
	for _, r := range scRegions {
		d.setRegion("acct-"+r, r)
	}

	t.Run("events of each region are handled in their region", func(t *testing.T) {
		for i := range 3 {
			for _, r := range scRegions {
				if s := d.post(zoomtest.BotNotification("acct-"+r, canary(r, i), int64(i))); s != 200 {
					t.Fatalf("webhook %s %d: %d", r, i, s)
				}
			}
		}
		for i := range 3 {
			for _, r := range scRegions {
				want := r + ": " + canary(r, i)
				natstest.Eventually(t, 30*time.Second, func() bool { return d.delivered(want) }, "reply %q", want)
			}
		}
		for _, r := range scRegions {
			for _, req := range d.backends[r].requests() {
				if req.Region != r || req.AccountID != "acct-"+r {
					t.Errorf("backend %s saw %s of %s", r, req.Region, req.AccountID)
				}
			}
		}
	})

	t.Run("a dead letter and its replay stay in the region", func(t *testing.T) {
		d.backends["eu"].setFail(func(int) int { return http.StatusBadRequest })
		replayed := zoomtest.BotNotification("acct-eu", canary("eu", 100), 100)
		if s := d.post(replayed); s != 200 {
			t.Fatalf("webhook: %d", s)
		}
		if s := d.post(zoomtest.BotNotification("acct-eu", canary("eu", 101), 101)); s != 200 {
			t.Fatalf("webhook: %d", s)
		}
		var out string
		var code int
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, out = runTool(d.env("operator-eu"), "dlq", "list", "--config", scConfig("operator-eu.yaml"), "--region", "eu", "--json")
			if strings.Count(out, `"event_id"`) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("two dead letters in eu: dlq list exit %d:\n%s", code, out)
			}
			time.Sleep(500 * time.Millisecond) // polling the condition
		}
		if code != 0 {
			t.Fatalf("dlq list: exit %d\n%s", code, out)
		}
		// Replay one; the other stays, for the canary search to find.
		var entries []dlq.Entry
		if err := json.Unmarshal([]byte(out), &entries); err != nil {
			t.Fatal(err)
		}
		first := ""
		for _, e := range entries {
			if e.EventID == proto.EventID(replayed) {
				first = strconv.FormatUint(e.ID, 10)
			}
		}
		d.backends["eu"].setFail(nil)
		code, out = runTool(d.env("operator-eu"), "dlq", "replay", "--config", scConfig("operator-eu.yaml"), "--region", "eu", first, "--as", "tester")
		if code != 0 {
			t.Fatalf("replay: exit %d\n%s", code, out)
		}
		natstest.Eventually(t, 30*time.Second, func() bool { return d.delivered("eu: " + canary("eu", 100)) }, "the replayed event's reply")
	})

	t.Run("an install is recorded by the router and its tokens kept in its region", func(t *testing.T) {
		status, body := installByHTTP(t, "http://"+d.ingress, d.zoom.srv.URL, "acct-inst", "admin-inst", "eu")
		if status != http.StatusOK || !strings.Contains(body, "European Union") {
			t.Fatalf("install: %d\n%s", status, body)
		}
		if rec := adminGet(t, d.admin, "acct-inst"); rec.Region != "eu" {
			t.Fatalf("the directory has %+v", rec)
		}
		// The tokens are in eu's vault, and in no other region's.
		for _, r := range scRegions {
			kv, err := jsFor(t, d.regions[r], "deployer").KeyValue(t.Context(), proto.RegionVaultBucket(r))
			if err != nil {
				t.Fatal(err)
			}
			_, err = kv.Get(t.Context(), "acct-inst")
			if has := err == nil; has != (r == "eu") {
				t.Errorf("region %s's vault has the account: %v", r, has)
			}
		}
		// The account stays in eu: an install into us is refused.
		status, body = installByHTTP(t, "http://"+d.ingress, d.zoom.srv.URL, "acct-inst", "admin-inst", "us")
		if status != http.StatusConflict || !strings.Contains(body, "European Union") {
			t.Errorf("an install into another region: %d\n%s", status, body)
		}
		if rec := adminGet(t, d.admin, "acct-inst"); rec.Region != "eu" {
			t.Errorf("after an install into us the directory has %+v", rec)
		}
		// Its events go to eu.
		if s := d.post(zoomtest.BotNotification("acct-inst", canary("eu", 200), 200)); s != 200 {
			t.Fatalf("webhook: %d", s)
		}
		want := "eu: " + canary("eu", 200)
		natstest.Eventually(t, 30*time.Second, func() bool { return d.delivered(want) }, "reply %q", want)
	})

	t.Run("an uninstall after a move erases every region", func(t *testing.T) {
		const account = "acct-mover"
		inventory := func() (int, directory.AccountInventory, string) {
			code, out := runTool(d.env("router"), "accounts", "inventory", account, "--config", scConfig("hub-router.yaml"), "--admin", "http://"+d.admin, "--json")
			var inv directory.AccountInventory
			_ = json.Unmarshal([]byte(out), &inv)
			return code, inv, out
		}
		if status, body := installByHTTP(t, "http://"+d.ingress, d.zoom.srv.URL, account, "admin-mover", "eu"); status != http.StatusOK {
			t.Fatalf("install: %d\n%s", status, body)
		}
		d.backends["eu"].setFail(func(int) int { return http.StatusBadRequest })
		if s := d.post(zoomtest.BotNotification(account, canary("eu", 300), 300)); s != 200 {
			t.Fatalf("webhook: %d", s)
		}
		natstest.Eventually(t, 30*time.Second, func() bool {
			_, inv, _ := inventory()
			return inv.Regions["eu"].DeadLetters == 1
		}, "a dead letter of %s in eu", account)
		d.backends["eu"].setFail(nil)
		d.setRegion(account, "us")
		code, inv, out := inventory()
		if eu := inv.Regions["eu"]; code != 0 || !eu.Tokens || eu.DeadLetters != 1 || len(inv.Regions) != len(scRegions) {
			t.Fatalf("inventory after the move: exit %d\n%s", code, out)
		}

		if s := d.post(accountEvent(t, "app_deauthorized_2", account, 0)); s != 200 {
			t.Fatalf("webhook: %d", s)
		}
		natstest.Eventually(t, 30*time.Second, func() bool {
			_, inv, _ := inventory()
			for _, r := range scRegions {
				if inv.Regions[r].AuditEntries == 0 {
					return false
				}
			}
			return inv.Complete() && inv.Empty()
		}, "nothing of %s left in any region, and an erase in each audit", account)
		if code, _, out := inventory(); code != 0 {
			t.Errorf("inventory after the uninstall: exit %d\n%s", code, out)
		}
	})

	t.Run("no region's data anywhere but in its region", func(t *testing.T) {
		var all []string
		for _, r := range scRegions {
			for i := range 3 {
				all = append(all, canary(r, i))
			}
		}
		all = append(all, canary("eu", 100), canary("eu", 101))
		for _, r := range scRegions {
			var others []string
			for _, c := range all {
				if !strings.Contains(c, "-"+strings.ToUpper(r)+"-") {
					others = append(others, c)
				}
			}
			sys := d.regions[r]
			for i := range sys.dirs {
				for _, hit := range grep(t, sys.dirs[i], others) {
					t.Errorf("region %s's server %d: %s", r, i, hit)
				}
			}
		}
		// The search sees what is there: eu keeps a dead letter, on each of
		// its three servers (R3).
		for i := range d.regions["eu"].dirs {
			if hits := grep(t, d.regions["eu"].dirs[i], []string{canary("eu", 101)}); len(hits) == 0 {
				t.Errorf("the canary search does not find eu's dead letter on eu's server %d: it proves nothing", i)
			}
		}
		for _, hit := range grep(t, d.hub.dirs[0], all) {
			t.Errorf("the hub's disk: %s", hit)
		}
		for name, r := range d.roles {
			for _, hit := range grep(t, filepath.Dir(r.logf), all) {
				if strings.Contains(hit, name+".log") {
					t.Errorf("%s's log: %s", name, hit)
				}
			}
		}
	})

	t.Run("clients connect over TLS only", func(t *testing.T) {
		// In clear: the server asks for TLS first, and answers nothing
		// said in clear (an install's tokens cross this link).
		eu := d.regions["eu"]
		if info, answer := speakInClear(t, eu.urls[0]); !strings.Contains(info, `"tls_required":true`) || strings.Contains(answer, "PONG") {
			t.Errorf("eu in clear: INFO %s; answered %q to CONNECT and PING", info, answer)
		}
		// TLS with another site's CA: the server is not trusted.
		if nc, err := connectWithSeed(eu.url(), eu.seeds["router"], d.regions["us"].tls.ca); err == nil {
			nc.Close()
			t.Error("the router trusted eu's servers with us's CA")
		} else if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("the router on eu with us's CA: %v, want a certificate error", err)
		}
		// And geomux refuses to start a router whose region link is in
		// clear to another host.
		env := append(d.env("router"), "GEOMUX_REGIONS_EU_NATS_URL=nats://nats.geomux-eu.example.com:4222", "GEOMUX_REGIONS_EU_NATS_AUTH_CA_FILE=")
		code, out := runTool(env, "run", "--config", scConfig("hub-router.yaml"), "--target", "router")
		if code == 0 || !strings.Contains(out, "regions[eu].nats.url") || !strings.Contains(out, "plaintext_tokens") {
			t.Errorf("a router with a region link in clear: exit %d\n%s", code, out)
		}
	})

	t.Run("credentials reach their own system and verbs only", func(t *testing.T) {
		// An eu worker's key is unknown to the us system.
		if nc, err := connectWithSeed(d.regions["us"].url(), d.regions["eu"].seeds["worker"], d.regions["us"].tls.ca); err == nil {
			nc.Close()
			t.Error("an eu worker's key connected to the us system")
		} else if !strings.Contains(err.Error(), "Authorization Violation") {
			t.Errorf("an eu worker's key on the us system: %v, want an Authorization Violation", err)
		}
		// On eu, the worker may not create streams nor consumers on the
		// events stream: the server refuses each API request.
		w := newProbe(t, d.regions["eu"], "worker")
		_, err := w.js.CreateStream(w.ctx(), jetstream.StreamConfig{Name: "STOLEN", Subjects: []string{"stolen"}})
		w.refused("a worker creating a stream", "$JS.API.STREAM.CREATE.STOLEN", err)
		_, err = w.js.CreateConsumer(w.ctx(), proto.RegionEventsStream("eu"), jetstream.ConsumerConfig{Name: "spy"})
		w.refused("a worker creating a consumer on the events stream", "$JS.API.CONSUMER.CREATE."+proto.RegionEventsStream("eu"), err)
		// The router puts events into eu but cannot read them back.
		r := newProbe(t, d.regions["eu"], "router")
		_, err = r.js.CreateConsumer(r.ctx(), proto.RegionEventsStream("eu"), jetstream.ConsumerConfig{Name: "spy"})
		r.refused("the router creating a consumer on eu's events", "$JS.API.CONSUMER.CREATE."+proto.RegionEventsStream("eu"), err)
		_, err = r.js.Stream(r.ctx(), proto.RegionDeadLetterStream("eu"))
		r.refused("the router reading eu's dead letters", "$JS.API.STREAM.INFO."+proto.RegionDeadLetterStream("eu"), err)
		// The ingress can read nothing: not what it publishes, not the
		// directory, not the transit stream.
		in := newProbe(t, d.hub, "ingress")
		if _, err := in.nc.SubscribeSync(proto.IngressSubject); err != nil {
			t.Fatal(err) // a subscription is refused asynchronously
		}
		in.violation("the ingress subscribing to the events it publishes", `Subscription to "`+proto.IngressSubject+`"`)
		_, err = in.js.KeyValue(in.ctx(), proto.DirectoryBucket)
		in.refused("the ingress opening the directory", "$JS.API.STREAM.INFO.KV_"+proto.DirectoryBucket, err)
		_, err = in.js.CreateConsumer(in.ctx(), proto.IngressStream, jetstream.ConsumerConfig{Name: "spy"})
		in.refused("the ingress reading the transit stream", "$JS.API.CONSUMER.CREATE."+proto.IngressStream, err)
		// An eu operator cannot reach us's dead letters: its key is eu's only.
		toUS := append(d.env("operator-eu"), "GEOMUX_REGIONS_EU_NATS_URL="+d.regions["us"].url(), "GEOMUX_REGIONS_EU_NATS_AUTH_CA_FILE="+d.regions["us"].tls.ca)
		for _, cmd := range [][]string{{"list"}, {"replay", "--all"}} {
			args := append([]string{"dlq"}, cmd...)
			code, out := runTool(toUS, append(args, "--config", scConfig("operator-eu.yaml"), "--region", "eu")...)
			if code == 0 || !strings.Contains(out, "Authorization Violation") {
				t.Errorf("an eu operator's dlq %s on the us system: exit %d\n%s", cmd[0], code, out)
			}
		}
	})

	t.Run("audit locality", func(t *testing.T) {
		code, out := runTool(d.env("auditor"), "audit", "locality", "--config", scConfig("auditor.yaml"))
		if code != 0 {
			t.Fatalf("audit on the deployment: exit %d\n%s", code, out)
		}
		// The walkthrough shows what the command prints.
		readme, err := os.ReadFile(scConfig("README.md"))
		if err != nil {
			t.Fatal(err)
		}
		sample := ""
		for _, l := range strings.Split(string(readme), "\n") {
			if s, ok := strings.CutPrefix(l, "# locality OK:"); ok {
				sample = "locality OK:" + s
			}
		}
		if sample == "" || !strings.Contains(out, sample+"\n") {
			t.Errorf("deploy/supercluster/README.md shows %q; the audit printed\n%s", sample, out)
		}
		// A region's stream made elsewhere, by hand, is named.
		js := jsFor(t, d.regions["us"], "deployer")
		if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: proto.RegionDeadLetterStream("eu"), Subjects: []string{"misplaced.eu.dlq"}}); err != nil {
			t.Fatal(err)
		}
		code, out = runTool(d.env("auditor"), "audit", "locality", "--config", scConfig("auditor.yaml"))
		if code == 0 || !strings.Contains(out, proto.RegionDeadLetterStream("eu")+" on us: holds region eu's data on the us servers") {
			t.Errorf("audit with a misplaced stream: exit %d\n%s", code, out)
		}
		_ = js.DeleteStream(context.Background(), proto.RegionDeadLetterStream("eu"))
	})

	t.Run("faults: a server, a region, the router", func(t *testing.T) {
		var sent, accepted atomic.Int64
		texts := sync.Map{}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					r := scRegions[(g+i)%3]
					n := 1000 + sent.Add(1)
					text := fmt.Sprintf("load %s %d", r, n)
					if d.post(zoomtest.BotNotification("acct-"+r, text, n)) == 200 {
						accepted.Add(1)
						texts.Store(r+": "+text, true)
					}
					time.Sleep(20 * time.Millisecond) // pace the load, not a wait for a condition
				}
			})
		}
		waitAccepted := func(n int64) {
			target := accepted.Load() + n
			natstest.Eventually(t, 30*time.Second, func() bool { return accepted.Load() >= target }, "%d more events accepted", n)
		}
		waitAccepted(30)
		// One of eu's three servers dies: R3 keeps every accepted event.
		d.regions["eu"].stop(1)
		waitAccepted(30)
		d.regions["eu"].restart(1)
		// eu goes away entirely: us and uk keep flowing; ingress keeps answering 200.
		for i := range d.regions["eu"].servers {
			d.regions["eu"].stop(i)
		}
		before := len(d.zoom.sb.Delivered())
		waitAccepted(60)
		natstest.Eventually(t, 30*time.Second, func() bool { return len(d.zoom.sb.Delivered()) > before+20 }, "us and uk replies while eu is away")
		for i := range d.regions["eu"].servers {
			d.regions["eu"].restart(i)
		}
		// The router restarts mid-stream.
		d.roles["router"].kill()
		waitAccepted(20)
		d.roles["router"] = startRole(t, "router", d.dir, append(d.env("router"), "GEOMUX_ADMIN_LISTEN="+d.admin),
			"http://"+d.admin+"/readyz", "run", "--config", scConfig("hub-router.yaml"), "--target", "router")
		waitAccepted(20)
		close(stop)
		wg.Wait()

		var missing []string
		check := func() bool {
			got := map[string]bool{}
			for _, m := range d.zoom.sb.Delivered() {
				got[m.Text] = true
			}
			missing = missing[:0]
			texts.Range(func(k, _ any) bool {
				if !got[k.(string)] {
					missing = append(missing, k.(string))
				}
				return true
			})
			return len(missing) == 0
		}
		deadline := time.Now().Add(2 * time.Minute)
		for !check() && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond) // polling the condition
		}
		if len(missing) > 0 {
			t.Fatalf("%d of %d accepted events were never replied to, e.g. %q", len(missing), accepted.Load(), missing[:min(5, len(missing))])
		}
		// Nothing routed twice to a backend (the replay above is meant to be).
		for _, r := range scRegions {
			seen := map[string]int{}
			for _, req := range d.backends[r].requests() {
				if !strings.Contains(string(req.Payload), `"load `) {
					continue
				}
				seen[req.ID]++
				if seen[req.ID] == 2 {
					t.Errorf("backend %s got event %s twice", r, req.ID)
				}
			}
		}
		t.Logf("%d events accepted through a server crash, a region outage and a router restart; every one replied to", accepted.Load())
	})
}

// dumpLogs shows the end of every geomux process's log.
func (d *deployment) dumpLogs() {
	for name, r := range d.roles {
		b, _ := os.ReadFile(r.logf)
		lines := strings.Split(string(b), "\n")
		d.t.Logf("--- %s log (last lines):\n%s", name, strings.Join(lines[max(0, len(lines)-25):], "\n"))
	}
}

// speakInClear connects to a NATS server's client port without TLS and
// returns its INFO line and what it answers to a CONNECT and a PING.
func speakInClear(t *testing.T, url string) (info, answer string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "tls://"), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	info, _ = r.ReadString('\n')
	_, _ = c.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n"))
	rest, _ := io.ReadAll(r)
	return info, string(rest)
}

func connectWithSeed(url, seedFile, caFile string) (*nats.Conn, error) {
	o, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		return nil, err
	}
	opts := []nats.Option{o, nats.Timeout(3 * time.Second), nats.MaxReconnects(0)}
	if caFile != "" {
		opts = append(opts, nats.RootCAs(caFile))
	}
	return nats.Connect(url, opts...)
}

// probe is a connection as one role that sees the server's refusals (its
// asynchronous permissions violations).
type probe struct {
	t    *testing.T
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func newProbe(t *testing.T, s *ncSystem, role string) *probe {
	t.Helper()
	p := &probe{t: t, errs: make(chan error, 16)}
	nc, err := s.connect(role, nats.CustomInboxPrefix("_INBOX_"+role),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case p.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p.nc = nc
	if p.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return p
}

// ctx bounds a request the server will not answer (it refuses it instead).
func (p *probe) ctx() context.Context {
	ctx, cancel := context.WithTimeout(p.t.Context(), time.Second)
	p.t.Cleanup(cancel)
	return ctx
}

// refused fails the test unless the operation failed (opErr) and the
// server reported a permissions violation naming subject.
func (p *probe) refused(what, subject string, opErr error) {
	p.t.Helper()
	if opErr == nil {
		p.t.Errorf("%s succeeded", what)
		return
	}
	p.violation(what, subject)
}

// violation waits for the server's report of a permissions violation
// naming subject.
func (p *probe) violation(what, subject string) {
	p.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-p.errs:
			if strings.Contains(err.Error(), "Permissions Violation") && strings.Contains(err.Error(), subject) {
				return
			}
		case <-deadline:
			p.t.Errorf("%s: the server did not refuse %s", what, subject)
			return
		}
	}
}

func jsFor(t *testing.T, s *ncSystem, role string) jetstream.JetStream {
	t.Helper()
	inbox := "_INBOX_" + role
	nc, err := s.connect(role, nats.CustomInboxPrefix(inbox))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Each region's system encrypts its JetStream store at rest (the config's
// cipher and $JS_KEY): a canary written to a stream is on its disk only
// encrypted. The same config without encryption shows the canary in clear,
// which proves the search would see it.
func TestRegionStoreEncryptedAtRest(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		s := startSystem(t, "eu", 1, t.TempDir(), encrypted)
		ctx := context.Background()
		if _, err := jsFor(t, s, "deployer").CreateStream(ctx, jetstream.StreamConfig{Name: "CANARY", Subjects: proto.RegionEventsSubjects("eu")}); err != nil {
			t.Fatal(err)
		}
		// The operator may put events back in the region (a replay).
		if _, err := jsFor(t, s, "operator").Publish(ctx, proto.RegionEventSubject("eu", "canary", ""), []byte(canary("eu", 999))); err != nil {
			t.Fatal(err)
		}
		s.stopAll() // flushed and closed
		hits := grep(t, s.dirs[0], []string{canary("eu", 999)})
		if encrypted && len(hits) > 0 {
			t.Errorf("encrypted store holds the canary in clear: %v", hits)
		}
		if !encrypted && len(hits) == 0 {
			t.Error("the canary is not found even in a plaintext store: the search proves nothing")
		}
	}
}
