package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/regional-workers/dlq"
)

const dlqAdminToken = "dlq-cli-test-admin-token"

// dlqConfig is a one-machine config whose embedded NATS also listens on
// natsListen, so that the CLI can reach it, and whose region eu asks the
// backend at backendURL.
func dlqConfig(t *testing.T, natsListen, ingress, admin, sandbox, backendURL string) string {
	return writeConfig(t, fmt.Sprintf(`
log: {level: error, format: json}
nats: {url: "", store_dir: %q, listen: %q}
ingress: {listen: %q}
admin: {listen: %q, token: %s}
sandbox: {listen: %q}
zoom:
  webhook_secret_tokens: [dlq-secret]
  client_id: dlq-id
  client_secret: dlq-secret-2
  bot_jid: dlq-bot@xmpp.zoom.us
  api_base_url: http://%s/v2
  oauth_base_url: http://%s
regions:
  - {name: eu, handler: http, backend_url: %q}
`, t.TempDir(), natsListen, ingress, admin, dlqAdminToken, sandbox, sandbox, sandbox, backendURL))
}

// dlqBuffer is a buffer a running geomux writes to while the test reads.
type dlqBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *dlqBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *dlqBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// dlqGeomux is a geomux running in-process, as `geomux run` does.
type dlqGeomux struct {
	cfg, admin string
}

// startDLQGeomux runs geomux with cfg until the test ends, and waits until
// it is ready.
func startDLQGeomux(t *testing.T, cfg, ingress, admin string) *dlqGeomux {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &dlqBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"run", "--config", cfg}, io.Discard, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("geomux run exited %d after stop: %s", code, stderr.String())
			}
		case <-time.After(40 * time.Second):
			t.Error("geomux run did not stop")
		}
	})
	natstest.Eventually(t, 30*time.Second, func() bool {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("geomux run exited %d early: %s", code, stderr.String())
		default:
		}
		resp, err := http.Get("http://" + ingress + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "geomux to be ready")
	return &dlqGeomux{cfg: cfg, admin: admin}
}

func (g *dlqGeomux) setRegion(t *testing.T, account, region string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+g.admin+"/admin/v1/accounts/"+account, strings.NewReader(`{"region":"`+region+`"}`))
	req.Header.Set("Authorization", "Bearer "+dlqAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("set region of %s: %v", account, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("set region of %s: %s", account, resp.Status)
	}
}

// metric is the value of a sample of the admin /metrics, e.g.
// `geomux_worker_replied_total{app="default",region="eu"}`; -1 if absent.
func (g *dlqGeomux) metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.admin + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s = %q", sample, v)
			}
			return f
		}
	}
	return -1
}

func (g *dlqGeomux) waitMetric(t *testing.T, sample string, want float64) {
	t.Helper()
	natstest.Eventually(t, 20*time.Second, func() bool { return g.metric(t, sample) >= want }, "%s to reach %v", sample, want)
	if got := g.metric(t, sample); got != want {
		t.Errorf("%s = %v, want %v", sample, got, want)
	}
}

// dlqCLI runs `geomux dlq ARGS --config CFG`.
func dlqCLI(t *testing.T, cfg string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLI(t, append(append([]string{"dlq"}, args...), "--config", cfg)...)
}

// dlqListJSON is `geomux dlq list --json` of region eu.
func dlqListJSON(t *testing.T, cfg string, args ...string) []dlq.Entry {
	t.Helper()
	code, out, errOut := dlqCLI(t, cfg, append([]string{"list", "--region", "eu", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("dlq list --json: exit %d: %s", code, errOut)
	}
	var es []dlq.Entry
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatalf("dlq list --json is not a JSON array of entries: %v\n%s", err, out)
	}
	return es
}

// dlqTableRows are the rows of a dlq table: the lines between the header and
// the summary line.
func dlqTableRows(out string) []string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 2 {
		return nil
	}
	return lines[1 : len(lines)-1]
}

func dlqLastLine(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return lines[len(lines)-1]
}

