// Package ingress is geomux's Bot Endpoint URL: it verifies each Zoom webhook,
// answers endpoint URL validation itself, and persists every other event to
// JetStream before it answers 200. If the event cannot be persisted in time it
// answers 503, which Zoom retries; it never answers 200 for an event that is
// not durably stored.
package ingress

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/geomux/geomux/pkg/governor"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/tracing"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
)

// MaxBody is the largest webhook body accepted (413 above). Zoom documents no
// limit; interactive events echo a whole card, so leave room.
const MaxBody = 1 << 20

// WebhookPath is where Zoom posts events (proto.WebhookPath).
const WebhookPath = proto.WebhookPath

// Options configure a Handler.
type Options struct {
	// Apps are the Zoom apps: each app's events are posted to
	// WebhookPath/<name> and verified with its secrets only; the first's
	// also to WebhookPath.
	Apps []App
	// PublishTimeout bounds the wait for JetStream's acknowledgement.
	PublishTimeout time.Duration
	// TransitPartitions is how many transit streams there are (1 when 0):
	// an event goes to its account's, or to the next that answers.
	TransitPartitions int
	// Install, if set, serves the install flow beside the webhook.
	Install interface{ Mount(*http.ServeMux) }
	// Governor, if set, is told how long each answer took: it slows the
	// processing of the same process when the answers slow down.
	Governor *governor.Governor
	// Tracer makes the spans of each webhook (none when nil).
	Tracer trace.Tracer
}

// Handler serves the webhook endpoints and the health endpoints.
type Handler struct {
	js jetstream.JetStream
	nc *nats.Conn
	// transit are the transit streams' subjects, by partition.
	transit []string
	opts    Options
	log     *zap.Logger
	metrics *Metrics
	mux     *http.ServeMux
	now     func() time.Time
	apps    map[string]*app

	rejectLog *zap.Logger
	clock     clockWatch
	store     storeWatch
}

// app is one Zoom app the ingress serves, with its metrics at hand.
type app struct {
	name            string
	verifier        *zoom.Verifier
	received        prometheus.Counter
	rejected        *prometheus.CounterVec
	urlValidations  prometheus.Counter
	published       prometheus.Counter
	duplicates      prometheus.Counter
	publishFailures prometheus.Counter
}

func newApp(name string, v *zoom.Verifier, m *Metrics) *app {
	return &app{name: name, verifier: v,
		received: m.Received.WithLabelValues(name), rejected: m.Rejected.MustCurryWith(prometheus.Labels{"app": name}),
		urlValidations: m.URLValidations.WithLabelValues(name), published: m.Published.WithLabelValues(name),
		duplicates: m.Duplicates.WithLabelValues(name), publishFailures: m.PublishFailures.WithLabelValues(name)}
}

// App is a Zoom app as the ingress knows it: its name and its webhook
// secrets.
type App struct {
	Name     string
	Verifier *zoom.Verifier
}

// NewHandler returns the ingress HTTP handler. It publishes with js, over nc.
func NewHandler(js jetstream.JetStream, opts Options, m *Metrics, h *health.Registry, log *zap.Logger) *Handler {
	if opts.Tracer == nil {
		opts.Tracer = noop.NewTracerProvider().Tracer("")
	}
	s := &Handler{js: js, nc: js.Conn(), opts: opts, log: log, metrics: m, mux: http.NewServeMux(), now: time.Now,
		apps: map[string]*app{},
		// Anyone can post garbage to a public endpoint: log the first few
		// rejections of each kind per second, count them all.
		rejectLog: log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
			return zapcore.NewSamplerWithOptions(c, time.Second, 5, 0)
		})),
	}
	for p := range max(opts.TransitPartitions, 1) {
		s.transit = append(s.transit, proto.TransitSubject(p))
	}
	for i, a := range opts.Apps {
		s.apps[a.Name] = newApp(a.Name, a.Verifier, m)
		if i == 0 {
			first := s.apps[a.Name]
			s.mux.HandleFunc("POST "+WebhookPath, func(w http.ResponseWriter, r *http.Request) { s.webhook(w, r, first) })
		}
	}
	s.mux.HandleFunc("POST "+WebhookPath+"/{app}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := s.apps[r.PathValue("app")]
		if !ok {
			s.metrics.Rejected.WithLabelValues("", "unknown_app").Inc()
			s.rejectLog.Info("Webhook rejected", logfields.Reason("unknown_app"), logfields.StatusCode(http.StatusNotFound))
			httpx.WriteJSON(w, http.StatusNotFound, errorBody{Error: "no Zoom app of this name: use the Bot Endpoint URL of an app in zoom.apps, " + WebhookPath + "/<name>"})
			return
		}
		s.webhook(w, r, a)
	})
	if opts.Install != nil {
		opts.Install.Mount(s.mux)
	}
	h.MountPublic(s.mux)
	h.Register("clock", s.clock.check)
	h.Register("store", func() error { return s.store.check(s.now()) })
	return s
}

