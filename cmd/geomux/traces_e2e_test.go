package main

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/geomux/geomux/pkg/natsx/natstest"
)

// otlpReceiver is an OTLP/HTTP trace receiver, as a collector would be.
type otlpReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	spans    []*tracepb.Span
	resource []*commonpb.KeyValue
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	o := &otlpReceiver{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &req)
		}
		if r.URL.Path != "/v1/traces" || err != nil {
			http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
			return
		}
		o.mu.Lock()
		for _, rs := range req.ResourceSpans {
			o.resource = append(o.resource, rs.GetResource().GetAttributes()...)
			for _, ss := range rs.ScopeSpans {
				o.spans = append(o.spans, ss.Spans...)
			}
		}
		o.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

// named is the first span of that name, or nil.
func (o *otlpReceiver) named(name string) *tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.spans {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (o *otlpReceiver) all() []*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*tracepb.Span(nil), o.spans...)
}

// The Traceparent zoomtest.NewRequest (and so p.send) sends, as Zoom does.
const (
	zoomTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	zoomSpanID  = "00f067aa0ba902b7"
)

// TestE2ETraceFollowsAnEvent sends one event with Zoom's traceparent to a
// pipeline exporting to an OTLP receiver: every span of the event is in
// Zoom's trace, each with the right parent, the backend receives the same
// trace, and no span holds any of the message's content.
func TestE2ETraceFollowsAnEvent(t *testing.T) {
	otlp := startOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_SERVICE_NAME", "geomux-e2e")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	p := newPipeline(t, t.TempDir())
	p.setRegion("acct-traced", "eu")
	const canary = "canary-text-7f3a9 a customer's words"
	p.send("acct-traced", canary)
	p.waitDelivered(1)
	zoomHost := strings.TrimPrefix(p.zoom.srv.URL, "http://")
	backendHost := strings.TrimPrefix(p.backends["eu"].srv.URL, "http://")
	natstest.Eventually(t, 10*time.Second, func() bool {
		return otlp.named("attempt") != nil && otlp.named("POST "+zoomHost) != nil
	}, "the attempt's spans at the receiver")

	id := func(b []byte) string { return hex.EncodeToString(b) }
	parentOf := map[string]string{ // span → its parent's name
		"zoom webhook": "", "verify": "zoom webhook", "store": "zoom webhook",
		"route": "store", "lookup": "route", "publish": "route",
		"attempt": "publish", "backend call": "attempt", "POST " + backendHost: "backend call", "POST " + zoomHost: "attempt",
	}
	for name, parent := range parentOf {
		s := otlp.named(name)
		if s == nil {
			t.Errorf("no %q span", name)
			continue
		}
		if id(s.TraceId) != zoomTraceID {
			t.Errorf("%q is in trace %s, not Zoom's %s", name, id(s.TraceId), zoomTraceID)
		}
		want := zoomSpanID
		if parent != "" {
			if ps := otlp.named(parent); ps != nil {
				want = id(ps.SpanId)
			}
		}
		if got := id(s.ParentSpanId); got != want {
			t.Errorf("%q's parent is %s, want %q's %s", name, got, parent, want)
		}
	}
	// The backend continues the same trace, from the backend call.
	b := p.backends["eu"]
	b.mu.Lock()
	tps := append([]string(nil), b.traceparents...)
	b.mu.Unlock()
	if len(tps) != 1 || !strings.HasPrefix(tps[0], "00-"+zoomTraceID+"-") {
		t.Errorf("the backend got traceparent %q, want one in trace %s", tps, zoomTraceID)
	}

	// No content anywhere: ids only.
	for _, s := range otlp.all() {
		kvs := append([]*commonpb.KeyValue(nil), s.Attributes...)
		for _, e := range s.Events {
			kvs = append(kvs, e.Attributes...)
		}
		for _, kv := range kvs {
			if strings.Contains(kv.String(), "canary-text-7f3a9") {
				t.Errorf("span %q holds the message's content in %s", s.Name, kv.Key)
			}
		}
		if strings.Contains(s.Status.GetMessage(), "canary-text-7f3a9") {
			t.Errorf("span %q's status holds the message's content", s.Name)
		}
	}
	if a := otlp.named("attempt"); a != nil && !hasAttr(a.Attributes, "geomux.region", "eu") {
		t.Errorf("the attempt span lacks geomux.region=eu: %v", a.Attributes)
	}
	otlp.mu.Lock()
	service := hasAttr(otlp.resource, "service.name", "geomux-e2e")
	otlp.mu.Unlock()
	if !service {
		t.Error("the spans' resource does not carry OTEL_SERVICE_NAME")
	}
}

func hasAttr(kvs []*commonpb.KeyValue, key, value string) bool {
	for _, kv := range kvs {
		if kv.Key == key && kv.GetValue().GetStringValue() == value {
			return true
		}
	}
	return false
}
