package proto

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Subjects and streams of the hub: what ingress writes and the router reads.
const (
	// IngressSubject is the subject of the first transit stream
	// (TransitSubject(0)): where earlier versions published every event.
	IngressSubject = "geomux.in"
	// IngressStream is the first transit stream (TransitStream(0)).
	IngressStream = "GEOMUX_IN"
	// RouterConsumer is the router's durable consumer on each transit
	// stream, and on each region's control stream.
	RouterConsumer = "router"

	// ParkedStream holds events whose account has no region yet.
	ParkedStream = "GEOMUX_PARKED"
	// parkedPrefix starts every parked subject; the last token is ParkKey(account).
	parkedPrefix = "geomux.parked."

	// DirectoryBucket is the KV bucket mapping a Zoom account id to its region.
	DirectoryBucket = "geomux-directory"
	// ConflictsBucket keeps the accounts whose app is pinned to a region
	// the directory contradicts.
	ConflictsBucket = "geomux-conflicts"
	// ChannelsBucket maps a channel's key (HeaderChannel) to the account
	// that owns it, learnt from events that name both: identifiers only.
	ChannelsBucket = "geomux-channels"
	// DirectorySubject is where the router answers the ingress's directory
	// requests (request/reply): the ingress never writes the directory
	// itself.
	DirectorySubject = "geomux.directory"
)

// TransitStream is the name of transit stream p, which holds accepted
// events until the router has placed them in their region. The first keeps
// the name of earlier versions' only one.
func TransitStream(p int) string {
	if p == 0 {
		return IngressStream
	}
	return IngressStream + "_" + strconv.Itoa(p)
}

// TransitSubject is the subject of transit stream p.
func TransitSubject(p int) string {
	if p == 0 {
		return IngressSubject
	}
	return IngressSubject + "." + strconv.Itoa(p)
}

