package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Moving a Raft group's leader. JetStream elects a stream's or a consumer's
// leader where it likes; a leader step-down naming a preferred server hands
// the leadership over to that server at once (its data is already there: it
// is a replica), with no election timeout. geomux uses it to keep leaders
// where the loss of one server costs least.

// PullHeartbeat is how often a pull consumer's leader says it is there
// while it has nothing to deliver. A pull request waits at the leader: one
// lost with its server (killed, no goodbye) is made again, to the next
// leader, once two heartbeats are missed, so this bounds how long a
// consumer stays silent after its election (nats.go's default, 5 s, made
// it 10 s).
const PullHeartbeat = time.Second

// StreamLeader is the stream group of a stream (or of a bucket: its stream
// KV_<bucket>).
func StreamLeader(stream string) LeaderGroup {
	return LeaderGroup{Kind: "stream", Name: stream, stepDown: "STREAM.LEADER.STEPDOWN." + stream}
}

// ConsumerLeader is the group of a stream's durable consumer.
func ConsumerLeader(stream, consumer string) LeaderGroup {
	return LeaderGroup{Kind: "consumer", Name: stream + "/" + consumer, stepDown: "CONSUMER.LEADER.STEPDOWN." + stream + "." + consumer}
}

// LeaderGroup is a stream's or a consumer's Raft group.
type LeaderGroup struct {
	// Kind is "stream" or "consumer"; Name names the stream, or the stream
	// and the consumer (stream/consumer).
	Kind, Name string
	stepDown   string
}

// ErrAlreadyLeader is a step-down to the server that leads already.
var ErrAlreadyLeader = errors.New("the preferred server leads already")

// StepDown asks the group's leader to hand its leadership to server to.
// Another process may have moved it a moment before: ErrAlreadyLeader.
func (g LeaderGroup) StepDown(ctx context.Context, nc *nats.Conn, to string) error {
	req, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
	if err != nil {
		return err
	}
	msg, err := nc.RequestWithContext(ctx, jetstream.DefaultAPIPrefix+g.stepDown, req)
	if err != nil {
		return err
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("step-down answer: %w", err)
	}
	switch {
	case resp.Error != nil && strings.Contains(resp.Error.Description, "is already leader"):
		return ErrAlreadyLeader
	case resp.Error != nil:
		return errors.New(resp.Error.Description)
	case !resp.Success:
		return errors.New("step-down not done")
	}
	return nil
}

// CanLead reports whether server is a current, online replica in a group's
// cluster info: a step-down to it is taken at once.
func CanLead(c *jetstream.ClusterInfo, server string) bool {
	if c == nil {
		return false
	}
	for _, p := range c.Replicas {
		if p.Name == server {
			return p.Current && !p.Offline
		}
	}
	return false
}
