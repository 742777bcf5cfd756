package natsx_test

import (
	"testing"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx"
)

func TestSyncAlwaysReachesJetStream(t *testing.T) {
	for _, want := range []bool{false, true} {
		c := config.Default().NATS
		c.StoreDir, c.Listen, c.SyncAlways = t.TempDir(), "", want
		ns, err := natsx.StartEmbedded(c, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		got := ns.JetStreamConfig().SyncAlways
		ns.Shutdown()
		ns.WaitForShutdown()
		if got != want {
			t.Errorf("nats.sync_always %v: JetStream SyncAlways %v", want, got)
		}
	}
}
