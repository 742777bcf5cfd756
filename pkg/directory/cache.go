package directory

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/proto"
)

// Cache keeps the whole directory in memory, following the bucket with a KV
// watch, so that Lookup is a map read. It is safe for concurrent use.
type Cache struct {
	dir *Directory
	log *zap.Logger

	mu      sync.RWMutex
	records map[string]proto.AccountRecord
	onSet   []func(proto.AccountRecord)
	onDel   []func(account string)

	warm     chan struct{}
	warmOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// NewCache returns a cache of dir. Call Start before Lookup.
func NewCache(dir *Directory, log *zap.Logger) *Cache {
	return &Cache{dir: dir, log: log, records: map[string]proto.AccountRecord{}, warm: make(chan struct{})}
}

// OnSet registers f to be called, from the watch goroutine, with every record
// written after the initial load. Register before Start.
func (c *Cache) OnSet(f func(proto.AccountRecord)) { c.onSet = append(c.onSet, f) }

// OnDelete registers f to be called, from the watch goroutine, with every
// account removed after the initial load. Register before Start.
func (c *Cache) OnDelete(f func(account string)) { c.onDel = append(c.onDel, f) }

// Start begins watching and waits until the current records are loaded, or
// ctx ends.
func (c *Cache) Start(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go c.run(wctx)
	select {
	case <-c.warm:
		return nil
	case <-ctx.Done():
		c.Stop()
		return ctx.Err()
	}
}

// Stop ends the watch.
func (c *Cache) Stop() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
}

// Ready reports whether the initial records are loaded.
func (c *Cache) Ready() bool {
	select {
	case <-c.warm:
		return true
	default:
		return false
	}
}

// Lookup returns an account's record from memory.
func (c *Cache) Lookup(accountID string) (proto.AccountRecord, bool) {
	c.mu.RLock()
	rec, ok := c.records[accountID]
	c.mu.RUnlock()
	return rec, ok
}

// Len is the number of accounts in the cache.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.records)
}

// run watches the bucket until ctx ends, re-establishing the watch if it
// breaks. A re-established watch replays current values, which only
// re-applies what the cache holds.
func (c *Cache) run(ctx context.Context) {
	defer close(c.done)
	var resume uint64
	for ctx.Err() == nil {
		var opts []jetstream.WatchOpt
		if resume > 0 {
			opts = append(opts, jetstream.ResumeFromRevision(resume+1))
		}
		w, err := c.dir.kv.WatchAll(ctx, opts...)
		if err != nil {
			c.log.Warn("Directory watch failed; retrying", zap.Error(err))
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		resume = c.follow(ctx, w, resume)
		_ = w.Stop()
	}
}

// follow applies the watcher's updates until it closes or ctx ends, and
// returns the last revision applied.
func (c *Cache) follow(ctx context.Context, w jetstream.KeyWatcher, last uint64) uint64 {
	loaded := c.Ready()
	for {
		select {
		case <-ctx.Done():
			return last
		case e, ok := <-w.Updates():
			if !ok {
				return last
			}
			if e == nil {
				loaded = true
				c.warmOnce.Do(func() { close(c.warm) })
				continue
			}
			last = max(last, e.Revision())
			c.apply(e, loaded)
		}
	}
}

func (c *Cache) apply(e jetstream.KeyValueEntry, notify bool) {
	if e.Operation() != jetstream.KeyValuePut {
		c.mu.Lock()
		_, had := c.records[e.Key()]
		delete(c.records, e.Key())
		c.mu.Unlock()
		if notify && had {
			for _, f := range c.onDel {
				f(e.Key())
			}
		}
		return
	}
	rec, err := decode(e.Key(), e.Value())
	if err != nil {
		c.log.Error("Directory record unreadable; ignored", logfields.AccountID(e.Key()), zap.Error(err))
		return
	}
	c.mu.Lock()
	c.records[rec.AccountID] = rec
	c.mu.Unlock()
	if notify {
		for _, f := range c.onSet {
			f(rec)
		}
	}
}
