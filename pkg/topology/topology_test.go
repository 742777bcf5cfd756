package topology_test

import (
	"slices"
	"testing"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

func TestSitesDescribeHubAndRegions(t *testing.T) {
	c := config.Default()
	c.Regions = []config.Region{{Name: "eu", NATS: config.RegionNATS{Replicas: 3, PlacementTags: []string{"region:eu"}}}, {Name: "us"}}
	sites := topology.Sites(c)
	if len(sites) != 3 || sites[0].Name != topology.HubSite || sites[1].Name != "eu" || sites[2].Name != "us" {
		t.Fatalf("sites %v, want hub, eu, us", names(sites))
	}
	hub := sites[0]
	for p := range c.NATS.TransitPartitions {
		if !slices.Contains(hub.StreamNames(), proto.TransitStream(p)) {
			t.Errorf("hub lacks transit stream %s: %v", proto.TransitStream(p), hub.StreamNames())
		}
		if !slices.ContainsFunc(hub.Consumers, func(c topology.Consumer) bool { return c.Stream == proto.TransitStream(p) }) {
			t.Errorf("no router consumer on %s", proto.TransitStream(p))
		}
	}
	for _, sc := range sites[1].Streams {
		if sc.Replicas != 3 || sc.Placement == nil || !slices.Equal(sc.Placement.Tags, []string{"region:eu"}) {
			t.Errorf("eu stream %s: %d replicas, placement %+v; want 3 pinned to region:eu", sc.Name, sc.Replicas, sc.Placement)
		}
	}
	// Every stream and bucket has one owner, its site.
	for _, s := range sites {
		for _, n := range s.StreamNames() {
			if o := topology.Owner(n, c); o != s.Name {
				t.Errorf("owner of %s is %q, want %q", n, o, s.Name)
			}
		}
	}
	for name, want := range map[string]string{"GEOMUX_IN_7": topology.HubSite, "GEOMUX_UK_EVENTS": "unknown", "ORDERS": ""} {
		if o := topology.Owner(name, c); o != want {
			t.Errorf("owner of %s is %q, want %q", name, o, want)
		}
	}
}

func names(sites []topology.Site) []string {
	var out []string
	for _, s := range sites {
		out = append(out, s.Name)
	}
	return out
}
