package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/proto"
)

// Inventories asks every region what it holds of an account
// (proto.RegionInventorySubject): counts only, read in each region, so that
// no content leaves it. The hub adds the account's events parked in it.
type Inventories struct {
	// Regions are the connection to each configured region's NATS, by name.
	Regions map[string]*nats.Conn
	// Hub reaches the hub's parked stream.
	Hub jetstream.JetStream
	// Timeout bounds each region's answer (8 s when 0).
	Timeout time.Duration
}

// AccountInventory is what geomux holds of one account, everywhere.
type AccountInventory struct {
	AccountID string `json:"account_id"`
	// Regions are the answers of the regions that answered.
	Regions map[string]proto.Inventory `json:"regions"`
	// Hub is what the hub holds: events parked for lack of a region.
	Hub HubInventory `json:"hub"`
	// Unanswered are the regions (and "hub") that could not be asked, with why.
	Unanswered map[string]string `json:"unanswered,omitempty"`
}

// HubInventory is what the hub holds of an account.
type HubInventory struct {
	ParkedEvents int `json:"parked_events"`
}

// Complete reports whether every region and the hub answered.
func (a AccountInventory) Complete() bool { return len(a.Unanswered) == 0 }

// Empty reports whether nothing but audit records is held of the account.
func (a AccountInventory) Empty() bool {
	for _, inv := range a.Regions {
		if inv.Tokens || inv.DeadLetters > 0 || inv.ReplyRecords > 0 || inv.ParkedEvents > 0 || inv.Pace {
			return false
		}
	}
	return a.Hub.ParkedEvents == 0
}

// Of asks every region, at once, and the hub.
func (i Inventories) Of(ctx context.Context, account string) AccountInventory {
	timeout := i.Timeout
	if timeout == 0 {
		timeout = 8 * time.Second
	}
	out := AccountInventory{AccountID: account, Regions: map[string]proto.Inventory{}, Unanswered: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for region, nc := range i.Regions {
		wg.Go(func() {
			inv, err := askInventory(ctx, nc, region, account, timeout)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out.Unanswered[region] = err.Error()
				return
			}
			out.Regions[region] = inv
		})
	}
	n, err := i.parked(ctx, account)
	wg.Wait()
	if err != nil {
		out.Unanswered["hub"] = err.Error()
	}
	out.Hub.ParkedEvents = n
	return out
}

func (i Inventories) parked(ctx context.Context, account string) (int, error) {
	if i.Hub == nil {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := i.Hub.Stream(ctx, proto.ParkedStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("parked stream: %w", err)
	}
	subj := proto.ParkedSubject(account)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, fmt.Errorf("parked stream: %w", err)
	}
	return int(info.State.Subjects[subj]), nil
}

func askInventory(ctx context.Context, nc *nats.Conn, region, account string, timeout time.Duration) (proto.Inventory, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, _ := json.Marshal(proto.InventoryRequest{AccountID: account})
	m, err := nc.RequestWithContext(ctx, proto.RegionInventorySubject(region), req)
	if errors.Is(err, nats.ErrNoResponders) {
		return proto.Inventory{}, errors.New("no worker of the region is running")
	}
	if err != nil {
		return proto.Inventory{}, err
	}
	var a proto.InventoryAnswer
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return proto.Inventory{}, fmt.Errorf("unreadable answer: %w", err)
	}
	if a.Error != "" {
		return proto.Inventory{}, errors.New(a.Error)
	}
	return a.Inventory, nil
}
