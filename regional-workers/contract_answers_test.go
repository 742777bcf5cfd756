package workers_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// contractAnswer is a backend's 200 answer and what becomes of it.
type contractAnswer struct {
	name, body string
	// accepted: geomux (ParseBackendAnswer) and the document take it.
	accepted bool
	// zoomRefuses: geomux passes it on (ParseBackendAnswer takes it), but
	// Zoom's API refuses it, and so does the document, which describes
	// Zoom's message card.
	zoomRefuses bool
}

// goAnswer is v as a Go backend answers it, with proto's types.
func goAnswer(v proto.BackendResponse) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

const contractCard = `{"head":{"text":"Result"},"body":[{"type":"message","text":"Hello *world*"}]}`

var contractAnswers = []contractAnswer{
	// Answers geomux accepts.
	{name: "README's", accepted: true, body: `{"messages": [{"content": ` + contractCard + `, "is_markdown_support": true}]}`},
	{name: "every message field", accepted: true, body: `{"messages":[{"content":` + contractCard + `,"to_jid":"c@conference.xmpp.zoom.us","user_jid":"u@xmpp.zoom.us","is_markdown_support":false,"visible_to_user":"U1","reply_to":"M1"}]}`},
	{name: "no reply", accepted: true, body: `{}`},
	{name: "no messages", accepted: true, body: `{"messages":[]}`},
	{name: "an edit of the clicked card", accepted: true, body: `{"edits":[{"content":` + contractCard + `}]}`},
	{name: "edits and deletes", accepted: true, body: `{"messages":[],"edits":[{"message_id":"M1","content":` + contractCard + `,"user_jid":"u@xmpp.zoom.us","is_markdown_support":true}],"deletes":[{"message_id":"M2","user_jid":"u@xmpp.zoom.us"},{}]}`},
	{name: "an unfurl", accepted: true, body: `{"unfurls":[{"content":{"head":{"text":"Preview"}}},{"user_id":"u-7","trigger_id":"trig-3","content":{"body":[]}}]}`},
	{name: "unknown fields", accepted: true, body: `{"messages":[{"content":` + contractCard + `,"note":"ignored"}],"trace":"ignored"}`},
	{name: "Go, edits only (messages null)", accepted: true, body: goAnswer(proto.BackendResponse{Edits: []proto.EditMessage{{Content: json.RawMessage(contractCard)}}})},
	{name: "Go, everything", accepted: true, body: goAnswer(proto.BackendResponse{
		Messages: []proto.ChatMessage{{Content: json.RawMessage(contractCard), ToJID: "t", UserJID: "u", VisibleToUser: "U", ReplyTo: "R"}},
		Edits:    []proto.EditMessage{{MessageID: "M1", Content: json.RawMessage(contractCard)}},
		Deletes:  []proto.DeleteMessage{{MessageID: "M2"}},
		Unfurls:  []proto.UnfurlLink{{Content: json.RawMessage(`{"head":{"text":"Preview"}}`)}},
	})},
	// Answers geomux refuses (dead letters at once).
	{name: "content text", body: `{"messages":[{"content":"Hello"}]}`},
	{name: "content null", body: `{"messages":[{"content":null}]}`},
	{name: "no content", body: `{"messages":[{"to_jid":"c@conference.xmpp.zoom.us"}]}`},
	{name: "messages an object", body: `{"messages":{"content":` + contractCard + `}}`},
	{name: "a list", body: `[{"content":` + contractCard + `}]`},
	{name: "a string", body: `"Hello"`},
	{name: "an edit without content", body: `{"edits":[{"message_id":"M1"}]}`},
	{name: "unfurl content a list", body: `{"unfurls":[{"content":[1]}]}`},
	{name: "markdown a string", body: `{"messages":[{"content":{},"is_markdown_support":"yes"}]}`},
	{name: "to_jid a number", body: `{"messages":[{"content":{},"to_jid":5}]}`},
	{name: "message_id a number", body: `{"deletes":[{"message_id":7}]}`},
	// Passed on by geomux, refused by Zoom.
	{name: "card body not a list", zoomRefuses: true, body: `{"messages":[{"content":{"body":{"type":"message","text":"hi"}}}]}`},
	{name: "card item without type", zoomRefuses: true, body: `{"edits":[{"content":{"body":[{"text":"hi"}]}}]}`},
}

// answerProblems is where the document's verdict on an answer differs from
// geomux's (and Zoom's).
func answerProblems(doc []byte) []string {
	c, err := loadContract(doc, false)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, a := range contractAnswers {
		_, perr := workers.ParseBackendAnswer([]byte(a.body))
		if geomux := perr == nil; geomux != (a.accepted || a.zoomRefuses) {
			out = append(out, fmt.Sprintf("%s: ParseBackendAnswer: %v (the table says accepted %t)", a.name, perr, a.accepted || a.zoomRefuses))
		}
		ok, why := c.validAnswer(http.StatusOK, "application/json", a.body)
		if ok != a.accepted {
			out = append(out, fmt.Sprintf("%s: the document takes it: %t, want %t %s", a.name, ok, a.accepted, why))
		}
	}
	// No reply.
	if ok, why := c.validAnswer(http.StatusNoContent, "", ""); !ok {
		out = append(out, "204: "+why)
	}
	return out
}

// validAnswer validates a backend's answer to POST / against the document.
func (c *contract) validAnswer(status int, contentType, body string) (bool, string) {
	req, err := http.NewRequest(http.MethodPost, "https://backend.example.com/", strings.NewReader("{}"))
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body)), Request: req}
	if contentType != "" {
		resp.Header.Set("Content-Type", contentType)
	}
	ok, errs := c.val.ValidateHttpResponse(req, resp)
	var why []string
	for _, e := range errs {
		why = append(why, e.Error())
		for _, f := range e.SchemaValidationErrors {
			why = append(why, f.Error())
		}
	}
	return ok, strings.Join(why, "; ")
}

// The answers geomux accepts validate against the document's 200 answer,
// and those it refuses do not.
func TestBackendOpenAPIDescribesTheAnswersAccepted(t *testing.T) {
	t.Parallel()
	if p := answerProblems(proto.BackendOpenAPI()); len(p) > 0 {
		t.Fatalf("proto/backend.openapi.yaml and geomux disagree on answers:\n%s", strings.Join(p, "\n"))
	}
	for name, doc := range map[string][]byte{
		"content any":       mutated(t, "        content:\n          $ref: \"#/components/schemas/ZoomMessageCard\"\n        to_jid:", "        content: {}\n        to_jid:"),
		"content optional":  mutated(t, "      description: An edit of a message the bot sent, with the fields of Zoom's request body; `robot_jid` and `account_id` are geomux's.\n      required: [content]\n", "      description: An edit.\n"),
		"messages not null": mutated(t, "        messages:\n          type: [array, \"null\"]", "        messages:\n          type: array"),
		"markdown any":      mutated(t, "        is_markdown_support:\n          type: boolean\n          description: Whether", "        is_markdown_support:\n          description: Whether"),
		"message_id any":    mutated(t, "      description: A deletion of a message the bot sent.\n      properties:\n        message_id:\n          type: string\n", "      description: A deletion of a message the bot sent.\n      properties:\n        message_id:\n"),
		"unfurl any":        mutated(t, "        content:\n          type: object\n          description: Zoom's unfurl content", "        content:\n          description: Zoom's unfurl content"),
	} {
		if len(answerProblems(doc)) == 0 {
			t.Errorf("a wrong document (%s) passes", name)
		}
	}
}
