package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/proto"
)

// Serve starts a region's vault service (proto.VaultService): it keeps the
// tokens an install hands over (HandOver). Stop it with its Stop, which
// finishes the handovers in hand.
func Serve(nc *nats.Conn, region string, v *Vault, log *zap.Logger) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        proto.VaultService,
		Version:     proto.ServicesVersion,
		Description: "geomux: keeps the tokens an install hands region " + region,
		Metadata:    map[string]string{"region": region},
		QueueGroup:  proto.VaultService,
		Endpoint: &micro.EndpointConfig{
			Subject: proto.RegionVaultSubject(region),
			Handler: micro.HandlerFunc(func(req micro.Request) { keep(req, v, log) }),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("vault service of region %s: %w", region, err)
	}
	// The server has the subscription once it answers a ping: from then on
	// a handover finds this worker (a worker that says it is ready takes
	// them).
	if err := nc.Flush(); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("vault service of region %s: %w", region, err)
	}
	return svc, nil
}

// keep stores a handover's tokens and says whether it did.
func keep(req micro.Request, v *Vault, log *zap.Logger) {
	var h proto.TokenHandover
	reply := func(err error) {
		a := proto.VaultReply{OK: err == nil}
		if err != nil {
			a.Error = err.Error()
		}
		_ = req.RespondJSON(a)
	}
	if err := json.Unmarshal(req.Data(), &h); err != nil || h.AccountID == "" || h.AccessToken == "" {
		reply(errors.New("vault: malformed handover"))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := v.Put(ctx, h.AccountID, Record{Tokens: h.Tokens, UserID: h.UserID})
	if err != nil {
		log.Error("Tokens not stored", logfields.AccountID(h.AccountID), zap.Error(err))
	} else {
		log.Info("Tokens stored", logfields.AccountID(h.AccountID))
	}
	reply(err)
}

// ErrNoVault: no worker of the region answers handovers.
var ErrNoVault = errors.New("vault: no worker of the region is taking tokens (is it running, with a vault_key?)")

// HandOver gives an account's tokens to its region's vault service and
// waits until it has stored them.
func HandOver(ctx context.Context, nc *nats.Conn, region string, h proto.TokenHandover) error {
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
	var a proto.VaultReply
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return fmt.Errorf("vault: region %s answered nonsense", region)
	}
	if !a.OK {
		return fmt.Errorf("region %s: %s", region, a.Error)
	}
	return nil
}
