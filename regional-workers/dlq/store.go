package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/proto"
)

// Errors.
var (
	// ErrNoQueue: the region has no dead-letter stream (its workers never ran).
	ErrNoQueue = errors.New("dlq: the region has no dead-letter stream yet (has a worker of the region ever started?)")
	// ErrNotFound: no entry with that id.
	ErrNotFound = errors.New("dlq: no such entry")
)

// Store reads and changes one region's dead letters. It talks to the
// region's NATS only, so the entries never leave the region.
type Store struct {
	js     jetstream.JetStream
	region string
	stream jetstream.Stream
	now    func() time.Time
}

// Open returns the store of region's dead letters.
func Open(ctx context.Context, js jetstream.JetStream, region string) (*Store, error) {
	s, err := js.Stream(ctx, proto.RegionDeadLetterStream(region))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, ErrNoQueue
	}
	if err != nil {
		return nil, fmt.Errorf("dlq: open %s: %w", proto.RegionDeadLetterStream(region), err)
	}
	return &Store{js: js, region: region, stream: s, now: time.Now}, nil
}

// Count is how many dead letters the region holds.
func (s *Store) Count(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("dlq: count: %w", err)
	}
	return info.State.Msgs, nil
}

// Filter selects entries; zero fields select everything.
type Filter struct {
	// IDs selects these entries.
	IDs []uint64
	// Account selects the entries of one account.
	Account string
	// Since selects entries stored at most this long ago.
	Since time.Duration
	// Before selects entries stored at least this long ago.
	Before time.Duration
}

func (f Filter) match(e Entry, now time.Time) bool {
	if f.Account != "" && e.AccountID != f.Account {
		return false
	}
	if f.Since > 0 && now.Sub(e.DeadAt) > f.Since {
		return false
	}
	if f.Before > 0 && now.Sub(e.DeadAt) < f.Before {
		return false
	}
	return true
}

