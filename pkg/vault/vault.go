// Package vault is a region's token vault: the OAuth tokens of the accounts
// installed in the region, in a KV bucket of the region only
// (proto.RegionVaultBucket), each record encrypted with the region's key
// (AES-256-GCM, the account id as associated data, so a record cannot be
// passed off as another account's). Neither the ingress nor the directory
// ever stores tokens: at install, the ingress hands them to the region over
// NATS (see Service and Hand), and only the region writes them down.
package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/singleflight"

	"github.com/geomux/geomux/pkg/seal"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

// Errors.
var (
	// ErrNoToken: the vault holds no token for the account.
	ErrNoToken = errors.New("vault: no token for this account")
	// ErrBadKey: a vault key is not 32 bytes of base64.
	ErrBadKey = errors.New("vault: a vault key is 32 random bytes, base64-encoded (e.g. openssl rand -base64 32)")
)

// Key is a region's vault key.
type Key struct{ k seal.Key }

// ParseKey reads a base64 (standard or URL alphabet) 32-byte key.
func ParseKey(s string) (Key, error) {
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil || len(raw) != 32 {
		return Key{}, ErrBadKey
	}
	k, err := seal.NewKey(raw)
	if err != nil {
		return Key{}, ErrBadKey
	}
	return Key{k: k}, nil
}

// Seal encrypts plain for account.
func (k Key) Seal(account string, plain []byte) []byte { return k.k.Seal(account, plain) }

// Open decrypts what Seal made for account.
func (k Key) Open(account string, sealed []byte) ([]byte, error) {
	plain, err := k.k.Open(account, sealed)
	if err != nil {
		return nil, errors.New("vault: record does not decrypt with this region's key (wrong vault_key, or not this account's)")
	}
	return plain, nil
}

