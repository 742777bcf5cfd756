package workers

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/natsx"
)

// saveState records an event's state. It runs even when the attempt's
// context has expired: the record is what keeps a retry from sending twice.
func (w *Worker) saveState(start time.Time, account, id string, st replyState, fields []zap.Field) {
	if err := w.settle(func(ctx context.Context) error { return w.state.save(ctx, account, id, st) }); err != nil {
		if fields == nil {
			fields = []zap.Field{logfields.EventID(id)}
		}
		w.log.Error("Reply state not recorded; a redelivery may repeat replies", append(fields, zap.Error(err))...)
	}
}

// settle does f, which records what became of an event or acknowledges it,
// until it succeeds, retrying while NATS does not answer (a region's
// servers restarting, a leader election): what it records is what keeps a
// redelivery from asking the backend and sending the replies again. It
// keeps trying through an outage of the region's servers (settleFor;
// keepInHand keeps the event from being redelivered meanwhile, and a
// redelivery that comes anyway joins the event in hand), and gives up on an
// error that will not pass, or when a stop gives up.
func (w *Worker) settle(f func(context.Context) error) error {
	// The try running when a stop comes goes on: it may be the record.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.base), settleFor+settleAttempt)
	defer cancel()
	return untilAnswered(ctx, w.base.Done(), settleAttempt, f)
}

// untilAnswered does f, each try bounded by perTry, until it succeeds, its
// error will not pass (natsx.Transient: NATS did not answer), ctx ends or
// stop closes, waiting 50 ms between tries, doubling up to a second. A
// request a server took and never answered (seen after a region's leaders
// moved) is made again, maybe of another replica, rather than waited on.
func untilAnswered(ctx context.Context, stop <-chan struct{}, perTry time.Duration, f func(context.Context) error) error {
	wait := 50 * time.Millisecond
	for {
		tctx, cancel := context.WithTimeout(ctx, perTry)
		err := f(tctx)
		cancel()
		if err == nil || !natsx.Transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		case <-stop:
			return err
		}
		wait = min(2*wait, time.Second)
	}
}

// settleAttempt bounds one attempt of settle (a write takes milliseconds;
// one a server took and never answered is made again); settleFor is how
// long settle keeps trying, long enough for a region's servers to restart
// or elect new leaders.
const (
	settleAttempt = 2 * time.Second
	settleFor     = time.Minute
)
