package directory

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/proto"
)

// handoffs records the handovers the router passes on, and refuses those
// of the regions in refuse.
type handoffs struct {
	mu     sync.Mutex
	got    []string // region/account
	refuse map[string]bool
}

func (h *handoffs) handoff(_ context.Context, region string, ho proto.TokenHandover) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, region+"/"+ho.AccountID)
	if h.refuse[region] {
		return errors.New("vault: region " + region + " refused")
	}
	return nil
}

func (h *handoffs) calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

// serve runs the router's side on srv and returns the ingress's side, on a
// connection of its own.
func serve(t *testing.T, srv *natstest.Server, h *handoffs) (*Directory, Remote) {
	t.Helper()
	d := open(t, srv)
	sub, err := Serve(srv.Conn, Local{Dir: d, HandOver: h.handoff}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Stop() })
	nc, err := nats.Connect("", nats.InProcessServer(srv.NS), srv.Auth(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return d, Remote{Conn: nc}
}

func handover(account string) proto.TokenHandover {
	return proto.TokenHandover{AccountID: account, UserID: "user-of-" + account}
}

func TestRemoteInstall(t *testing.T) {
	srv := natstest.Start(t, "")
	h := &handoffs{refuse: map[string]bool{"uk": true}}
	d, r := serve(t, srv, h)
	ctx := t.Context()

	if _, err := r.Get(ctx, "acct-new"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of an unknown account = %v, want ErrNotFound", err)
	}

	// A first install records the region and hands the tokens to it.
	rec := proto.AccountRecord{AccountID: "acct-eu", Region: "eu", APIURL: "https://api-eu.zoom.us"}
	if err := r.Install(ctx, rec, handover("acct-eu")); err != nil {
		t.Fatalf("Install: %v", err)
	}
	got, err := r.Get(ctx, "acct-eu")
	if err != nil || got.Region != "eu" || got.APIURL != "https://api-eu.zoom.us" {
		t.Fatalf("Get after install = %+v, %v", got, err)
	}

	// A reinstall into the same region refreshes the record (its api_url).
	rec.APIURL = "https://api.zoom.us"
	if err := r.Install(ctx, rec, handover("acct-eu")); err != nil {
		t.Fatalf("reinstall in the same region: %v", err)
	}
	if got, _ := d.Get(ctx, "acct-eu"); got.APIURL != "https://api.zoom.us" {
		t.Errorf("api_url after a reinstall = %q", got.APIURL)
	}

	// Another region: a conflict naming the account's region, no handover.
	err = r.Install(ctx, proto.AccountRecord{AccountID: "acct-eu", Region: "us"}, handover("acct-eu"))
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Region != "eu" || !errors.Is(err, ErrExists) {
		t.Fatalf("install into another region = %v, want a conflict naming eu", err)
	}
	if got, _ := d.Get(ctx, "acct-eu"); got.Region != "eu" {
		t.Errorf("the account moved to %q", got.Region)
	}

	// The region refuses the tokens: the record made for it is undone, so
	// that the account can be installed elsewhere.
	if err := r.Install(ctx, proto.AccountRecord{AccountID: "acct-uk", Region: "uk"}, handover("acct-uk")); err == nil {
		t.Fatal("an install the region refused succeeded")
	}
	if _, err := d.Get(ctx, "acct-uk"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a refused handover the account is recorded: %v", err)
	}
	if err := r.Install(ctx, proto.AccountRecord{AccountID: "acct-uk", Region: "us"}, handover("acct-uk")); err != nil {
		t.Fatalf("install elsewhere after a refusal: %v", err)
	}

	want := []string{"eu/acct-eu", "eu/acct-eu", "uk/acct-uk", "us/acct-uk"}
	if got := h.calls(); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Errorf("handovers = %v, want %v", got, want)
	}
}

func TestServeRefusesMalformedRequests(t *testing.T) {
	srv := natstest.Start(t, "")
	h := &handoffs{}
	d, r := serve(t, srv, h)
	ctx := t.Context()

	for name, body := range map[string]string{
		"not JSON":           `{`,
		"unknown operation":  `{"op":"delete_at","record":{"account_id":"acct-1","region":"eu"}}`,
		"install, no tokens": `{"op":"install","record":{"account_id":"acct-1","region":"eu"}}`,
		"tokens of another account": `{"op":"install","record":{"account_id":"acct-1","region":"eu"},` +
			`"handover":{"account_id":"acct-2","access_token":"x"}}`,
	} {
		m, err := r.Conn.RequestWithContext(ctx, proto.DirectorySubject, []byte(body))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(m.Data) != `{"error":"the router could not record the installation"}` {
			t.Errorf("%s: answer %s", name, m.Data)
		}
	}
	if _, err := d.Get(ctx, "acct-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a malformed request recorded the account: %v", err)
	}
	if got := h.calls(); len(got) != 0 {
		t.Errorf("handovers after malformed requests: %v", got)
	}
}

func TestRemoteWithoutRouter(t *testing.T) {
	srv := natstest.Start(t, "")
	r := Remote{Conn: srv.Conn}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if _, err := r.Get(ctx, "acct-1"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get with no router = %v, want an error saying the router did not answer", err)
	}
}
