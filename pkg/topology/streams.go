package topology

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/proto"
)

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

// TransitConfig is transit stream p: it holds accepted events until the
// router has placed them in their region. Work-queue retention: an event
// leaves once the router acks it.
func TransitConfig(o Options, p int) jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:        proto.TransitStream(p),
		Description: "geomux: accepted Zoom events waiting for the router",
		Subjects:    []string{proto.TransitSubject(p)},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     o.transitStorage(),
		Duplicates:  MsgIDWindow,
		Discard:     jetstream.DiscardNew,
	}
	o.Hub.stream(&c)
	return c
}

// ParkedStreamConfig is the stream holding events of accounts that have no region yet, for ParkTTL.
func ParkedStreamConfig(o Options) jetstream.StreamConfig {
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
func RegionEventsConfig(region string, o Options) jetstream.StreamConfig {
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

func (o Options) partitions() int {
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
func RegionPacingConfig(region string, o Options) jetstream.KeyValueConfig {
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
func RegionDeadLetterConfig(region string, o Options) jetstream.StreamConfig {
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
func DirectoryConfig(o Options) jetstream.KeyValueConfig {
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
func ConflictsConfig(o Options) jetstream.KeyValueConfig {
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
func ChannelsConfig(o Options) jetstream.KeyValueConfig {
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
func RegionAdvisoryConfig(region string, o Options) jetstream.StreamConfig {
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
func RegionControlConfig(region string, o Options) jetstream.StreamConfig {
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
func RegionAuditConfig(region string, o Options) jetstream.StreamConfig {
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
func RepliesConfig(region string, o Options) jetstream.KeyValueConfig {
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
func RegionVaultConfig(region string, o Options) jetstream.KeyValueConfig {
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
func InstallNoncesConfig(o Options) jetstream.KeyValueConfig {
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
