package workers

import (
	"context"
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

// send sends the replies of st not yet sent, recording each one sent before
// the next.
func (w *Worker) send(ev Event, start time.Time, st *replyState) error {
	if st.Sent >= len(st.Messages) {
		return nil
	}
	bot, err := w.bot(ev.App)
	if err != nil {
		return err
	}
	chat, _ := zoom.ParseChat(ev.Body)
	toJID, userJID := chat.ReplyTo(bot.BotJID)
	limited := 0
	for st.Sent < len(st.Messages) {
		cm := st.Messages[st.Sent]
		zm := zoom.Message{
			RobotJID: bot.BotJID, AccountID: ev.AccountID,
			ToJID: cm.ToJID, UserJID: cm.UserJID,
			Content: cm.Content, IsMarkdownSupport: cm.IsMarkdownSupport,
			VisibleToUser: cm.VisibleToUser, ReplyTo: cm.ReplyTo,
		}
		if zm.ToJID == "" {
			zm.ToJID = toJID
		}
		if zm.UserJID == "" {
			zm.UserJID = userJID
		}
		if err := zm.Check(); err != nil {
			return fmt.Errorf("%w: reply %d of %s: %v", retry.ErrPermanent, st.Sent, ev.Type, err)
		}
		if err := w.pace.wait(w.base, ev.AccountID); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(w.base, w.opts.HandlerTimeout)
		sent, err := bot.Zoom.SendMessage(ctx, zm)
		cancel()
		var se *retry.StatusError
		switch {
		case err == nil:
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
			continue
		default:
			return err
		}
		limited = 0
		w.pace.sent(ev.AccountID)
		st.Sent++
		st.MessageIDs = append(st.MessageIDs, sent.MessageID)
		w.metrics.Replied.WithLabelValues(w.opts.Region, ev.App).Inc()
		if ce := w.log.Check(zap.DebugLevel, "Reply sent"); ce != nil {
			ce.Write(logfields.EventID(ev.ID), logfields.AccountID(ev.AccountID), logfields.MessageID(sent.MessageID))
		}
		rec := *st
		if st.Sent == len(st.Messages) {
			// Finished: keep that it was, not what was said.
			rec = replyState{Sent: st.Sent, MessageIDs: st.MessageIDs, Done: true}
		}
		w.saveState(start, ev.AccountID, ev.ID, rec, nil)
	}
	return nil
}
