package workers

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Scheduling: the events a worker holds wait in per-conversation queues,
// in stream order, grouped by account. Accounts take turns, round robin,
// one event per turn; an account has at most AccountConcurrency events
// running, so that a burst from one account leaves the others their turns.
// A conversation runs one event at a time: its next event starts only once
// the one before has been acknowledged, dead-lettered or handed back, and
// only if the stream agrees that it is the conversation's first (order.go).

// item is an event held by the worker.
type item struct {
	// d is its latest delivery: a redelivery replaces it (see add).
	d      atomic.Pointer[delivery]
	err    error // no metadata: not a JetStream delivery
	seq    uint64
	ev     Event
	bad    error // headers geomux cannot use
	replay bool
	cost   int64
	// conversation is its queue's key; filter matches every stored subject
	// of its conversation.
	conversation, filter string
	touched              atomic.Int64 // when its ack wait last restarted (unix ns)
	conv                 *conversation
}

// delivery is one delivery of an event by JetStream.
type delivery struct {
	msg jetstream.Msg
	md  *jetstream.MsgMetadata
}

func (it *item) touch() { it.touched.Store(time.Now().UnixNano()) }

// msg is the event's latest delivery, which its verdict answers.
func (it *item) msg() jetstream.Msg { return it.d.Load().msg }

// meta is the latest delivery's metadata (nil when it.err is set).
func (it *item) meta() *jetstream.MsgMetadata { return it.d.Load().md }

// verdict is what became of an attempt, for the scheduler.
type verdict int

const (
	// finished: acknowledged, dead-lettered or handled elsewhere; the
	// conversation's next event may go.
	finished verdict = iota
	// retrying: handed back with a delay; the conversation waits for it.
	retrying
	// waiting: not the conversation's first event in the stream; it stays
	// held, in its place, and looks again a little later.
	waiting
	// notYet: not the conversation's first event in the stream; it was
	// handed back (the worker is short of room) to come again later.
	notYet
	// handedBack: handed back without an attempt (a hold, a stop).
	handedBack
)

// String names the verdict (in traces).
func (v verdict) String() string {
	return [...]string{"finished", "retrying", "waiting", "not_yet", "handed_back"}[v]
}

// outcome is a verdict and, for retrying, when the event comes back.
type outcome struct {
	verdict verdict
	after   time.Duration
}

type account struct {
	id      string
	held    int // events in hand, running or not
	convs   map[string]*conversation
	ready   []*conversation // conversations whose next event may start
	running int
	inRing  bool
}

type conversation struct {
	key       string
	acct      *account
	items     []*item // in stream order
	busy      bool    // its first event is running
	queued    bool    // in acct.ready
	notBefore time.Time
	wait      time.Duration // the next look for an earlier event held elsewhere
	timer     *time.Timer
}

type scheduler struct {
	mu       sync.Mutex
	accounts map[string]*account
	ring     []*account // accounts with a ready conversation and room to run
	bySeq    map[uint64]*item
	perAcct  int // running
	maxHeld  int // in hand
	start    func(*item)
	running  *sync.WaitGroup // counts the events started
	wake     chan struct{}
	closed   bool
	// done are the events finished here lately, by stream sequence: their
	// acknowledgements may not have reached the stream yet.
	done   map[uint64]time.Time
	inHand prometheus.Gauge
}

// newScheduler returns a scheduler that calls start for each event it
// starts, once counted in running (so that a stop, closing the scheduler
// then waiting on running, waits for every event started).
func newScheduler(perAccount int, start func(*item), running *sync.WaitGroup, inHand prometheus.Gauge) *scheduler {
	return &scheduler{accounts: map[string]*account{}, bySeq: map[uint64]*item{}, done: map[uint64]time.Time{}, perAcct: perAccount, maxHeld: heldPerRunning * perAccount,
		start: start, running: running, wake: make(chan struct{}, 1), inHand: inHand}
}

