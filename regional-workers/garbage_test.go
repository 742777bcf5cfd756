package workers_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// Tests of a backend that answers garbage: whatever it does, the event ends
// as one dead letter holding the event body and a reason an operator can act
// on, no reply goes to Zoom, and it takes about the region's timeout at most
// per attempt.

// garbageTimeout is the region's backend timeout in these tests.
const garbageTimeout = 300 * time.Millisecond

// permanentBound bounds how long a permanent failure takes to become a dead
// letter: one call and one publish, even under the race detector.
const permanentBound = 5 * time.Second

// garbageRun is an event sent to a region whose backend is at url.
type garbageRun struct {
	DL   *jetstream.RawStreamMsg
	Body []byte
	// Took is from publishing the event to seeing its dead letter.
	Took time.Duration
}

// runGarbage starts a worker for region calling the backend at url with
// the given timeout and attempts (quick backoff, two in-process retries as in
// production), publishes a bot_notification, and waits for its dead letter.
// It checks what every garbage answer must lead to: one dead letter holding
// the event body and its headers, nothing sent to Zoom, no reply recorded,
// nothing left pending.
func runGarbage(t *testing.T, ns *natstest.Server, region, url string, timeout time.Duration, maxAttempts int) garbageRun {
	t.Helper()
	z := newFakeZoom(t, nil)
	opts := testOptions(region)
	opts.Retry.MaxAttempts = maxAttempts
	opts.Retry.Backoff = []config.Duration{config.Duration(10 * time.Millisecond)}
	h := &workers.HTTPBackend{URL: url, Region: region, Timeout: timeout, Client: newHTTPClient(t, 2)}
	startWorker(t, ns.JS, h, zoomClient(t, z), opts)

	body := zoomtest.Event("bot_notification")
	head, err := zoom.ParseHead(body)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ev := publish(t, ns.JS, region, head.Event, head.AccountID, body)
	dl := waitDeadLetter(t, ns.JS, region)
	run := garbageRun{DL: dl, Body: body, Took: time.Since(start)}

	if !bytes.Equal(dl.Data, body) {
		t.Errorf("dead letter payload = %s, want the event body %s", dl.Data, body)
	}
	for k, want := range map[string]string{
		proto.HeaderEventID:    ev.ID,
		proto.HeaderEventType:  head.Event,
		proto.HeaderAccountID:  head.AccountID,
		proto.HeaderRegion:     region,
		proto.HeaderDeadStatus: "", // the backend answered 200, or not at all
	} {
		if got := dl.Header.Get(k); got != want {
			t.Errorf("dead letter %s = %q, want %q", k, got, want)
		}
	}
	if n := z.Requests(); n != 0 {
		t.Errorf("Zoom received %d requests, want none: no reply to a garbage answer", n)
	}
	if got := z.Texts(); len(got) != 0 {
		t.Errorf("Zoom delivered %q, want nothing", got)
	}
	// The event's record, if any, keeps the failure but no reply.
	if raw, ok := replyStateOf(t, repliesKV(t, ns.JS, region), ev.ID); ok {
		var st struct {
			Messages []json.RawMessage `json:"messages"`
			Sent     int               `json:"sent"`
		}
		if err := json.Unmarshal(raw, &st); err != nil || len(st.Messages) != 0 || st.Sent != 0 {
			t.Errorf("record of %s = %s; want no replies kept or sent", ev.ID, raw)
		}
	}
	if ci := consumerInfo(t, ns.JS, region); ci.NumAckPending != 0 || ci.NumPending != 0 {
		t.Errorf("consumer has %d pending acks, %d pending; want none", ci.NumAckPending, ci.NumPending)
	}
	return run
}

// checkDead checks a dead letter's reason, attempts and error.
func checkDead(t *testing.T, dl *jetstream.RawStreamMsg, reason, attempts string, errParts ...string) {
	t.Helper()
	t.Logf("dead letter: %s %s, %s %s, %s %q", proto.HeaderDeadReason, dl.Header.Get(proto.HeaderDeadReason),
		proto.HeaderAttempts, dl.Header.Get(proto.HeaderAttempts), proto.HeaderDeadError, dl.Header.Get(proto.HeaderDeadError))
	if got := dl.Header.Get(proto.HeaderDeadReason); got != reason {
		t.Errorf("dead letter %s = %q, want %q", proto.HeaderDeadReason, got, reason)
	}
	if got := dl.Header.Get(proto.HeaderAttempts); got != attempts {
		t.Errorf("dead letter %s = %q, want %q", proto.HeaderAttempts, got, attempts)
	}
	e := dl.Header.Get(proto.HeaderDeadError)
	for _, p := range errParts {
		if !strings.Contains(e, p) {
			t.Errorf("dead letter %s = %q, want it to mention %q", proto.HeaderDeadError, e, p)
		}
	}
}

