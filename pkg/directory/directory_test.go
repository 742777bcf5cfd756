package directory

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/proto"
)

const wait = 5 * time.Second

func open(t *testing.T, srv *natstest.Server) *Directory {
	t.Helper()
	d, err := Open(t.Context(), srv.JS)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return d
}

func put(t *testing.T, d *Directory, account, region string) proto.AccountRecord {
	t.Helper()
	rec, err := d.Put(t.Context(), proto.AccountRecord{AccountID: account, Region: region})
	if err != nil {
		t.Fatalf("Put(%s, %s): %v", account, region, err)
	}
	return rec
}

func accounts(recs []proto.AccountRecord) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.AccountID+"="+r.Region)
	}
	return out
}

func TestPutGetDeleteList(t *testing.T) {
	srv := natstest.Start(t, "")
	d := open(t, srv)
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	d.now = func() time.Time { return at }
	ctx := t.Context()

	if recs, err := d.List(ctx); err != nil || len(recs) != 0 {
		t.Fatalf("List of an empty directory = %v, %v", recs, err)
	}

	rec, err := d.Put(ctx, proto.AccountRecord{AccountID: "gVcjZnWWRLWvv_GtyGuaxg", Region: "eu", APIURL: "https://api-eu.zoom.us"})
	if err != nil {
		t.Fatal(err)
	}
	if !rec.UpdatedAt.Equal(at) || rec.UpdatedAt.Location() != time.UTC {
		t.Errorf("Put UpdatedAt = %v, want %v in UTC", rec.UpdatedAt, at)
	}
	got, err := d.Get(ctx, "gVcjZnWWRLWvv_GtyGuaxg")
	if err != nil {
		t.Fatal(err)
	}
	if got.AccountID != "gVcjZnWWRLWvv_GtyGuaxg" || got.Region != "eu" || got.APIURL != "https://api-eu.zoom.us" || !got.UpdatedAt.Equal(at) {
		t.Errorf("Get = %+v", got)
	}

	// Overwrite.
	put(t, d, "gVcjZnWWRLWvv_GtyGuaxg", "us")
	if got, _ := d.Get(ctx, "gVcjZnWWRLWvv_GtyGuaxg"); got.Region != "us" || got.APIURL != "" {
		t.Errorf("after overwrite Get = %+v, want region us and no api_url", got)
	}

	put(t, d, "c-3", "eu")
	put(t, d, "a=1", "us")
	put(t, d, "B_2", "uk")
	recs, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"B_2=uk", "a=1=us", "c-3=eu", "gVcjZnWWRLWvv_GtyGuaxg=us"}; !slices.Equal(accounts(recs), want) {
		t.Errorf("List = %v, want %v (sorted by id)", accounts(recs), want)
	}

	if err := d.Delete(ctx, "a=1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(ctx, "a=1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	recs, _ = d.List(ctx)
	if want := []string{"B_2=uk", "c-3=eu", "gVcjZnWWRLWvv_GtyGuaxg=us"}; !slices.Equal(accounts(recs), want) {
		t.Errorf("List after Delete = %v, want %v", accounts(recs), want)
	}
	// Deleting twice, or an account never seen, is fine.
	for _, id := range []string{"a=1", "never-seen"} {
		if err := d.Delete(ctx, id); err != nil {
			t.Errorf("Delete(%s) = %v, want nil", id, err)
		}
	}
	// A deleted account can be put again.
	put(t, d, "a=1", "eu")
	if got, err := d.Get(ctx, "a=1"); err != nil || got.Region != "eu" {
		t.Errorf("Get after re-Put = %+v, %v", got, err)
	}
}

func TestGetUnknown(t *testing.T) {
	d := open(t, natstest.Start(t, ""))
	if _, err := d.Get(t.Context(), "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown) = %v, want ErrNotFound", err)
	}
}

