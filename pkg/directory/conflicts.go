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

// Conflict is an account whose events came through an app pinned to one
// region while the directory gives the account another: the router parks
// such events instead of choosing, and records the conflict here until an
// operator settles it (moves the account, or the app's pin).
type Conflict struct {
	AccountID string `json:"account_id"`
	// App is the app the events came through, pinned to AppRegion.
	App       string `json:"app"`
	AppRegion string `json:"app_region"`
	// DirectoryRegion is the account's region in the directory.
	DirectoryRegion string    `json:"directory_region"`
	Events          int       `json:"events"`
	FirstSeen       time.Time `json:"first_seen"`
	LastSeen        time.Time `json:"last_seen"`
}

// Conflicts keeps the conflicts in the hub's bucket proto.ConflictsBucket
// (identifiers only), one record per account, each kept as long as the
// events it parked (router.park_ttl).
type Conflicts struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// OpenConflicts sets up the conflicts bucket (creating it if the options
// allow) and returns it.
func OpenConflicts(ctx context.Context, js jetstream.JetStream, o topology.Options) (*Conflicts, error) {
	return opened(ctx, js, o, LaterConflicts())
}

// LaterConflicts returns Conflicts whose bucket OpenBucket opens (at start).
func LaterConflicts() *Conflicts { return &Conflicts{now: time.Now} }

// OpenBucket sets up the conflicts bucket. Call it once, before use.
func (c *Conflicts) OpenBucket(ctx context.Context, js jetstream.JetStream, o topology.Options) error {
	kv, err := o.KeyValue(ctx, js, topology.ConflictsConfig(o))
	c.kv = kv
	return err
}

// Record counts one more parked event of the conflict c.
func (c *Conflicts) Record(ctx context.Context, cf Conflict) error {
	if !proto.ValidAccountID(cf.AccountID) {
		return ErrInvalidAccountID
	}
	now := c.now().UTC()
	cf.FirstSeen, cf.LastSeen, cf.Events = now, now, 1
	if e, err := c.kv.Get(ctx, cf.AccountID); err == nil {
		var old Conflict
		if json.Unmarshal(e.Value(), &old) == nil && old.App == cf.App && old.DirectoryRegion == cf.DirectoryRegion {
			cf.FirstSeen, cf.Events = old.FirstSeen, old.Events+1
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("read conflict: %w", err)
	}
	b, err := json.Marshal(cf)
	if err != nil {
		return err
	}
	if _, err := c.kv.Put(ctx, cf.AccountID, b); err != nil {
		return fmt.Errorf("record conflict: %w", err)
	}
	return nil
}

// Resolve forgets the account's conflict, if it has one.
func (c *Conflicts) Resolve(ctx context.Context, account string) error {
	if err := c.kv.Purge(ctx, account); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("resolve conflict: %w", err)
	}
	return nil
}

// List returns every conflict, by account id.
func (c *Conflicts) List(ctx context.Context) ([]Conflict, error) {
	out, err := listBucket(ctx, c.kv, "conflicts", func(key string, v []byte) (Conflict, error) {
		var cf Conflict
		if err := json.Unmarshal(v, &cf); err != nil {
			return cf, fmt.Errorf("conflicts: record of %s is not JSON: %w", key, err)
		}
		cf.AccountID = key
		return cf, nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].AccountID < out[j].AccountID })
	return out, err
}