func (s *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

func (s *Handler) reject(w http.ResponseWriter, a *app, status int, reason, msg string, fields ...zap.Field) {
	a.rejected.WithLabelValues(reason).Inc()
	s.rejectLog.Info("Webhook rejected", append(fields, logfields.App(a.name), logfields.Reason(reason), logfields.StatusCode(status))...)
	httpx.WriteJSON(w, status, errorBody{Error: msg})
}

func (s *Handler) webhook(w http.ResponseWriter, r *http.Request, a *app) {
	start := s.now()
	a.received.Inc()
	// The event's trace continues Zoom's (its traceparent header).
	ctx, span := s.opts.Tracer.Start(tracing.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header)), "zoom webhook",
		trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() { // attributes only for a span that records: nothing made when traces are off
		span.SetAttributes(tracing.App(a.name))
	}
	defer func() {
		took := s.now().Sub(start)
		s.metrics.RequestSeconds.Observe(took.Seconds())
		s.opts.Governor.Observe(took)
		span.End()
	}()
	r = r.WithContext(ctx)

	if r.ContentLength > MaxBody {
		s.reject(w, a, http.StatusRequestEntityTooLarge, "too_large", "body is larger than 1 MiB")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.reject(w, a, http.StatusRequestEntityTooLarge, "too_large", "body is larger than 1 MiB")
			return
		}
		s.reject(w, a, http.StatusBadRequest, "unreadable", "body could not be read")
		return
	}

	_, verify := s.opts.Tracer.Start(ctx, "verify")
	key, err := a.verifier.Verify(r.Header.Get(zoom.HeaderSignature), r.Header.Get(zoom.HeaderTimestamp), body)
	tracing.End(verify, err)
	switch {
	case err == nil:
		s.clock.fresh()
	case errors.Is(err, zoom.ErrStaleTimestamp):
		s.clock.stale(r.Header.Get(zoom.HeaderTimestamp), s.now())
	}
	if err != nil {
		reason := map[error]string{
			zoom.ErrMissingSignature: "missing_signature",
			zoom.ErrBadTimestamp:     "bad_timestamp",
			zoom.ErrStaleTimestamp:   "stale_timestamp",
			zoom.ErrBadSignature:     "bad_signature",
		}[err]
		s.reject(w, a, http.StatusUnauthorized, reason, err.Error())
		span.SetStatus(codes.Error, reason)
		return
	}

	head, err := zoom.ParseHead(body)
	if err != nil {
		reason := "not_json"
		switch {
		case errors.Is(err, zoom.ErrNoEvent):
			reason = "no_event"
		case errors.Is(err, zoom.ErrDuplicateKey):
			reason = "duplicate_key"
		}
		s.reject(w, a, http.StatusBadRequest, reason, err.Error())
		return
	}

	if head.Event == zoom.EventURLValidation {
		s.validate(w, a, key, head)
		return
	}
	if head.AccountID != "" && !proto.ValidAccountID(head.AccountID) {
		// Such an id could never be given a region: the event is kept as
		// one that names no account (a verified event is never refused).
		s.rejectLog.Warn("Event's account id is not a Zoom account id; stored as naming no account", logfields.EventType(head.Event), logfields.App(a.name))
		head.AccountID = ""
	}
	// An event without an account (an external user's app mention: Zoom
	// leaves payload.account_id empty) is stored all the same; the router
	// finds its account from its channel, or parks it until it can.
	s.persist(w, r, a, body, head, start)
}

