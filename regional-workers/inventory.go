package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// The region's answer to "what do you hold of this account?"
// (proto.RegionInventorySubject): counts, read in the region, so that an
// operator or a compliance officer can show that an erase was complete
// without any content leaving the region.

// answerInventory answers one request (the region service's inventory
// endpoint).
func (w *Worker) answerInventory(m micro.Request) {
	var a proto.InventoryAnswer
	var req proto.InventoryRequest
	if err := json.Unmarshal(m.Data(), &req); err != nil || !proto.ValidAccountID(req.AccountID) {
		a.Error = "the request names no valid account id"
	} else {
		// Under the asker's 8 s; a store that does not answer for a moment
		// (its leader moving) is asked again.
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		defer cancel()
		err := untilAnswered(ctx, nil, 3*time.Second, func(ctx context.Context) (err error) {
			a.Inventory, err = w.inventory(ctx, req.AccountID)
			return err
		})
		if err != nil {
			w.log.Warn("Inventory not read", logfields.AccountID(req.AccountID), zap.Error(err))
			a.Error = "the region's stores could not all be read: " + err.Error()
		}
	}
	_ = m.RespondJSON(a)
}

// inventory counts what the region holds of an account.
func (w *Worker) inventory(ctx context.Context, account string) (proto.Inventory, error) {
	var inv proto.Inventory
	var err error
	// The audit first: an erase records itself last, so when the count
	// shows it, everything counted after was counted after the erase (an
	// erase running meanwhile cannot show as recorded with its data still
	// there).
	history, err := w.dlq.History(ctx)
	if err != nil {
		return inv, fmt.Errorf("audit: %w", err)
	}
	for _, a := range history {
		if a.Names(account) {
			inv.AuditEntries++
		}
	}
	if inv.Tokens, err = w.holdsTokens(ctx, account); err != nil {
		return inv, err
	}
	dead, err := w.dlq.List(ctx, dlq.Filter{Account: account})
	if err != nil {
		return inv, fmt.Errorf("dead letters: %w", err)
	}
	inv.DeadLetters = len(dead)
	if inv.ReplyRecords, err = w.state.count(ctx, account); err != nil {
		return inv, fmt.Errorf("reply records: %w", err)
	}
	if inv.Pace, err = w.pace.kept(ctx, account); err != nil {
		return inv, fmt.Errorf("pace: %w", err)
	}
	st, err := w.js.Stream(ctx, proto.RegionEventsStream(w.opts.Region))
	if err != nil {
		return inv, fmt.Errorf("events: %w", err)
	}
	if inv.ParkedEvents, err = countSubjects(ctx, st, proto.RegionAccountEventsFilter(w.opts.Region, account)); err != nil {
		return inv, fmt.Errorf("events: %w", err)
	}
	return inv, nil
}

// holdsTokens reports whether the region's vault holds tokens of the
// account, even when this worker has no vault key to open it with.
func (w *Worker) holdsTokens(ctx context.Context, account string) (bool, error) {
	if w.vault != nil {
		return w.vault.Holds(ctx, account)
	}
	kv, err := w.js.KeyValue(ctx, proto.RegionVaultBucket(w.opts.Region))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("vault: %w", err)
	}
	_, err = kv.Get(ctx, account)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}
