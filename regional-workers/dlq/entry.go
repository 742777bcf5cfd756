// Package dlq is a region's dead-letter queue: the events its workers gave up
// on, kept in the region (stream proto.RegionDeadLetterStream, limits
// retention, browsable), with the tools operators use to inspect them, put
// them back, or purge them. Every replay and purge is recorded in the region.
package dlq

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/proto"
)

// Entry is one dead letter.
type Entry struct {
	// ID is the entry's sequence in the region's dead-letter stream: what
	// operators name it by.
	ID        uint64 `json:"id"`
	EventID   string `json:"event_id"`
	AccountID string `json:"account_id"`
	Region    string `json:"region"`
	EventType string `json:"event_type"`
	// Reason is proto.DeadReasonPermanent or proto.DeadReasonMaxAttempts.
	Reason string `json:"reason"`
	// Error is the last error, e.g. "backend answered 400".
	Error string `json:"error"`
	// Status is the HTTP status of the last failed call, or 0.
	Status   int `json:"status,omitempty"`
	Attempts int `json:"attempts"`
	// FirstAttempt is when the event entered the region's stream; its first
	// attempt follows at once.
	FirstAttempt time.Time `json:"first_attempt"`
	LastAttempt  time.Time `json:"last_attempt"`
	// DeadAt is when the entry was stored.
	DeadAt time.Time `json:"dead_at"`
	// ReceivedAt is when ingress received the event.
	ReceivedAt time.Time `json:"received_at"`
	// Replays is how many times the event was put back before.
	Replays int `json:"replays,omitempty"`
	// SkippedOver says that the event's conversation went on without it:
	// the events after it in its conversation were handled.
	SkippedOver bool `json:"skipped_over,omitempty"`
	// Payload is the Zoom event body as received; empty in listings.
	Payload []byte `json:"payload,omitempty"`

	header nats.Header
}

// Failure describes why an event is given up.
type Failure struct {
	Reason string
	// Error is the last error, Status its HTTP status if it was an answer.
	Error        string
	Status       int
	Attempts     int
	FirstAttempt time.Time
	LastAttempt  time.Time
	// SkippedOver: its conversation goes on without the event.
	SkippedOver bool
}

// Describe returns the error text and HTTP status of a failure's cause.
func Describe(cause error) (msg string, status int) {
	if cause == nil {
		return "unknown error", 0
	}
	var se *retry.StatusError
	if errors.As(cause, &se) {
		status = se.StatusCode
	}
	// The reason already says "permanent".
	return strings.TrimPrefix(cause.Error(), retry.ErrPermanent.Error()+": "), status
}

// maxErrorLen bounds the error kept with a dead letter.
const maxErrorLen = 300

// NewMsg builds the dead-letter message of an event: its body and headers as
// the worker received them, plus why it failed. The Nats-Msg-Id is derived
// from the event id and its sequence in the events stream, so storing the
// same dead letter twice (a worker dying between storing it and terminating
// the event) keeps one entry.
func NewMsg(region string, data []byte, h nats.Header, streamSeq uint64, f Failure) *nats.Msg {
	out := nats.NewMsg(proto.RegionDeadLetterSubject(region))
	out.Data = data
	for k, v := range h {
		if directGetHeader(k) {
			continue
		}
		switch k {
		case jetstream.MsgIDHeader, proto.HeaderDeadReason, proto.HeaderDeadError, proto.HeaderDeadStatus,
			proto.HeaderAttempts, proto.HeaderFirstAttempt, proto.HeaderLastAttempt, proto.HeaderSkippedOver:
			continue
		}
		out.Header[k] = v
	}
	if f.SkippedOver {
		out.Header.Set(proto.HeaderSkippedOver, "true")
	}
	out.Header.Set(jetstream.MsgIDHeader, h.Get(proto.HeaderEventID)+"/"+strconv.FormatUint(streamSeq, 10))
	out.Header.Set(proto.HeaderRegion, region)
	out.Header.Set(proto.HeaderDeadReason, f.Reason)
	msg := f.Error
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen]
	}
	out.Header.Set(proto.HeaderDeadError, msg)
	if f.Status != 0 {
		out.Header.Set(proto.HeaderDeadStatus, strconv.Itoa(f.Status))
	}
	out.Header.Set(proto.HeaderAttempts, strconv.Itoa(f.Attempts))
	out.Header.Set(proto.HeaderFirstAttempt, f.FirstAttempt.UTC().Format(proto.TimeFormat))
	out.Header.Set(proto.HeaderLastAttempt, f.LastAttempt.UTC().Format(proto.TimeFormat))
	return out
}

// entryFrom reads an entry from a stored dead-letter message.
func entryFrom(seq uint64, stored time.Time, h nats.Header, data []byte) Entry {
	e := Entry{
		ID: seq, DeadAt: stored, header: h, Payload: data,
		EventID:   h.Get(proto.HeaderEventID),
		AccountID: h.Get(proto.HeaderAccountID),
		Region:    h.Get(proto.HeaderRegion),
		EventType: h.Get(proto.HeaderEventType),
		Reason:    h.Get(proto.HeaderDeadReason),
		Error:     h.Get(proto.HeaderDeadError),
	}
	e.Status, _ = strconv.Atoi(h.Get(proto.HeaderDeadStatus))
	e.Attempts, _ = strconv.Atoi(h.Get(proto.HeaderAttempts))
	e.Replays, _ = strconv.Atoi(h.Get(headerReplays))
	e.SkippedOver = h.Get(proto.HeaderSkippedOver) == "true"
	e.FirstAttempt, _ = time.Parse(proto.TimeFormat, h.Get(proto.HeaderFirstAttempt))
	e.LastAttempt, _ = time.Parse(proto.TimeFormat, h.Get(proto.HeaderLastAttempt))
	e.ReceivedAt, _ = time.Parse(proto.TimeFormat, h.Get(proto.HeaderReceivedAt))
	return e
}

// headerReplays counts how many times an event was put back from the
// dead-letter queue; it travels with the event and its next dead letter.
const headerReplays = "Geomux-Replays"

// directGetHeader reports whether k is a header JetStream adds to a message
// read back with a direct get (Nats-Stream, Nats-Sequence, Nats-Subject,
// Nats-Time-Stamp, ...): it describes that copy, not the event, and a stored
// event carrying one would mislead every later direct get of it.
func directGetHeader(k string) bool {
	switch k {
	case "Nats-Stream", "Nats-Sequence", "Nats-Subject", "Nats-Time-Stamp", "Nats-Last-Sequence", "Nats-Num-Pending", "Nats-Ttl", "Nats-Marker-Reason":
		return true
	}
	return false
}
