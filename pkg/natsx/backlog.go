package natsx

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Backlog is what a stage of the pipeline has yet to finish: the messages
// its consumers have not delivered yet or have delivered and not had
// acknowledged, and when the oldest of them was stored.
type Backlog struct {
	Messages uint64
	// Oldest is the store time of the first message past the consumers'
	// acknowledgement floor; zero with no backlog.
	Oldest time.Time
}

// Plus is the backlog of two stages together.
func (b Backlog) Plus(o Backlog) Backlog {
	b.Messages += o.Messages
	if !o.Oldest.IsZero() && (b.Oldest.IsZero() || o.Oldest.Before(b.Oldest)) {
		b.Oldest = o.Oldest
	}
	return b
}

// BacklogOf reads the backlog of consumers on stream.
func BacklogOf(ctx context.Context, stream jetstream.Stream, consumers ...jetstream.Consumer) (Backlog, error) {
	var b Backlog
	for _, c := range consumers {
		info, err := c.Info(ctx)
		if err != nil {
			return Backlog{}, err
		}
		n := info.NumPending + uint64(max(info.NumAckPending, 0))
		if n == 0 {
			continue
		}
		b.Messages += n
		oldest, err := firstAfter(ctx, stream, info.AckFloor.Stream, filters(info.Config))
		if err != nil {
			return Backlog{}, err
		}
		if !oldest.IsZero() && (b.Oldest.IsZero() || oldest.Before(b.Oldest)) {
			b.Oldest = oldest
		}
	}
	return b, nil
}

func filters(c jetstream.ConsumerConfig) []string {
	if c.FilterSubject != "" {
		return []string{c.FilterSubject}
	}
	if len(c.FilterSubjects) > 0 {
		return c.FilterSubjects
	}
	return []string{">"}
}

// firstAfter is the store time of the first message after seq on one of
// subjects, zero if none. It asks for the next message on a subject, as a
// sequence may be gone (acknowledged on a work queue, or deleted).
func firstAfter(ctx context.Context, stream jetstream.Stream, seq uint64, subjects []string) (time.Time, error) {
	var first time.Time
	for _, subj := range subjects {
		m, err := stream.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return time.Time{}, err
		}
		if first.IsZero() || m.Time.Before(first) {
			first = m.Time
		}
	}
	return first, nil
}

// BacklogCollector exports a stage's backlog, read at each scrape: how
// many events, and how long the oldest has waited (BacklogNames), with
// constant labels. A scrape while NATS does not answer exports neither.
type BacklogCollector struct {
	read     func(context.Context) (Backlog, error)
	messages *prometheus.Desc
	oldest   *prometheus.Desc
	now      func() time.Time
}

// BacklogNames are the metric names of a backlog: of its events, and of
// the age of the oldest.
type BacklogNames struct{ Messages, Oldest string }

// NewBacklogCollector returns the collector of the backlog that read
// reads; what names the stage in help.
func NewBacklogCollector(names BacklogNames, what string, labels prometheus.Labels, read func(context.Context) (Backlog, error)) *BacklogCollector {
	return &BacklogCollector{
		read:     read,
		messages: prometheus.NewDesc(names.Messages, "Events "+what+" has yet to finish: not yet taken, or taken and not yet done.", nil, labels),
		oldest:   prometheus.NewDesc(names.Oldest, "How long the oldest event "+what+" has yet to finish has waited since it was stored (0 without a backlog).", nil, labels),
		now:      time.Now,
	}
}

func (c *BacklogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.messages
	ch <- c.oldest
}

func (c *BacklogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b, err := c.read(ctx)
	if err != nil {
		return
	}
	age := 0.0
	if !b.Oldest.IsZero() {
		age = math.Max(0, c.now().Sub(b.Oldest).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(b.Messages))
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
}

// CountCollector exports a count read from NATS at each scrape (a stream's
// messages, say) as a gauge; a scrape while NATS does not answer exports
// nothing.
type CountCollector struct {
	read func(context.Context) (uint64, error)
	desc *prometheus.Desc
}

// NewCountCollector returns the collector of the count that read reads.
func NewCountCollector(name, help string, labels prometheus.Labels, read func(context.Context) (uint64, error)) *CountCollector {
	return &CountCollector{read: read, desc: prometheus.NewDesc(name, help, nil, labels)}
}

func (c *CountCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *CountCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if n, err := c.read(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
	}
}
