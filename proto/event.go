package proto

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"time"
)

// EventID is geomux's id of a Zoom event: the first 128 bits of the SHA-256 of
// the raw request body, URL-safe base64 without padding (22 characters).
//
// Zoom documents no event id. A re-delivery of an event carries the same body
// with a new timestamp and signature (both in headers), so the body hash is
// stable across Zoom's retries, while two distinct events always differ in
// event_ts or payload timestamps.
func EventID(body []byte) string {
	sum := sha256.Sum256(body)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// TimeFormat is how times travel in headers and envelopes.
const TimeFormat = time.RFC3339Nano

// ParkKey is the opaque subject token an account's parked events are filed
// under: 64 bits of the SHA-256 of the account id, hex.
func ParkKey(accountID string) string {
	sum := sha256.Sum256([]byte(accountID))
	return hex.EncodeToString(sum[:8])
}

// ConversationKey is the opaque subject token of a conversation (see
// zoom.Conversation): 64 bits of the SHA-256 of its identity, hex. The empty
// conversation is the account's own (AccountConversation).
func ConversationKey(conversation string) string {
	if conversation == "" {
		return AccountConversation
	}
	sum := sha256.Sum256([]byte(conversation))
	return hex.EncodeToString(sum[:8])
}
