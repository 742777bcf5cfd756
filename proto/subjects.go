package proto

import (
	"regexp"
	"strings"
)

// Subjects and streams of the hub: what ingress writes and the router reads.
const (
	// IngressSubject is where ingress publishes every accepted Zoom event.
	IngressSubject = "geomux.in"
	// IngressStream is the transit stream holding accepted events until the
	// router has placed them in their region.
	IngressStream = "GEOMUX_IN"
	// RouterConsumer is the router's durable consumer on IngressStream.
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
	// DirectorySubject is where the router answers the ingress's directory
	// requests (request/reply): the ingress never writes the directory
	// itself.
	DirectorySubject = "geomux.directory"
)

// WorkersConsumer is the regional workers' durable consumer on a region's
// events stream.
const WorkersConsumer = "workers"

// ParkedSubjects is the subject filter of ParkedStream.
const ParkedSubjects = parkedPrefix + "*"

// ParkedSubject is the subject an event of an account without a region is
// parked on. The account id is hashed (see ParkKey) so that customer
// identifiers never appear in subject names, which NATS propagates as interest.
func ParkedSubject(accountID string) string {
	return parkedPrefix + ParkKey(accountID)
}

// RegionEventsSubject is the subject the router publishes a region's events on.
func RegionEventsSubject(region string) string {
	return "geomux.region." + region + ".events"
}

// RegionEventsStream is the stream of a region that holds its events until a
// worker has handled them.
func RegionEventsStream(region string) string {
	return "GEOMUX_" + streamToken(region) + "_EVENTS"
}

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
// of the region has been delivered retry.max_attempts times without an ack.
func RegionMaxDeliveriesSubject(region string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + RegionEventsStream(region) + "." + WorkersConsumer
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

// RegionVaultSubject is where the ingress hands a region the tokens of an
// account installed there (core NATS request/reply: nothing is stored on the
// way).
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