// streamingBackend serves handle, which writes its answer bit by bit. Each
// request's body is read first (the server notices a client going away only
// then) and handle is given a channel closed when the test ends, so that no
// handler outlives the test even if the client never goes away.
type streamingBackend struct {
	URL    string
	hits   atomic.Int32
	active atomic.Int32
}

func newStreamingBackend(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, flush func(), done <-chan struct{})) *streamingBackend {
	t.Helper()
	b := &streamingBackend{}
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.active.Add(1)
		defer b.active.Add(-1)
		_, _ = io.Copy(io.Discard, r.Body)
		rc := http.NewResponseController(w)
		handle(w, r, func() { _ = rc.Flush() }, done)
	}))
	t.Cleanup(srv.Close)
	// Cleanups run last first: handlers are told to stop before Close waits
	// for them.
	t.Cleanup(func() { close(done) })
	b.URL = srv.URL + "/bot"
	return b
}

// waitHandlersGone waits until no handler of b is running: each noticed that
// geomux went away.
func (b *streamingBackend) waitHandlersGone(t *testing.T) {
	t.Helper()
	natstest.Eventually(t, waitFor, func() bool { return b.active.Load() == 0 },
		"the backend's handlers to notice the client went away")
}

// HTML where a JSON answer should be: permanent, "not JSON", whether the
// backend labels it application/json or sends no Content-Type at all.
func TestGarbageBackendNotJSON(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	const page = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"

	t.Run("labelled application/json", func(t *testing.T) {
		t.Parallel()
		backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
			return backendAnswer{Status: http.StatusOK, Header: map[string]string{"Content-Type": "application/json"}, Body: page}
		})
		run := runGarbage(t, ns, "garbage-html", backend.URL, garbageTimeout, 2)
		checkDead(t, run.DL, proto.DeadReasonPermanent, "1", "not JSON")
		if n := backend.Hits(); n != 1 {
			t.Errorf("backend called %d times, want 1", n)
		}
		if run.Took > permanentBound {
			t.Errorf("dead-lettered after %v, want under %v", run.Took, permanentBound)
		}
	})

	t.Run("no Content-Type", func(t *testing.T) {
		t.Parallel()
		backend := newStreamingBackend(t, func(w http.ResponseWriter, _ *http.Request, _ func(), _ <-chan struct{}) {
			w.Header()["Content-Type"] = nil // no sniffing: no Content-Type at all
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, page)
		})
		run := runGarbage(t, ns, "garbage-html-untyped", backend.URL, garbageTimeout, 2)
		checkDead(t, run.DL, proto.DeadReasonPermanent, "1", "not JSON")
		if n := backend.hits.Load(); n != 1 {
			t.Errorf("backend called %d times, want 1", n)
		}
		if run.Took > permanentBound {
			t.Errorf("dead-lettered after %v, want under %v", run.Took, permanentBound)
		}
	})
}

// An endless answer, streamed (chunked, no Content-Length): geomux reads
// 1 MiB and a byte, gives up for good and hangs up.
func TestGarbageBackendHugeStreamedBody(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	const limit = 256 << 20 // never stream past this, whatever happens
	var written atomic.Int64
	backend := newStreamingBackend(t, func(w http.ResponseWriter, r *http.Request, flush func(), done <-chan struct{}) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		n, _ := io.WriteString(w, `{"messages":[],"pad":"`)
		written.Add(int64(n))
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for written.Load() < limit {
			select {
			case <-r.Context().Done():
				return
			case <-done:
				return
			default:
			}
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
			flush()
		}
	})
	// A long timeout: the size, not the clock, must end the call.
	run := runGarbage(t, ns, "garbage-huge", backend.URL, time.Minute, 2)
	checkDead(t, run.DL, proto.DeadReasonPermanent, "1", "larger than 1 MiB")
	if n := backend.hits.Load(); n != 1 {
		t.Errorf("backend called %d times, want 1", n)
	}
	backend.waitHandlersGone(t)
	if w := written.Load(); w <= 1<<20 || w >= limit {
		t.Errorf("backend wrote %d bytes; want more than 1 MiB, and geomux to hang up long before %d", w, limit)
	}
	if run.Took > permanentBound {
		t.Errorf("dead-lettered after %v, want under %v", run.Took, permanentBound)
	}
}

