package workers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// erase deletes what geomux keeps of an account in its region when Zoom
// says the app was uninstalled (app_deauthorized, stored at seq): its
// tokens, its dead letters, its reply records, its Zoom pace, its events
// stored before the uninstall and not yet handled, and only then its
// directory entry. The router sends every other region a copy of the
// uninstall (ev.Erasure), so that a region the account was moved away from
// erases too; a copy leaves the directory alone. It records what it erased
// (no content) in the region's audit stream. Each step is idempotent: Zoom
// may send the event twice, and a failed attempt is retried.
func (w *Worker) erase(ctx context.Context, ev Event, seq uint64) error {
	account, uninstalled := ev.AccountID, ev.ReceivedAt
	var e dlq.Erasure
	var err error
	if w.vault != nil && !uninstalled.IsZero() {
		// Tokens stored after Zoom sent the uninstall come from a later
		// install: this uninstall is old news, and must not erase it.
		if r, _, err := w.vault.Get(ctx, account); err == nil && r.UpdatedAt.After(uninstalled) {
			w.log.Warn("Uninstall older than the account's install; nothing erased", logfields.AccountID(account))
			return nil
		}
	}
	// While it erases, the account's other events wait (attempt), so that
	// none records a reply or a pace after the erase.
	// Those taken before the erase deleted them from the stream, on their
	// way here (not yet scheduled), are dropped when they come.
	w.erasures.begin(account)
	erased := false
	defer func() { w.erasures.end(account, seq, erased) }()
	if err := w.quiesce(ctx, account); err != nil {
		return err
	}
	// Those waiting first: once they are gone from the stream, no worker
	// of the region (this one or another process) can start one.
	if e.ParkedEvents, err = w.eraseWaiting(ctx, account, seq); err != nil {
		return fmt.Errorf("erase the account's waiting events: %w", err)
	}
	erased = true
	if w.vault != nil {
		if e.Tokens, err = w.vault.Delete(ctx, account); err != nil {
			return err
		}
	}
	if e.DeadLetters, err = w.dlq.EraseAccount(ctx, account); err != nil {
		return fmt.Errorf("erase dead letters: %w", err)
	}
	if e.ReplyRecords, err = w.state.erase(ctx, account); err != nil {
		return fmt.Errorf("erase reply records: %w", err)
	}
	if e.Pace, err = w.pace.forget(ctx, account); err != nil {
		return fmt.Errorf("erase the account's pace: %w", err)
	}
	operator := "geomux (app_deauthorized)"
	if ev.Erasure {
		operator = "geomux (app_deauthorized of an account of another region)"
	} else if w.opts.Directory != nil {
		if err := w.opts.Directory.Remove(ctx, account); err != nil {
			return fmt.Errorf("remove from the directory: %w", err)
		}
		e.Directory = true
	}
	if err := w.dlq.Record(ctx, dlq.Action{
		Action: "erase", Operator: operator, At: time.Now().UTC(),
		Selection: "account " + account, Account: account, Erased: &e,
	}); err != nil {
		return err
	}
	w.log.Info("Uninstalled account erased", logfields.AccountID(account), zap.Bool("copy", ev.Erasure), zap.Bool("tokens", e.Tokens),
		zap.Int("dead_letters", e.DeadLetters), zap.Int("reply_records", e.ReplyRecords), zap.Int("parked_events", e.ParkedEvents),
		zap.Bool("directory", e.Directory))
	return nil
}

// erasingDelay is when an event of an account being erased comes back.
const erasingDelay = time.Second

// quiesce stops the account's other events in this worker before the
// erase: those waiting are let go (the erase deletes them from the stream),
// and those running are waited for, so that none records a reply or a
// dead letter after the erase. An attempt still running when ctx ends
// fails the erase, which is retried.
func (w *Worker) quiesce(ctx context.Context, account string) error {
	for _, x := range w.sched.takeAccount(account) {
		_ = x.msg().NakWithDelay(handBackDelay(x))
		w.budget.release(x.cost)
	}
	for w.sched.runningOf(account) > 1 { // the uninstall itself runs
		select {
		case <-ctx.Done():
			return fmt.Errorf("events of the account still running: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// eraseWaiting deletes the account's events stored in the region before
// the uninstall (at seq) and not handled yet: answered after the uninstall
// they would fail, and end as dead letters, content kept after the erase.
// It returns how many there were.
func (w *Worker) eraseWaiting(ctx context.Context, account string, seq uint64) (int, error) {
	if seq == 0 {
		return 0, nil
	}
	st, err := w.js.Stream(ctx, proto.RegionEventsStream(w.opts.Region))
	if err != nil {
		return 0, err
	}
	filter := proto.RegionAccountEventsFilter(w.opts.Region, account)
	before, err := countSubjects(ctx, st, filter)
	if err != nil || before <= 1 { // the uninstall itself, at most
		return 0, err
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(filter), jetstream.WithPurgeSequence(seq)); err != nil {
		return 0, err
	}
	after, err := countSubjects(ctx, st, filter)
	if err != nil {
		return 0, err
	}
	return max(before-after, 0), nil
}

// countSubjects counts the messages of a stream on the subjects filter matches.
func countSubjects(ctx context.Context, st jetstream.Stream, filter string) (int, error) {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, err
	}
	n := uint64(0)
	for _, c := range info.State.Subjects {
		n += c
	}
	return int(n), nil
}

// erasedMemory is how long a worker remembers an account it erased: longer
// than any event taken before the erase takes to reach its attempt.
const erasedMemory = 10 * time.Minute

// erasures are the accounts a worker is erasing, and those it erased lately
// with the stream sequence of their uninstall. Every attempt reads them: a
// sync.Map (account → erasure), read without a lock.
type erasures struct{ m sync.Map }

type erasure struct {
	erasing bool      // an erase is under way
	seq     uint64    // the latest uninstall erased (its stream sequence); 0: none
	at      time.Time // when it was erased
}

// begin marks the account as being erased.
func (e *erasures) begin(account string) {
	var a erasure
	if v, ok := e.m.Load(account); ok {
		a = v.(erasure)
	}
	a.erasing = true
	e.m.Store(account, a)
}

// end ends the account's erase; erased says its events stored before seq
// are gone from the stream. It forgets the accounts erased more than
// erasedMemory ago.
func (e *erasures) end(account string, seq uint64, erased bool) {
	now := time.Now()
	e.m.Range(func(k, v any) bool {
		if a := v.(erasure); !a.erasing && now.Sub(a.at) > erasedMemory {
			e.m.Delete(k)
		}
		return true
	})
	var a erasure
	if v, ok := e.m.Load(account); ok {
		a = v.(erasure)
	}
	a.erasing = false
	if erased && seq > a.seq {
		a.seq, a.at = seq, now
	}
	if a.seq == 0 {
		e.m.Delete(account)
		return
	}
	e.m.Store(account, a)
}

// of says whether the account is being erased, and whether its event
// stored at seq was erased.
func (e *erasures) of(account string, seq uint64) (erasing, erased bool) {
	v, ok := e.m.Load(account)
	if !ok {
		return false, false
	}
	a := v.(erasure)
	return a.erasing, seq != 0 && seq < a.seq
}
