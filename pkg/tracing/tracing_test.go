package tracing

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/geomux/geomux/proto"
)

func TestNATSHeadersKeepW3CNamesOut(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	h := nats.Header{}
	ToNATS(trace.ContextWithSpanContext(context.Background(), sc), h)
	// nats-server traces a message that carries "traceparent" itself.
	if h.Get("traceparent") != "" || h.Get("Traceparent") != "" {
		t.Errorf("a W3C header name in the NATS headers: %v", h)
	}
	if got := h.Get(proto.HeaderTraceparent); got != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Errorf("%s = %q", proto.HeaderTraceparent, got)
	}
	back := trace.SpanContextFromContext(FromNATS(context.Background(), h))
	if back.TraceID() != tid || back.SpanID() != sid || !back.IsRemote() {
		t.Errorf("read back %v, want trace %s span %s", back, tid, sid)
	}
	if got := trace.SpanContextFromContext(FromNATS(context.Background(), nil)); got.IsValid() {
		t.Errorf("no headers gave %v", got)
	}
}

func TestOffWithoutAnExporter(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true},
	} {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"} {
			t.Setenv(k, tc.env[k])
		}
		if got := Enabled(); got != tc.want {
			t.Errorf("%v: enabled %v, want %v", tc.env, got, tc.want)
		}
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	p, err := FromEnv(context.Background(), "geomux")
	if err != nil {
		t.Fatal(err)
	}
	if _, span := p.Tracer("t").Start(context.Background(), "x"); span.IsRecording() {
		t.Error("a recording span without an exporter")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}
