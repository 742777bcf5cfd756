#!/usr/bin/env node
// An example geomux backend, in Node.js without dependencies (node:http).
//
// geomux POSTs each Zoom Team Chat event of a region's accounts to the
// region's backend_url (handler: http) as a JSON envelope, and sends what the
// backend answers to Zoom as the bot. The contract is README's "The backend
// contract" and, machine-readable, proto/backend.openapi.yaml.
//
// This backend
//   - answers a user's message to the bot (bot_notification) with a card that
//     echoes the text and has two buttons, Approve and Reject;
//   - answers a click on one of those buttons (interactive_message_actions)
//     by editing the clicked card to say what was clicked;
//   - answers any other event with 204: no reply;
//   - answers a body that is not JSON with 400 (geomux dead-letters the event
//     at once: a 4xx other than 408 and 429 is permanent).
//
// Run:  node backend.js [PORT]   (or PORT=9000 node backend.js)
// PORT defaults to 9000; 0 picks a free port. The address it listens on is
// the first line it prints.

'use strict';

const http = require('node:http');

// Zoom's events are small; refuse anything bigger than this.
const MAX_BODY = 4 << 20;

// asObject is value if it is a JSON object, else an empty one.
function asObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
}

// answer returns [status, answer] for a geomux envelope; answer is null for
// 204.
//
// envelope.id is stable across Zoom's re-deliveries and geomux's retries:
// the same event can arrive more than once (e.g. after a timeout whose
// answer geomux never read). This backend keeps nothing, so answering twice
// is harmless; a backend that acts (opens a ticket, charges a card) should
// remember the ids it has handled and not act twice.
function answer(envelope) {
  const zoomEvent = asObject(envelope.payload); // Zoom's event, as Zoom sent it
  const fields = asObject(zoomEvent.payload); // the event's own fields

  switch (envelope.event) {
    case 'bot_notification': {
      // A user wrote to the bot (cmd is what they wrote). The reply goes back
      // where the message came from: geomux fills to_jid and user_jid from
      // the event when the answer leaves them out.
      const card = {
        head: { text: 'Approval request' },
        body: [
          { type: 'message', text: `You wrote: *${fields.cmd ?? ''}*` },
          {
            type: 'actions',
            items: [
              { text: 'Approve', value: 'approve', style: 'Primary' },
              { text: 'Reject', value: 'reject', style: 'Danger' },
            ],
          },
        ],
      };
      return [200, { messages: [{ content: card, is_markdown_support: true }] }];
    }
    case 'interactive_message_actions': {
      // A button of the bot's card was clicked. An edit without message_id
      // applies to the clicked card (the envelope's message_id).
      const clicked = asObject(fields.actionItem);
      const who = fields.userName || 'Someone';
      const card = {
        head: { text: 'Approval request' },
        body: [{ type: 'message', text: `${who} chose *${clicked.text ?? '?'}* (value ${clicked.value ?? '?'})` }],
      };
      return [200, { edits: [{ content: card, is_markdown_support: true }] }];
    }
    default:
      // bot_installed, app_deauthorized, team_chat.*, ...: no reply. On
      // app_deauthorized a real backend erases what it keeps of the account.
      return [204, null];
  }
}

// reply answers status with body as JSON, or with no body when body is null.
function reply(res, status, body) {
  if (body === null) {
    res.writeHead(status);
    res.end();
    return;
  }
  const data = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'POST');
    return reply(res, 405, { error: 'POST only' });
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY) chunks.push(chunk);
  });
  req.on('end', () => {
    if (size > MAX_BODY) {
      return reply(res, 413, { error: 'body too large' });
    }
    let envelope;
    try {
      envelope = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return reply(res, 400, { error: 'body is not JSON' });
    }
    if (envelope === null || typeof envelope !== 'object' || Array.isArray(envelope)) {
      return reply(res, 400, { error: 'body is not a geomux envelope' });
    }
    // The X-Geomux-Event-Id header equals envelope.id; X-Geomux-Region, envelope.region.
    console.error(`event ${envelope.id} (${envelope.event}) of account ${envelope.account_id}`);
    const [status, body] = answer(envelope);
    reply(res, status, body);
  });
});

// geomux keeps idle connections for 90 s: keep them open longer, so that
// the server never closes one just as geomux sends on it.
server.keepAliveTimeout = 120_000;

const port = Number(process.argv[2] ?? process.env.PORT ?? 9000);
const host = process.env.HOST || '127.0.0.1';
server.listen(port, host, () => {
  console.log(`listening on http://${host}:${server.address().port}/`);
});
// Stop on Ctrl-C or SIGTERM, letting calls in flight finish.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
  });
}
