package tracing

import (
	"context"

	"github.com/nats-io/nats.go"

	"github.com/geomux/geomux/proto"
)

// natsCarrier carries a trace context in NATS headers under geomux's own
// names (proto.HeaderTraceparent, proto.HeaderTracestate): nats-server
// takes a "traceparent" header as a request to trace the message itself.
type natsCarrier nats.Header

var natsNames = map[string]string{"traceparent": proto.HeaderTraceparent, "tracestate": proto.HeaderTracestate}

func (c natsCarrier) Get(key string) string {
	if n, ok := natsNames[key]; ok {
		return nats.Header(c).Get(n)
	}
	return ""
}

func (c natsCarrier) Set(key, value string) {
	if n, ok := natsNames[key]; ok {
		nats.Header(c).Set(n, value)
	}
}

func (c natsCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

// FromNATS is ctx with the trace context an event's headers carry.
func FromNATS(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return Propagator.Extract(ctx, natsCarrier(h))
}

// ToNATS writes ctx's trace context into an event's headers.
func ToNATS(ctx context.Context, h nats.Header) {
	Propagator.Inject(ctx, natsCarrier(h))
}
