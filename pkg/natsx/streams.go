package natsx

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/proto"
)

// StreamOptions are the settings geomux's streams are created with.
type StreamOptions struct {
	// DedupWindow is how long a region remembers an event it finished, and
	// the parked and dead-letter streams a Nats-Msg-Id (the event id).
	DedupWindow time.Duration
	// ParkTTL is how long a parked event is kept.
	ParkTTL time.Duration
	// DeadLetterMaxAge is how long a dead letter is kept.
	DeadLetterMaxAge time.Duration
	// ParkMaxBytes and DeadLetterMaxBytes cap the parked and dead-letter
	// streams (0: no cap); past them, new messages are refused.
	ParkMaxBytes, DeadLetterMaxBytes int64
	// Hub places the hub's streams and buckets (transit, parked, directory).
	Hub Placement
	// TransitInMemory keeps the transit and parked streams, which hold every
	// region's events, in memory: nothing of a region touches the hub's disk.
	TransitInMemory bool
	// Regions place each region's streams and buckets.
	Regions map[string]Placement
	// Partitions is how many partitions a region's events stream has
	// (worker.partitions); each is consumed apart.
	Partitions int
	// Bind makes Ensure* only check that streams, buckets and consumers
	// exist, never create or change them: they are set up by `geomux setup`
	// with a deployer's credentials.
	Bind bool
}

// Placement is where a stream's replicas go.
type Placement struct {
	// Replicas is how many copies JetStream keeps (1 when 0).
	Replicas int
	// Tags pin the replicas to servers with all these server_tags.
	Tags []string
}

func (p Placement) stream(c *jetstream.StreamConfig) {
	c.Replicas = max(p.Replicas, 1)
	if len(p.Tags) > 0 {
		c.Placement = &jetstream.Placement{Tags: p.Tags}
	}
}

func (p Placement) kv(c *jetstream.KeyValueConfig) {
	c.Replicas = max(p.Replicas, 1)
	if len(p.Tags) > 0 {
		c.Placement = &jetstream.Placement{Tags: p.Tags}
	}
}

// StreamOptionsFrom takes the stream settings from a config.
func StreamOptionsFrom(c config.Config) StreamOptions {
	o := StreamOptions{
		DedupWindow:        c.NATS.DedupWindow.D(),
		ParkTTL:            c.Router.ParkTTL.D(),
		DeadLetterMaxAge:   c.Worker.DeadLetterMaxAge.D(),
		ParkMaxBytes:       int64(c.Router.ParkMaxBytes),
		DeadLetterMaxBytes: int64(c.Worker.DeadLetterMaxBytes),
		Hub:                Placement{Replicas: c.NATS.Replicas},
		TransitInMemory:    c.NATS.TransitStorage == "memory",
		Regions:            map[string]Placement{},
		Bind:               !c.NATS.ManageStreams,
		Partitions:         c.Worker.Partitions,
	}
	for _, r := range c.Regions {
		o.Regions[r.Name] = Placement{Replicas: r.NATS.Replicas, Tags: r.NATS.PlacementTags}
	}
	return o
}

func (o StreamOptions) transitStorage() jetstream.StorageType {
	if o.TransitInMemory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// MsgIDWindow is how long the transit and region event streams remember a
// Nats-Msg-Id (the event id): long enough to drop the copies that come
// close together (Zoom's simultaneous duplicates, a publish retried, an
// event the router republishes after its 30 s ack wait), no longer. nats-server
// keeps each id in memory (about 100 bytes) for the whole window, at every
// hop: a window of nats.dedup_window (2 h) would hold hundreds of bytes per
// event, for hours. Re-deliveries that come later (Zoom retries after 5, 20
// and 60 minutes) are recognised by the region's reply records, kept for
// nats.dedup_window.
const MsgIDWindow = time.Minute

// IngressStreamConfig is the transit stream: it holds accepted events until the router has placed them in
// their region. Work-queue retention: an event leaves once the router acks it.
func IngressStreamConfig(o StreamOptions) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:        proto.IngressStream,
		Description: "geomux: accepted Zoom events waiting for the router",
		Subjects:    []string{proto.IngressSubject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     o.transitStorage(),
		Duplicates:  MsgIDWindow,
		Discard:     jetstream.DiscardNew,
	}
	o.Hub.stream(&c)
	return c
}