// Record is what the vault keeps of an account.
type Record struct {
	proto.Tokens
	// UserID is the Zoom user who installed the app.
	UserID    string    `json:"user_id,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Refresher renews user tokens; *zoom.Client is one.
type Refresher interface {
	RefreshUserToken(ctx context.Context, refreshToken string) (proto.Tokens, error)
}

// refreshBefore is how long before its expiry an access token is renewed.
const refreshBefore = 5 * time.Minute

// Vault is one region's vault. It is safe for concurrent use, and several
// processes may share a region's vault.
type Vault struct {
	kv        jetstream.KeyValue
	key       Key
	refresher Refresher
	now       func() time.Time
	refreshes singleflight.Group
}

// New returns the vault over a region's bucket.
func New(kv jetstream.KeyValue, key Key, r Refresher) *Vault {
	return &Vault{kv: kv, key: key, refresher: r, now: time.Now}
}

// Later returns a region's vault whose bucket Open opens, at start, before
// anything uses the vault.
func Later(key Key, r Refresher) *Vault { return New(nil, key, r) }

// Open opens (or sets up, as o says) region's vault bucket.
func (v *Vault) Open(ctx context.Context, js jetstream.JetStream, region string, o topology.Options) error {
	kv, err := o.KeyValue(ctx, js, topology.RegionVaultConfig(region, o))
	v.kv = kv
	return err
}

// Put stores an account's tokens, replacing what was there.
func (v *Vault) Put(ctx context.Context, account string, r Record) error {
	r.UpdatedAt = v.now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := v.kv.Put(ctx, account, v.key.Seal(account, b)); err != nil {
		return fmt.Errorf("vault: store tokens of %s: %w", account, err)
	}
	return nil
}

// Get returns an account's record and its revision.
func (v *Vault) Get(ctx context.Context, account string) (Record, uint64, error) {
	e, err := v.kv.Get(ctx, account)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, ErrNoToken
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("vault: read tokens of %s: %w", account, err)
	}
	plain, err := v.key.Open(account, e.Value())
	if err != nil {
		return Record{}, 0, err
	}
	var r Record
	if err := json.Unmarshal(plain, &r); err != nil {
		return Record{}, 0, fmt.Errorf("vault: record of %s: %w", account, err)
	}
	return r, e.Revision(), nil
}

// Holds reports whether the vault holds tokens of the account (not
// decrypted: a record under an old key counts too).
func (v *Vault) Holds(ctx context.Context, account string) (bool, error) {
	_, err := v.kv.Get(ctx, account)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("vault: read tokens of %s: %w", account, err)
	}
	return true, nil
}

// Delete erases an account's tokens, history included. It reports whether
// there were any.
func (v *Vault) Delete(ctx context.Context, account string) (bool, error) {
	_, err := v.kv.Get(ctx, account) // not decrypted: a record under an old key counts too
	existed := err == nil
	if err := v.kv.Purge(ctx, account); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return existed, fmt.Errorf("vault: erase tokens of %s: %w", account, err)
	}
	return existed, nil
}

// AccessToken returns an account's user token, renewed first if it expires
// within five minutes.
//
// Zoom rotates refresh tokens: a refresh returns a new refresh token and the
// old one stops working, so the newest must always be the one stored. The
// new record is written with a compare-and-set on the revision the refresh
// started from. Losing it means another process refreshed meanwhile: the
// token that expires later (the one Zoom issued last) is then kept.
func (v *Vault) AccessToken(ctx context.Context, account string) (proto.Tokens, error) {
	r, _, err := v.Get(ctx, account)
	if err != nil {
		return proto.Tokens{}, err
	}
	if v.fresh(r) {
		return r.Tokens, nil
	}
	t, err, _ := v.refreshes.Do(account, func() (any, error) {
		// Not the first caller's context: every caller sharing the refresh
		// would fail with it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return v.refresh(rctx, account)
	})
	if err != nil {
		return proto.Tokens{}, err
	}
	return t.(proto.Tokens), nil
}

func (v *Vault) fresh(r Record) bool { return v.now().Add(refreshBefore).Before(r.ExpiresAt) }

func (v *Vault) refresh(ctx context.Context, account string) (proto.Tokens, error) {
	r, rev, err := v.Get(ctx, account)
	if err != nil {
		return proto.Tokens{}, err
	}
	if v.fresh(r) { // another process renewed it meanwhile
		return r.Tokens, nil
	}
	nt, err := v.refresher.RefreshUserToken(ctx, r.RefreshToken)
	if err != nil {
		// Our refresh token may have just been rotated by another process.
		if cur, _, gerr := v.Get(ctx, account); gerr == nil && cur.RefreshToken != r.RefreshToken && v.fresh(cur) {
			return cur.Tokens, nil
		}
		return proto.Tokens{}, fmt.Errorf("vault: refresh tokens of %s: %w", account, err)
	}
	if nt.RefreshToken == "" {
		nt.RefreshToken = r.RefreshToken
	}
	if nt.APIURL == "" {
		nt.APIURL = r.APIURL
	}
	next := Record{Tokens: nt, UserID: r.UserID}
	for {
		next.UpdatedAt = v.now().UTC()
		b, err := json.Marshal(next)
		if err != nil {
			return proto.Tokens{}, err
		}
		_, err = v.kv.Update(ctx, account, v.key.Seal(account, b), rev)
		for try := 0; err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && try < 3; try++ {
			// Zoom has rotated the refresh token: losing the new one would
			// mean a reinstall. Try hard to keep it.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			_, err = v.kv.Update(ctx, account, v.key.Seal(account, b), rev)
		}
		if err == nil {
			return nt, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return proto.Tokens{}, fmt.Errorf("vault: refreshed tokens of %s not stored; the account may need reinstalling: %w", account, err)
		}
		// Someone wrote first. Keep the later-expiring, i.e. newer, token.
		cur, curRev, err := v.Get(ctx, account)
		if err != nil {
			return proto.Tokens{}, err
		}
		if !cur.ExpiresAt.Before(nt.ExpiresAt) {
			return cur.Tokens, nil
		}
		rev = curRev
	}
}
