package zoom_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

func BenchmarkVerify(b *testing.B) {
	body := zoomtest.Event("bot_notification")
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sig := zoom.Sign("current", ts, body)
	// The signing secret is the second one: the worst case during a rotation.
	v := zoom.NewVerifier([]string{"previous", "current"}, 5*time.Minute)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := v.Verify(sig, ts, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseHead(b *testing.B) {
	body := zoomtest.Event("bot_notification")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if h, err := zoom.ParseHead(body); err != nil || h.AccountID == "" {
			b.Fatal(h, err)
		}
	}
}