// TransitOf is the transit stream, of n, of an event whose account (or,
// naming none, its conversation or its id) is key: an account's events
// share one, so that the router keeps their order.
func TransitOf(key string, n int) int {
	if n <= 1 {
		return 0
	}
	// FNV-1a, written out: no allocation per event.
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// IsTransitStream reports whether a stream is one of the hub's transit
// streams.
func IsTransitStream(name string) bool {
	if name == IngressStream {
		return true
	}
	n, ok := strings.CutPrefix(name, IngressStream+"_")
	p, err := strconv.Atoi(n)
	return ok && err == nil && p > 0 && strconv.Itoa(p) == n
}

// WorkersConsumer is the durable consumer of the regional workers on
// partition p of a region's events stream.
func WorkersConsumer(p int) string {
	return fmt.Sprintf("workers-%02d", p)
}

// LegacyWorkersConsumer is the one consumer of earlier versions, on the
// whole events stream; it is removed when the partitioned ones are set up.
const LegacyWorkersConsumer = "workers"

// ParkedSubjects is the subject filter of ParkedStream.
const ParkedSubjects = parkedPrefix + "*"

// ParkedSubject is the subject an event of an account without a region is
// parked on. The account id is hashed (see ParkKey) so that customer
// identifiers never appear in subject names, which NATS propagates as interest.
func ParkedSubject(accountID string) string {
	return parkedPrefix + ParkKey(accountID)
}

// parkedChannelToken starts the last token of a subject parked by channel:
// ParkKey is hex, so no account's subject starts so.
const parkedChannelToken = "ch-"

// NoChannel is the channel key of an event that names no account and no
// channel.
const NoChannel = "none"

// ParkedChannelSubject is the subject an event that names no account is
// parked on, under its channel's key (HeaderChannel, or NoChannel).
func ParkedChannelSubject(channel string) string {
	if !ValidChannelKey(channel) {
		channel = NoChannel
	}
	return parkedPrefix + parkedChannelToken + channel
}

// ValidChannelKey reports whether k is a channel key as the ingress makes
// them (ConversationKey: 16 lowercase hex digits).
func ValidChannelKey(k string) bool {
	if len(k) != 16 {
		return false
	}
	for _, c := range k {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ParkedChannelOf is the channel key of a subject parked by channel
// (ParkedChannelSubject), and whether it is one.
func ParkedChannelOf(subject string) (string, bool) {
	return strings.CutPrefix(subject, parkedPrefix+parkedChannelToken)
}

// RegionEventSubject is the subject the router publishes an event of a
// region on: geomux.region.<region>.events.<account key>.<conversation key>,
// both keys opaque hashes (ParkKey, ConversationKey), so that no customer
// identifier appears in a subject. The region's stream files it under a
// partition (RegionEventsFilter): every event of one conversation lands on
// one stored subject, in the order it was published.
func RegionEventSubject(region, accountID, conversationKey string) string {
	if conversationKey == "" {
		conversationKey = AccountConversation
	}
	return regionEventsPrefix(region) + "." + ParkKey(accountID) + "." + conversationKey
}

// RegionEventsSubjects are the subjects a region's events stream takes:
// the events as the router publishes them, and the subject of the single
// stream of earlier versions (its events form one conversation).
func RegionEventsSubjects(region string) []string {
	return []string{regionEventsPrefix(region) + ".*.*", LegacyRegionEventsSubject(region)}
}

// LegacyRegionEventsSubject is where geomux before partitions put a region's
// events; a stream upgraded in place may still hold some.
func LegacyRegionEventsSubject(region string) string {
	return regionEventsPrefix(region)
}

// RegionEventsPartitionFilter is the stored subjects of partition p of a
// region's events stream: geomux.region.<region>.events.<p>.<account key>.<conversation key>.
func RegionEventsPartitionFilter(region string, p int) string {
	return regionEventsPrefix(region) + "." + strconv.Itoa(p) + ".*.*"
}

// RegionConversationFilter matches every stored subject of one
// conversation, whatever its partition: the stream's first message on it
// is the conversation's next event.
func RegionConversationFilter(region, accountKey, conversationKey string) string {
	return regionEventsPrefix(region) + ".*." + accountKey + "." + conversationKey
}

// RegionAccountEventsFilter matches every stored event of an account.
func RegionAccountEventsFilter(region, accountID string) string {
	return regionEventsPrefix(region) + ".*." + ParkKey(accountID) + ".*"
}

// RegionEventsPartitionTransform is the destination of the stream's subject
// transform: the account's key picks one of n partitions, so that an
// account's events are in one partition and partitions are consumed apart.
func RegionEventsPartitionTransform(region string, n int) string {
	return regionEventsPrefix(region) + ".{{partition(" + strconv.Itoa(n) + ",1)}}.{{wildcard(1)}}.{{wildcard(2)}}"
}

func regionEventsPrefix(region string) string {
	return "geomux.region." + region + ".events"
}

// SplitRegionEventSubject reads the account and conversation keys of a
// stored event subject of region; ok is false for the legacy subject.
func SplitRegionEventSubject(region, subject string) (accountKey, conversationKey string, ok bool) {
	rest, found := strings.CutPrefix(subject, regionEventsPrefix(region)+".")
	if !found {
		return "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", "", false
	}
	return parts[1], parts[2], true
}

// RegionEventsStream is the stream of a region that holds its events until a
// worker has handled them.
func RegionEventsStream(region string) string {
	return "GEOMUX_" + streamToken(region) + "_EVENTS"
}

// AccountConversation is the conversation key of events that belong to no
// chat (app_deauthorized, and events of earlier versions without one).
const AccountConversation = "_"

// RegionDeadLetterSubject is where a region's worker puts events it could not
// handle.
func RegionDeadLetterSubject(region string) string {
	return "geomux.region." + region + ".dlq"
}

// RegionDeadLetterStream is the stream of a region holding its dead letters.
func RegionDeadLetterStream(region string) string {
	return "GEOMUX_" + streamToken(region) + "_DLQ"
}

// RegionAdvisoryStream keeps, durably, JetStream's max-deliveries advisories
// for the region's workers consumer: an event whose worker died on every
// attempt becomes a dead letter from these.
func RegionAdvisoryStream(region string) string {
	return "GEOMUX_" + streamToken(region) + "_ADVISORIES"
}

// RegionMaxDeliveriesSubject is the advisory JetStream publishes when an event
// of the region has been delivered as often as the workers' consumers allow
// without a verdict (any partition).
func RegionMaxDeliveriesSubject(region string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + RegionEventsStream(region) + ".*"
}

// RegionHoldsSubject is where a region's workers answer, to the hub's admin
// API, which accounts Zoom's daily limit holds (request/reply; a
// HoldsAnswer). Account ids and times only.
func RegionHoldsSubject(region string) string {
	return "geomux.region." + region + ".holds"
}

// HoldsQueue is the queue group of the workers answering RegionHoldsSubject.
const HoldsQueue = "geomux-holds"

// Hold is an account whose Zoom replies are held until its daily message
// limit resets.
type Hold struct {
	AccountID string    `json:"account_id"`
	Region    string    `json:"region"`
	HeldUntil time.Time `json:"held_until"`
	// Rate is the messages per second its sends were last paced at.
	Rate float64 `json:"rate"`
}

// HoldsAnswer is the answer on RegionHoldsSubject.
type HoldsAnswer struct {
	Holds []Hold `json:"holds"`
	Error string `json:"error,omitempty"`
}

// RegionInventorySubject is where a region's workers answer, to the hub's
// admin API, what the region holds of one account (request/reply: an
// InventoryRequest, answered with an InventoryAnswer). Counts only: no
// content leaves the region.
func RegionInventorySubject(region string) string {
	return "geomux.region." + region + ".inventory"
}

// InventoryQueue is the queue group of the workers answering
// RegionInventorySubject.
const InventoryQueue = "geomux-inventory"

// InventoryRequest asks a region what it holds of an account.
type InventoryRequest struct {
	AccountID string `json:"account_id"`
}

// Inventory is what a region holds of an account.
type Inventory struct {
	// Tokens: the region's vault holds the account's OAuth tokens.
	Tokens bool `json:"tokens"`
	// DeadLetters are the account's events in the region's dead-letter queue.
	DeadLetters int `json:"dead_letters"`
	// ReplyRecords are the region's records of the account's events (what
	// was replied, what is left to send).
	ReplyRecords int `json:"reply_records"`
	// ParkedEvents are the account's events stored in the region and not
	// handled yet: waiting for a worker, handed back, or held until Zoom's
	// daily limit resets.
	ParkedEvents int `json:"parked_events"`
	// AuditEntries are the region's audit records that name the account
	// (erasures, replays and purges of its dead letters).
	AuditEntries int `json:"audit_entries"`
	// Pace: the region keeps the account's Zoom pace or daily-limit hold.
	Pace bool `json:"pace"`
}

// InventoryAnswer is the answer on RegionInventorySubject.
type InventoryAnswer struct {
	Inventory Inventory `json:"inventory"`
	Error     string    `json:"error,omitempty"`
}

// RegionPacingBucket is the KV bucket where a region's workers share what
// they learnt of each account's Zoom rate limits: the pace of its sends and
// a hold until Zoom's daily limit resets. Keys are account ids; no content.
func RegionPacingBucket(region string) string {
	return "geomux-" + region + "-pacing"
}

// RegionAuditSubject is where every operator action on the region's dead
// letters (replay, purge) is recorded.
func RegionAuditSubject(region string) string {
	return "geomux.region." + region + ".audit"
}

// RegionAuditStream keeps the region's operator audit records.
func RegionAuditStream(region string) string {
	return "GEOMUX_" + streamToken(region) + "_AUDIT"
}

// RegionVaultSubject is where the router hands a region's vault service
// (VaultService) the tokens of an account installed there, a TokenHandover
// (request/reply: nothing is stored on the way).
func RegionVaultSubject(region string) string {
	return "geomux.region." + region + ".vault.put"
}

// RegionVaultBucket is the KV bucket of a region keeping its accounts'
// encrypted OAuth tokens.
func RegionVaultBucket(region string) string {
	return "geomux-" + region + "-vault"
}

// RegionControlSubject is where a region with a NATS system of its own asks
// the hub for what only the hub can do: remove an uninstalled account from
// the directory. The router carries it over.
func RegionControlSubject(region string) string {
	return "geomux.region." + region + ".control"
}

// RegionControlStream keeps a region's control requests until the router
// has carried them out.
func RegionControlStream(region string) string {
	return "GEOMUX_" + streamToken(region) + "_CONTROL"
}

// ControlRequest is a region's request to the hub.
type ControlRequest struct {
	// RemoveAccount is an account erased in the region: remove it from the
	// directory.
	RemoveAccount string `json:"remove_account,omitempty"`
}

// InstallNoncesBucket remembers, for a while, the install states already
// used, so that none can be replayed.
const InstallNoncesBucket = "geomux-install-nonces"

// DeadLetterKeeperConsumer is the durable consumer of RegionAdvisoryStream.
const DeadLetterKeeperConsumer = "dlq-keeper"

// RegionRepliesBucket is the KV bucket of a region where a worker records the
// replies of an event it could not finish sending, so that a retry sends each
// reply once.
func RegionRepliesBucket(region string) string {
	return "geomux-" + region + "-replies"
}

func streamToken(region string) string {
	return strings.ToUpper(strings.ReplaceAll(region, "-", "_"))
}

var regionNameRe = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// ValidRegionName reports whether name can name a region: lowercase letters,
// digits and '-', starting with a letter, at most 31 characters. Region names
// become subject tokens, stream and bucket names.
func ValidRegionName(name string) bool {
	return regionNameRe.MatchString(name)
}

// ValidAppName reports whether name can name a Zoom app of the config:
// the same rule as a region name (it becomes a URL path segment, a header
// value and a metric label).
func ValidAppName(name string) bool {
	return regionNameRe.MatchString(name)
}

// ValidAccountID reports whether id looks like a Zoom account id (1 to 128
// URL-safe base64 characters, or '=') and can be used as a directory key.
// It runs for every webhook: a loop, not a regular expression.
func ValidAccountID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '=':
		default:
			return false
		}
	}
	return true
}