// List returns the selected entries, oldest first, without their payloads.
func (s *Store) List(ctx context.Context, f Filter) ([]Entry, error) {
	if len(f.IDs) > 0 {
		var out []Entry
		for _, id := range slices.Sorted(slices.Values(f.IDs)) {
			e, err := s.Get(ctx, id)
			if err != nil {
				return nil, fmt.Errorf("entry %d: %w", id, err)
			}
			e.Payload = nil
			if f.match(e, s.now()) {
				out = append(out, e)
			}
		}
		return out, nil
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cfg := jetstream.OrderedConsumerConfig{HeadersOnly: true}
	if f.Since > 0 {
		start := s.now().Add(-f.Since)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cfg.InactiveThreshold = readerIdle
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	defer s.drop(s.stream, cons)
	now := s.now()
	var out []Entry
	err = readAll(cons, func(m jetstream.Msg, md *jetstream.MsgMetadata) {
		if e := entryFrom(md.Sequence.Stream, md.Timestamp, m.Headers(), nil); f.match(e, now) {
			out = append(out, e)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	return out, nil
}

// readAll hands each message a reader's consumer has to each, in order,
// until none is left.
func readAll(cons jetstream.Consumer, each func(jetstream.Msg, *jetstream.MsgMetadata)) error {
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			each(m, md)
			if md.NumPending == 0 {
				return batch.Error()
			}
		}
		if err := batch.Error(); err != nil || n == 0 {
			return err
		}
	}
}

// Get returns one entry, payload included.
func (s *Store) Get(ctx context.Context, id uint64) (Entry, error) {
	m, err := s.stream.GetMsg(ctx, id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("dlq: get %d: %w", id, err)
	}
	return entryFrom(m.Sequence, m.Time, m.Header, m.Data), nil
}

// Replay puts an entry back on the region's events subject, so that a
// worker handles the event again, then removes it from the queue. The copy
// gets a new Nats-Msg-Id (the event id, "replay" and the entry id), so that
// the pipeline's deduplication does not take it for a Zoom re-delivery.
func (s *Store) Replay(ctx context.Context, id uint64) error {
	e, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	// Back at the end of its conversation: the events after it went on.
	out := nats.NewMsg(proto.RegionEventSubject(s.region, e.AccountID, e.header.Get(proto.HeaderConversation)))
	out.Data = e.Payload
	for k, v := range e.header {
		if directGetHeader(k) {
			continue
		}
		switch k {
		case proto.HeaderDeadReason, proto.HeaderDeadError, proto.HeaderDeadStatus, proto.HeaderAttempts,
			proto.HeaderFirstAttempt, proto.HeaderLastAttempt, proto.HeaderSkippedOver, jetstream.MsgIDHeader:
			continue
		}
		out.Header[k] = v
	}
	idStr := strconv.FormatUint(id, 10)
	out.Header.Set(jetstream.MsgIDHeader, e.EventID+"/replay/"+idStr)
	out.Header.Set(proto.HeaderReplay, idStr)
	out.Header.Set(headerReplays, strconv.Itoa(e.Replays+1))
	if _, err := s.js.PublishMsg(ctx, out); err != nil {
		return fmt.Errorf("dlq: replay %d: %w", id, err)
	}
	// The event is back in the region's stream: only now leave the queue. A
	// failure here leaves the entry, and replaying it again is deduplicated.
	if _, err := natsx.DeleteMsg(ctx, s.stream, id, false); err != nil {
		return fmt.Errorf("dlq: entry %d was replayed but not removed: %w", id, err)
	}
	return nil
}

// Purge deletes an entry for good: its bytes are overwritten on disk, not
// only unlinked from the stream.
func (s *Store) Purge(ctx context.Context, id uint64) error {
	existed, err := natsx.DeleteMsg(ctx, s.stream, id, true)
	if err != nil {
		return fmt.Errorf("dlq: purge %d: %w", id, err)
	}
	if !existed {
		return ErrNotFound
	}
	return nil
}

// EraseAccount purges every dead letter of an account and returns how many
// there were.
func (s *Store) EraseAccount(ctx context.Context, account string) (int, error) {
	entries, err := s.List(ctx, Filter{Account: account})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if err := s.Purge(ctx, e.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}

// readerIdle is how long the server keeps a reader's consumer (List,
// History) that its reader did not delete (it died meanwhile).
const readerIdle = 30 * time.Second

// drop deletes a reader's consumer once it has read what it wanted: an
// inventory asked for every account of a bank would otherwise leave
// thousands behind, each for readerIdle.
func (s *Store) drop(st jetstream.Stream, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = st.DeleteConsumer(ctx, info.Name)
}

// Action is an operator's replay or purge of dead letters, as recorded in the
// region.
type Action struct {
	// Action is "replay" or "purge".
	Action string `json:"action"`
	// Operator is who ran it (user@host, or --as).
	Operator string    `json:"operator"`
	At       time.Time `json:"at"`
	// Selection is the command's selection, e.g. "--account A" or "17 18".
	Selection string `json:"selection"`
	// Entries are the entries acted on.
	Entries []ActedOn `json:"entries,omitempty"`
	// Failed are the entries the action failed on, with why.
	Failed []ActedOn `json:"failed,omitempty"`
	// Account and Erased describe an "erase": what geomux deleted of an
	// account when Zoom said the app was uninstalled.
	Account string   `json:"account_id,omitempty"`
	Erased  *Erasure `json:"erased,omitempty"`
}

// Erasure is what an uninstall erased of an account in its region.
type Erasure struct {
	Tokens       bool `json:"tokens"`
	DeadLetters  int  `json:"dead_letters"`
	ReplyRecords int  `json:"reply_records"`
	// ParkedEvents are the account's events stored before the uninstall
	// and not handled yet.
	ParkedEvents int `json:"parked_events"`
	// Pace: the account's Zoom pace or daily-limit hold.
	Pace      bool `json:"pace"`
	Directory bool `json:"directory"`
}

// Names reports whether the action names the account: its erase, or a
// replay or purge of one of its dead letters.
func (a Action) Names(account string) bool {
	if a.Account == account {
		return true
	}
	for _, es := range [][]ActedOn{a.Entries, a.Failed} {
		for _, e := range es {
			if e.AccountID == account {
				return true
			}
		}
	}
	return false
}

// ActedOn names an entry in an Action.
type ActedOn struct {
	ID        uint64 `json:"id"`
	EventID   string `json:"event_id"`
	AccountID string `json:"account_id"`
	Error     string `json:"error,omitempty"`
}

// Record stores an action in the region's audit stream.
func (s *Store) Record(ctx context.Context, a Action) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if _, err := s.js.Publish(ctx, proto.RegionAuditSubject(s.region), b); err != nil {
		return fmt.Errorf("dlq: record %s: %w", a.Action, err)
	}
	return nil
}

// History returns the recorded actions, oldest first.
func (s *Store) History(ctx context.Context) ([]Action, error) {
	st, err := s.js.Stream(ctx, proto.RegionAuditStream(s.region))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dlq: history: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return nil, err
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{InactiveThreshold: readerIdle})
	if err != nil {
		return nil, fmt.Errorf("dlq: history: %w", err)
	}
	defer s.drop(st, cons)
	var out []Action
	err = readAll(cons, func(m jetstream.Msg, _ *jetstream.MsgMetadata) {
		var a Action
		if err := json.Unmarshal(m.Data(), &a); err == nil {
			out = append(out, a)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("dlq: history: %w", err)
	}
	return out, nil
}