// dlqWithNullStdin runs f with os.Stdin reading from /dev/null: not a terminal.
func dlqWithNullStdin(t *testing.T, f func()) {
	t.Helper()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	saved := os.Stdin
	os.Stdin = devNull
	defer func() { os.Stdin = saved }()
	f()
}

// dlqCheckErrorLine checks that a failed command said why in one line
// starting "geomux: " (a usage error adds the --help hint), and nothing else.
func dlqCheckErrorLine(t *testing.T, stderr, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "geomux: ") || !strings.Contains(lines[0], want) {
		t.Errorf("first stderr line %q, want geomux: ...%s...", lines[0], want)
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "Run '") {
			t.Errorf("stderr has more than the error line: %q", stderr)
			break
		}
	}
	if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
		t.Errorf("stack trace on stderr: %s", stderr)
	}
}

// The operator's tour: three events dead-lettered by a backend answering
// 400, listed, shown, replayed once the backend is fixed, purged, and every
// action in the region's history.
func TestCLIDLQ(t *testing.T) {
	var fixed atomic.Bool
	var backendCalls atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backendCalls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		if !fixed.Load() {
			http.Error(w, `{"error":"not today"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"messages":[{"content":{"body":[{"type":"message","text":"fixed"}]}}]}`)
	}))
	defer backend.Close()

	natsListen, ingress, admin, sandbox := freePort(t), freePort(t), freePort(t), freePort(t)
	cfg := dlqConfig(t, natsListen, ingress, admin, sandbox, backend.URL+"/bot")
	g := startDLQGeomux(t, cfg, ingress, admin)
	g.setRegion(t, "acct-a", "eu")
	g.setRegion(t, "acct-b", "eu")
	const failed = `geomux_worker_failed_total{reason="permanent",region="eu"}`
	for i, s := range []struct{ account, text string }{{"acct-a", "one"}, {"acct-b", "two"}, {"acct-a", "three"}} {
		if code, out, errOut := runCLI(t, "send", "--config", cfg, "--account", s.account, "--text", s.text); code != 0 {
			t.Fatalf("send: exit %d: %s %s", code, out, errOut)
		}
		// One at a time, so that the dead letters are in the order sent.
		g.waitMetric(t, failed, float64(i+1))
	}
	if n := backendCalls.Load(); n != 3 {
		t.Fatalf("backend called %d times for 3 events, want 3", n)
	}
	g.waitMetric(t, `geomux_dead_letters{region="eu"}`, 3)

	{
		// One NATS system for every region: the audit says they are not
		// separated, with its own exit status, unless told it is intended.
		code, out, errOut := runCLI(t, "audit", "locality", "--config", cfg)
		if code != exitShared || !strings.Contains(errOut, "locality not separated: region eu uses the hub's NATS system") ||
			strings.Contains(out, "locality OK") || !strings.Contains(out, "GEOMUX_IN") || !strings.Contains(out, "GEOMUX_EU_EVENTS      eu     File     1         -        -       -      -     shared") {
			t.Errorf("audit locality on one system: exit %d, want %d\n%s%s", code, exitShared, out, errOut)
		}
		code, out, errOut = runCLI(t, "audit", "locality", "--config", cfg, "--shared-system-ok")
		if code != 0 || !strings.Contains(out, "locality OK on one shared NATS system (--shared-system-ok)") {
			t.Errorf("audit locality --shared-system-ok: exit %d\n%s%s", code, out, errOut)
		}
	}

	// ---- list
	code, out, errOut := dlqCLI(t, cfg, "list", "--region", "eu")
	if code != 0 {
		t.Fatalf("dlq list: exit %d: %s", code, errOut)
	}
	rows := dlqTableRows(out)
	if !strings.HasPrefix(out, "ID") || len(rows) != 3 {
		t.Fatalf("dlq list: want a header, 3 rows and a summary:\n%s", out)
	}
	for i, acct := range []string{"acct-a", "acct-b", "acct-a"} {
		for _, want := range []string{acct, "bot_notification", "permanent", "backend answered 400"} {
			if !strings.Contains(rows[i], want) {
				t.Errorf("dlq list row %d %q lacks %q", i+1, rows[i], want)
			}
		}
	}
	if got := dlqLastLine(out); got != "3 dead letters in region eu" {
		t.Errorf("dlq list summary %q, want %q", got, "3 dead letters in region eu")
	}

	es := dlqListJSON(t, cfg)
	if len(es) != 3 {
		t.Fatalf("dlq list --json: %d entries, want 3", len(es))
	}
	var ids []uint64
	for i, e := range es {
		ids = append(ids, e.ID)
		if want := []string{"acct-a", "acct-b", "acct-a"}[i]; e.AccountID != want || e.Region != "eu" || e.Reason != "permanent" ||
			e.Status != 400 || e.Attempts != 1 || e.EventID == "" || len(e.Payload) != 0 {
			t.Errorf("dlq list --json entry %d = %+v; want %s, eu, permanent, 400, 1 attempt, no payload", i, e, want)
		}
		if !strings.HasPrefix(rows[i], strconv.FormatUint(e.ID, 10)+" ") {
			t.Errorf("table row %d %q does not start with the id %d", i+1, rows[i], e.ID)
		}
	}
	if !slices.IsSorted(ids) {
		t.Errorf("ids %v not oldest first", ids)
	}

	code, out, _ = dlqCLI(t, cfg, "list", "--region", "eu", "--account", "acct-a")
	if rows := dlqTableRows(out); code != 0 || len(rows) != 2 || !strings.Contains(rows[0], "acct-a") || !strings.Contains(rows[1], "acct-a") {
		t.Errorf("dlq list --account acct-a: exit %d:\n%s", code, out)
	}
	if got := dlqLastLine(out); got != "2 dead letters in region eu" {
		t.Errorf("dlq list --account summary %q", got)
	}
	if es := dlqListJSON(t, cfg, "--account", "acct-b"); len(es) != 1 || es[0].ID != ids[1] {
		t.Errorf("dlq list --json --account acct-b = %+v, want entry %d", es, ids[1])
	}

	// ---- show
	code, out, errOut = dlqCLI(t, cfg, "show", "--region", "eu", strconv.FormatUint(ids[0], 10))
	if code != 0 {
		t.Fatalf("dlq show: exit %d: %s", code, errOut)
	}
	var shown struct {
		ID        uint64 `json:"id"`
		EventID   string `json:"event_id"`
		AccountID string `json:"account_id"`
		Reason    string `json:"reason"`
		Error     string `json:"error"`
		Status    int    `json:"status"`
		Payload   struct {
			Event   string `json:"event"`
			Payload struct {
				AccountID string `json:"accountId"`
				Cmd       string `json:"cmd"`
			} `json:"payload"`
		} `json:"payload"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("dlq show: not JSON with the payload as JSON: %v\n%s", err, out)
	}
	if shown.ID != ids[0] || shown.EventID != es[0].EventID || shown.AccountID != "acct-a" || shown.Reason != "permanent" ||
		shown.Error != "backend answered 400" || shown.Status != 400 {
		t.Errorf("dlq show = %+v", shown)
	}
	if shown.Payload.Event != "bot_notification" || shown.Payload.Payload.Cmd != "one" || shown.Payload.Payload.AccountID != "acct-a" {
		t.Errorf("dlq show payload = %+v, want the Zoom event of acct-a saying one:\n%s", shown.Payload, out)
	}

	// ---- replay
	code, out, errOut = dlqCLI(t, cfg, "replay", "--region", "eu", "--dry-run", "--all")
	if code != 0 || !strings.Contains(out, "would replay 3 dead letters of region eu") {
		t.Errorf("dlq replay --dry-run --all: exit %d: %s %s", code, out, errOut)
	}
	if n := len(dlqListJSON(t, cfg)); n != 3 {
		t.Fatalf("a dry run changed the queue: %d entries", n)
	}
	if n := g.metric(t, `geomux_worker_replied_total{app="default",region="eu"}`); n != 0 {
		t.Fatalf("replied = %v before any replay", n)
	}

	fixed.Store(true)
	id0 := strconv.FormatUint(ids[0], 10)
	code, out, errOut = dlqCLI(t, cfg, "replay", "--region", "eu", "--as", "tester", id0)
	if code != 0 {
		t.Fatalf("dlq replay %s: exit %d: %s %s", id0, code, out, errOut)
	}
	for _, want := range []string{"replayed " + id0 + " (event " + es[0].EventID + ", account acct-a): done", "replayed 1 of 1 dead letter of region eu"} {
		if !strings.Contains(out, want) {
			t.Errorf("dlq replay output lacks %q:\n%s", want, out)
		}
	}
	g.waitMetric(t, `geomux_worker_replied_total{app="default",region="eu"}`, 1)
	g.waitMetric(t, `geomux_worker_handled_total{outcome="ok",region="eu"}`, 1)
	left := dlqListJSON(t, cfg)
	if len(left) != 2 || left[0].ID != ids[1] || left[1].ID != ids[2] {
		t.Errorf("after replaying %d the queue holds %+v, want %d and %d", ids[0], left, ids[1], ids[2])
	}

	// ---- purge
	dlqWithNullStdin(t, func() {
		code, out, errOut = dlqCLI(t, cfg, "purge", "--region", "eu", "--all", "--as", "tester")
	})
	if code != 2 {
		t.Errorf("dlq purge --all without --yes, stdin not a terminal: exit %d, want 2: %s %s", code, out, errOut)
	}
	dlqCheckErrorLine(t, errOut, "Not confirmed: stdin is not a terminal; add --yes to confirm")
	if n := len(dlqListJSON(t, cfg)); n != 2 {
		t.Errorf("an unconfirmed purge changed the queue: %d entries, want 2", n)
	}

	code, out, errOut = dlqCLI(t, cfg, "purge", "--region", "eu", "--all", "--yes", "--as", "tester")
	if code != 0 || !strings.Contains(out, "purged 2 of 2 dead letters of region eu") {
		t.Errorf("dlq purge --all --yes: exit %d: %s %s", code, out, errOut)
	}
	code, out, _ = dlqCLI(t, cfg, "list", "--region", "eu")
	if code != 0 || len(dlqTableRows(out)) != 0 || dlqLastLine(out) != "0 dead letters in region eu" {
		t.Errorf("dlq list after purging all: exit %d:\n%s", code, out)
	}
	if es := dlqListJSON(t, cfg); es == nil || len(es) != 0 {
		t.Errorf("dlq list --json of an empty queue = %v, want []", es)
	}

	// ---- history
	code, out, errOut = dlqCLI(t, cfg, "history", "--region", "eu", "--json")
	if code != 0 {
		t.Fatalf("dlq history --json: exit %d: %s", code, errOut)
	}
	var actions []dlq.Action
	if err := json.Unmarshal([]byte(out), &actions); err != nil {
		t.Fatalf("dlq history --json: %v\n%s", err, out)
	}
	if len(actions) != 2 {
		t.Fatalf("history = %+v, want the replay and the purge (not the dry run, not the unconfirmed purge)", actions)
	}
	if a := actions[0]; a.Action != "replay" || a.Operator != "tester" || a.Selection != id0 ||
		len(a.Entries) != 1 || a.Entries[0].ID != ids[0] || a.Entries[0].EventID != es[0].EventID || len(a.Failed) != 0 {
		t.Errorf("history[0] = %+v, want tester's replay of %d", a, ids[0])
	}
	if a := actions[1]; a.Action != "purge" || a.Operator != "tester" || a.Selection != "--all" ||
		len(a.Entries) != 2 || a.Entries[0].ID != ids[1] || a.Entries[1].ID != ids[2] || len(a.Failed) != 0 {
		t.Errorf("history[1] = %+v, want tester's purge of %d and %d", a, ids[1], ids[2])
	}
	if a := actions[0]; a.At.IsZero() || time.Since(a.At) > time.Minute {
		t.Errorf("history[0] at %v, want now", a.At)
	}
	code, out, _ = dlqCLI(t, cfg, "history", "--region", "eu")
	rows = dlqTableRows(out)
	if code != 0 || len(rows) != 2 || !strings.Contains(rows[0], "tester") || !strings.Contains(rows[0], "replay") ||
		!strings.Contains(rows[1], "tester") || !strings.Contains(rows[1], "purge") || dlqLastLine(out) != "2 recorded actions in region eu" {
		t.Errorf("dlq history: exit %d:\n%s", code, out)
	}

	// ---- errors, with geomux still running
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			code int
			want string
		}{
			{"list without --region", []string{"list"}, 2, "--region is required"},
			{"unknown region", []string{"list", "--region", "mars"}, 2, `--region "mars" is not configured`},
			{"show unknown id", []string{"show", "--region", "eu", "999"}, 1, "no dead letter 999 in region eu"},
			{"show not an id", []string{"show", "--region", "eu", "abc"}, 2, `"abc" is not a dead-letter id`},
			{"replay without a selection", []string{"replay", "--region", "eu"}, 2, "say which entries"},
			{"replay with ids and --all", []string{"replay", "--region", "eu", "--all", "5"}, 2, "choose one of"},
			{"replay with --all and --account", []string{"replay", "--region", "eu", "--all", "--account", "acct-a"}, 2, "choose one of"},
			{"replay unknown id", []string{"replay", "--region", "eu", "999"}, 1, "no such entry"},
			{"purge without a selection", []string{"purge", "--region", "eu", "--yes"}, 2, "say which entries"},
			{"purge with --all and --before", []string{"purge", "--region", "eu", "--all", "--before", "1h", "--yes"}, 2, "choose one of"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, out, errOut := dlqCLI(t, cfg, tc.args...)
				if code != tc.code {
					t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, tc.code, out, errOut)
				}
				dlqCheckErrorLine(t, errOut, tc.want)
			})
		}
		// Nothing was recorded for the failed commands.
		if code, out, _ := dlqCLI(t, cfg, "history", "--region", "eu"); code != 0 || dlqLastLine(out) != "2 recorded actions in region eu" {
			t.Errorf("history after the failed commands: exit %d:\n%s", code, out)
		}
	})
}

// The CLI needs the region's NATS: with nothing listening at nats.listen it
// says so at once.
func TestCLIDLQCannotReachNATS(t *testing.T) {
	cfg := dlqConfig(t, freePort(t), freePort(t), freePort(t), freePort(t), "http://127.0.0.1:1/bot")
	for _, args := range [][]string{
		{"list", "--region", "eu"},
		{"show", "--region", "eu", "1"},
		{"replay", "--region", "eu", "--all"},
		{"purge", "--region", "eu", "--all", "--yes"},
		{"history", "--region", "eu"},
	} {
		t.Run(args[0], func(t *testing.T) {
			start := time.Now()
			code, _, errOut := dlqCLI(t, cfg, args...)
			if code != 1 {
				t.Errorf("exit %d, want 1 (stderr %q)", code, errOut)
			}
			dlqCheckErrorLine(t, errOut, "cannot reach NATS")
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %v to say NATS is unreachable", took)
			}
		})
	}
	// Neither nats.url nor nats.listen: nothing to connect to.
	noListen := dlqConfig(t, "", freePort(t), freePort(t), freePort(t), "http://127.0.0.1:1/bot")
	code, _, errOut := dlqCLI(t, noListen, "list", "--region", "eu")
	if code != 2 {
		t.Errorf("no nats.url nor nats.listen: exit %d, want 2 (stderr %q)", code, errOut)
	}
	dlqCheckErrorLine(t, errOut, "neither nats.url nor nats.listen")
}
