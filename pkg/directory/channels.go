package directory

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

// Channels keeps which account owns each channel (proto.ChannelsBucket:
// channel key -> account id), learnt from the events that name both, so
// that an event naming no account (an external user's app mention) can be
// routed as its channel's. Reads go to memory first; the bucket is the
// record, shared by every router and kept across restarts.
type Channels struct {
	kv jetstream.KeyValue

	mu    sync.Mutex
	known map[string]string // channel key -> account
}

// channelsInMemory bounds the channels remembered in memory; past it the
// memory starts over (the bucket still has them all).
const channelsInMemory = 100_000

// OpenChannels sets up the channels bucket (creating it if the options
// allow) and returns it.
func OpenChannels(ctx context.Context, js jetstream.JetStream, o topology.Options) (*Channels, error) {
	return opened(ctx, js, o, LaterChannels())
}

// LaterChannels returns Channels whose bucket OpenBucket opens (at start).
func LaterChannels() *Channels { return &Channels{known: map[string]string{}} }

// OpenBucket sets up the channels bucket. Call it once, before use.
func (c *Channels) OpenBucket(ctx context.Context, js jetstream.JetStream, o topology.Options) error {
	kv, err := o.KeyValue(ctx, js, topology.ChannelsConfig(o))
	c.kv = kv
	return err
}

// Learn records that account owns channel. It reports whether that is
// news (then a write to the bucket was made).
func (c *Channels) Learn(ctx context.Context, channel, account string) (bool, error) {
	if !proto.ValidChannelKey(channel) || !proto.ValidAccountID(account) {
		return false, nil
	}
	c.mu.Lock()
	same := c.known[channel] == account
	c.mu.Unlock()
	if same {
		return false, nil
	}
	if e, err := c.kv.Get(ctx, channel); err == nil && string(e.Value()) == account {
		c.remember(channel, account)
		return false, nil
	}
	if _, err := c.kv.Put(ctx, channel, []byte(account)); err != nil {
		return false, fmt.Errorf("record channel: %w", err)
	}
	c.remember(channel, account)
	return true, nil
}

// Knows reports, from memory only, whether account is known to own
// channel (then Learn has nothing to do).
func (c *Channels) Knows(channel, account string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.known[channel] == account
}

// Account is the account that owns channel, if one is known.
func (c *Channels) Account(ctx context.Context, channel string) (string, bool, error) {
	if !proto.ValidChannelKey(channel) {
		return "", false, nil
	}
	c.mu.Lock()
	account, ok := c.known[channel]
	c.mu.Unlock()
	if ok {
		return account, true, nil
	}
	e, err := c.kv.Get(ctx, channel)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read channel: %w", err)
	}
	c.remember(channel, string(e.Value()))
	return string(e.Value()), true, nil
}

// Forget erases every channel record of account (at its uninstall), and
// returns how many there were.
func (c *Channels) Forget(ctx context.Context, account string) (int, error) {
	recs, err := listBucket(ctx, c.kv, "channels", func(key string, v []byte) ([2]string, error) {
		return [2]string{key, string(v)}, nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range recs {
		if r[1] != account {
			continue
		}
		if err := c.kv.Purge(ctx, r[0]); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return n, fmt.Errorf("erase channel: %w", err)
		}
		n++
		c.mu.Lock()
		delete(c.known, r[0])
		c.mu.Unlock()
	}
	return n, nil
}

func (c *Channels) remember(channel, account string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.known) >= channelsInMemory {
		c.known = map[string]string{}
	}
	c.known[channel] = account
}
