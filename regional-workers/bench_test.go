package workers

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
)

// BenchmarkEnvelope builds the JSON a regional backend receives.
func BenchmarkEnvelope(b *testing.B) {
	body := zoomtest.Event("bot_notification")
	at := time.Now()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := json.Marshal(proto.BackendRequest{
			ID: "2sfPwpRqn1E5lgku6cxlyg", Region: "eu", AccountID: "gVcjZnWWRLWvv_GtyGuaxg",
			Event: "bot_notification", ReceivedAt: at, Payload: body,
		}); err != nil {
			b.Fatal(err)
		}
	}
}