// ParkedStreamConfig is the stream holding events of accounts that have no region yet, for ParkTTL.
func ParkedStreamConfig(o StreamOptions) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:        proto.ParkedStream,
		Description: "geomux: events of accounts without a region",
		Subjects:    []string{proto.ParkedSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     o.transitStorage(),
		MaxAge:      o.ParkTTL,
		MaxBytes:    capBytes(o.ParkMaxBytes),
		Duplicates:  min(o.DedupWindow, o.ParkTTL),
		Discard:     jetstream.DiscardNew,
	}
	o.Hub.stream(&c)
	return c
}

// RegionEventsConfig is the stream holding a region's events until a worker
// has handled them. A subject transform files each event under one of
// Partitions partitions by its account (proto.RegionEventsPartitionTransform);
// direct gets let a worker ask for a conversation's first event cheaply.
func RegionEventsConfig(region string, o StreamOptions) jetstream.StreamConfig {
	subjects := proto.RegionEventsSubjects(region)
	c := jetstream.StreamConfig{
		Name:        proto.RegionEventsStream(region),
		Description: "geomux: events of region " + region,
		Subjects:    subjects,
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      subjects[0],
			Destination: proto.RegionEventsPartitionTransform(region, o.partitions()),
		},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  MsgIDWindow,
		Discard:     jetstream.DiscardNew,
		AllowDirect: true,
	}
	o.Regions[region].stream(&c)
	return c
}

// DefaultPartitions is the partitions of a region's events stream when the
// config does not say.
const DefaultPartitions = 4

func (o StreamOptions) partitions() int {
	if o.Partitions < 1 {
		return DefaultPartitions
	}
	return o.Partitions
}

// PartitionsOf reads how many partitions an events stream has from its
// subject transform (1 for a stream without one).
func PartitionsOf(c jetstream.StreamConfig) int {
	if c.SubjectTransform == nil {
		return 1
	}
	d := c.SubjectTransform.Destination
	i := strings.Index(d, "{{partition(")
	if i < 0 {
		return 1
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(d[i+len("{{partition("):], ",", 2)[0]))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// RegionPacingConfig is the bucket where a region's workers keep what they
// learnt of each account's Zoom rate limits (proto.RegionPacingBucket).
func RegionPacingConfig(region string, o StreamOptions) jetstream.KeyValueConfig {
	c := jetstream.KeyValueConfig{
		Bucket:      proto.RegionPacingBucket(region),
		Description: "geomux: Zoom send pace and daily-limit holds of the accounts of region " + region,
		History:     1,
		// A pace not refreshed for a week is forgotten: Zoom plans change.
		TTL:     7 * 24 * time.Hour,
		Storage: jetstream.FileStorage,
	}
	o.Regions[region].kv(&c)
	return c
}

// RegionDeadLetterConfig is the stream keeping a region's dead letters, browsable, for
// DeadLetterMaxAge.
func RegionDeadLetterConfig(region string, o StreamOptions) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:        proto.RegionDeadLetterStream(region),
		Description: "geomux: dead letters of region " + region,
		Subjects:    []string{proto.RegionDeadLetterSubject(region)},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.DeadLetterMaxAge,
		// A dead letter stored twice (its worker died before terminating
		// the event, whose next delivery ran out) is dropped the second time.
		Duplicates: min(o.DedupWindow, o.DeadLetterMaxAge),
		// Full, it refuses new dead letters rather than drop old ones: the
		// event stays in the events stream until there is room.
		MaxBytes: capBytes(o.DeadLetterMaxBytes),
		Discard:  jetstream.DiscardNew,
	}
	o.Regions[region].stream(&c)
	return c
}