// A backend that answers 200 at once, then one byte every 200 ms, forever:
// the region's timeout cuts each attempt, which is transient, so the event
// is retried and then dead-lettered as max_attempts.
func TestGarbageBackendSlowDrip(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	var dripped atomic.Int32
	backend := newStreamingBackend(t, func(w http.ResponseWriter, r *http.Request, flush func(), done <-chan struct{}) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		flush()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-done:
				return
			case <-tick.C:
				if _, err := io.WriteString(w, " "); err != nil {
					return
				}
				flush()
				dripped.Add(1)
			}
		}
	})
	const attempts = 2
	run := runGarbage(t, ns, "garbage-drip", backend.URL, garbageTimeout, attempts)
	checkDead(t, run.DL, proto.DeadReasonMaxAttempts, "2", "within", garbageTimeout.String())
	if n := backend.hits.Load(); n != attempts {
		t.Errorf("backend called %d times, want %d (one per attempt)", n, attempts)
	}
	if dripped.Load() == 0 {
		t.Error("the backend never dripped a byte: the test did not test a slow answer")
	}
	backend.waitHandlersGone(t)
	if lo, hi := attempts*garbageTimeout, attempts*garbageTimeout+permanentBound; run.Took < lo || run.Took > hi {
		t.Errorf("dead-lettered after %v, want between %v and %v: each attempt cut at the %v timeout", run.Took, lo, hi, garbageTimeout)
	}
}

// A valid answer under the wrong Content-Type is refused for good: a page
// that happens to parse as JSON must not be sent to users.
func TestGarbageBackendWrongContentType(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
		a := answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("should not be sent")}}})
		a.Header = map[string]string{"Content-Type": "text/html"}
		return a
	})
	run := runGarbage(t, ns, "garbage-ctype", backend.URL, garbageTimeout, 2)
	checkDead(t, run.DL, proto.DeadReasonPermanent, "1", "Content-Type", "text/html")
	if n := backend.Hits(); n != 1 {
		t.Errorf("backend called %d times, want 1", n)
	}
	if run.Took > permanentBound {
		t.Errorf("dead-lettered after %v, want under %v", run.Took, permanentBound)
	}
}

// A backend that accepts the connection, reads the request and never
// answers: the region's timeout bounds each attempt, as for the drip.
func TestGarbageBackendNeverAnswers(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	silent := newSilentBackend(t)
	const attempts = 2
	run := runGarbage(t, ns, "garbage-silent", silent.URL, garbageTimeout, attempts)
	checkDead(t, run.DL, proto.DeadReasonMaxAttempts, "2", "within", garbageTimeout.String())
	if n := silent.requests.Load(); n != attempts {
		t.Errorf("backend received %d requests, want %d (one per attempt)", n, attempts)
	}
	natstest.Eventually(t, waitFor, func() bool { return silent.open.Load() == 0 },
		"geomux to close its connections to the silent backend")
	if lo, hi := attempts*garbageTimeout, attempts*garbageTimeout+permanentBound; run.Took < lo || run.Took > hi {
		t.Errorf("dead-lettered after %v, want between %v and %v: each attempt cut at the %v timeout", run.Took, lo, hi, garbageTimeout)
	}
}

// silentBackend is a TCP server that reads HTTP requests and never answers.
type silentBackend struct {
	URL      string
	requests atomic.Int32 // complete requests read
	open     atomic.Int32 // connections not yet closed by the client
}

func newSilentBackend(t *testing.T) *silentBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silentBackend{URL: "http://" + ln.Addr().String() + "/bot"}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed at the end of the test
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns = append(conns, c)
			mu.Unlock()
			s.open.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer s.open.Add(-1)
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return // the client hung up, or the test ended
					}
					_, err = io.Copy(io.Discard, req.Body)
					if err != nil && !errors.Is(err, io.EOF) {
						return
					}
					s.requests.Add(1)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}