func (s *scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// heldPerRunning is how many events of one account a worker holds for each
// it may run: enough to keep its slots busy, few enough that a burst from
// one account stays in JetStream rather than in the worker's memory.
const heldPerRunning = 8

// added is what add did with an event.
type added int

const (
	kept      added = iota
	duplicate       // a redelivery of an event held: the held one answers it
	full            // its account holds its share: hand it back
	closing         // the worker is stopping: hand it back
)

// add queues an event taken from JetStream, unless it is a redelivery of an
// event still held (its ack wait had run out; the held delivery is replaced),
// its account already holds its share, or the scheduler is closed. An
// event its conversation's held events wait for is taken over the share,
// in exchange for the conversation's last event, returned to be handed back.
func (s *scheduler) add(it *item) (added, *item) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return closing, nil
	}
	if old, ok := s.bySeq[it.seq]; ok && it.err == nil {
		old.d.Store(it.d.Load())
		old.touch()
		s.mu.Unlock()
		return duplicate, nil
	}
	var out *item
	if a := s.accounts[it.ev.AccountID]; a != nil && a.held >= s.maxHeld {
		if !a.waitsFor(it) {
			s.mu.Unlock()
			return full, nil
		}
		out = a.convs[it.conversation].evictLast()
		if out != nil {
			s.dropHeld(out)
		}
	}
	if it.err == nil {
		s.bySeq[it.seq] = it
	}
	s.inHand.Inc()
	a := s.accounts[it.ev.AccountID]
	if a == nil {
		a = &account{id: it.ev.AccountID, convs: map[string]*conversation{}}
		s.accounts[a.id] = a
	}
	c := a.convs[it.conversation]
	if c == nil {
		c = &conversation{key: it.conversation, acct: a}
		a.convs[c.key] = c
	}
	it.conv = c
	a.held++
	i := len(c.items)
	for i > 0 && c.items[i-1].seq > it.seq {
		i-- // a redelivery of an earlier event: it goes first
	}
	c.items = append(c.items, nil)
	copy(c.items[i+1:], c.items[i:])
	c.items[i] = it
	s.makeReady(c, time.Now())
	s.mu.Unlock()
	return kept, out
}

// waitsFor reports whether a holds later events of it's conversation: they
// wait for it (a redelivery after its ack wait ran out, say while the
// region's servers were down), so it is taken over the account's share.
// Handing it back instead would leave its conversation waiting on events
// that cannot run, for as long as the account stays full. Called with s.mu
// held.
func (a *account) waitsFor(it *item) bool {
	c := a.convs[it.conversation]
	return it.err == nil && c != nil && len(c.items) > 0 && c.items[len(c.items)-1].seq > it.seq
}

// evictLast removes c's last event, unless it is the one running. Called
// with s.mu held.
func (c *conversation) evictLast() *item {
	n := len(c.items)
	if n == 0 || (n == 1 && c.busy) {
		return nil
	}
	it := c.items[n-1]
	c.items[n-1] = nil
	c.items = c.items[:n-1]
	return it
}

// makeReady queues c for its account if its first event may start now, or
// sets a timer for when it may. Called with s.mu held.
func (s *scheduler) makeReady(c *conversation, now time.Time) {
	if c.busy || c.queued || len(c.items) == 0 {
		return
	}
	if d := c.notBefore.Sub(now); d > 0 {
		if c.timer == nil {
			c.timer = time.AfterFunc(d, func() {
				s.mu.Lock()
				c.timer = nil
				if !s.closed {
					s.makeReady(c, time.Now())
				}
				s.mu.Unlock()
			})
		}
		return
	}
	c.queued = true
	a := c.acct
	a.ready = append(a.ready, c)
	s.ringIn(a)
}

// ringIn gives a its turns again, if it has something to run and room.
func (s *scheduler) ringIn(a *account) {
	if !a.inRing && len(a.ready) > 0 && a.running < s.perAcct {
		a.inRing = true
		s.ring = append(s.ring, a)
		s.signal()
	}
}

// loop starts events, one per account per turn, until ctx is done.
func (s *scheduler) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		for {
			it := s.next()
			if it == nil {
				break
			}
			s.start(it)
		}
	}
}

// next takes the next event to start, round robin over the accounts, or nil.
func (s *scheduler) next() *item {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.ring) > 0 && !s.closed {
		a := s.ring[0]
		s.ring[0] = nil
		s.ring = s.ring[1:]
		a.inRing = false
		if a.running >= s.perAcct || len(a.ready) == 0 {
			continue
		}
		c := a.ready[0]
		a.ready[0] = nil
		a.ready = a.ready[1:]
		c.queued = false
		if c.busy || len(c.items) == 0 {
			continue
		}
		c.busy = true
		a.running++
		s.running.Add(1)
		s.ringIn(a) // back at the end of the ring
		return c.items[0]
	}
	return nil
}

