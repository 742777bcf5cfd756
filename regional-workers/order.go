package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/proto"
)

// Keeping a conversation in order. Its events are stored on one subject of
// the region's events stream (the router names it by the conversation), in
// the order the router published them, and a work-queue stream keeps an
// event until it is acknowledged or dead-lettered. So the stream itself
// says which event of a conversation is next: its first message on that
// subject. Before an attempt, the worker asks the stream (a direct get of
// the first message on the conversation's subject): only that event may
// go. Another worker process holding an earlier event, a retry waiting its
// delay, or an event of a killed worker waiting for its redelivery all keep
// their place, whichever process holds the later events. This is NATS's own
// ordering: no lock, no coordinator.

// place is where an event stands in its conversation.
type place int

const (
	first    place = iota // its turn
	notFirst              // an earlier event of its conversation is still there
	gone                  // no longer in the stream: handled elsewhere
)

// turn asks the stream where it stands. An error counts as notFirst: the
// event waits and asks again. An earlier event that is finished may still
// be there (acknowledgements are not waited for, and one can be lost with a
// consumer's leader): it is passed over.
func (w *Worker) turn(it *item) place {
	seq, err := w.firstAfterFinished(w.base, it, w.firstFrom)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && seq > it.seq) {
		// A replica answered, and may not have the event yet: only the
		// stream's leader can say it is gone.
		seq, err = w.firstAfterFinished(w.base, it, w.firstFromLeader)
	}
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return gone
	case err != nil:
		if w.base.Err() == nil {
			w.log.Warn("Conversation's next event not known; the event waits", logfields.EventID(it.ev.ID), zap.Error(err))
		}
		return notFirst
	case seq < it.seq:
		return notFirst
	case seq > it.seq:
		return gone
	}
	return first
}

// firstAfterFinished is the first event of it's conversation, asked with
// get, passing over those already finished (finishedAt).
func (w *Worker) firstAfterFinished(ctx context.Context, it *item, get func(context.Context, uint64, string) (earlier, error)) (uint64, error) {
	from := uint64(1)
	for range maxPassedOver {
		e, err := get(ctx, from, it.filter)
		if err != nil || e.seq >= it.seq || !w.finishedAt(ctx, e) {
			return e.seq, err
		}
		from = e.seq + 1
	}
	return from - 1, nil
}

// earlier is the first event of a conversation from some sequence on: its
// sequence and, when the answer carried its headers, its account and id.
type earlier struct {
	seq         uint64
	account, id string
}

// finishedAt reports whether an earlier event still in the stream is
// finished: this worker finished it a moment ago (its acknowledgement is on
// its way), or its record says every reply went out. An acknowledgement is
// lost when the consumer's leader is lost or moves as it is sent; the event
// then stays until its redelivery, after the ack wait, and without this its
// conversation would wait as long.
func (w *Worker) finishedAt(ctx context.Context, e earlier) bool {
	if w.sched.recentlyFinished(e.seq) {
		return true
	}
	if e.id == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	st, ok, err := w.state.load(ctx, e.account, e.id)
	if err != nil || !ok || !st.Done {
		return false
	}
	w.sched.finished(e.seq)
	return true
}

// lookupTimeout bounds each question a worker asks the region's streams
// about an event (where it stands in its conversation, what its record
// says). They take milliseconds; one a server took and never answered
// (seen after a region's leaders moved: 10 s, the handler timeout, before)
// is asked again, maybe of another replica: an event whose place is not
// known waits and asks again within a second (untilAnswered).
const lookupTimeout = time.Second

// maxPassedOver bounds the events a turn passes over as finished here.
const maxPassedOver = 16

// firstFrom is the sequence of the first message at or after from on
// filter. It asks any replica (a direct get) and, should none answer (a
// region's servers coming back: their direct-get responders return only
// once each is current), the stream's leader.
func (w *Worker) firstFrom(ctx context.Context, from uint64, filter string) (earlier, error) {
	dctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	m, err := w.events.GetMsg(dctx, from, jetstream.WithGetMsgSubject(filter))
	cancel()
	if err == nil {
		return earlier{seq: m.Sequence, account: m.Header.Get(proto.HeaderAccountID), id: m.Header.Get(proto.HeaderEventID)}, nil
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) || w.base.Err() != nil {
		return earlier{}, err
	}
	return w.firstFromLeader(ctx, from, filter)
}

// firstFromLeader asks the stream's leader (STREAM.MSG.GET), which has
// every message the stream acknowledged.
func (w *Worker) firstFromLeader(ctx context.Context, from uint64, filter string) (earlier, error) {
	req, err := json.Marshal(struct {
		Seq    uint64 `json:"seq"`
		NextBy string `json:"next_by_subj"`
	}{from, filter})
	if err != nil {
		return earlier{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	r, err := w.js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+proto.RegionEventsStream(w.opts.Region), req)
	if err != nil {
		return earlier{}, err
	}
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.Data, &resp); err != nil {
		return earlier{}, fmt.Errorf("stream message get: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		return earlier{}, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		return earlier{}, fmt.Errorf("stream message get: %d %s", resp.Error.Code, resp.Error.Description)
	case resp.Message == nil:
		return earlier{}, errors.New("stream message get: empty answer")
	}
	return earlier{seq: resp.Message.Seq}, nil
}
