package directory

import (
	"context"
	"encoding/json"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

// Remover removes an uninstalled account from the directory, once its
// region has erased what it held of it: the uninstall's last step.
// RemoveHere and AskHub are the two ways.
type Remover interface {
	Remove(ctx context.Context, account string) error
}

// RemoveHere removes accounts from the directory on the region's NATS,
// when the region shares the hub's (the one NATS of the one-machine
// default).
type RemoveHere struct {
	JS      jetstream.JetStream
	Options topology.Options
}

// Remove erases the account's record and its history.
func (r RemoveHere) Remove(ctx context.Context, account string) error {
	dir, err := Open(ctx, r.JS, r.Options)
	if err != nil {
		return err
	}
	return dir.Purge(ctx, account)
}

// AskHub asks the hub, through the region's control stream, to remove an
// account from the directory: for a region with a NATS of its own, whose
// credentials cannot write the hub's directory. The router carries the
// request out (its region links).
type AskHub struct {
	JS     jetstream.JetStream
	Region string
}

// Remove stores the request in the region's control stream.
func (a AskHub) Remove(ctx context.Context, account string) error {
	b, err := json.Marshal(proto.ControlRequest{RemoveAccount: account})
	if err != nil {
		return err
	}
	_, err = a.JS.Publish(ctx, proto.RegionControlSubject(a.Region), b)
	return err
}
