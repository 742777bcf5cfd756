// Package directory is the account → region directory: a NATS KV bucket
// (proto.DirectoryBucket) holding a proto.AccountRecord per Zoom account, and
// a Cache that watches it into memory so that routing makes no network call.
//
// The directory holds identifiers only (account id, region, Zoom API URL),
// never customer content or tokens.
package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

// Errors.
var (
	// ErrNotFound: the account has no region.
	ErrNotFound = errors.New("directory: account not found")
	// ErrInvalidAccountID: the id cannot be a Zoom account id.
	ErrInvalidAccountID = errors.New("directory: invalid account id")
)

// Directory reads and writes the account → region bucket.
type Directory struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// Open sets up the directory bucket (creating it if needed, with the stream
// options given, if any) and returns it.
func Open(ctx context.Context, js jetstream.JetStream, opts ...topology.Options) (*Directory, error) {
	var o topology.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	return opened(ctx, js, o, Later())
}

// opened is b with its bucket opened now (for the Open functions; a
// process opens its buckets at start).
func opened[B interface {
	OpenBucket(context.Context, jetstream.JetStream, topology.Options) error
}](ctx context.Context, js jetstream.JetStream, o topology.Options, b B) (B, error) {
	if err := b.OpenBucket(ctx, js, o); err != nil {
		var none B
		return none, err
	}
	return b, nil
}

// Later returns a Directory whose bucket OpenBucket opens: a process opens
// it at start, not when it is assembled.
func Later() *Directory { return &Directory{now: time.Now} }

// OpenBucket sets up the directory bucket (creating it if the options
// allow). Call it once, before the Directory is used.
func (d *Directory) OpenBucket(ctx context.Context, js jetstream.JetStream, o topology.Options) error {
	kv, err := o.KeyValue(ctx, js, topology.DirectoryConfig(o))
	d.kv = kv
	return err
}

// New returns a Directory over an existing bucket.
func New(kv jetstream.KeyValue) *Directory {
	return &Directory{kv: kv, now: time.Now}
}

// KV is the bucket behind the directory.
func (d *Directory) KV() jetstream.KeyValue { return d.kv }

// Put records the account's region (and Zoom API URL, if known).
func (d *Directory) Put(ctx context.Context, rec proto.AccountRecord) (proto.AccountRecord, error) {
	if !proto.ValidAccountID(rec.AccountID) {
		return rec, ErrInvalidAccountID
	}
	rec.UpdatedAt = d.now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return rec, err
	}
	if _, err := d.kv.Put(ctx, rec.AccountID, b); err != nil {
		return rec, fmt.Errorf("directory: put %s: %w", rec.AccountID, err)
	}
	return rec, nil
}

// ErrExists: the account already has a record.
var ErrExists = errors.New("directory: account already has a region")

// Create records the account's region only if it has none yet; it returns
// ErrExists otherwise, and the record's revision on success.
func (d *Directory) Create(ctx context.Context, rec proto.AccountRecord) (uint64, error) {
	if !proto.ValidAccountID(rec.AccountID) {
		return 0, ErrInvalidAccountID
	}
	rec.UpdatedAt = d.now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	rev, err := d.kv.Create(ctx, rec.AccountID, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrExists
	}
	if err != nil {
		return 0, fmt.Errorf("directory: create %s: %w", rec.AccountID, err)
	}
	return rev, nil
}

// DeleteAt removes an account's record if it is still at revision rev.
func (d *Directory) DeleteAt(ctx context.Context, accountID string, rev uint64) error {
	if err := d.kv.Delete(ctx, accountID, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("directory: delete %s: %w", accountID, err)
	}
	return nil
}

// Get reads an account's record from the bucket.
func (d *Directory) Get(ctx context.Context, accountID string) (proto.AccountRecord, error) {
	if !proto.ValidAccountID(accountID) {
		return proto.AccountRecord{}, ErrInvalidAccountID
	}
	e, err := d.kv.Get(ctx, accountID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return proto.AccountRecord{}, ErrNotFound
	}
	if err != nil {
		return proto.AccountRecord{}, fmt.Errorf("directory: get %s: %w", accountID, err)
	}
	return decode(e.Key(), e.Value())
}

// Delete removes an account's record. Deleting an unknown account is not an
// error.
func (d *Directory) Delete(ctx context.Context, accountID string) error {
	if !proto.ValidAccountID(accountID) {
		return ErrInvalidAccountID
	}
	if err := d.kv.Delete(ctx, accountID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("directory: delete %s: %w", accountID, err)
	}
	return nil
}

// Purge erases an account's record and its history: what an uninstall
// does. Purging an unknown account is not an error.
func (d *Directory) Purge(ctx context.Context, accountID string) error {
	if !proto.ValidAccountID(accountID) {
		return ErrInvalidAccountID
	}
	if err := d.kv.Purge(ctx, accountID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("directory: purge %s: %w", accountID, err)
	}
	return nil
}

// List returns every account's record, sorted by account id.
func (d *Directory) List(ctx context.Context) ([]proto.AccountRecord, error) {
	out, err := listBucket(ctx, d.kv, "directory", decode)
	sort.Slice(out, func(i, j int) bool { return out[i].AccountID < out[j].AccountID })
	return out, err
}

// listBucket decodes every current value of kv, reading them with a watch
// (no consumer is left behind, and it ends once all are delivered).
func listBucket[T any](ctx context.Context, kv jetstream.KeyValue, what string, decode func(key string, v []byte) (T, error)) ([]T, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("%s: list: %w", what, err)
	}
	defer w.Stop()
	var out []T
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("%s: list: watch ended before all records were read", what)
			}
			if e == nil { // all current values delivered
				return out, nil
			}
			rec, err := decode(e.Key(), e.Value())
			if err != nil {
				return nil, err
			}
			out = append(out, rec)
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: list: %w", what, ctx.Err())
		}
	}
}

func decode(key string, v []byte) (proto.AccountRecord, error) {
	var rec proto.AccountRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, fmt.Errorf("directory: record of %s is not JSON: %w", key, err)
	}
	rec.AccountID = key
	return rec, nil
}