func TestInvalidAccountID(t *testing.T) {
	d := open(t, natstest.Start(t, ""))
	ctx := t.Context()
	for _, id := range []string{"", "a b", "a.b", "a*", "a>", "x/y", "ü", strings.Repeat("a", 129)} {
		if _, err := d.Put(ctx, proto.AccountRecord{AccountID: id, Region: "eu"}); !errors.Is(err, ErrInvalidAccountID) {
			t.Errorf("Put(%q) = %v, want ErrInvalidAccountID", id, err)
		}
		if _, err := d.Get(ctx, id); !errors.Is(err, ErrInvalidAccountID) {
			t.Errorf("Get(%q) = %v, want ErrInvalidAccountID", id, err)
		}
		if err := d.Delete(ctx, id); !errors.Is(err, ErrInvalidAccountID) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidAccountID", id, err)
		}
	}
	if recs, _ := d.List(ctx); len(recs) != 0 {
		t.Errorf("invalid puts stored %v", recs)
	}
	// The longest valid id works.
	put(t, d, strings.Repeat("a", 128), "eu")
}

func TestUnreadableRecord(t *testing.T) {
	srv := natstest.Start(t, "")
	d := open(t, srv)
	if _, err := d.KV().Put(t.Context(), "broken", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(t.Context(), "broken"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unreadable) = %v, want a decode error", err)
	}
	// The bucket's key is the account id, whatever the JSON says.
	if _, err := d.KV().Put(t.Context(), "real-id", []byte(`{"account_id":"other-id","region":"eu"}`)); err != nil {
		t.Fatal(err)
	}
	if r, err := d.Get(t.Context(), "real-id"); err != nil || r.AccountID != "real-id" || r.Region != "eu" {
		t.Errorf("Get(real-id) = %+v, %v", r, err)
	}
}

func TestDirectoryUnavailable(t *testing.T) {
	srv := natstest.Start(t, "")
	d := open(t, srv)
	put(t, d, "acct", "eu")
	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := d.Get(ctx, "acct"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Get with NATS down = %v, want an error other than ErrNotFound", err)
	}
	if _, err := d.Put(ctx, proto.AccountRecord{AccountID: "acct", Region: "us"}); err == nil {
		t.Error("Put with NATS down succeeded")
	}
	if _, err := d.List(ctx); err == nil {
		t.Error("List with NATS down succeeded")
	}
}

func startCache(t *testing.T, d *Directory) *Cache {
	t.Helper()
	c := NewCache(d, zap.NewNop())
	return c
}

func TestCacheLoadsExistingRecords(t *testing.T) {
	srv := natstest.Start(t, "")
	d := open(t, srv)
	put(t, d, "a1", "eu")
	put(t, d, "a2", "us")
	put(t, d, "a3", "eu")
	put(t, d, "a2", "uk") // the latest value counts
	put(t, d, "gone", "eu")
	if err := d.Delete(t.Context(), "gone"); err != nil {
		t.Fatal(err)
	}

	c := startCache(t, d)
	var mu sync.Mutex
	var seen []string
	c.OnSet(func(r proto.AccountRecord) {
		mu.Lock()
		seen = append(seen, r.AccountID+"="+r.Region)
		mu.Unlock()
	})
	if c.Ready() {
		t.Error("Ready before Start")
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(c.Stop)

	// Loaded by the time Start returns: no polling.
	if !c.Ready() || c.Len() != 3 {
		t.Fatalf("after Start: ready %v, %d records; want 3", c.Ready(), c.Len())
	}
	for id, region := range map[string]string{"a1": "eu", "a2": "uk", "a3": "eu"} {
		if r, ok := c.Lookup(id); !ok || r.Region != region || r.AccountID != id {
			t.Errorf("Lookup(%s) = %+v, %v; want region %s", id, r, ok, region)
		}
	}
	if _, ok := c.Lookup("gone"); ok {
		t.Error("a deleted account is in the cache")
	}
	mu.Lock()
	if len(seen) != 0 {
		t.Errorf("OnSet called for the initial records: %v", seen)
	}
	mu.Unlock()

	// Later writes.
	put(t, d, "a4", "us")
	natstest.Eventually(t, wait, func() bool { r, ok := c.Lookup("a4"); return ok && r.Region == "us" }, "a4 in the cache")
	put(t, d, "a1", "us")
	natstest.Eventually(t, wait, func() bool { r, _ := c.Lookup("a1"); return r.Region == "us" }, "a1 moved to us")
	if err := d.Delete(t.Context(), "a3"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, wait, func() bool { _, ok := c.Lookup("a3"); return !ok }, "a3 gone from the cache")
	if c.Len() != 3 {
		t.Errorf("Len = %d, want 3", c.Len())
	}

	mu.Lock()
	defer mu.Unlock()
	if want := []string{"a4=us", "a1=us"}; !slices.Equal(seen, want) {
		t.Errorf("OnSet saw %v, want %v (puts after load, not deletes)", seen, want)
	}
}

func TestCacheEmptyDirectory(t *testing.T) {
	d := open(t, natstest.Start(t, ""))
	c := startCache(t, d)
	var calls sync.WaitGroup
	calls.Add(1)
	var got proto.AccountRecord
	c.OnSet(func(r proto.AccountRecord) { got = r; calls.Done() })
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	if !c.Ready() || c.Len() != 0 {
		t.Fatalf("ready %v len %d", c.Ready(), c.Len())
	}
	// The very first record is notified.
	put(t, d, "first", "eu")
	natstest.Eventually(t, wait, func() bool { _, ok := c.Lookup("first"); return ok }, "first in the cache")
	calls.Wait()
	if got.AccountID != "first" || got.Region != "eu" {
		t.Errorf("OnSet got %+v", got)
	}
}

func TestCacheIgnoresUnreadableRecord(t *testing.T) {
	d := open(t, natstest.Start(t, ""))
	if _, err := d.KV().Put(t.Context(), "broken", []byte("{")); err != nil {
		t.Fatal(err)
	}
	put(t, d, "fine", "eu")
	c := startCache(t, d)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	if _, ok := c.Lookup("broken"); ok || c.Len() != 1 {
		t.Errorf("unreadable record cached: len %d", c.Len())
	}
	if _, ok := c.Lookup("fine"); !ok {
		t.Error("readable record missing")
	}
}

func TestCacheStop(t *testing.T) {
	d := open(t, natstest.Start(t, ""))
	c := startCache(t, d)
	c.Stop() // before Start: no-op
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Stop(); c.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Stop did not return")
	}
}

