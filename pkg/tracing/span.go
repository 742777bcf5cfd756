package tracing

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// The attributes of geomux's spans: ids only, as in the logs.
func App(v string) attribute.KeyValue       { return attribute.String("geomux.app", v) }
func EventID(v string) attribute.KeyValue   { return attribute.String("geomux.event_id", v) }
func EventType(v string) attribute.KeyValue { return attribute.String("geomux.event_type", v) }
func AccountID(v string) attribute.KeyValue { return attribute.String("geomux.account_id", v) }
func Region(v string) attribute.KeyValue    { return attribute.String("geomux.region", v) }
func Outcome(v string) attribute.KeyValue   { return attribute.String("geomux.outcome", v) }

// End ends span, marking it failed with err's message if err is not nil.
// The messages of geomux's errors name ids, never content.
func End(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
