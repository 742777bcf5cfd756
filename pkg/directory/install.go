package directory

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
	"github.com/geomux/geomux/pkg/vault"
	"github.com/geomux/geomux/proto"
)

// An install records an account's region in the directory and hands the
// account's tokens over to that region's vault (proto.TokenHandover,
// vault.HandOver); an uninstall erases what the regions hold and removes
// the account from the directory (uninstall.go). Both are here.

// Installer is what the install flow needs of the directory. Local is one,
// where the process holds the directory (and reaches the regions); Remote
// is one, for an ingress that does not: it asks the router's directory
// service, so that its credentials can write neither the directory nor the
// regions' vaults.
type Installer interface {
	Get(ctx context.Context, account string) (proto.AccountRecord, error)
	// Install records rec (an account and its region) and hands the
	// account's tokens over to that region, or returns a *ConflictError if
	// the account lives in another region. The directory entry is created
	// first, only if the account has none (so that two installs racing into
	// two regions cannot both win), and removed again if the handover fails.
	Install(ctx context.Context, rec proto.AccountRecord, h proto.TokenHandover) error
}

// ConflictError: the account already lives in another region.
type ConflictError struct{ Region string }

func (e *ConflictError) Error() string { return "directory: account already in region " + e.Region }

// Is makes errors.Is(err, ErrExists) hold.
func (e *ConflictError) Is(target error) bool { return target == ErrExists }

// HandOverFunc hands an account's tokens over to a region, which alone
// stores them.
type HandOverFunc func(ctx context.Context, region string, h proto.TokenHandover) error

// HandOverTo hands tokens over to the regions' vaults, each over its own
// connection (vault.HandOver).
func HandOverTo(regions map[string]*nats.Conn) HandOverFunc {
	return func(ctx context.Context, region string, h proto.TokenHandover) error {
		nc, ok := regions[region]
		if !ok {
			return fmt.Errorf("region %s is not configured", region)
		}
		return vault.HandOver(ctx, nc, region, h)
	}
}

// Local is the Installer of a process that holds the directory.
type Local struct {
	Dir      *Directory
	HandOver HandOverFunc
}

// Get reads an account's record.
func (i Local) Get(ctx context.Context, account string) (proto.AccountRecord, error) {
	return i.Dir.Get(ctx, account)
}

// Install records the account in its region; see Installer.
func (i Local) Install(ctx context.Context, rec proto.AccountRecord, h proto.TokenHandover) error {
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
	if err := i.HandOver(ctx, rec.Region, h); err != nil {
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

// Serve starts the directory service (proto.DirectoryService): it answers
// Remote's requests with inst, the router's side of the install flow.
func Serve(nc *nats.Conn, inst Local, log *zap.Logger) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        proto.DirectoryService,
		Version:     proto.ServicesVersion,
		Description: "geomux: the account directory, for an ingress that does not hold it",
		QueueGroup:  proto.DirectoryService,
		Endpoint: &micro.EndpointConfig{
			Subject: proto.DirectorySubject,
			Handler: micro.HandlerFunc(func(req micro.Request) { _ = req.RespondJSON(answer(req.Data(), inst, log)) }),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("directory service: %w", err)
	}
	// Once the server answers a ping it has the subscription: the
	// ingress's requests find the router from then on.
	if err := nc.Flush(); err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}

// answer carries out one directory request.
func answer(data []byte, inst Local, log *zap.Logger) proto.DirectoryReply {
	var req proto.DirectoryRequest
	var rep proto.DirectoryReply
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := json.Unmarshal(data, &req)
	if err == nil {
		switch {
		case req.Op == proto.DirectoryGet:
			var rec proto.AccountRecord
			if rec, err = inst.Get(ctx, req.Record.AccountID); err == nil {
				rep.Record = &rec
			}
		case req.Op == proto.DirectoryInstall && req.Handover != nil && req.Handover.AccountID == req.Record.AccountID:
			err = inst.Install(ctx, req.Record, *req.Handover)
		default:
			err = errors.New("unknown directory operation")
		}
	}
	var ce *ConflictError
	switch {
	case errors.Is(err, ErrNotFound):
		rep.Code = proto.DirectoryNotFound
	case errors.As(err, &ce):
		rep.Code, rep.Region = proto.DirectoryConflict, ce.Region
	case err != nil:
		// Said without details: the ingress shows a "try again" page.
		rep.Error = "the router could not record the installation"
		log.Warn("Directory request failed", logfields.AccountID(req.Record.AccountID), zap.Error(err))
	}
	return rep
}

// Remote is the directory as an ingress without it sees it: requests to the
// router.
type Remote struct{ Conn *nats.Conn }

func (r Remote) call(ctx context.Context, req proto.DirectoryRequest) (proto.DirectoryReply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return proto.DirectoryReply{}, err
	}
	m, err := r.Conn.RequestWithContext(ctx, proto.DirectorySubject, b)
	if err != nil {
		return proto.DirectoryReply{}, fmt.Errorf("directory: ask the router: %w", err)
	}
	var rep proto.DirectoryReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return proto.DirectoryReply{}, errors.New("directory: the router answered nonsense")
	}
	switch {
	case rep.Code == proto.DirectoryNotFound:
		return rep, ErrNotFound
	case rep.Code == proto.DirectoryConflict:
		return rep, &ConflictError{Region: rep.Region}
	case rep.Error != "":
		return rep, errors.New(rep.Error)
	}
	return rep, nil
}

// Get reads an account's record.
func (r Remote) Get(ctx context.Context, account string) (proto.AccountRecord, error) {
	rep, err := r.call(ctx, proto.DirectoryRequest{Op: proto.DirectoryGet, Record: proto.AccountRecord{AccountID: account}})
	if err != nil || rep.Record == nil {
		return proto.AccountRecord{}, err
	}
	return *rep.Record, nil
}

// Install asks the router to record the account and hand its tokens over.
func (r Remote) Install(ctx context.Context, rec proto.AccountRecord, h proto.TokenHandover) error {
	_, err := r.call(ctx, proto.DirectoryRequest{Op: proto.DirectoryInstall, Record: rec, Handover: &h})
	return err
}
