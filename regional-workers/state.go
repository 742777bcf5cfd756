package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/proto"
)

// replyState is what a region records of an event once a worker has done
// something that must not be done twice: the replies the handler produced
// (so that a retry does not ask the backend again) and how many went out (so
// that none goes out twice, even when a worker is killed between sending a
// reply and acknowledging the event). It also keeps the last failure, for
// the dead letter should the event run out of attempts.
type replyState struct {
	// Messages are the replies still to send; dropped once all are out, so
	// that no content stays at rest longer than needed.
	Messages   []proto.ChatMessage `json:"messages,omitempty"`
	Sent       int                 `json:"sent"`
	MessageIDs []string            `json:"message_ids,omitempty"`
	Done       bool                `json:"done,omitempty"`
	// Edits, Deletes and Unfurls are the backend's other actions, done
	// after the messages in that order; Acted is how many are done.
	// Dropped, like Messages, once all are.
	Edits   []proto.EditMessage   `json:"edits,omitempty"`
	Deletes []proto.DeleteMessage `json:"deletes,omitempty"`
	Unfurls []proto.UnfurlLink    `json:"unfurls,omitempty"`
	Acted   int                   `json:"acted,omitempty"`

	// Attempts is how many attempts failed: an event is tried at most
	// retry.max_attempts times, whatever JetStream's delivery count says
	// (it also counts hand-backs that used no attempt).
	Attempts int `json:"attempts,omitempty"`

	LastError   string    `json:"last_error,omitempty"`
	LastStatus  int       `json:"last_status,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
}

// actions is how many actions the answer has besides its messages.
func (st *replyState) actions() int { return len(st.Edits) + len(st.Deletes) + len(st.Unfurls) }

// answered reports whether the handler's answer is recorded, with
// something still to do.
func (st *replyState) answered() bool { return len(st.Messages) > 0 || st.actions() > 0 }

// finished reports whether every message and action went out.
func (st *replyState) finished() bool { return st.Sent >= len(st.Messages) && st.Acted >= st.actions() }

// stateStore keeps replyStates in the region's replies bucket. Each record is
// written with its own TTL (JetStream per-message TTL): doneTTL once the
// event is finished (nats.dedup_window: as long as Zoom may re-deliver it),
// pendingTTL while it may still be retried or replayed (as long as a dead
// letter lives).
type stateStore struct {
	js         jetstream.JetStream
	kv         jetstream.KeyValue
	stream     string // the bucket's stream, KV_<bucket>
	subject    string // "$KV.<bucket>." prefix
	doneTTL    time.Duration
	pendingTTL time.Duration
}

func newStateStore(js jetstream.JetStream, kv jetstream.KeyValue, bucket string, doneTTL, pendingTTL time.Duration) *stateStore {
	return &stateStore{js: js, kv: kv, stream: "KV_" + bucket, subject: "$KV." + bucket + ".", doneTTL: doneTTL, pendingTTL: pendingTTL}
}

// key is an event's record key: the account first, so that an account's
// records can be erased together.
func key(account, id string) string { return account + "." + id }

func (s *stateStore) load(ctx context.Context, account, id string) (replyState, bool, error) {
	e, err := s.kv.Get(ctx, key(account, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return replyState{}, false, nil
	}
	if err != nil {
		return replyState{}, false, fmt.Errorf("read reply state: %w", err)
	}
	var st replyState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return replyState{}, false, nil // unreadable: start over
	}
	return st, true, nil
}

// save writes st as the event's record. A KV put cannot carry a TTL, so the
// record is published on the bucket's subject with a Nats-TTL header, which
// is what the KV layer itself does for a key created with a TTL.
func (s *stateStore) save(ctx context.Context, account, id string, st replyState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	ttl := s.pendingTTL
	if st.Done {
		ttl = s.doneTTL
	}
	m := &nats.Msg{Subject: s.subject + key(account, id), Data: b}
	if _, err := s.js.PublishMsg(ctx, m, jetstream.WithMsgTTL(ttl)); err != nil {
		return fmt.Errorf("record reply state: %w", err)
	}
	return nil
}

// count returns how many records of an account the bucket holds (one
// message per key: the bucket keeps no history).
func (s *stateStore) count(ctx context.Context, account string) (int, error) {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return 0, err
	}
	return countSubjects(ctx, st, s.subject+account+".>")
}

// erase deletes every record of an account and reports how many there were.
func (s *stateStore) erase(ctx context.Context, account string) (int, error) {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return 0, err
	}
	subj := s.subject + account + ".>"
	n, err := countSubjects(ctx, st, subj)
	if err != nil {
		return 0, err
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		return 0, err
	}
	return n, nil
}
