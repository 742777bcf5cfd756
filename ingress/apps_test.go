package ingress_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/geomux/geomux/ingress"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
)

// Each app has its Bot Endpoint URL, verified with its own secrets only;
// the event is stored with the app's name.
func TestEachAppAtItsOwnPathWithItsOwnSecret(t *testing.T) {
	ns := natstest.Start(t, "")
	stream, err := natsx.EnsureStream(context.Background(), ns.JS, topology.TransitConfig(topology.OptionsFrom(config.Default()), 0))
	if err != nil {
		t.Fatal(err)
	}
	m := ingress.NewMetrics(prometheus.NewRegistry())
	h := ingress.NewHandler(ns.JS, ingress.Options{
		Apps: []ingress.App{
			{Name: "main", Verifier: zoom.NewVerifier([]string{"main-secret"}, 5*time.Minute)},
			{Name: "us-bot", Verifier: zoom.NewVerifier([]string{"us-secret", "us-old-secret"}, 5*time.Minute)},
			{Name: "eu-bot", Verifier: zoom.NewVerifier([]string{"eu-secret"}, 5*time.Minute)},
		},
		PublishTimeout: 2 * time.Second,
	}, m, health.NewRegistry(), zap.NewNop())
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	base := srv.URL + ingress.WebhookPath

	n := int64(0)
	post := func(path, secret string) (int, string) {
		n++
		return do(t, zoomtest.NewRequest(base+path, secret, zoomtest.BotNotification("acct", "hi", n), time.Now()))
	}
	for _, c := range []struct {
		path, secret string
		status       int
		app          string
	}{
		{"", "main-secret", 200, "main"},
		{"/main", "main-secret", 200, "main"},
		{"/us-bot", "us-secret", 200, "us-bot"},
		{"/us-bot", "us-old-secret", 200, "us-bot"},
		{"/eu-bot", "eu-secret", 200, "eu-bot"},
		{"/us-bot", "eu-secret", 401, ""},
		{"/us-bot", "main-secret", 401, ""},
		{"", "us-secret", 401, ""},
		{"/eu-bot", "us-secret", 401, ""},
	} {
		before, _ := stream.Info(context.Background())
		status, body := post(c.path, c.secret)
		if status != c.status {
			t.Errorf("POST %s signed with %s: %d %s, want %d", c.path, c.secret, status, body, c.status)
			continue
		}
		if status != 200 {
			continue
		}
		msg, err := stream.GetMsg(context.Background(), before.State.LastSeq+1)
		if err != nil {
			t.Fatal(err)
		}
		if got := msg.Header.Get(proto.HeaderApp); got != c.app {
			t.Errorf("POST %s stored with app %q, want %q", c.path, got, c.app)
		}
	}
	status, body := post("/nope", "main-secret")
	if status != http.StatusNotFound || !strings.Contains(body, "no Zoom app") {
		t.Errorf("an unknown app: %d %s", status, body)
	}
	for app, want := range map[string]float64{"main": 2, "us-bot": 2, "eu-bot": 1} {
		if got := testutil.ToFloat64(m.Published.WithLabelValues(app)); got != want {
			t.Errorf("published{app=%s} = %v, want %v", app, got, want)
		}
	}
	if got := testutil.ToFloat64(m.Rejected.WithLabelValues("us-bot", "bad_signature")); got != 2 {
		t.Errorf("rejected{us-bot,bad_signature} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.Rejected.WithLabelValues("", "unknown_app")); got != 1 {
		t.Errorf("rejected{unknown_app} = %v, want 1", got)
	}
}
