package main

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The benchmark's Zoom (OAuth and chat API) and regional backends. They
// speak the wire format geomux expects and do as little as they can besides,
// since they share the machine with what is measured.

const (
	benchClientID     = "bench-client-id"
	benchClientSecret = "bench-client-secret"
	benchBotJID       = "bench-bot@xmpp.zoom.us"
	benchToken        = "bench-chatbot-token"
)

// fakes serves Zoom and one backend per region on loopback, reporting what
// they see to the current tracker.
type fakes struct {
	t        atomic.Pointer[tracker]
	zoomURL  string
	backends map[string]string // region → URL
	regionOf map[string]string // account id → region
	servers  []*http.Server
	bufs     sync.Pool
}

func startFakes(accounts []account, regions []string) (*fakes, error) {
	f := &fakes{backends: map[string]string{}, regionOf: map[string]string{},
		bufs: sync.Pool{New: func() any { return new(bytes.Buffer) }}}
	for _, a := range accounts {
		f.regionOf[a.id] = a.region
	}
	zm := http.NewServeMux()
	zm.HandleFunc("POST /oauth/token", f.token)
	zm.HandleFunc("POST /v2/im/chat/messages", f.message)
	url, err := f.serve(zm)
	if err != nil {
		return nil, err
	}
	f.zoomURL = url
	for _, r := range regions {
		if f.backends[r], err = f.serve(f.backend(r)); err != nil {
			f.close()
			return nil, err
		}
	}
	return f, nil
}

func (f *fakes) serve(h http.Handler) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	f.servers = append(f.servers, s)
	go func() { _ = s.Serve(l) }()
	return "http://" + l.Addr().String(), nil
}

func (f *fakes) close() {
	for _, s := range f.servers {
		_ = s.Close()
	}
}

// token issues the chatbot token (client_credentials).
func (f *fakes) token(w http.ResponseWriter, r *http.Request) {
	if id, secret, ok := r.BasicAuth(); !ok || id != benchClientID || secret != benchClientSecret {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"access_token":"` + benchToken + `","token_type":"bearer","expires_in":3600,"scope":"imchat:bot","api_url":"` + f.zoomURL + `"}`))
}

var (
	saidPrefix = []byte(`You said: b`)
	sentReply  = []byte(`{"message_id":"DWQ2A82E-9220-4600-AFB2-A028852E377C","robot_jid":"` + benchBotJID + `","sent_time":"2026-11-30 12:00:00","to_jid":"c@conference.xmpp.zoom.us","user_jid":"u@xmpp.zoom.us"}`)
)

// message is POST /v2/im/chat/messages: the reply reached Zoom.
func (f *fakes) message(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	if r.Header.Get("Authorization") != "Bearer "+benchToken {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	buf := f.bufs.Get().(*bytes.Buffer)
	defer f.bufs.Put(buf)
	buf.Reset()
	_, _ = buf.ReadFrom(r.Body)
	if seq, ok := seqAfter(buf.Bytes(), saidPrefix); ok {
		if t := f.t.Load(); t != nil {
			t.reply(seq, now)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(sentReply)
}

var (
	cmdPrefix     = []byte(`"cmd":"b`)
	accountPrefix = []byte(`"account_id":"`)
)

// backend implements geomux's backend contract for region: one reply,
// saying back what the user wrote.
func (f *fakes) backend(region string) http.HandlerFunc {
	head := []byte(`{"messages":[{"content":{"head":{"text":"Bench backend (` + region + `)"},"body":[{"type":"message","text":"You said: b`)
	return func(w http.ResponseWriter, r *http.Request) {
		buf := f.bufs.Get().(*bytes.Buffer)
		defer f.bufs.Put(buf)
		buf.Reset()
		_, _ = buf.ReadFrom(r.Body)
		body := buf.Bytes()
		seq, ok := seqAfter(body, cmdPrefix)
		if !ok {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if t := f.t.Load(); t != nil {
			t.backendCall(seq)
			if acct, ok := stringAfter(body, accountPrefix); ok && f.regionOf[acct] != region {
				t.misroute.Add(1)
			}
		}
		out := append(append([]byte(nil), head...), strconv.FormatInt(seq, 10)...)
		out = append(out, `"}]}}]}`...)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}
}

// seqAfter reads the decimal number that follows prefix in b.
func seqAfter(b, prefix []byte) (int64, bool) {
	i := bytes.Index(b, prefix)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(prefix):]
	var n int64
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		n = n*10 + int64(b[j]-'0')
	}
	return n, j > 0
}

// stringAfter reads the JSON string (without escapes) that prefix opens.
func stringAfter(b, prefix []byte) (string, bool) {
	i := bytes.Index(b, prefix)
	if i < 0 {
		return "", false
	}
	b = b[i+len(prefix):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return "", false
	}
	return string(b[:j]), true
}
