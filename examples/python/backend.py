#!/usr/bin/env python3
"""An example geomux backend, in Python with its standard library only.

geomux POSTs each Zoom Team Chat event of a region's accounts to the
region's backend_url (handler: http) as a JSON envelope, and sends what the
backend answers to Zoom as the bot. The contract is README's "The backend
contract" and, machine-readable, proto/backend.openapi.yaml.

This backend
  - answers a user's message to the bot (bot_notification) with a card that
    echoes the text and has two buttons, Approve and Reject;
  - answers a click on one of those buttons (interactive_message_actions)
    by editing the clicked card to say what was clicked;
  - answers any other event with 204: no reply;
  - answers a body that is not JSON with 400 (geomux dead-letters the event
    at once: a 4xx other than 408 and 429 is permanent).

Run:  python3 backend.py [PORT]   (or PORT=9000 python3 backend.py)
PORT defaults to 9000; 0 picks a free port. The address it listens on is the
first line it prints.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Zoom's events are small; refuse anything bigger than this.
MAX_BODY = 4 << 20


def answer(envelope):
    """Return (status, answer) for a geomux envelope; answer is None for 204.

    envelope["id"] is stable across Zoom's re-deliveries and geomux's
    retries: the same event can arrive more than once (e.g. after a timeout
    whose answer geomux never read). This backend keeps nothing, so answering
    twice is harmless; a backend that acts (opens a ticket, charges a card)
    should remember the ids it has handled and not act twice.
    """
    event = envelope.get("event")
    zoom_event = as_object(envelope.get("payload"))  # Zoom's event, as Zoom sent it
    fields = as_object(zoom_event.get("payload"))  # the event's own fields

    if event == "bot_notification":
        # A user wrote to the bot (cmd is what they wrote). The reply goes
        # back where the message came from: geomux fills to_jid and user_jid
        # from the event when the answer leaves them out.
        text = fields.get("cmd", "")
        card = {
            "head": {"text": "Approval request"},
            "body": [
                {"type": "message", "text": "You wrote: *%s*" % text},
                {
                    "type": "actions",
                    "items": [
                        {"text": "Approve", "value": "approve", "style": "Primary"},
                        {"text": "Reject", "value": "reject", "style": "Danger"},
                    ],
                },
            ],
        }
        return 200, {"messages": [{"content": card, "is_markdown_support": True}]}

    if event == "interactive_message_actions":
        # A button of the bot's card was clicked. An edit without message_id
        # applies to the clicked card (the envelope's message_id).
        clicked = as_object(fields.get("actionItem"))
        who = fields.get("userName") or "Someone"
        card = {
            "head": {"text": "Approval request"},
            "body": [
                {
                    "type": "message",
                    "text": "%s chose *%s* (value %s)" % (who, clicked.get("text", "?"), clicked.get("value", "?")),
                }
            ],
        }
        return 200, {"edits": [{"content": card, "is_markdown_support": True}]}

    # bot_installed, app_deauthorized, team_chat.*, ...: no reply. On
    # app_deauthorized a real backend erases what it keeps of the account.
    return 204, None


def as_object(value):
    """value if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


class Handler(BaseHTTPRequestHandler):
    server_version = "geomux-example-backend"
    # Keep connections open between geomux's calls (every answer has a
    # Content-Length, or is a 204), and close one idle for longer than
    # geomux keeps it (90 s).
    protocol_version = "HTTP/1.1"
    timeout = 120

    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            # The body is left unread: close the connection after answering.
            self.close_connection = True
            if length < 0:
                return self.reply(411, {"error": "Content-Length required"})
            return self.reply(413, {"error": "body too large"})
        try:
            envelope = json.loads(self.rfile.read(length))
        except ValueError:
            return self.reply(400, {"error": "body is not JSON"})
        if not isinstance(envelope, dict):
            return self.reply(400, {"error": "body is not a geomux envelope"})
        # X-Geomux-Event-Id equals envelope["id"]; X-Geomux-Region, envelope["region"].
        self.log_message("event %s (%s) of account %s", envelope.get("id"), envelope.get("event"), envelope.get("account_id"))
        status, body = answer(envelope)
        self.reply(status, body)

    def reply(self, status, body):
        """Answer status with body as JSON, or with no body when body is None."""
        self.send_response(status)
        if body is None:
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "9000"))
    host = os.environ.get("HOST", "127.0.0.1")
    server = ThreadingHTTPServer((host, port), Handler)
    print("listening on http://%s:%d/" % (host, server.server_address[1]), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
