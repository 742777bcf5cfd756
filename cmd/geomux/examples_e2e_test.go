package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
)

// The example backends of examples/, in other languages than Go, run end
// to end against geomux: each answers a user's message with a card with
// two buttons, and a click on one with an edit of the clicked card.

// requireExamplesEnv, set to 1 (CI sets it), makes a missing runtime of an
// example (python3, node) fail its test instead of skipping it.
const requireExamplesEnv = "GEOMUXTEST_REQUIRE_EXAMPLES"

// exampleBackends are the examples: the runtime each needs on PATH, and
// its script under examples/.
var exampleBackends = []struct{ name, runtime, script string }{
	{"python", "python3", "python/backend.py"},
	{"node", "node", "node/backend.js"},
}

func TestE2EExampleBackends(t *testing.T) {
	t.Parallel()
	for _, ex := range exampleBackends {
		t.Run(ex.name, func(t *testing.T) {
			t.Parallel()
			url := startExampleBackend(t, ex.runtime, ex.script)
			p := newPipelineWith(t, t.TempDir(), pipelineOptions{backendURLs: map[string]string{"eu": url}})
			const account = "acct-example"
			p.setRegion(account, "eu")

			p.send(account, "ship it?")
			const asked = "You wrote: *ship it?*"
			state := exampleState(p, account)
			natstest.Eventually(t, 20*time.Second, func() bool { return len(p.delivered()) == 1 },
				"the example's card at Zoom (%s)", state)
			card := p.delivered()[0]
			if card.Text != asked {
				t.Fatalf("card text %q, want %q", card.Text, asked)
			}
			if values := buttonValues(t, card); !slices.Equal(values, []string{"approve", "reject"}) {
				t.Fatalf("card buttons %q, want approve and reject: %s", values, card.Message.Content)
			}

			// The user clicks Approve on the card Zoom delivered.
			p.post(clickOn(t, card, account, "Approve", "approve"))
			const chosen = "Test User chose *Approve* (value approve)"
			natstest.Eventually(t, 20*time.Second, func() bool {
				i := slices.IndexFunc(p.delivered(), func(d sandbox.Delivered) bool { return d.MessageID == card.MessageID })
				return i >= 0 && p.delivered()[i].Edits == 1 && p.delivered()[i].Text == chosen
			}, "the clicked card edited (%s)", state)
			if got := p.delivered(); len(got) != 1 {
				t.Errorf("Zoom got %d messages, want the card only (edited): %q", len(got), texts(got))
			}
		})
	}
}

// exampleState formats, when a failure prints it, what Zoom got and what
// the region gave up on.
func exampleState(p *pipeline, account string) fmt.Stringer {
	return later(func() string {
		var dead []string
		for _, e := range p.deadLetters("eu", account) {
			dead = append(dead, e.EventType+": "+e.Error)
		}
		return fmt.Sprintf("Zoom got %q; dead letters %q", texts(p.delivered()), dead)
	})
}

// later is a fmt.Stringer formatting as what it returns when printed.
type later func() string

func (l later) String() string { return l() }

// startExampleBackend runs an example on a port of its choosing and
// returns its URL; it is killed when the test ends, and what it wrote to
// stderr is logged if the test failed.
func startExampleBackend(t *testing.T, runtime, script string) string {
	t.Helper()
	path, err := exec.LookPath(runtime)
	if err != nil {
		if os.Getenv(requireExamplesEnv) == "1" {
			t.Fatalf("%s not found on PATH (%v), and %s=1", runtime, err, requireExamplesEnv)
		}
		t.Skipf("%s not found on PATH (%v); set %s=1 to make this a failure", runtime, err, requireExamplesEnv)
	}
	abs, err := filepath.Abs(filepath.Join("..", "..", "examples", script))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, abs, "0") // port 0: the example picks a free one and prints it
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s %s: %v", runtime, script, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s %s wrote to stderr:\n%s", runtime, script, stderr.String())
		}
	})

	// Its first line says where it listens.
	first := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		first <- line
		_, _ = io.Copy(io.Discard, r)
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s %s printed no address within 20s", runtime, script)
	}
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if !ok || !strings.HasPrefix(url, "http://") {
		t.Fatalf("%s %s printed %q, want \"listening on http://...\" (it exited? %v)", runtime, script, line, cmd.ProcessState)
	}
	return url
}

// buttonValues are the values of the buttons of a delivered card.
func buttonValues(t *testing.T, d sandbox.Delivered) []string {
	t.Helper()
	var card struct {
		Body []struct {
			Type  string `json:"type"`
			Items []struct {
				Value string `json:"value"`
			} `json:"items"`
		} `json:"body"`
	}
	if err := json.Unmarshal(d.Message.Content, &card); err != nil {
		t.Fatalf("card %s: %v", d.Message.Content, err)
	}
	var values []string
	for _, b := range card.Body {
		if b.Type == "actions" {
			for _, it := range b.Items {
				values = append(values, it.Value)
			}
		}
	}
	return values
}

// clickOn is the interactive_message_actions Zoom sends when the user the
// card was sent to clicks the button text (value) on it.
func clickOn(t *testing.T, d sandbox.Delivered, account, text, value string) []byte {
	t.Helper()
	now := time.Now().UnixMilli()
	body, err := json.Marshal(map[string]any{
		"event":    "interactive_message_actions",
		"event_ts": now,
		"payload": map[string]any{
			"accountId":   account,
			"actionItem":  map[string]string{"text": text, "value": value},
			"channelName": "Test",
			"messageId":   d.MessageID,
			"original":    d.Message.Content,
			"robotJid":    d.Message.RobotJID,
			"timestamp":   now,
			"toJid":       d.Message.ToJID,
			"userId":      "U" + account,
			"userJid":     d.Message.UserJID,
			"userName":    "Test User",
		},
	})
	if err != nil {
		t.Fatal(fmt.Errorf("click: %w", err))
	}
	return body
}
