// The developer chat: plays a Zoom user against geomux through the
// sandbox's /chat/api. It draws the bot's messages as Zoom Team Chat draws
// a message card (head, sub head, message with markdown, actions, select,
// fields, sections, attachments, dividers, alerts) and turns clicks into
// the matching interactive_message_* events.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { setup: null, version: "", key: "", drawn: new Map(), poll: 0 };

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch("api/" + path, init);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error || data.message || resp.status + " " + resp.statusText);
  return data;
}

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }

function person() {
  return { app: $("app").value, account: $("account").value.trim(), name: $("user").value.trim() };
}

function currentApp() {
  return state.setup.apps.find((a) => a.name === $("app").value) || state.setup.apps[0];
}

// --- setup: app, account, region, user ------------------------------------

async function start() {
  state.setup = await api("GET", "setup");
  for (const a of state.setup.apps) $("app").append(new Option(a.name + (a.region ? " (pinned to " + a.region + ")" : ""), a.name));
  $("region").append(new Option("(no region yet)", ""));
  for (const r of state.setup.regions) $("region").append(new Option(r.display_name + " (" + r.name + ")", r.name));
  $("app").addEventListener("change", changed);
  $("account").addEventListener("change", changed);
  $("user").addEventListener("change", changed);
  $("place").addEventListener("click", () => place().catch(showError));
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); say().catch(showError); });
  await changed();
}

async function changed() {
  showError("");
  const p = person(), app = currentApp();
  $("bot-name").textContent = app.name === "default" ? "Bot" : app.name;
  $("bot-jid").textContent = app.bot_jid;
  $("user-ids").textContent = "";
  state.key = JSON.stringify(p);
  state.version = "";
  state.drawn.clear();
  $("messages").replaceChildren();
  $("empty").hidden = false;
  await loadRegion().catch(showError);
  poll(++state.poll);
}

async function loadRegion() {
  const app = currentApp(), account = $("account").value.trim();
  const note = $("region-note");
  if (app.region) {
    $("region").value = app.region;
    $("region").disabled = $("place").disabled = true;
    note.textContent = "This app is pinned to " + app.region + ": its events go there whatever the directory says.";
    return;
  }
  $("region").disabled = $("place").disabled = !state.setup.directory;
  if (!account) return;
  const rec = await api("GET", "accounts/" + encodeURIComponent(account));
  $("region").value = rec.region || "";
  note.textContent = rec.region
    ? "geomux's directory places " + account + " in " + rec.region + "."
    : "geomux's directory has no region for " + account + ": its events wait, parked, until you set one.";
}

async function place() {
  showError("");
  const account = $("account").value.trim(), region = $("region").value;
  if (!region) throw new Error("choose a region to place the account in");
  await api("PUT", "accounts/" + encodeURIComponent(account), { region });
  await loadRegion();
}

// --- talking to the bot ----------------------------------------------------

async function say() {
  showError("");
  const text = $("text").value;
  if (!text.trim()) return;
  $("send").disabled = true;
  try {
    await api("POST", "say", Object.assign(person(), { text }));
    $("text").value = "";
  } finally {
    $("send").disabled = false;
    $("text").focus();
  }
}

async function act(messageID, action) {
  showError("");
  const r = await api("POST", "act", Object.assign(person(), { message_id: messageID }, action));
  if (!/^2/.test(r.delivery)) throw new Error("geomux did not take the event: " + r.delivery);
}