func TestCacheStartCanceled(t *testing.T) {
	srv := natstest.Start(t, "")
	d := open(t, srv)
	srv.Stop() // the watch can never load
	c := startCache(t, d)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := c.Start(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start with NATS down = %v, want context.DeadlineExceeded", err)
	}
	if c.Ready() {
		t.Error("Ready without a load")
	}
}

// The directory is durable: it survives the nats-server being stopped and
// started again on the same store.
func TestDirectorySurvivesRestart(t *testing.T) {
	store := t.TempDir()
	srv := natstest.Start(t, store)
	d := open(t, srv)
	put(t, d, "acct-eu", "eu")
	put(t, d, "acct-us", "us")
	put(t, d, "acct-moved", "eu")
	put(t, d, "acct-moved", "uk")
	put(t, d, "acct-deleted", "eu")
	if err := d.Delete(t.Context(), "acct-deleted"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	srv2 := natstest.Start(t, store)
	d2 := open(t, srv2)
	want := []string{"acct-eu=eu", "acct-moved=uk", "acct-us=us"}

	for _, id := range []string{"acct-eu", "acct-us", "acct-moved"} {
		if _, err := d2.Get(t.Context(), id); err != nil {
			t.Errorf("after restart Get(%s) = %v", id, err)
		}
	}
	if r, _ := d2.Get(t.Context(), "acct-moved"); r.Region != "uk" {
		t.Errorf("acct-moved region = %q, want the latest (uk)", r.Region)
	}
	if _, err := d2.Get(t.Context(), "acct-deleted"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after restart Get(acct-deleted) = %v, want ErrNotFound", err)
	}
	recs, err := d2.List(t.Context())
	if err != nil || !slices.Equal(accounts(recs), want) {
		t.Errorf("after restart List = %v, %v; want %v", accounts(recs), err, want)
	}

	c := startCache(t, d2)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	if c.Len() != 3 {
		t.Errorf("cache after restart holds %d, want 3", c.Len())
	}
	for _, w := range want {
		id, region, _ := strings.Cut(w, "=")
		if r, ok := c.Lookup(id); !ok || r.Region != region {
			t.Errorf("cache Lookup(%s) = %+v, %v", id, r, ok)
		}
	}
}
