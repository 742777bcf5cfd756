package directory

import (
	"context"
	"fmt"
	"net/http"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/admin"
	"github.com/geomux/geomux/proto"
)

// ParkedChannel is a channel whose events wait in the hub's parked stream
// because they name no account and the channel's account is not known
// yet (reason no_account). Channel is the channel's opaque key.
type ParkedChannel struct {
	Channel string `json:"channel"`
	Events  uint64 `json:"events"`
}

// ParkedWithoutAccount lists the channels whose events are parked without
// an account, from the parked stream's subjects (no message is read).
func ParkedWithoutAccount(ctx context.Context, js jetstream.JetStream) ([]ParkedChannel, error) {
	s, err := js.Stream(ctx, proto.ParkedStream)
	if err != nil {
		return nil, fmt.Errorf("parked stream: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(proto.ParkedSubjects))
	if err != nil {
		return nil, fmt.Errorf("parked stream: %w", err)
	}
	out := []ParkedChannel{}
	for subj, n := range info.State.Subjects {
		if ch, ok := proto.ParkedChannelOf(subj); ok && n > 0 {
			out = append(out, ParkedChannel{Channel: ch, Events: n})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Channel < out[j].Channel })
	return out, nil
}

// WithParked serves the events parked without an account too, from the
// hub's js.
func (a *API) WithParked(js jetstream.JetStream) *API {
	a.hub = js
	return a
}

func (a *API) listParkedWithoutAccount(w http.ResponseWriter, r *http.Request) {
	cs, err := ParkedWithoutAccount(r.Context(), a.hub)
	if err != nil {
		a.unavailable(w, err)
		return
	}
	var total uint64
	for _, c := range cs {
		total += c.Events
	}
	admin.WriteJSON(w, http.StatusOK, map[string]any{"channels": cs, "events": total})
}