// validate answers Zoom's endpoint URL validation with the secret that signed
// the challenge, so that it works during a secret rotation too.
func (s *Handler) validate(w http.ResponseWriter, a *app, key *zoom.Key, head zoom.Head) {
	if head.PlainToken == "" {
		s.reject(w, a, http.StatusBadRequest, "no_plain_token", "endpoint.url_validation has no payload.plainToken")
		return
	}
	a.urlValidations.Inc()
	s.log.Info("Answered endpoint URL validation", logfields.App(a.name))
	httpx.WriteJSON(w, http.StatusOK, map[string]string{
		"plainToken":     head.PlainToken,
		"encryptedToken": key.EncryptToken(head.PlainToken),
	})
}

// persist publishes the event and answers 200 only once JetStream has
// acknowledged it.
func (s *Handler) persist(w http.ResponseWriter, r *http.Request, a *app, body []byte, head zoom.Head, received time.Time) {
	id := proto.EventID(body)
	// The log fields, built only for a line that is written.
	fields := func() []zap.Field {
		return []zap.Field{logfields.EventID(id), logfields.EventType(head.Event), logfields.AccountID(head.AccountID), logfields.App(a.name)}
	}

	// A closed connection does not come back: say so at once rather than
	// after the publish timeout. One reconnecting (its server lost) is
	// waited for, within the publish timeout.
	if s.nc.IsClosed() {
		s.unavailable(w, a, errors.New("NATS connection closed"), fields())
		return
	}
	hd := make(nats.Header, 8)
	msg := &nats.Msg{Data: body, Header: hd}
	hd.Set(jetstream.MsgIDHeader, id)
	hd.Set(proto.HeaderEventID, id)
	hd.Set(proto.HeaderEventType, head.Event)
	if head.AccountID != "" {
		hd.Set(proto.HeaderAccountID, head.AccountID)
	}
	conversation := proto.ConversationKey(head.Conversation)
	if strings.HasPrefix(head.Conversation, zoom.ChannelConversation) {
		hd.Set(proto.HeaderChannel, conversation)
	}
	hd.Set(proto.HeaderReceivedAt, received.UTC().Format(proto.TimeFormat))
	hd.Set(proto.HeaderApp, a.name)
	hd.Set(proto.HeaderConversation, conversation)
	ctx, store := s.opts.Tracer.Start(r.Context(), "store", trace.WithSpanKind(trace.SpanKindProducer))
	defer store.End()
	if store.IsRecording() {
		store.SetAttributes(tracing.EventID(id), tracing.EventType(head.Event), tracing.AccountID(head.AccountID))
	}
	// The next hops' parent: this span, or Zoom's when traces are off.
	tracing.ToNATS(ctx, hd)
	copyHeader(hd, proto.HeaderZoomTrackingID, r.Header.Get(zoom.HeaderTrackingID))
	copyHeader(hd, proto.HeaderZoomRequestID, r.Header.Get(zoom.HeaderRequestID))

	// The publish is not tied to the request: if Zoom hangs up, the event may
	// still be stored, and its retry is then recognised as a duplicate.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.PublishTimeout)
	defer cancel()
	pubStart := s.now()
	ack, err := s.publish(ctx, msg, s.transitOf(head.AccountID, conversation, id))
	s.metrics.PublishSeconds.Observe(s.now().Sub(pubStart).Seconds())
	tracing.End(store, err)
	if err != nil {
		s.store.failed(err, s.now())
		s.unavailable(w, a, err, fields())
		return
	}
	s.store.stored()
	if ack.Duplicate {
		a.duplicates.Inc()
		s.log.Info("Duplicate event acknowledged", fields()...)
	} else {
		a.published.Inc()
		if ce := s.log.Check(zap.DebugLevel, "Event persisted"); ce != nil {
			ce.Write(append(fields(), logfields.Sequence(ack.Sequence))...)
		}
	}
	w.WriteHeader(http.StatusOK)
}

