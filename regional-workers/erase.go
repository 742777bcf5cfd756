package workers

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// erase deletes what geomux keeps of an account in its region, when Zoom
// says the app was uninstalled (app_deauthorized): its tokens, its dead
// letters, its reply records, its Zoom pace, and only then its directory entry. It records
// what it erased (no content) in the region's audit stream. Each step is
// idempotent: Zoom may send the event twice, and a failed attempt is retried.
func (w *Worker) erase(ctx context.Context, account string, uninstalled time.Time) error {
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
	if err := w.pace.forget(ctx, account); err != nil {
		return fmt.Errorf("erase the account's pace: %w", err)
	}
	if w.opts.Directory != nil {
		if err := w.opts.Directory.Delete(ctx, account); err != nil {
			return fmt.Errorf("remove from the directory: %w", err)
		}
		e.Directory = true
	}
	if err := w.dlq.Record(ctx, dlq.Action{
		Action: "erase", Operator: "geomux (app_deauthorized)", At: time.Now().UTC(),
		Selection: "account " + account, Account: account, Erased: &e,
	}); err != nil {
		return err
	}
	w.log.Info("Uninstalled account erased", logfields.AccountID(account), zap.Bool("tokens", e.Tokens),
		zap.Int("dead_letters", e.DeadLetters), zap.Int("reply_records", e.ReplyRecords), zap.Bool("directory", e.Directory))
	return nil
}
