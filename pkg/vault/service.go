package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/proto"
)

// Handover is what the ingress hands a region at install: an account's
// tokens, to keep. It travels in a NATS request, in memory only.
type Handover struct {
	AccountID string `json:"account_id"`
	Record
}

type answer struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// queue is the queue group of the regional vault services: one of a
// region's workers takes each handover.
const queue = "geomux-vault"

// Service takes handovers for a region's vault (proto.RegionVaultSubject).
type Service struct {
	vault *Vault
	sub   *nats.Subscription
	log   *zap.Logger
}

// Serve starts answering handovers for region.
func Serve(nc *nats.Conn, region string, v *Vault, log *zap.Logger) (*Service, error) {
	s := &Service{vault: v, log: log}
	sub, err := nc.QueueSubscribe(proto.RegionVaultSubject(region), queue, s.handle)
	if err != nil {
		return nil, fmt.Errorf("vault service of region %s: %w", region, err)
	}
	// The server has the subscription once it answers a ping: from then on
	// a handover finds this worker (a worker that says it is ready takes
	// them).
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("vault service of region %s: %w", region, err)
	}
	s.sub = sub
	return s, nil
}

// Stop stops taking handovers, finishing those in hand.
func (s *Service) Stop() error { return s.sub.Drain() }

func (s *Service) handle(m *nats.Msg) {
	var h Handover
	reply := func(err error) {
		a := answer{OK: err == nil}
		if err != nil {
			a.Error = err.Error()
		}
		b, _ := json.Marshal(a)
		_ = m.Respond(b)
	}
	if err := json.Unmarshal(m.Data, &h); err != nil || h.AccountID == "" || h.AccessToken == "" {
		reply(errors.New("vault: malformed handover"))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.vault.Put(ctx, h.AccountID, h.Record)
	if err != nil {
		s.log.Error("Tokens not stored", logfields.AccountID(h.AccountID), zap.Error(err))
	} else {
		s.log.Info("Tokens stored", logfields.AccountID(h.AccountID))
	}
	reply(err)
}

// ErrNoVault: no worker of the region answers handovers.
var ErrNoVault = errors.New("vault: no worker of the region is taking tokens (is it running, with a vault_key?)")

// Hand gives an account's tokens to a region's vault and waits until it has
// stored them.
func Hand(ctx context.Context, nc *nats.Conn, region string, h Handover) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	m, err := nc.RequestWithContext(ctx, proto.RegionVaultSubject(region), b)
	if errors.Is(err, nats.ErrNoResponders) {
		return ErrNoVault
	}
	if err != nil {
		return fmt.Errorf("vault: hand tokens to region %s: %w", region, err)
	}
	var a answer
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return fmt.Errorf("vault: region %s answered nonsense", region)
	}
	if !a.OK {
		return fmt.Errorf("region %s: %s", region, a.Error)
	}
	return nil
}