// publishAttempts is how many tries the publish timeout is shared among:
// a try the stream does not answer (its leader lost, an election under
// way) leaves time for others.
const publishAttempts = 4

// publishPause is the pause after every transit stream failed at once (no
// responders: none has a leader yet).
const publishPause = 50 * time.Millisecond

// publish stores msg within ctx's deadline in transit stream home or, when
// that one has no leader, in the next: each try waits for JetStream's
// answer for a share of the publish timeout. A stream whose leader is lost
// takes seconds to elect another, longer than Zoom waits, while the
// others, led by other servers, answer at once.
//
// Only a stream that nobody answers for (no responders: its leader gone)
// is left for the next: a try that timed out may still be stored, so it is
// made again in the same stream, where the Nats-Msg-Id makes the late copy
// a duplicate. Moving on after a timeout stored copies in other streams
// under load, which slowed the store further (4,284 answers 503 at
// 4,000 events/s on two cores).
func (s *Handler) publish(ctx context.Context, msg *nats.Msg, home int) (*jetstream.PubAck, error) {
	try := max(s.opts.PublishTimeout/publishAttempts, 100*time.Millisecond)
	n := len(s.transit)
	for p, leaderless := home, 0; ; {
		msg.Subject = s.transit[p]
		tctx, cancel := context.WithTimeout(ctx, try)
		ack, err := s.publishOnce(tctx, msg)
		cancel()
		// A stream that answered with an error (full, say) answers the
		// same to another try: only a missing answer is tried again.
		var answered *jetstream.APIError
		if err == nil || ctx.Err() != nil || !retry.Retryable(err) || errors.As(err, &answered) {
			return ack, err
		}
		if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) {
			continue // timed out: the same stream again
		}
		p = (p + 1) % n
		if leaderless++; leaderless%n != 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(publishPause):
		}
	}
}

// publishOnce is one try. While the connection is away (its server lost,
// reconnecting to another), it waits for it rather than leave the event in
// the reconnect buffer, to be stored long after it was answered 503.
func (s *Handler) publishOnce(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	if !s.nc.IsConnected() {
		t := time.NewTicker(reconnectPoll)
		defer t.Stop()
		for !s.nc.IsConnected() {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("NATS is not connected: %w", nats.ErrTimeout)
			case <-t.C:
			}
		}
	}
	return s.js.PublishMsg(ctx, msg, jetstream.WithRetryAttempts(0))
}

// reconnectPoll is how often a publish waiting for the connection looks.
const reconnectPoll = 10 * time.Millisecond

// transitOf is the transit stream of an event: its account's (or, for an
// event that names none, its conversation's), so that an account's events
// keep their order through the router.
func (s *Handler) transitOf(account, conversation, id string) int {
	return proto.TransitOf(cmp.Or(account, conversation, id), len(s.transit))
}

func (s *Handler) unavailable(w http.ResponseWriter, a *app, err error, fields []zap.Field) {
	a.publishFailures.Inc()
	// Sampled: while the store is full or away, every request comes here.
	s.rejectLog.Warn("Event not persisted; answered 503 so that Zoom retries", append(fields, zap.Error(err))...)
	w.Header().Set("Retry-After", strconv.Itoa(300))
	httpx.WriteJSON(w, http.StatusServiceUnavailable, errorBody{Error: "event could not be stored; retry later"})
}

func copyHeader(h nats.Header, key, v string) {
	if v != "" {
		h[key] = []string{v}
	}
}
