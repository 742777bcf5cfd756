package workers

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// deadLetter stores the event in the region's dead-letter stream with why it
// failed, then terminates it, which releases its conversation: the events
// after it go on, and its dead letter says it was skipped over. If the dead
// letter cannot be stored the event is retried instead: it is never dropped.
func (w *Worker) deadLetter(it *item, reason string, cause error, attempts int, fields []zap.Field) outcome {
	m, md := it.msg(), it.meta()
	f := dlq.Failure{Reason: reason, Attempts: max(attempts, 1), FirstAttempt: md.Timestamp, LastAttempt: time.Now(), SkippedOver: true}
	f.Error, f.Status = dlq.Describe(cause)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.base), 5*time.Second)
	defer cancel()
	if _, err := w.js.PublishMsg(ctx, dlq.NewMsg(w.opts.Region, m.Data(), m.Headers(), md.Sequence.Stream, f)); err != nil {
		// The dead-letter stream may be full (worker.dead_letter_max_bytes)
		// or away: the event stays, and holds its conversation, until its
		// dead letter can be stored.
		delay := w.opts.Retry.BackoffFor(max(attempts, 1))
		w.log.Error("Dead letter not stored; will retry the event", append(fields, logfields.Delay(delay), zap.Error(err))...)
		_ = m.NakWithDelay(delay)
		return outcome{verdict: retrying, after: delay}
	}
	if err := m.TermWithReason(reason); err != nil {
		w.log.Warn("Terminate failed after dead-lettering", append(fields, zap.Error(err))...)
	}
	w.metrics.Handled.WithLabelValues(w.opts.Region, "dead").Inc()
	w.metrics.Failed.WithLabelValues(w.opts.Region, reason).Inc()
	w.log.Error("Event dead-lettered", append(fields, logfields.Reason(reason), zap.Error(cause))...)
	return outcome{verdict: finished}
}
