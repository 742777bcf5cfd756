package workers

import "sync"

// budget bounds what a worker holds: bytes and events. acquire waits for
// room; one event is always let in, however large, so that an event larger
// than the budget still gets handled.
type budget struct {
	mu         sync.Mutex
	room       *sync.Cond
	bytes, max int64
	n, maxN    int
	waiting    int // acquires waiting for room
	closed     bool
}

func newBudget(maxBytes int64, maxEvents int) *budget {
	b := &budget{max: maxBytes, maxN: maxEvents}
	b.room = sync.NewCond(&b.mu)
	return b
}

// acquire waits until cost fits, and reports false if the budget was closed
// meanwhile.
func (b *budget) acquire(cost int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && b.n > 0 && (b.bytes+cost > b.max || b.n >= b.maxN) {
		b.waiting++
		b.room.Wait()
		b.waiting--
	}
	if b.closed {
		return false
	}
	b.bytes += cost
	b.n++
	return true
}

func (b *budget) release(cost int64) {
	b.mu.Lock()
	b.bytes -= cost
	b.n--
	b.mu.Unlock()
	b.room.Broadcast()
}

// pressed reports whether an event is waiting for room.
func (b *budget) pressed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waiting > 0
}

// close makes every acquire, waiting or to come, fail.
func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.room.Broadcast()
}
