package proto

// NATS message headers set by ingress and carried with every event through the
// router to the regional workers. They hold identifiers and times, never
// customer content, so they may be logged.
const (
	// HeaderEventID is the geomux event id (see EventID). It is also the
	// message's Nats-Msg-Id, which makes JetStream drop Zoom's re-deliveries.
	HeaderEventID = "Geomux-Event-Id"
	// HeaderEventType is Zoom's event name, e.g. "bot_notification".
	HeaderEventType = "Geomux-Event-Type"
	// HeaderAccountID is the Zoom account the event belongs to.
	HeaderAccountID = "Geomux-Account-Id"
	// HeaderReceivedAt is when ingress received the event (RFC 3339, UTC, ns).
	HeaderReceivedAt = "Geomux-Received-At"
	// HeaderRegion is set by the router: the region the event was routed to.
	HeaderRegion = "Geomux-Region"
	// HeaderApp is the Zoom app (its name in the config) the event came
	// through: its webhook path, its signature, its bot replies.
	HeaderApp = "Geomux-App"
	// HeaderConversation is set by the ingress (by the router for an event
	// stored without it): the opaque key of the
	// event's conversation (ConversationKey), which orders the region's
	// events. It is the last token of the event's region subject.
	HeaderConversation = "Geomux-Conversation"
	// HeaderChannel is set by the ingress on an event of a channel: the
	// channel's opaque key (ConversationKey of its conversation). The router
	// learns which account a channel belongs to from the events that name
	// both, and routes by it an event that names no account (an external
	// user's app mention).
	HeaderChannel = "Geomux-Channel"
	// HeaderParkReason says why the router parked an event: "no_region",
	// "conflict" (its app is pinned to a region the directory contradicts),
	// or "no_account" (nothing names its account yet).
	HeaderParkReason = "Geomux-Park-Reason"
	// HeaderTraceparent carries Zoom's W3C traceparent header unchanged,
	// under a name of geomux's own: nats-server reads a "traceparent" header
	// on every message it routes, as a request to trace it (NATS message
	// tracing), which costs each hop time and could send traces where an
	// account configured them.
	HeaderTraceparent = "Geomux-Traceparent"
	// HeaderTracestate carries the W3C tracestate beside HeaderTraceparent.
	HeaderTracestate = "Geomux-Tracestate"
	// HeaderZoomTrackingID carries Zoom's x-zm-trackingid, for Zoom support.
	HeaderZoomTrackingID = "Geomux-Zoom-Trackingid"
	// HeaderZoomRequestID carries Zoom's x-zm-request-id, for forensics.
	HeaderZoomRequestID = "Geomux-Zoom-Request-Id"
)

// Headers of a dead-letter entry, beside the event's own headers.
const (
	// HeaderDeadReason is why the event was given up: "permanent" (a 4xx other
	// than 408/429, or an unusable answer) or "max_attempts".
	HeaderDeadReason = "Geomux-Dead-Reason"
	// HeaderDeadError is the last error: status code and a short message.
	HeaderDeadError = "Geomux-Dead-Error"
	// HeaderDeadStatus is the HTTP status of the last failed call, if any.
	HeaderDeadStatus = "Geomux-Dead-Status"
	// HeaderAttempts is how many times the event was tried.
	HeaderAttempts = "Geomux-Attempts"
	// HeaderFirstAttempt and HeaderLastAttempt bound the attempts (RFC 3339).
	HeaderFirstAttempt = "Geomux-First-Attempt"
	HeaderLastAttempt  = "Geomux-Last-Attempt"
)

// HeaderSkippedOver on a dead letter says that its conversation went on
// without it: the events after it in its conversation were handled.
const HeaderSkippedOver = "Geomux-Skipped-Over"

// HeaderErasure marks a copy of an uninstall (app_deauthorized) that the
// router puts in every region other than the account's (or in every region,
// when the account has none), so that each erases what it holds of the
// account: tokens, dead letters, reply records, waiting events. Its value
// is the region the uninstall itself went to ("" when none). The copy's body
// holds the account id and the uninstall's time only.
const HeaderErasure = "Geomux-Erasure"

// HeaderReplay marks an event an operator put back from the dead-letter
// queue; its value is the dead-letter entry's id.
const HeaderReplay = "Geomux-Replay"

// HTTP headers geomux sends to a regional backend.
const (
	HTTPHeaderEventID = "X-Geomux-Event-Id"
	HTTPHeaderRegion  = "X-Geomux-Region"
)

// Dead-letter reasons.
const (
	DeadReasonPermanent   = "permanent"
	DeadReasonMaxAttempts = "max_attempts"
)
