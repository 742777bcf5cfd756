// Package audit checks, by asking NATS itself, that every geomux stream and
// bucket lives where data residency says it must: each region's data on that
// region's servers only, and nothing of any region on the hub's disk.
package audit

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

// System is one NATS system geomux uses: the hub's, or a region's own.
type System struct {
	// Name is "hub" or the region's name.
	Name string
	JS   jetstream.JetStream
}

// Row is one stream (or bucket) as NATS reports it, and the verdict.
type Row struct {
	System   string   `json:"system"`
	Stream   string   `json:"stream"`
	Owner    string   `json:"owner"` // "hub", a region's name, or "" for a stream that is not geomux's
	Storage  string   `json:"storage"`
	Replicas int      `json:"replicas"`
	Cluster  string   `json:"cluster,omitempty"`
	Leader   string   `json:"leader,omitempty"`
	Peers    []string `json:"peers,omitempty"`
	Tags     []string `json:"placement_tags,omitempty"`
	Problems []string `json:"problems,omitempty"`
}

// Report is the audit's result.
type Report struct {
	Rows []Row `json:"streams"`
	// Problems lists every violation, each naming its stream.
	Problems []string `json:"problems"`
}

// OK reports whether nothing is misplaced.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Locality lists every stream of every system and checks it against cfg.
func Locality(ctx context.Context, cfg config.Config, systems []System) (Report, error) {
	var rep Report
	seen := map[string]map[string]bool{} // system → streams there
	for _, sys := range systems {
		seen[sys.Name] = map[string]bool{}
		lister := sys.JS.ListStreams(ctx)
		var infos []*jetstream.StreamInfo
		for info := range lister.Info() {
			infos = append(infos, info)
		}
		if err := lister.Err(); err != nil {
			return rep, fmt.Errorf("list the streams of %s: %w", sys.Name, err)
		}
		sort.Slice(infos, func(i, j int) bool { return infos[i].Config.Name < infos[j].Config.Name })
		for _, info := range infos {
			row := describe(sys.Name, info, cfg)
			seen[sys.Name][row.Stream] = true
			rep.Rows = append(rep.Rows, row)
			for _, p := range row.Problems {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s on %s: %s", row.Stream, row.System, p))
			}
		}
	}
	// Every stream of the topology must exist where it belongs.
	for _, site := range topology.Sites(cfg) {
		where := topology.HubSite
		if r, ok := cfg.Region(site.Name); ok && r.NATS.Separate() {
			where = r.Name
		}
		if seen[where] == nil {
			continue // that system was not audited
		}
		for _, sc := range site.Streams {
			if !seen[where][sc.Name] {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s is missing from %s (has geomux setup run?)", sc.Name, where))
			}
		}
	}
	return rep, nil
}

func describe(system string, info *jetstream.StreamInfo, cfg config.Config) Row {
	c := info.Config
	row := Row{System: system, Stream: c.Name, Owner: topology.Owner(c.Name, cfg), Storage: c.Storage.String(), Replicas: c.Replicas}
	if c.Placement != nil {
		row.Tags = c.Placement.Tags
	}
	if ci := info.Cluster; ci != nil {
		row.Cluster, row.Leader = ci.Name, ci.Leader
		for _, p := range ci.Replicas {
			row.Peers = append(row.Peers, p.Name)
		}
	}
	problem := func(format string, a ...any) { row.Problems = append(row.Problems, fmt.Sprintf(format, a...)) }
	switch row.Owner {
	case "":
		// not geomux's
	case "unknown":
		problem("is a geomux stream of no configured region")
	case topology.HubSite:
		if system != topology.HubSite {
			problem("the hub's stream is on region %s's servers", system)
		}
		if cfg.Separated() && (proto.IsTransitStream(c.Name) || c.Name == proto.ParkedStream) && c.Storage != jetstream.MemoryStorage {
			problem("holds every region's events in transit but is stored on disk (%s); it must be in memory", row.Storage)
		}
		if want := cfg.NATS.Cluster; want != "" && row.Cluster != "" && row.Cluster != want {
			problem("is in cluster %q, not the hub's %q", row.Cluster, want)
		}
		if c.Replicas < cfg.NATS.Replicas {
			problem("has %d replicas, fewer than the %d configured", c.Replicas, cfg.NATS.Replicas)
		}
	default:
		r, _ := cfg.Region(row.Owner)
		home := topology.HubSite
		if r.NATS.Separate() {
			home = r.Name
		}
		if system != home {
			problem("holds region %s's data on the %s servers", r.Name, system)
		}
		if c.Storage != jetstream.FileStorage {
			problem("region data must be on file storage (replicated), not %s", row.Storage)
		}
		for _, tag := range r.NATS.PlacementTags {
			if !slices.Contains(row.Tags, tag) {
				problem("is not pinned to %q (placement tags %v): it could be placed outside the region", tag, row.Tags)
			}
		}
		if want := r.NATS.Cluster; want != "" && row.Cluster != "" && row.Cluster != want {
			problem("is in cluster %q, not region %s's %q", row.Cluster, r.Name, want)
		}
		if c.Replicas < r.NATS.Replicas {
			problem("has %d replicas, fewer than the %d configured", c.Replicas, r.NATS.Replicas)
		}
	}
	return row
}
