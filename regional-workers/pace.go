package workers

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/proto"
)

// Pacing each account's Zoom sends. Zoom limits chat messages per account
// (shared by every app installed on it) per second, by the account's plan,
// and per day. The pace of an account is learnt from Zoom's answers, as TCP
// learns a path's capacity (additive increase, multiplicative decrease): it
// starts at worker.zoom_pace.initial_rate, grows by one message per second
// each second in which the account had more to send than its pace let out,
// and halves on a per-second 429. A daily-limit 429 holds every send of the
// account until the time Zoom names.
//
// Each worker process paces the sends it makes itself. Several processes of
// a region sending for one account each learn from their own 429s, and
// additive increase with multiplicative decrease converges to a fair share
// of the account's limit among them, as it does among TCP flows sharing a
// link. What they share, through the region's pacing bucket, is what must
// outlive a process: the pace an account was last learnt at (where a new
// process starts from) and the daily-limit hold (which holds the account in
// every process, across restarts, until the reset).

// pacer paces the sends of a region's accounts.
type pacer struct {
	kv     jetstream.KeyValue
	cfg    config.ZoomPace
	m      *Metrics
	region string
	log    *zap.Logger
	now    func() time.Time

	mu       sync.Mutex
	accounts map[string]*pace
}

// pace is one account's.
type pace struct {
	rate     float64   // messages per second
	next     time.Time // when the next send may go
	grown    time.Time // when the rate last grew
	held     time.Time // no send before this (daily limit)
	loaded   bool      // read from the bucket
	limited  bool      // Zoom answered 429 once: no more slow start
	saved    float64   // the rate last written to the bucket
	lastUsed time.Time
}

func newPacer(kv jetstream.KeyValue, cfg config.ZoomPace, m *Metrics, region string, log *zap.Logger) *pacer {
	return &pacer{kv: kv, cfg: cfg, m: m, region: region, log: log, now: time.Now, accounts: map[string]*pace{}}
}

// account returns the account's pace, reading the bucket the first time.
// Called without p.mu.
func (p *pacer) account(ctx context.Context, id string) *pace {
	p.mu.Lock()
	a := p.accounts[id]
	if a == nil {
		a = &pace{rate: p.cfg.InitialRate}
		p.accounts[id] = a
	}
	loaded := a.loaded
	p.mu.Unlock()
	if loaded || p.kv == nil {
		return a
	}
	rec, ok := p.read(ctx, id)
	p.mu.Lock()
	if !a.loaded {
		a.loaded = true
		if ok {
			if rec.Rate >= 1 {
				// A pace learnt before: Zoom's limit is near it.
				a.rate = min(rec.Rate, p.cfg.MaxRate)
				a.saved = a.rate
				a.limited = true
			}
			if rec.HeldUntil.After(a.held) {
				a.held = rec.HeldUntil
			}
		}
	}
	p.mu.Unlock()
	return a
}

func (p *pacer) read(ctx context.Context, id string) (proto.PaceRecord, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e, err := p.kv.Get(ctx, id)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			p.log.Warn("Account's pace not read; starting from the initial rate", logfields.AccountID(id), zap.Error(err))
		}
		return proto.PaceRecord{}, false
	}
	var rec proto.PaceRecord
	if json.Unmarshal(e.Value(), &rec) != nil {
		return proto.PaceRecord{}, false
	}
	return rec, true
}