// finish records what became of a started event and lets its conversation
// and account go on.
func (s *scheduler) finish(it *item, o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, a := it.conv, it.conv.acct
	c.busy = false
	a.running--
	now := time.Now()
	switch o.verdict {
	case waiting:
		c.wait = min(max(2*c.wait, firstWaitMin), firstWaitMax)
		c.notBefore = now.Add(c.wait)
	case notYet, retrying:
		// It, or an earlier event, comes back no sooner: nothing of the
		// conversation can go before.
		s.drop(it)
		c.wait = 0
		c.notBefore = now.Add(o.after)
	default:
		s.drop(it)
		c.wait = 0
		c.notBefore = time.Time{}
	}
	if len(c.items) == 0 {
		if c.timer != nil {
			c.timer.Stop()
		}
		delete(a.convs, c.key)
		if len(a.convs) == 0 && a.running == 0 {
			delete(s.accounts, a.id)
		}
	} else {
		s.makeReady(c, now)
	}
	s.ringIn(a)
}

// finished notes an event finished here (acknowledged or dead-lettered).
func (s *scheduler) finished(seq uint64) {
	s.mu.Lock()
	s.done[seq] = time.Now()
	s.mu.Unlock()
}

// recentlyFinished reports whether the event at seq was finished here lately.
func (s *scheduler) recentlyFinished(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.done[seq]
	return ok
}

// forgetFinished forgets the events finished more than d ago: by then their
// acknowledgements have long reached the stream.
func (s *scheduler) forgetFinished(d time.Duration) {
	cut := time.Now().Add(-d)
	s.mu.Lock()
	defer s.mu.Unlock()
	for seq, at := range s.done {
		if at.Before(cut) {
			delete(s.done, seq)
		}
	}
}

// How often a conversation whose first event is held elsewhere (another
// worker, or a killed one's, until its ack wait ends) looks again: soon at
// first, then every second.
const (
	firstWaitMin = 50 * time.Millisecond
	firstWaitMax = time.Second
)

// waitOf is how long the conversation of it already waits for an earlier
// event to come back (a retry's delay), or 0.
func (s *scheduler) waitOf(it *item) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(time.Until(it.conv.notBefore), 0)
}

// drop removes it, the first of its conversation. Called with s.mu held.
func (s *scheduler) drop(it *item) {
	c := it.conv
	for i, x := range c.items {
		if x == it {
			c.items = append(c.items[:i], c.items[i+1:]...)
			break
		}
	}
	s.dropHeld(it)
}

// dropHeld stops counting it, already out of its conversation's queue, as
// held. Called with s.mu held.
func (s *scheduler) dropHeld(it *item) {
	if it.err == nil && s.bySeq[it.seq] == it {
		delete(s.bySeq, it.seq)
	}
	it.conv.acct.held--
	s.inHand.Dec()
}

// takeAccount removes and returns the events of account that are not
// running: they are handed back while the account is held.
// runningOf is how many events of an account are running.
func (s *scheduler) runningOf(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[id]; a != nil {
		return a.running
	}
	return 0
}

func (s *scheduler) takeAccount(id string) []*item {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[id]
	if a == nil {
		return nil
	}
	var out []*item
	for key, c := range a.convs {
		start := 0
		if c.busy {
			start = 1
		}
		waiting := append([]*item(nil), c.items[start:]...)
		for _, it := range waiting {
			s.drop(it)
		}
		out = append(out, waiting...)
		if len(c.items) == 0 {
			if c.timer != nil {
				c.timer.Stop()
			}
			delete(a.convs, key)
		}
	}
	if len(a.convs) == 0 && a.running == 0 {
		delete(s.accounts, id)
	}
	return out
}

// heldLongerThan lists the events whose ack wait was last restarted more
// than d ago.
func (s *scheduler) heldLongerThan(d time.Duration) []*item {
	cut := time.Now().Add(-d).UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*item
	for _, a := range s.accounts {
		for _, c := range a.convs {
			for _, it := range c.items {
				if it.touched.Load() < cut {
					out = append(out, it)
				}
			}
		}
	}
	return out
}

// close stops starting events and returns those held and not running, to be
// handed back.
func (s *scheduler) close() []*item {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var out []*item
	for _, a := range s.accounts {
		for _, c := range a.convs {
			if c.timer != nil {
				c.timer.Stop()
			}
			start := 0
			if c.busy {
				start = 1
			}
			out = append(out, c.items[start:]...)
			a.held -= len(c.items) - start
			c.items = c.items[:start]
		}
	}
	for _, it := range out {
		if it.err == nil && s.bySeq[it.seq] == it {
			delete(s.bySeq, it.seq)
		}
		s.inHand.Dec()
	}
	return out
}
