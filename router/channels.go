package router

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/proto"
)

// Events that name no account.
//
// Zoom leaves payload.account_id empty on an external user's app mention
// (by_external_user). Such an event still belongs to the account that
// installed the app in that channel: the router learns which account owns
// each channel from the events that name both (team_chat.channel_app_added,
// an internal user's mention, ...; the channel's key is proto.HeaderChannel)
// and routes an event that names no account as its channel's. Until its
// channel's account is known, the event is parked under its channel
// (proto.ParkedChannelSubject, reason no_account) and routed once it is.

// channelAccount is the account of an event that names none, from its
// channel ("" when none is known), and sets the event's header to it. An
// error says the record cannot be read now.
func (r *Router) channelAccount(h nats.Header) (string, error) {
	channel := h.Get(proto.HeaderChannel)
	if r.opts.Channels == nil || !proto.ValidChannelKey(channel) {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	account, ok, err := r.opts.Channels.Account(ctx, channel)
	if err != nil {
		r.failLog.Warn("Channel's account not read; will retry", zap.Error(err))
		return "", err
	}
	if !ok {
		return "", nil
	}
	h.Set(proto.HeaderAccountID, account)
	return account, nil
}

// learnChannel records that account owns channel, if that is news, and
// then routes the events parked under the channel.
func (r *Router) learnChannel(channel, account string) {
	c := r.opts.Channels
	if c == nil || account == "" || c.Knows(channel, account) {
		return
	}
	r.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		news, err := c.Learn(ctx, channel, account)
		if err != nil {
			r.log.Warn("Channel's account not recorded", logfields.AccountID(account), zap.Error(err))
			return
		}
		if news {
			r.unpark.requestChannel(channel)
		}
	})
}

// forgetChannels erases the channel records of an uninstalled account.
func (r *Router) forgetChannels(account, id string) {
	c := r.opts.Channels
	if c == nil {
		return
	}
	r.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n, err := c.Forget(ctx, account)
		if err != nil {
			r.log.Warn("Channel records of an uninstalled account not erased", logfields.EventID(id), logfields.AccountID(account), zap.Error(err))
			return
		}
		if n > 0 {
			r.log.Info("Channel records of an uninstalled account erased", logfields.EventID(id), logfields.AccountID(account), logfields.Count(n))
		}
	})
}
