package natsx_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
)

// The backlog counts what a consumer has not taken and what it holds
// unacknowledged, and dates its oldest message: the first past the
// acknowledgement floor on the consumer's subject, skipping other subjects
// and acknowledged messages.
func TestBacklogCountsAndDatesWhatIsLeft(t *testing.T) {
	s := natstest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "B", Subjects: []string{"b.>"}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "mine", FilterSubject: "b.mine", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	b, err := natsx.BacklogOf(ctx, st, cons)
	if err != nil || b.Messages != 0 || !b.Oldest.IsZero() {
		t.Fatalf("empty: %+v, %v", b, err)
	}
	pub := func(subj string) time.Time {
		ack, err := s.JS.Publish(ctx, subj, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		return m.Time
	}
	first := pub("b.mine")
	pub("b.other")
	second := pub("b.mine")
	pub("b.mine")

	// One taken and acknowledged (gone from the work queue), one taken and
	// held.
	batch, err := cons.FetchNoWait(2)
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range batch.Messages() {
		got = append(got, m)
	}
	if len(got) != 2 {
		t.Fatalf("fetched %d, want 2", len(got))
	}
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	b, err = natsx.BacklogOf(ctx, st, cons)
	if err != nil {
		t.Fatal(err)
	}
	if b.Messages != 2 || !b.Oldest.Equal(second) || b.Oldest.Equal(first) {
		t.Errorf("backlog %+v, want 2 messages, the oldest stored at %v", b, second)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(natsx.NewBacklogCollector(natsx.BacklogNames{Messages: "geomux_test_backlog_messages", Oldest: "geomux_test_backlog_oldest_seconds"}, "the test", prometheus.Labels{"region": "eu"},
		func(ctx context.Context) (natsx.Backlog, error) { return natsx.BacklogOf(ctx, st, cons) }))
	want := `
# HELP geomux_test_backlog_messages Events the test has yet to finish: not yet taken, or taken and not yet done.
# TYPE geomux_test_backlog_messages gauge
geomux_test_backlog_messages{region="eu"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "geomux_test_backlog_messages"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "geomux_test_backlog_oldest_seconds"); err != nil || n != 1 {
		t.Errorf("oldest age: %d series, %v", n, err)
	}

	reg.MustRegister(natsx.NewCountCollector("geomux_test_stored", "Stored.", nil, func(ctx context.Context) (uint64, error) {
		info, err := st.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.Msgs, nil
	}))
	// Four stored, one of them acknowledged and so gone from the work queue.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP geomux_test_stored Stored.
# TYPE geomux_test_stored gauge
geomux_test_stored 3
`), "geomux_test_stored"); err != nil {
		t.Error(err)
	}
}
