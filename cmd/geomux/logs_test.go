package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// Logs carry ids, never content: the whole pipeline runs at debug level
// through success, parking, retries, a duplicate and dead letters, and no log
// line may hold what a user wrote, a name, or an email address.
func TestE2ELogsCarryNoContent(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	p := newPipeline(t, t.TempDir(), fx.Decorate(func(*zap.Logger) *zap.Logger { return zap.New(core) }))

	secrets := []string{"Xylophone-7731", "jane.doe@example.com", "Janet Secretname"}
	content := func(i int) []byte {
		body := zoomtest.BotNotification("acct-log", fmt.Sprintf("%s says %s to %s #%d", secrets[2], secrets[0], secrets[1], i), int64(i))
		var ev map[string]any
		_ = json.Unmarshal(body, &ev)
		ev["payload"].(map[string]any)["userName"] = secrets[2]
		ev["payload"].(map[string]any)["channelName"] = secrets[1]
		out, _ := json.Marshal(ev)
		return out
	}

	// Parked first, then routed.
	p.post(content(1))
	natstest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(p.metrics(), "geomux_router_parked_total 1") }, "parked")
	p.setRegion("acct-log", "eu")
	p.waitDelivered(1)
	// A duplicate.
	p.post(content(1))
	// A Zoom 429 and a retry.
	p.zoom.refuse = func(n int, w http.ResponseWriter) bool {
		if n != 2 {
			return false
		}
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"code":429,"message":"rate limited"}`)
		return true
	}
	p.post(content(2))
	p.waitDelivered(2)
	// A backend that fails for good: a dead letter.
	p.backends["eu"].setFail(func(int) int { return http.StatusBadRequest })
	p.post(content(3))
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.metrics(), `geomux_worker_failed_total{reason="permanent",region="eu"} 1`)
	}, "dead letter")
	// A webhook with a bad signature carrying content.
	resp, err := http.DefaultClient.Do(zoomtest.NewRequest(p.webhook, "wrong-secret", content(4), time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	p.stop()

	if logs.Len() < 10 {
		t.Fatalf("only %d log entries: the logger was not wired in", logs.Len())
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += fmt.Sprintf(" %s=%v", k, v)
		}
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("log line carries content %q: %s", s, line)
			}
		}
	}
}
