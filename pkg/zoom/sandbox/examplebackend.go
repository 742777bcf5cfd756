package sandbox

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
)

// ExampleBackend is a regional backend implementing geomux's backend
// contract, for trying a bot's whole round trip (the developer chat,
// `geomux send`):
//
//   - bot_notification: a card with the user's text (markdown), buttons, a
//     select and an editable field;
//   - a click on a button: the card edited to say which (Delete deletes it);
//     an option chosen, a field or message edited: the card edited to show it;
//   - team_chat.link_shared: a preview of the link (an unfurl);
//   - anything else: no reply (204).
func ExampleBackend(w http.ResponseWriter, r *http.Request) {
	var req proto.BackendRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 2<<20)).Decode(&req); err != nil {
		http.Error(w, "body is not a geomux backend request", http.StatusBadRequest)
		return
	}
	answer, ok := exampleAnswer(req)
	if !ok {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, answer)
}

// Interactive events, as Zoom sends them: what the user did to a card.
type exampleAction struct {
	ActionItem    struct{ Text, Value string }   `json:"actionItem"`
	SelectedItems []struct{ Value string }       `json:"selectedItems"`
	EditItem      struct{ Target string }        `json:"editItem"`
	FieldEditItem struct{ Key, NewValue string } `json:"fieldEditItem"`
}

func exampleAnswer(req proto.BackendRequest) (proto.BackendResponse, bool) {
	var ev struct {
		Payload exampleAction `json:"payload"`
	}
	_ = json.Unmarshal(req.Payload, &ev)
	p := ev.Payload
	markdown := true
	switch req.Event {
	case zoom.EventBotNotification:
		chat, err := zoom.ParseChat(req.Payload)
		if err != nil || chat.Text == "" {
			return proto.BackendResponse{}, false
		}
		return proto.BackendResponse{Messages: []proto.ChatMessage{{Content: exampleCard(req.Region, chat.Text, ""), IsMarkdownSupport: &markdown}}}, true
	case "interactive_message_actions":
		if p.ActionItem.Value == "delete" {
			return proto.BackendResponse{Deletes: []proto.DeleteMessage{{}}}, true // the clicked card
		}
		return exampleEdit(req.Region, "You chose *"+p.ActionItem.Text+"*."), true
	case "interactive_message_select":
		if len(p.SelectedItems) == 0 {
			return proto.BackendResponse{}, false
		}
		return exampleEdit(req.Region, "Priority set to *"+p.SelectedItems[0].Value+"*."), true
	case "interactive_message_fields_editable":
		return exampleEdit(req.Region, p.FieldEditItem.Key+" is now _"+p.FieldEditItem.NewValue+"_."), true
	case "interactive_message_editable":
		return exampleEdit(req.Region, "Edited to: "+p.EditItem.Target), true
	case zoom.EventLinkShared:
		var ls struct {
			Payload struct {
				Object struct{ Link string } `json:"object"`
			} `json:"payload"`
		}
		_ = json.Unmarshal(req.Payload, &ls)
		content, _ := json.Marshal(map[string]any{
			"head": map[string]any{"text": "Preview from the " + req.Region + " backend"},
			"body": []map[string]any{{"type": "message", "text": ls.Payload.Object.Link}},
		})
		return proto.BackendResponse{Unfurls: []proto.UnfurlLink{{Content: content}}}, true // answers the shared link
	}
	return proto.BackendResponse{}, false
}

// exampleEdit rewrites the clicked card with what happened.
func exampleEdit(region, what string) proto.BackendResponse {
	markdown := true
	return proto.BackendResponse{Edits: []proto.EditMessage{{Content: exampleCard(region, "", what), IsMarkdownSupport: &markdown}}}
}

// exampleCard is the example's card: a fresh one for text, or the card
// after an action (done), without its controls.
func exampleCard(region, text, done string) json.RawMessage {
	head := map[string]any{"text": "Example backend (" + region + ")", "sub_head": map[string]string{"text": "Answered in region " + region}}
	var body []map[string]any
	if done != "" {
		body = []map[string]any{{"type": "message", "text": done}}
	} else {
		body = []map[string]any{
			{"type": "message", "text": "You said: *" + strings.ReplaceAll(text, "*", "") + "*"},
			{"type": "actions", "items": []map[string]string{
				{"text": "Approve", "value": "approve", "style": "Primary"},
				{"text": "Reject", "value": "reject", "style": "Danger"},
				{"text": "Delete", "value": "delete", "style": "Default"},
			}},
			{"type": "select", "text": "Priority", "select_items": []map[string]string{
				{"text": "Low", "value": "low"}, {"text": "Normal", "value": "normal"}, {"text": "High", "value": "high"},
			}},
			{"type": "fields", "items": []map[string]any{
				{"key": "Note", "value": " ", "editable": true},
				{"key": "Region", "value": region, "editable": false, "short": true},
			}},
		}
	}
	b, _ := json.Marshal(map[string]any{"head": head, "body": body})
	return b
}
