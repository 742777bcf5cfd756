// Package zoom speaks Zoom's wire formats: it verifies webhook requests,
// answers endpoint URL validation, reads the fields geomux routes on, fetches
// chatbot tokens and sends chat messages.
package zoom

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"strconv"
	"sync"
	"time"
)

// Headers Zoom signs webhook requests with.
const (
	HeaderSignature  = "X-Zm-Signature"
	HeaderTimestamp  = "X-Zm-Request-Timestamp"
	HeaderTrackingID = "X-Zm-Trackingid"
	HeaderRequestID  = "X-Zm-Request-Id"
)

// Verification failures. Each is answered 401.
var (
	ErrMissingSignature = errors.New("zoom: missing x-zm-signature or x-zm-request-timestamp")
	ErrBadTimestamp     = errors.New("zoom: x-zm-request-timestamp is not Unix seconds")
	ErrStaleTimestamp   = errors.New("zoom: x-zm-request-timestamp is too far from now")
	ErrBadSignature     = errors.New("zoom: x-zm-signature does not match any webhook secret token")
)

// Verifier checks x-zm-signature against the app's webhook secret tokens:
// "v0=" + hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + raw body)).
// Several tokens may be configured so that a secret can be rotated. It is safe
// for concurrent use.
type Verifier struct {
	keys    []*Key
	maxSkew time.Duration
	now     func() time.Time
}

// Key is one webhook secret token.
type Key struct {
	pool sync.Pool // of hash.Hash (HMAC-SHA256 keyed with the secret)
}

func newKey(secret string) *Key {
	k := &Key{}
	s := []byte(secret)
	k.pool.New = func() any { return hmac.New(sha256.New, s) }
	return k
}

func (k *Key) mac(parts ...[]byte) [sha256.Size]byte {
	h := k.pool.Get().(hash.Hash)
	h.Reset()
	for _, p := range parts {
		h.Write(p)
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	k.pool.Put(h)
	return out
}

// EncryptToken answers Zoom's endpoint URL validation challenge:
// hex(HMAC-SHA256(secret, plainToken)).
func (k *Key) EncryptToken(plainToken string) string {
	sum := k.mac([]byte(plainToken))
	return hex.EncodeToString(sum[:])
}

// NewVerifier returns a Verifier for the given secret tokens that accepts a
// request timestamp at most maxSkew away from now (either way).
func NewVerifier(secrets []string, maxSkew time.Duration) *Verifier {
	v := &Verifier{maxSkew: maxSkew, now: time.Now}
	for _, s := range secrets {
		v.keys = append(v.keys, newKey(s))
	}
	return v
}

var sigPrefix = []byte("v0:")

// Verify checks a request's signature and timestamp headers against its raw
// body. It returns the key that signed it, which answers URL validation.
func (v *Verifier) Verify(signature, timestamp string, body []byte) (*Key, error) {
	if signature == "" || timestamp == "" {
		return nil, ErrMissingSignature
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return nil, ErrBadTimestamp
	}
	if len(signature) != 3+2*sha256.Size || signature[:3] != "v0=" {
		return nil, ErrBadSignature
	}
	var want [sha256.Size]byte
	if _, err := hex.Decode(want[:], []byte(signature[3:])); err != nil {
		return nil, ErrBadSignature
	}
	tsb := []byte(timestamp)
	var match *Key
	// Every key is tried, matched or not, so timing does not tell which one
	// (or whether one) matched.
	for _, k := range v.keys {
		got := k.mac(sigPrefix, tsb, []byte{':'}, body)
		if hmac.Equal(got[:], want[:]) && match == nil {
			match = k
		}
	}
	if match == nil {
		return nil, ErrBadSignature
	}
	// The timestamp is checked once the signature is known good, so that
	// ErrStaleTimestamp says a genuine request came too late or too early:
	// a replay, or this host's clock off (the ingress watches for that).
	if d := v.now().Sub(time.Unix(ts, 0)); d > v.maxSkew || d < -v.maxSkew {
		return nil, ErrStaleTimestamp
	}
	return match, nil
}

// Sign computes the x-zm-signature of a body at a timestamp, as Zoom does.
// geomux uses it to send test events (geomux send) and in tests.
func Sign(secret, timestamp string, body []byte) string {
	sum := newKey(secret).mac(sigPrefix, []byte(timestamp), []byte{':'}, body)
	return "v0=" + hex.EncodeToString(sum[:])
}
