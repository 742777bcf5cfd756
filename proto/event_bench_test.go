package proto_test

import (
	"testing"

	"github.com/geomux/geomux/proto"
)

var body = []byte(`{"event":"bot_notification","event_ts":1560796234686,"payload":{"accountId":"gVcjZnWWRLWvv_GtyGuaxg","channelName":"Photos","cmd":"island","name":"Unsplash","robotJid":"v10r4uxexurcasg-pwh8hyh7sg@xmpp.zoom.us","timestamp":1560796234686,"toJid":"b1c841dc7b0b4a69287e6be05c7f93f25@conference.xmpp.zoom.us","triggerId":"exampleTriggerId","userId":"KdYKjnimT4KPd8KKdQt9FQ","userJid":"kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us","userName":"Jill Chill"}}`)

func BenchmarkEventID(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		_ = proto.EventID(body)
	}
}

func TestEventID(t *testing.T) {
	id := proto.EventID(body)
	if id != proto.EventID(append([]byte(nil), body...)) {
		t.Fatal("event id is not a function of the body")
	}
	if len(id) != 22 {
		t.Fatalf("event id %q: want 22 characters", id)
	}
	changed := append([]byte(nil), body...)
	changed[len(changed)-3] = 'X'
	if proto.EventID(changed) == id {
		t.Fatal("different bodies share an id")
	}
}

func TestNames(t *testing.T) {
	if got := proto.RegionEventsStream("us-east"); got != "GEOMUX_US_EAST_EVENTS" {
		t.Errorf("stream %q", got)
	}
	if got := proto.ParkedSubject("acct"); len(got) != len("geomux.parked.")+16 {
		t.Errorf("parked subject %q", got)
	}
	for name, ok := range map[string]bool{"eu": true, "us-east-1": true, "EU": false, "1eu": false, "e.u": false, "": false} {
		if proto.ValidRegionName(name) != ok {
			t.Errorf("ValidRegionName(%q) != %v", name, ok)
		}
	}
	for id, ok := range map[string]bool{"gVcjZnWWRLWvv_GtyGuaxg": true, "a-b=": true, "a.b": false, "a b": false, "": false} {
		if proto.ValidAccountID(id) != ok {
			t.Errorf("ValidAccountID(%q) != %v", id, ok)
		}
	}
}
