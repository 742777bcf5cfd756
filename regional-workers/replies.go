package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/zoom"
)

// Sending the replies: each at its account's pace (pace.go), each recorded
// before the next (state.go), so that a retry, a redelivery or a restart
// sends each reply once.

// heldError is a send refused because Zoom holds the account's messages
// until its daily limit resets.
type heldError struct{ until time.Time }

func (e *heldError) Error() string {
	return "zoom: the account's daily message limit is reached until " + e.until.UTC().Format(time.RFC3339)
}

// maxRateLimited is how many per-second 429s in a row one reply may get
// before the attempt fails: Zoom answering 429 whatever the pace is a
// failure like another.
const maxRateLimited = 10

// send sends the replies of st not yet sent, then does its other actions
// (edits, deletes, unfurls), recording each one done before the next.
func (w *Worker) send(ctx context.Context, ev Event, start time.Time, st *replyState) error {
	if st.finished() {
		return nil
	}
	bot, err := w.bot(ev.App)
	if err != nil {
		return err
	}
	chat, _ := zoom.ParseChat(ev.Body)
	toJID, userJID := chat.ReplyTo(bot.BotJID)
	for st.Sent < len(st.Messages) {
		cm := st.Messages[st.Sent]
		zm := zoom.Message{RobotJID: bot.BotJID, AccountID: ev.AccountID, ChatMessage: cm}
		if zm.ToJID == "" {
			zm.ToJID = toJID
		}
		if zm.UserJID == "" {
			zm.UserJID = userJID
		}
		if err := zm.Check(); err != nil {
			return fmt.Errorf("%w: reply %d of %s: %v", retry.ErrPermanent, st.Sent, ev.Type, err)
		}
		var sent zoom.Sent
		if err := w.paced(ctx, ev, func(ctx context.Context) (err error) {
			sent, err = bot.Zoom.SendMessage(ctx, zm)
			return err
		}); err != nil {
			return err
		}
		st.Sent++
		st.MessageIDs = append(st.MessageIDs, sent.MessageID)
		w.metrics.Replied.WithLabelValues(w.opts.Region, ev.App).Inc()
		if ce := w.log.Check(zap.DebugLevel, "Reply sent"); ce != nil {
			ce.Write(logfields.EventID(ev.ID), logfields.AccountID(ev.AccountID), logfields.MessageID(sent.MessageID))
		}
		w.record(ev, start, st)
	}
	for st.Acted < st.actions() {
		act, err := st.action(st.Acted, ev, bot, chat)
		if err != nil {
			return fmt.Errorf("%w: %v", retry.ErrPermanent, err)
		}
		if err := w.paced(ctx, ev, act); err != nil {
			return err
		}
		st.Acted++
		w.record(ev, start, st)
	}
	return nil
}

// record saves st after one more message or action went out; once all
// have, it keeps that they did, not what was said.
func (w *Worker) record(ev Event, start time.Time, st *replyState) {
	rec := *st
	if st.finished() {
		rec = replyState{Sent: st.Sent, MessageIDs: st.MessageIDs, Acted: st.Acted, Done: true}
	}
	w.saveState(start, ev.AccountID, ev.ID, rec, nil)
}

// action is the i-th action of st after its messages (edits, then deletes,
// then unfurls), as a call to Zoom with the app's chatbot token; an error
// names a field Zoom requires that neither the answer nor the event gives.
func (st *replyState) action(i int, ev Event, bot App, chat zoom.Chat) (func(context.Context) error, error) {
	orEvent := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	if i < len(st.Edits) {
		e := st.Edits[i]
		id := orEvent(e.MessageID, chat.MessageID)
		if id == "" {
			return nil, fmt.Errorf("edits[%d] has no message_id and %s names no message (payload.messageId)", i, ev.Type)
		}
		z := zoom.Edit{MessageID: id, RobotJID: bot.BotJID, AccountID: ev.AccountID, UserJID: e.UserJID, Content: e.Content, IsMarkdownSupport: e.IsMarkdownSupport}
		return func(ctx context.Context) error { return bot.Zoom.EditMessage(ctx, z) }, nil
	}
	i -= len(st.Edits)
	if i < len(st.Deletes) {
		d := st.Deletes[i]
		id := orEvent(d.MessageID, chat.MessageID)
		if id == "" {
			return nil, fmt.Errorf("deletes[%d] has no message_id and %s names no message (payload.messageId)", i, ev.Type)
		}
		return func(ctx context.Context) error {
			return bot.Zoom.DeleteMessage(ctx, id, ev.AccountID, bot.BotJID, d.UserJID)
		}, nil
	}
	i -= len(st.Deletes)
	u := st.Unfurls[i]
	user, trigger := orEvent(u.UserID, chat.UnfurlUserID), orEvent(u.TriggerID, chat.UnfurlTriggerID)
	if user == "" || trigger == "" {
		return nil, fmt.Errorf("unfurls[%d] has no user_id and trigger_id and %s is no shared link (response_url)", i, ev.Type)
	}
	body, err := json.Marshal(map[string]json.RawMessage{"content": u.Content})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return bot.Zoom.Unfurl(ctx, user, trigger, body) }, nil
}

// paced makes one call to Zoom's chatbot API at the account's pace:
// Zoom's per-second 429s slow the account down and the call is made again
// (up to maxRateLimited in a row); its daily-limit 429 holds the account.
func (w *Worker) paced(ctx context.Context, ev Event, call func(context.Context) error) error {
	for limited := 0; ; {
		if err := w.pace.wait(ctx, ev.AccountID); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, w.opts.HandlerTimeout)
		err := call(cctx)
		cancel()
		var se *retry.StatusError
		switch {
		case err == nil:
			w.pace.sent(ev.AccountID)
			return nil
		case errors.As(err, &se) && se.DailyLimit():
			wait := se.RetryAfter
			if wait <= 0 {
				wait = time.Minute // Zoom names the reset; without it, look again soon
			}
			until := time.Now().Add(wait)
			w.pace.hold(ev.AccountID, until)
			return &heldError{until: until}
		case errors.As(err, &se) && se.StatusCode == http.StatusTooManyRequests && limited < maxRateLimited:
			limited++
			w.pace.limited(ev.AccountID, se.RetryAfter)
		default:
			return err
		}
	}
}