// capBytes is a stream's MaxBytes for a cap of b bytes (0: none).
func capBytes(b int64) int64 {
	if b <= 0 {
		return -1
	}
	return b
}

// DirectoryConfig is the bucket of the account → region directory.
func DirectoryConfig(o StreamOptions) jetstream.KeyValueConfig {
	c := jetstream.KeyValueConfig{
		Bucket:      proto.DirectoryBucket,
		Description: "geomux: Zoom account id -> region",
		History:     5,
		Storage:     jetstream.FileStorage,
	}
	o.Hub.kv(&c)
	return c
}

// ConflictsConfig is the hub's bucket of accounts whose events came through
// an app pinned to a region the directory contradicts (identifiers only);
// a record lives as long as the events it parked.
func ConflictsConfig(o StreamOptions) jetstream.KeyValueConfig {
	c := jetstream.KeyValueConfig{
		Bucket:      proto.ConflictsBucket,
		Description: "geomux: accounts whose app and directory disagree on the region",
		History:     1,
		TTL:         o.ParkTTL,
		Storage:     jetstream.FileStorage,
	}
	o.Hub.kv(&c)
	return c
}

// ChannelsConfig is the hub's bucket mapping a channel's key to the
// account that owns it (identifiers only), learnt from events that name
// both.
func ChannelsConfig(o StreamOptions) jetstream.KeyValueConfig {
	c := jetstream.KeyValueConfig{
		Bucket:      proto.ChannelsBucket,
		Description: "geomux: channel key -> owning Zoom account",
		History:     1,
		Storage:     jetstream.FileStorage,
	}
	o.Hub.kv(&c)
	return c
}

// RegionAdvisoryConfig is the stream keeping the max-deliveries advisories of the region's
// workers consumer. JetStream sends an advisory only while someone listens:
// this stream is that listener, so none is missed while no worker runs.
func RegionAdvisoryConfig(region string, o StreamOptions) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:        proto.RegionAdvisoryStream(region),
		Description: "geomux: max-deliveries advisories of region " + region,
		Subjects:    []string{proto.RegionMaxDeliveriesSubject(region)},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.DeadLetterMaxAge,
	}
	o.Regions[region].stream(&c)
	return c
}

// RegionControlConfig is the stream of a region's requests to the hub (see
// proto.RegionControlSubject). It holds account ids only.
func RegionControlConfig(region string, o StreamOptions) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:        proto.RegionControlStream(region),
		Description: "geomux: requests of region " + region + " to the hub",
		Subjects:    []string{proto.RegionControlSubject(region)},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
	}
	o.Regions[region].stream(&c)
	return c
}

// auditMaxAge is how long operator actions on dead letters are remembered.
const auditMaxAge = 400 * 24 * time.Hour

// RegionAuditConfig is the stream recording every replay and purge of the region's dead
// letters: who, when, which entries.
func RegionAuditConfig(region string, o StreamOptions) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:        proto.RegionAuditStream(region),
		Description: "geomux: operator actions on the dead letters of region " + region,
		Subjects:    []string{proto.RegionAuditSubject(region)},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      auditMaxAge,
	}
	o.Regions[region].stream(&c)
	return c
}

// RepliesConfig is the bucket where a region's workers record, per event, the replies
// they sent and those still to send. Records carry their own TTL (per-message
// TTL, enabled by LimitMarkerTTL): as long as Zoom may re-deliver the event
// once every reply is out, as long as a dead letter lives while replies are
// pending.
func RepliesConfig(region string, o StreamOptions) jetstream.KeyValueConfig {
	c := jetstream.KeyValueConfig{
		Bucket:         proto.RegionRepliesBucket(region),
		Description:    "geomux: replies of region " + region + ", sent and pending",
		History:        1,
		TTL:            o.DeadLetterMaxAge + 24*time.Hour,
		LimitMarkerTTL: time.Minute,
		Storage:        jetstream.FileStorage,
	}
	o.Regions[region].kv(&c)
	return c
}

