package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/geomux/geomux/proto"
)

// Hold is an account held by Zoom's daily limit (proto.Hold).
type Hold = proto.Hold

// Holds asks each region's workers which accounts Zoom's daily limit holds
// (proto.RegionHoldsSubject): the pacing bucket they keep stays in the region.
type Holds struct {
	// Regions are the connection to each region's NATS, by name.
	Regions map[string]*nats.Conn
	// Timeout bounds each region's answer (5 s when 0).
	Timeout time.Duration
}

// List returns the accounts held now, by region then account, and the
// regions that did not answer (no worker running, or NATS away).
func (h Holds) List(ctx context.Context) (holds []Hold, unanswered []string) {
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	for region, nc := range h.Regions {
		got, err := askHolds(ctx, nc, region, timeout)
		if err != nil {
			unanswered = append(unanswered, fmt.Sprintf("%s: %v", region, err))
			continue
		}
		holds = append(holds, got...)
	}
	slices.SortFunc(holds, func(a, b Hold) int {
		if c := strings.Compare(a.Region, b.Region); c != 0 {
			return c
		}
		return strings.Compare(a.AccountID, b.AccountID)
	})
	slices.Sort(unanswered)
	return holds, unanswered
}

func askHolds(ctx context.Context, nc *nats.Conn, region string, timeout time.Duration) ([]Hold, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, proto.RegionHoldsSubject(region), nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, errors.New("no worker of the region is running")
	}
	if err != nil {
		return nil, err
	}
	var a proto.HoldsAnswer
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return nil, fmt.Errorf("unreadable answer: %w", err)
	}
	if a.Error != "" {
		return nil, errors.New(a.Error)
	}
	return a.Holds, nil
}
