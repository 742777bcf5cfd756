package workers_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// marker is a distinctive string the seeds put in a backend's answer: an
// error that quotes the answer would show it.
const marker = "SECRET-MARKER-1234"

// digitRuns are what an error may vary by (byte offsets, message indexes).
var digitRuns = regexp.MustCompile(`[0-9]+`)

func normDigits(s string) string { return digitRuns.ReplaceAllString(s, "0") }

// fixedErrorTexts are the messages ParseBackendResponse may give, with its
// variable parts spelled out: the offset and index as 0, the JSON path of
// the field (the struct's own names, not the answer's spelling) and the kind
// of value found. They are what an error may share with a backend's answer.
var fixedErrorTexts = func() []string {
	p := retry.ErrPermanent.Error()
	out := []string{
		p + `: backend answer is not JSON (invalid at byte 0); want {"messages":[...]}`,
		p + `: backend answer is not {"messages":[...]}`,
		p + `: backend answer: messages[0].content must be a JSON object (a Zoom message card)`,
	}
	for _, field := range append([]string{"the answer"}, jsonPaths(reflect.TypeFor[proto.BackendResponse](), "")...) {
		for _, kind := range []string{"string", "number", "bool", "array", "object"} {
			out = append(out, p+`: backend answer: `+field+` is a JSON `+kind+`; want {"messages":[{"content":{...}}]}`)
		}
	}
	for i := range out {
		out[i] = normDigits(out[i])
	}
	return out
}()

// jsonPaths lists the JSON paths encoding/json names the fields of struct
// type t by in an UnmarshalTypeError ("messages", "messages.to_jid", ...).
func jsonPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		out = append(out, prefix+name)
		ft := t.Field(i).Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			out = append(out, jsonPaths(ft, prefix+name+".")...)
		}
	}
	return out
}

// isFixedText reports whether s, digits aside, is part of a fixed message.
func isFixedText(s string) bool {
	s = normDigits(s)
	for _, f := range fixedErrorTexts {
		if strings.Contains(f, s) {
			return true
		}
	}
	return false
}

// FuzzParseBackendResponse checks ParseBackendResponse on any answer:
//   - it never panics;
//   - a blank answer is no reply; an answer that is not JSON is an error
//     saying so;
//   - on success every message's content is a JSON object;
//   - every error wraps retry.ErrPermanent and never quotes the answer: no
//     8-byte piece of the error is in the answer unless it is also fixed
//     text of the function's messages (and the seeds' marker never shows).
func FuzzParseBackendResponse(f *testing.F) {
	for _, name := range zoomtest.Names {
		raw, err := os.ReadFile("../pkg/zoom/zoomtest/testdata/" + name + ".json")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		f.Add(zoomtest.Event(name))
		// The event as a reply's content, as an echoing backend would.
		f.Add([]byte(`{"messages":[{"content":` + string(zoomtest.Event(name)) + `}]}`))
	}
	for _, s := range []string{
		``, ` `, "\n\t", "\u00a0", `null`, `{}`, `[]`, `{"messages":null}`, `{"messages":[]}`,
		`{"messages":[{"content":{"body":[{"type":"message","text":"` + marker + `"}]}}]}`,
		`{"messages":[{"to_jid":"` + marker + `@xmpp.zoom.us","user_jid":"u@xmpp.zoom.us","content":{"head":{"text":"hi"}},"is_markdown_support":true}]}`,
		`<html><body>` + marker + `</body></html>`,
		marker,
		`{"messages":"` + marker + `"}`,
		`{"messages":[{"content":"` + marker + `"}]}`,
		`{"messages":[{"content":["` + marker + `"]}]}`,
		`{"messages":[{"content":{}},{"content":` + marker + `}]}`,
		`{"messages":[{"to_jid":{"` + marker + `":1},"content":{}}]}`,
		`{"messages":[{"is_markdown_support":"` + marker + `","content":{}}]}`,
		`{"messages":[{"is_markdown_support":12345678901234567890,"content":{}}]}`,
		`{"messages":[{"reply_to":1234567890123,"content":{}}]}`,
		`{"messages":[{"visible_to_user":["` + marker + `"],"content":{}}]}`,
		`{"messages":[{"content":{},"reply_to":"` + marker + `","visible_to_user":"` + marker + `"}]}`,
		`{"MESSAGES":[{"Content":{"` + marker + `":true}}]}`,
		`{"` + marker + `":[1,2,3],"messages":[]}`,
		`{"messages":[{"content":{"a":1e999}}]}`,
		`{"messages":[{"content":{}}]} trailing ` + marker,
		`{"messages":[{"content":{"text":"` + marker + `"` + strings.Repeat(" ", 40) + `,}}]}`,
		`"` + marker + `"`,
		`123456789012345678901234567890`,
		`{"messages":[{"content":null}]}`,
		`{"messages":[{"content":{}}],"messages":[{}]}`,
		"{\"messages\":[{\"content\":{\"\xff\":\"\xfe" + marker + "\"}}]}",
		strings.Repeat("[", 10001) + marker,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		msgs, err := workers.ParseBackendResponse(raw)
		if err == nil {
			if len(bytes.TrimSpace(raw)) == 0 && msgs != nil {
				t.Fatalf("blank answer %q gave messages %v", raw, msgs)
			}
			for i, m := range msgs {
				if !isJSONObject(m.Content) {
					t.Fatalf("answer %q: messages[%d].content %q is not a JSON object", raw, i, m.Content)
				}
			}
			if len(bytes.TrimSpace(raw)) > 0 && !json.Valid(raw) {
				t.Fatalf("answer %q is not JSON, but was accepted", raw)
			}
			return
		}
		if !errors.Is(err, retry.ErrPermanent) {
			t.Fatalf("ParseBackendResponse(%q) = %v, which does not wrap retry.ErrPermanent", raw, err)
		}
		msg := err.Error()
		if msgs != nil {
			t.Fatalf("ParseBackendResponse(%q) returned messages with error %v", raw, err)
		}
		if !json.Valid(raw) && !strings.Contains(msg, "not JSON") {
			t.Fatalf("ParseBackendResponse(%q) = %v; want it to say the answer is not JSON", raw, err)
		}
		if strings.Contains(msg, marker) {
			t.Fatalf("error %q quotes the answer's %s", msg, marker)
		}
		const n = 8
		for i := 0; i+n <= len(msg); i++ {
			w := msg[i : i+n]
			if bytes.Contains(raw, []byte(w)) && !isFixedText(w) {
				t.Fatalf("error %q quotes %q from the answer %q", msg, w, raw)
			}
		}
	})
}

// isJSONObject reports whether b is one JSON object, and nothing else, that
// decodes (numbers kept as written).
func isJSONObject(b json.RawMessage) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return false
	}
	_, err := dec.Token()
	return errors.Is(err, io.EOF) && json.Valid(b)
}