// RegionVaultConfig is the bucket of a region's vault: each account's
// tokens, encrypted with the region's key. One revision is kept, so that
// erasing an account leaves nothing behind.
func RegionVaultConfig(region string, o StreamOptions) jetstream.KeyValueConfig {
	c := jetstream.KeyValueConfig{
		Bucket:      proto.RegionVaultBucket(region),
		Description: "geomux: encrypted OAuth tokens of the accounts of region " + region,
		History:     1,
		Storage:     jetstream.FileStorage,
	}
	o.Regions[region].kv(&c)
	return c
}

// InstallNoncesConfig is the bucket remembering used install states until
// long after they expire, so that none is accepted twice.
func InstallNoncesConfig(o StreamOptions) jetstream.KeyValueConfig {
	c := jetstream.KeyValueConfig{
		Bucket:      proto.InstallNoncesBucket,
		Description: "geomux: install states already used",
		History:     1,
		TTL:         time.Hour,
		Storage:     jetstream.FileStorage,
	}
	o.Hub.kv(&c)
	return c
}

// setupAttemptTimeout bounds one JetStream API call while setting up. On a
// fresh cluster the API does not answer until a meta leader exists, so a call
// is retried with a short timeout rather than waited on once.
const setupAttemptTimeout = 2 * time.Second

// Stream sets the stream up (EnsureStream) or, with Bind, checks that it
// exists.
func (o StreamOptions) Stream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if !o.Bind {
		return EnsureStream(ctx, js, cfg)
	}
	s, err := retrySetup(ctx, func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, cfg.Name) })
	if err != nil {
		return nil, notSetUp("stream", cfg.Name, err)
	}
	return s, nil
}

// KeyValue sets the bucket up (EnsureKeyValue) or, with Bind, checks that it
// exists.
func (o StreamOptions) KeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if !o.Bind {
		return EnsureKeyValue(ctx, js, cfg)
	}
	kv, err := retrySetup(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, cfg.Bucket) })
	if err != nil {
		return nil, notSetUp("bucket", cfg.Bucket, err)
	}
	return kv, nil
}

// Consumer sets a durable consumer up or, with Bind, checks that it exists.
func (o StreamOptions) Consumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := retrySetup(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		if o.Bind {
			return js.Consumer(ctx, stream, cfg.Durable)
		}
		return js.CreateOrUpdateConsumer(ctx, stream, cfg)
	})
	if err != nil {
		if o.Bind {
			return nil, notSetUp("consumer", stream+"/"+cfg.Durable, err)
		}
		return nil, fmt.Errorf("set up consumer %s of %s: %w", cfg.Durable, stream, err)
	}
	return c, nil
}

func notSetUp(kind, name string, err error) error {
	return fmt.Errorf("%s %s is not there (nats.manage_streams is false: run geomux setup with a deployer's credentials): %w", kind, name, err)
}

// EnsureStream creates the stream or updates it to cfg.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := retrySetup(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("set up stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// EnsureKeyValue creates the bucket or updates it to cfg.
func EnsureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := retrySetup(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("set up bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

func retrySetup[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, setupAttemptTimeout)
		v, err := f(actx)
		cancel()
		if err == nil || !Transient(err) || ctx.Err() != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Transient reports whether a NATS request failed for a reason that passes
// by itself: no answer in time (a server away, the connection
// reconnecting), nobody to answer yet (a stream leader being elected),
// JetStream not enabled yet, the reconnect buffer full.
func Transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrReconnectBufExceeded)
}

// DeleteMsg deletes a stream message, overwriting its bytes on disk when
// secure. It reports whether the message was there: JetStream answers a
// missing message with a generic "delete unsuccessful" error, so that case
// is told apart by looking the message up.
func DeleteMsg(ctx context.Context, s jetstream.Stream, seq uint64, secure bool) (existed bool, err error) {
	if secure {
		err = s.SecureDeleteMsg(ctx, seq)
	} else {
		err = s.DeleteMsg(ctx, seq)
	}
	if err == nil {
		return true, nil
	}
	if _, gerr := s.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	return false, err
}