// poll long-polls the conversation; a newer poll (another account or
// user) ends this one.
async function poll(generation) {
  while (generation === state.poll) {
    const p = person();
    const q = new URLSearchParams({ app: p.app, account: p.account, name: p.name });
    if (state.version) q.set("after", state.version);
    try {
      const conv = await api("GET", "conversation?" + q);
      if (generation !== state.poll) return;
      state.version = conv.version;
      draw(conv.items);
    } catch (err) {
      if (generation !== state.poll) return;
      showError(err);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

// draw replaces only the messages that changed, so that a field being
// edited keeps its text while other messages arrive.
function draw(items) {
  const list = $("messages");
  const seen = new Set();
  let before = null;
  for (let i = items.length - 1; i >= 0; i--) {
    const it = items[i];
    const sig = JSON.stringify(it);
    seen.add(it.id);
    let node = state.drawn.get(it.id);
    if (!node || node.dataset.sig !== sig) {
      const fresh = it.from === "bot" ? botMessage(it) : userMessage(it);
      fresh.dataset.sig = sig;
      if (node) node.replaceWith(fresh);
      node = fresh;
      state.drawn.set(it.id, node);
    }
    if (node.nextSibling !== before || node.parentNode !== list) list.insertBefore(node, before);
    before = node;
  }
  for (const [id, node] of state.drawn) if (!seen.has(id)) { node.remove(); state.drawn.delete(id); }
  $("empty").hidden = items.length > 0;
  const user = items.find((it) => it.from === "user");
  if (user) list.scrollTop = list.scrollHeight;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function frame(it, who, avatarText, avatarCls) {
  const li = el("li", "msg " + it.from);
  li.dataset.id = it.id;
  li.append(el("span", "avatar " + avatarCls, avatarText));
  const body = el("div", "body");
  const line = el("div");
  line.append(el("span", "who", who), el("span", "when", new Date(it.at).toLocaleTimeString()));
  body.append(line);
  li.append(body);
  return [li, body, line];
}

function userMessage(it) {
  const name = $("user").value.trim() || "You";
  const [li, body, line] = frame(it, name, name.slice(0, 1).toUpperCase(), "");
  const ok = /^2/.test(it.delivery);
  line.append(el("span", "status" + (ok ? "" : " bad"), ok ? "delivered to geomux" : it.delivery));
  body.append(el("div", "bubble", it.text));
  for (const l of it.links || []) {
    const p = el("div", "preview");
    p.dataset.link = l.url;
    if (l.preview) {
      p.append(card(previewContent(l.preview), false, null));
    } else {
      p.append(el("div", "hint", /^2/.test(l.delivery) ? "link shared: no preview yet" : "link not shared: " + l.delivery));
    }
    body.append(p);
  }
  return li;
}

// previewContent reads an unfurl request body: {"content": card}, the card
// given as an object or as a JSON string.
function previewContent(body) {
  let c = body && body.content !== undefined ? body.content : body;
  if (typeof c === "string") {
    try { c = JSON.parse(c); } catch { c = { body: [{ type: "message", text: c }] }; }
  }
  return c;
}

function botMessage(it) {
  const app = currentApp();
  const [li, body, line] = frame(it, app.name === "default" ? "Bot" : app.name, "B", "bot-avatar");
  li.dataset.messageId = it.id;
  if (it.card.edits > 0) line.append(el("span", "edited", "(edited)"));
  if (it.card.deleted) {
    body.append(el("div", "deleted", "The bot deleted this message."));
    return li;
  }
  body.append(card(it.card.content, it.card.markdown, it.id));
  return li;
}

// --- Zoom's message card ---------------------------------------------------

// card draws content; messageID is the card's, for its interactive items
// (null: drawn read-only, as a link preview).
function card(content, markdown, messageID) {
  const box = el("div", "card");
  content = content || {};
  if (content.head) {
    const h = el("div", "card-head");
    styled(h, content.head.text || "", content.head.style, markdown);
    box.append(h);
    if (content.head.sub_head && content.head.sub_head.text) {
      const s = el("div", "card-sub");
      styled(s, content.head.sub_head.text, content.head.sub_head.style, markdown);
      box.append(s);
    }
  }
  for (const item of content.body || []) box.append(bodyItem(item, markdown, messageID));
  return box;
}

function bodyItem(item, markdown, messageID) {
  switch (item && item.type) {
    case "message": return messageItem(item, markdown, messageID);
    case "actions": return actionsItem(item, messageID);
    case "select": return selectItem(item, messageID);
    case "fields": return fieldsItem(item, markdown, messageID);
    case "section": {
      const s = el("div", "item-section");
      if (item.sidebar_color) s.style.borderLeftColor = safeColor(item.sidebar_color);
      for (const sub of item.sections || []) s.append(bodyItem(sub, markdown, messageID));
      if (item.footer) s.append(el("div", "section-footer", item.footer));
      return s;
    }
    case "attachments": {
      const a = el("div", "item-attachment");
      if (safeURL(item.img_url)) { const img = el("img"); img.src = item.img_url; img.alt = ""; a.append(img); }
      const info = el("div");
      const title = (item.information && item.information.title && item.information.title.text) || item.resource_url || "attachment";
      if (safeURL(item.resource_url)) { const link = el("a", "", title); link.href = item.resource_url; link.target = "_blank"; link.rel = "noopener"; info.append(link); }
      else info.append(el("div", "", title));
      const desc = item.information && item.information.description && item.information.description.text;
      if (desc) info.append(el("div", "hint", desc));
      a.append(info);
      return a;
    }
    case "divider": return el("hr", "item-divider");
    case "alert": return el("div", "item-alert " + (["error", "warning", "success"].includes(item.level) ? item.level : "info"), item.text || "");
    default: return el("div", "item-unknown", "(a \"" + String(item && item.type) + "\" item: the sandbox does not draw it)");
  }
}

function messageItem(item, markdown, messageID) {
  const m = el("div", "item-message");
  if (item.link && safeURL(item.link)) {
    const a = el("a", "", item.text || item.link);
    a.href = item.link; a.target = "_blank"; a.rel = "noopener";
    m.append(a);
  } else {
    styled(m, item.text || "", item.style, markdown || item.is_markdown_support);
  }
  if (item.editable && messageID) {
    m.classList.add("editable");
    m.title = "Click to edit";
    m.addEventListener("click", () => inlineEdit(m, item.text || "", (target) =>
      act(messageID, { kind: "editable", origin: item.text || "", target })));
  }
  return m;
}

function actionsItem(item, messageID) {
  const row = el("div", "item-actions");
  const items = item.limit > 0 ? (item.items || []).slice(0, item.limit) : item.items || [];
  for (const b of items) {
    const btn = el("button", b.style || "Default", b.text || b.value);
    btn.type = "button";
    btn.dataset.value = b.value || "";
    btn.disabled = !messageID || b.style === "Disabled";
    btn.addEventListener("click", () => act(messageID, { kind: "actions", text: b.text || "", value: b.value || "" }).catch(showError));
    row.append(btn);
  }
  return row;
}

function selectItem(item, messageID) {
  const box = el("div", "item-select");
  const id = "select-" + Math.random().toString(36).slice(2);
  const label = el("label", "", item.text || "Choose");
  label.htmlFor = id;
  const sel = el("select");
  sel.id = id;
  sel.append(new Option(item.text || "Choose…", ""));
  for (const o of item.select_items || []) sel.append(new Option(o.text || o.value, o.value));
  if (item.selected_item && item.selected_item.value) sel.value = item.selected_item.value;
  sel.disabled = !messageID;
  sel.addEventListener("change", () => {
    if (sel.value) act(messageID, { kind: "select", text: sel.selectedOptions[0].text, value: sel.value }).catch(showError);
  });
  box.append(label, sel);
  return box;
}

function fieldsItem(item, markdown, messageID) {
  const box = el("div", "item-fields");
  for (const f of item.items || []) {
    const field = el("div", "field" + (f.short ? " short" : ""));
    field.append(el("div", "field-key", f.key || ""));
    const v = el("div", "field-value");
    v.dataset.key = f.key || "";
    styled(v, f.value || "", f.style, markdown);
    if (f.editable && messageID) {
      v.classList.add("editable");
      v.title = "Click to edit";
      if (!String(f.value || "").trim()) v.textContent = "(empty: click to fill)";
      v.addEventListener("click", () => inlineEdit(v, String(f.value || "").trim(), (target) =>
        act(messageID, { kind: "fields_editable", key: f.key || "", origin: f.value || "", target })));
    }
    field.append(v);
    box.append(field);
  }
  return box;
}

// inlineEdit swaps node for an input; Enter sends, Escape cancels.
function inlineEdit(node, value, send) {
  if (node.querySelector("input")) return;
  const saved = Array.from(node.childNodes);
  const form = el("form", "inline-edit");
  const input = el("input");
  input.value = value;
  const ok = el("button", "", "Save");
  ok.type = "submit";
  form.append(input, ok);
  node.replaceChildren(form);
  input.focus();
  const restore = () => node.replaceChildren(...saved);
  form.addEventListener("click", (e) => e.stopPropagation());
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    send(input.value).then(restore, (err) => { restore(); showError(err); });
  });
  input.addEventListener("keydown", (e) => { if (e.key === "Escape") restore(); });
}

function styled(node, text, style, markdown) {
  if (markdown) node.append(...renderMarkdown(String(text)));
  else node.textContent = String(text);
  if (style) {
    if (style.bold) node.style.fontWeight = "700";
    if (style.italic) node.style.fontStyle = "italic";
    if (style.color) node.style.color = safeColor(style.color);
  }
}

function safeURL(u) { return typeof u === "string" && /^https?:\/\//i.test(u); }
function safeColor(c) { return /^#[0-9a-f]{3,8}$|^[a-z]+$/i.test(String(c)) ? c : ""; }

// renderMarkdown turns Zoom chat markdown into DOM nodes, never HTML:
// *bold*, _italic_, ~strike~, `code`, ```code block```, <url|label>,
// [label](url), bare links, and "> " quotes.
function renderMarkdown(text) {
  const out = [];
  const lines = text.split("\n");
  lines.forEach((line, i) => {
    if (line.startsWith("> ")) {
      const q = el("span", "md-quote");
      q.append(...inline(line.slice(2)));
      out.push(q);
    } else {
      out.push(...inline(line));
      if (i < lines.length - 1) out.push(document.createTextNode("\n"));
    }
  });
  return out;
}

const inlinePattern = /```([\s\S]+?)```|`([^`]+)`|<(https?:\/\/[^|>\s]+)(?:\|([^>]+))?>|\[([^\]]+)\]\((https?:\/\/[^)\s]+)\)|(https?:\/\/[^\s<]+)|\*([^*\n]+)\*|(?<![\w])_([^_\n]+)_(?![\w])|~([^~\n]+)~/g;

function inline(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(inlinePattern)) {
    if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
    last = m.index + m[0].length;
    if (m[1] !== undefined || m[2] !== undefined) out.push(el("code", "md-code", m[1] !== undefined ? m[1] : m[2]));
    else if (m[3] !== undefined) out.push(link(m[3], m[4] || m[3]));
    else if (m[5] !== undefined) out.push(link(m[6], m[5]));
    else if (m[7] !== undefined) out.push(link(m[7], m[7]));
    else if (m[8] !== undefined) { const b = el("strong"); b.append(...inline(m[8])); out.push(b); }
    else if (m[9] !== undefined) { const e = el("em"); e.append(...inline(m[9])); out.push(e); }
    else if (m[10] !== undefined) { const s = el("s"); s.append(...inline(m[10])); out.push(s); }
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

function link(url, label) {
  const a = el("a", "", label);
  a.href = url; a.target = "_blank"; a.rel = "noopener";
  return a;
}

start().catch(showError);
