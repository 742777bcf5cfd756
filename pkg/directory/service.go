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
	"github.com/geomux/geomux/pkg/vault"
	"github.com/geomux/geomux/proto"
)

// Recorder is what the install flow needs of the directory. Installer is
// one, where the process holds the directory (and reaches the regions);
// Remote is one, for an ingress that does not: it asks the router, so that
// its credentials can write neither the directory nor the regions' vaults.
type Recorder interface {
	Get(ctx context.Context, account string) (proto.AccountRecord, error)
	// Install records rec (an account and its region) and hands the
	// account's tokens to that region, or returns a *ConflictError if the
	// account lives in another region. The directory entry is created
	// first, only if the account has none (so that two installs racing into
	// two regions cannot both win), and removed again if the handover fails.
	Install(ctx context.Context, rec proto.AccountRecord, h vault.Handover) error
}

// ConflictError: the account already lives in another region.
type ConflictError struct{ Region string }

func (e *ConflictError) Error() string { return "directory: account already in region " + e.Region }

// Is makes errors.Is(err, ErrExists) hold.
func (e *ConflictError) Is(target error) bool { return target == ErrExists }

// Handoff gives an account's tokens to a region, which alone stores them.
type Handoff func(ctx context.Context, region string, h vault.Handover) error

// Installer is the Recorder of a process that holds the directory.
type Installer struct {
	Dir     *Directory
	Handoff Handoff
}

// Get reads an account's record.
func (i Installer) Get(ctx context.Context, account string) (proto.AccountRecord, error) {
	return i.Dir.Get(ctx, account)
}

// Install records the account in its region; see Recorder.
func (i Installer) Install(ctx context.Context, rec proto.AccountRecord, h vault.Handover) error {
	rev, err := i.Dir.Create(ctx, rec)
	reserved := err == nil
	if errors.Is(err, ErrExists) {
		cur, gerr := i.Dir.Get(ctx, rec.AccountID)
		switch {
		case gerr != nil:
			return gerr
		case cur.Region != rec.Region:
			return &ConflictError{Region: cur.Region}
		}
		err = nil // a reinstall into the same region: fresh tokens
	}
	if err != nil {
		return err
	}
	if err := i.Handoff(ctx, rec.Region, h); err != nil {
		if reserved {
			// Undo the reservation, unless something changed it since.
			_ = i.Dir.DeleteAt(context.WithoutCancel(ctx), rec.AccountID, rev)
		}
		return err
	}
	if !reserved { // keep the api_url of the newest install
		return i.Dir.Refresh(ctx, rec)
	}
	return nil
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
	Op       string              `json:"op"` // get, install
	Record   proto.AccountRecord `json:"record"`
	Handover *vault.Handover     `json:"handover,omitempty"`
}

type reply struct {
	Record *proto.AccountRecord `json:"record,omitempty"`
	Error  string               `json:"error,omitempty"`
	Code   string               `json:"code,omitempty"` // not_found, conflict
	Region string               `json:"region,omitempty"`
}

// Serve answers Remote calls (proto.DirectorySubject) with inst: the
// router's side of the install flow.
func Serve(nc *nats.Conn, inst Installer, log *zap.Logger) (*nats.Subscription, error) {
	sub, err := nc.QueueSubscribe(proto.DirectorySubject, "geomux-directory", func(m *nats.Msg) {
		var req request
		var rep reply
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		err := json.Unmarshal(m.Data, &req)
		if err == nil {
			switch {
			case req.Op == "get":
				var rec proto.AccountRecord
				if rec, err = inst.Get(ctx, req.Record.AccountID); err == nil {
					rep.Record = &rec
				}
			case req.Op == "install" && req.Handover != nil && req.Handover.AccountID == req.Record.AccountID:
				err = inst.Install(ctx, req.Record, *req.Handover)
			default:
				err = errors.New("unknown directory operation")
			}
		}
		var ce *ConflictError
		switch {
		case errors.Is(err, ErrNotFound):
			rep.Code = "not_found"
		case errors.As(err, &ce):
			rep.Code, rep.Region = "conflict", ce.Region
		case err != nil:
			// Said without details: the ingress shows a "try again" page.
			rep.Error = "the router could not record the installation"
			log.Warn("Directory request failed", logfields.AccountID(req.Record.AccountID), zap.Error(err))
		}
		b, _ := json.Marshal(rep)
		_ = m.Respond(b)
	})
	if err != nil {
		return nil, err
	}
	// Once the server answers a ping it has the subscription: the
	// ingress's requests find the router from then on.
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub, nil
}

// Remote is the directory as an ingress without it sees it: requests to the
// router.
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
	case rep.Code == "conflict":
		return rep, &ConflictError{Region: rep.Region}
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

// Install asks the router to record the account and hand its tokens over.
func (r Remote) Install(ctx context.Context, rec proto.AccountRecord, h vault.Handover) error {
	_, err := r.call(ctx, request{Op: "install", Record: rec, Handover: &h})
	return err
}