// wait waits until the account may send one message, or returns a
// *heldError while Zoom holds the account.
func (p *pacer) wait(ctx context.Context, id string) error {
	a := p.account(ctx, id)
	waited := false
	for {
		p.mu.Lock()
		now := p.now()
		a.lastUsed = now
		if now.Before(a.held) {
			held := a.held
			p.mu.Unlock()
			return &heldError{until: held}
		}
		if !now.Before(a.next) {
			a.next = now.Add(time.Duration(float64(time.Second) / a.rate))
			if waited && now.Sub(a.grown) >= time.Second && a.rate < p.cfg.MaxRate {
				// More to send than the pace lets out: probe for more.
				if a.limited {
					a.rate = min(a.rate+1, p.cfg.MaxRate)
				} else {
					a.rate = min(a.rate*1.5, p.cfg.MaxRate)
				}
				a.grown = now
			}
			p.mu.Unlock()
			return nil
		}
		d := a.next.Sub(now)
		p.mu.Unlock()
		waited = true
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// sent notes a message Zoom accepted; a pace that moved far from the one
// recorded is recorded again.
func (p *pacer) sent(id string) {
	p.mu.Lock()
	a := p.accounts[id]
	save := a != nil && (a.rate > 1.5*a.saved || a.rate < a.saved/1.5)
	var rec proto.PaceRecord
	if save {
		a.saved = a.rate
		rec = proto.PaceRecord{Rate: a.rate, HeldUntil: a.held}
	}
	p.mu.Unlock()
	if save {
		go p.write(id, rec)
	}
}

// limited halves the account's pace after a per-second 429, and keeps the
// account's next send for after retryAfter if Zoom named one.
func (p *pacer) limited(id string, retryAfter time.Duration) {
	p.m.ZoomLimited.WithLabelValues(p.region, "qps").Inc()
	p.mu.Lock()
	a := p.accounts[id]
	if a == nil {
		p.mu.Unlock()
		return
	}
	now := p.now()
	a.limited = true
	if now.Sub(a.grown) >= time.Duration(float64(time.Second)/a.rate) {
		// Once per burst of 429s: the sends already on their way were
		// paced at the old rate.
		a.rate = max(a.rate/2, 1)
	}
	a.grown = now
	a.next = now.Add(max(time.Duration(float64(time.Second)/a.rate), retryAfter))
	p.mu.Unlock()
}

// hold holds the account's sends until until (Zoom's daily limit), in this
// process at once and, through the bucket, in every process of the region.
func (p *pacer) hold(id string, until time.Time) {
	p.m.ZoomLimited.WithLabelValues(p.region, "daily").Inc()
	p.mu.Lock()
	a := p.accounts[id]
	if a == nil {
		a = &pace{rate: p.cfg.InitialRate, loaded: true}
		p.accounts[id] = a
	}
	newHold := until.After(a.held)
	if newHold {
		a.held = until
	}
	rec := proto.PaceRecord{Rate: a.rate, HeldUntil: a.held}
	p.mu.Unlock()
	if newHold {
		p.log.Warn("Account reached Zoom's daily message limit; its replies are held until the reset", logfields.AccountID(id), zap.String("until", until.UTC().Format(time.RFC3339)))
		p.write(id, rec)
	}
}

// write records an account's pace in the bucket.
func (p *pacer) write(id string, rec proto.PaceRecord) {
	if p.kv == nil {
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.kv.Put(ctx, id, b); err != nil {
		p.log.Warn("Account's pace not recorded", logfields.AccountID(id), zap.Error(err))
	}
}

// forget erases what is kept of an account (it uninstalled the app).
func (p *pacer) forget(ctx context.Context, id string) (bool, error) {
	p.mu.Lock()
	_, known := p.accounts[id]
	delete(p.accounts, id)
	p.mu.Unlock()
	if p.kv == nil {
		return known, nil
	}
	kept, err := p.kept(ctx, id)
	if err != nil {
		return known, err
	}
	err = p.kv.Purge(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		err = nil
	}
	return known || kept, err
}

// kept reports whether the bucket holds a pace or hold of the account.
func (p *pacer) kept(ctx context.Context, id string) (bool, error) {
	if p.kv == nil {
		return false, nil
	}
	_, err := p.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// sweep forgets, in memory, the accounts that sent nothing for a while.
func (p *pacer) sweep(idle time.Duration) {
	cut := p.now().Add(-idle)
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, a := range p.accounts {
		if a.lastUsed.Before(cut) && !a.held.After(p.now()) {
			delete(p.accounts, id)
		}
	}
}
