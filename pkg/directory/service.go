package directory

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

// Store is what the install flow needs of the directory. *Directory is one,
// for a process that holds the directory; Remote is one, for an ingress that
// must not (its credentials cannot write the directory's bucket, so that a
// compromised ingress cannot move accounts between regions).
type Store interface {
	Get(ctx context.Context, account string) (proto.AccountRecord, error)
	// Create records a region only for an account without one (ErrExists).
	Create(ctx context.Context, rec proto.AccountRecord) (uint64, error)
	// Refresh updates the record of an account already in rec.Region (its
	// api_url); it never moves an account (ErrExists if in another region).
	Refresh(ctx context.Context, rec proto.AccountRecord) error
	// DeleteAt removes a record still at revision rev.
	DeleteAt(ctx context.Context, account string, rev uint64) error
}

// Refresh updates rec if the account is already in rec.Region.
func (d *Directory) Refresh(ctx context.Context, rec proto.AccountRecord) error {
	e, err := d.kv.Get(ctx, rec.AccountID)
	if err != nil {
		return fmt.Errorf("directory: refresh %s: %w", rec.AccountID, err)
	}
	cur, err := decode(e.Key(), e.Value())
	if err != nil {
		return err
	}
	if cur.Region != rec.Region {
		return ErrExists
	}
	rec.UpdatedAt = d.now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = d.kv.Update(ctx, rec.AccountID, b, e.Revision())
	return err
}

// request is a Remote call.
type request struct {
	Op     string              `json:"op"` // get, create, refresh, delete_at
	Record proto.AccountRecord `json:"record"`
	Rev    uint64              `json:"rev,omitempty"`
}

type reply struct {
	Record *proto.AccountRecord `json:"record,omitempty"`
	Rev    uint64               `json:"rev,omitempty"`
	Error  string               `json:"error,omitempty"`
	Code   string               `json:"code,omitempty"` // not_found, exists
}

// Serve answers Remote calls (proto.DirectorySubject) from d: the router's
// side of the install flow.
func Serve(nc *nats.Conn, d *Directory, log *zap.Logger) (*nats.Subscription, error) {
	return nc.QueueSubscribe(proto.DirectorySubject, "geomux-directory", func(m *nats.Msg) {
		var req request
		var rep reply
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := json.Unmarshal(m.Data, &req)
		if err == nil {
			switch req.Op {
			case "get":
				var rec proto.AccountRecord
				if rec, err = d.Get(ctx, req.Record.AccountID); err == nil {
					rep.Record = &rec
				}
			case "create":
				rep.Rev, err = d.Create(ctx, req.Record)
			case "refresh":
				err = d.Refresh(ctx, req.Record)
			case "delete_at":
				err = d.DeleteAt(ctx, req.Record.AccountID, req.Rev)
			default:
				err = errors.New("unknown directory operation")
			}
		}
		switch {
		case errors.Is(err, ErrNotFound):
			rep.Code = "not_found"
		case errors.Is(err, ErrExists):
			rep.Code = "exists"
		case err != nil:
			rep.Error = err.Error()
			log.Warn("Directory request failed", logfields.AccountID(req.Record.AccountID), zap.Error(err))
		}
		b, _ := json.Marshal(rep)
		_ = m.Respond(b)
	})
}

// Remote is the directory as the ingress sees it: requests to the router,
// which alone writes the directory.
type Remote struct{ Conn *nats.Conn }

func (r Remote) call(ctx context.Context, req request) (reply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return reply{}, err
	}
	m, err := r.Conn.RequestWithContext(ctx, proto.DirectorySubject, b)
	if err != nil {
		return reply{}, fmt.Errorf("directory: ask the router: %w", err)
	}
	var rep reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return reply{}, errors.New("directory: the router answered nonsense")
	}
	switch {
	case rep.Code == "not_found":
		return rep, ErrNotFound
	case rep.Code == "exists":
		return rep, ErrExists
	case rep.Error != "":
		return rep, errors.New(rep.Error)
	}
	return rep, nil
}

// Get reads an account's record.
func (r Remote) Get(ctx context.Context, account string) (proto.AccountRecord, error) {
	rep, err := r.call(ctx, request{Op: "get", Record: proto.AccountRecord{AccountID: account}})
	if err != nil || rep.Record == nil {
		return proto.AccountRecord{}, err
	}
	return *rep.Record, nil
}

// Create records a region for an account without one.
func (r Remote) Create(ctx context.Context, rec proto.AccountRecord) (uint64, error) {
	rep, err := r.call(ctx, request{Op: "create", Record: rec})
	return rep.Rev, err
}

// Refresh updates the record of an account already in rec.Region.
func (r Remote) Refresh(ctx context.Context, rec proto.AccountRecord) error {
	_, err := r.call(ctx, request{Op: "refresh", Record: rec})
	return err
}

// DeleteAt removes a record still at revision rev.
func (r Remote) DeleteAt(ctx context.Context, account string, rev uint64) error {
	_, err := r.call(ctx, request{Op: "delete_at", Record: proto.AccountRecord{AccountID: account}, Rev: rev})
	return err
}
