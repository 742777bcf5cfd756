package directory_test

import (
	"context"
	"fmt"
	"testing"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/proto"
)

// BenchmarkLookup is the router's per-event directory lookup, with 10,000
// accounts in the cache.
func BenchmarkLookup(b *testing.B) {
	ns := natstest.Start(b, "")
	ctx := context.Background()
	dir, err := directory.Open(ctx, ns.JS)
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	for i := range n {
		if _, err := dir.Put(ctx, proto.AccountRecord{AccountID: fmt.Sprintf("acct%05d", i), Region: "eu"}); err != nil {
			b.Fatal(err)
		}
	}
	c := directory.NewCache(dir, zap.NewNop())
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("acct%05d", (i*7919)%n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, ok := c.Lookup(keys[i&1023]); !ok {
			b.Fatal("miss")
		}
		i++
	}
}
