// Package logfields holds the typed zap fields geomux logs with, so that a
// key means the same thing everywhere and no customer content slips in.
package logfields

import (
	"time"

	"go.uber.org/zap"
)

// EventID is the geomux event id.
func EventID(id string) zap.Field { return zap.String("event_id", id) }

// EventType is Zoom's event name.
func EventType(t string) zap.Field { return zap.String("event_type", t) }

// AccountID is the Zoom account id.
func AccountID(id string) zap.Field { return zap.String("account_id", id) }

// Region is a geomux region name.
func Region(r string) zap.Field { return zap.String("region", r) }

// App is the Zoom app (its name in the config) an event came through.
func App(name string) zap.Field { return zap.String("app", name) }

// Attempt is the delivery attempt of an event, from 1.
func Attempt(n int) zap.Field { return zap.Int("attempt", n) }

// StatusCode is an HTTP status code.
func StatusCode(c int) zap.Field { return zap.Int("status_code", c) }

// Reason says why something was rejected or given up.
func Reason(r string) zap.Field { return zap.String("reason", r) }

// Delay is how long until the next attempt.
func Delay(d time.Duration) zap.Field { return zap.Duration("delay", d) }

// Addr is a network address.
func Addr(a string) zap.Field { return zap.String("addr", a) }

// Stream is a JetStream stream name.
func Stream(s string) zap.Field { return zap.String("stream", s) }

// Subject is a NATS subject.
func Subject(s string) zap.Field { return zap.String("subject", s) }

// Count is a number of things.
func Count(n int) zap.Field { return zap.Int("count", n) }

// MessageID is the id Zoom gave a sent chat message.
func MessageID(id string) zap.Field { return zap.String("message_id", id) }

// Target is the geomux run target (all, ingress, router, worker).
func Target(t string) zap.Field { return zap.String("target", t) }

// Sequence is a JetStream stream sequence.
func Sequence(s uint64) zap.Field { return zap.Uint64("stream_seq", s) }
