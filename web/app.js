// The web chat page: plain JavaScript against the HTTP API and the WebSocket (/v1/ws).
//
// The inbox is the source of truth: the page keeps a sync checkpoint and, whenever the
// WebSocket says the inbox has news (or on connecting), reads /v1/sync after it. A notice
// is only a hint, so a lost one is made up by the next one or the next connection.
// Every text from the server is shown with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: null,
  me: null,
  checkpoint: 0,
  conversations: new Map(), // id -> summary
  open: null, // { id, title, seqs: Set, nextBefore }
  ws: null,
  syncing: null, // the sync in progress
  syncAgain: false,
};

function status(text) {
  $("status").textContent = text || "";
}

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    const err = new Error(data?.error?.message || `${method} ${path}: ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

// Runs an action, showing its failure instead of throwing it away.
function guarded(fn) {
  return async (...args) => {
    try {
      status("");
      await fn(...args);
    } catch (e) {
      status(e.message);
      console.error(e);
    }
  };
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// ---- signing in ------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const pasted = $("signin-token").value.trim();
  if (pasted) {
    state.token = pasted;
  } else {
    const user = $("signin-user").value.trim();
    state.token = (await api("POST", "/v1/dev/token", { user_id: user })).token;
  }
  try {
    state.me = await api("GET", "/v1/me");
  } catch (e) {
    if (e.status !== 404) throw e;
    // A first visit: everyone needs a profile.
    const user = JSON.parse(atob(state.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub;
    state.me = await api("PUT", "/v1/me", { name: user });
  }
  $("signin").hidden = true;
  $("whoami").hidden = false;
  $("whoami").textContent = `${state.me.name} (${state.me.user_id})`;
  $("app").hidden = false;
  state.checkpoint = await syncEnd();
  await Promise.all([loadConversations(), loadFriends(), loadGroups()]);
  connect();
}

// The checkpoint after everything already in the inbox: the lists show the past.
async function syncEnd() {
  let after = 0;
  for (;;) {
    const page = await api("GET", `/v1/sync?after=${after}&limit=200`);
    after = page.next_after;
    if (!page.has_more) return after;
  }
}

// ---- live updates ----------------------------------------------------------------------

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws?token=${encodeURIComponent(state.token)}`;
  const ws = new WebSocket(url);
  state.ws = ws;
  let pinger = null;
  ws.onopen = () => {
    $("live").className = "on";
    pinger = setInterval(() => ws.send(JSON.stringify({ type: "ping" })), 25000);
  };
  ws.onmessage = (m) => {
    const frame = JSON.parse(m.data);
    // "ready": catch up on what came while disconnected; "inbox": news.
    if (frame.type === "ready" || frame.type === "inbox") catchUp();
  };
  ws.onclose = (e) => {
    $("live").className = "off";
    clearInterval(pinger);
    if (e.code === 1008) return status("Your session has expired: reload the page and sign in again");
    if (state.ws === ws) setTimeout(connect, 2000);
  };
}

// Reads the inbox after the checkpoint; one sync at a time, one more if news came meanwhile.
function catchUp() {
  if (state.syncing) {
    state.syncAgain = true;
    return state.syncing;
  }
  state.syncing = guarded(async () => {
    do {
      state.syncAgain = false;
      await syncOnce();
    } while (state.syncAgain);
  })().finally(() => {
    state.syncing = null;
  });
  return state.syncing;
}

async function syncOnce() {
  let refreshFriends = false;
  let refreshGroups = false;
  let readNow = false; // news in the conversation on screen
  let more = true;
  while (more) {
    const page = await api("GET", `/v1/sync?after=${state.checkpoint}&limit=100`);
    for (const entry of page.items) {
      if (entry.message) {
        if (state.open && entry.message.conversation_id === state.open.id) {
          showMessage(entry.message, false);
          readNow ||= entry.message.sender !== state.me.user_id;
        }
      } else if (entry.kind.startsWith("friend")) {
        refreshFriends = true;
      } else {
        refreshGroups = true;
      }
    }
    state.checkpoint = page.next_after;
    more = page.has_more;
    if (page.reset) refreshFriends = refreshGroups = true;
  }
  // Read before the list is drawn, so that what is on screen has no badge.
  if (readNow && document.visibilityState === "visible") await markRead(true);
  const work = [loadConversations()];
  if (refreshFriends) work.push(loadFriends());
  if (refreshGroups) work.push(loadGroups());
  await Promise.all(work);
}

// ---- lists ---------------------------------------------------------------------------

async function loadConversations() {
  const page = await api("GET", "/v1/conversations?limit=100");
  state.conversations = new Map(page.items.map((c) => [c.conversation_id, c]));
  const list = $("conversations");
  list.replaceChildren(
    ...page.items.map((c) =>
      el(
        "li",
        {
          className: state.open?.id === c.conversation_id ? "active" : "",
          dataset: { testid: "conversation", conversationId: c.conversation_id },
          onclick: guarded(() => openConversation(c.conversation_id, c.title)),
        },
        el("span", { className: "title", textContent: c.title }),
        el("span", { className: "preview", textContent: c.last_message?.text ?? "" }),
        c.unread > 0 ? el("span", { className: "badge", textContent: String(c.unread), dataset: { testid: "unread" } }) : null,
      ),
    ),
  );
}

async function loadFriends() {
  const [friends, requests] = await Promise.all([
    api("GET", "/v1/friends?limit=100"),
    api("GET", "/v1/friend-requests?limit=100"),
  ]);
  $("friends").replaceChildren(
    ...friends.items.map((f) =>
      el("li", { dataset: { testid: "friend", userId: f.user_id }, onclick: guarded(() => openConversation(f.conversation_id, f.name || f.user_id)) },
        el("span", { className: "title", textContent: f.name || f.user_id }),
        el("span", { className: "preview", textContent: f.user_id })),
    ),
  );
  $("requests").replaceChildren(
    ...requests.items.map((r) =>
      el("li", { dataset: { testid: "request", from: r.from } },
        el("span", { className: "preview", textContent: `${r.from} wants to be friends` }),
        el("button", { textContent: "Accept", dataset: { testid: "accept" }, onclick: guarded(async () => {
          await api("POST", `/v1/friend-requests/${encodeURIComponent(r.from)}/accept`, {});
          await Promise.all([loadFriends(), loadConversations()]);
        }) })),
    ),
  );
}

async function loadGroups() {
  const page = await api("GET", "/v1/me/groups?limit=100");
  $("groups").replaceChildren(
    ...page.items.map((g) =>
      el("li", { dataset: { testid: "group", groupId: g.group_id }, onclick: guarded(() => openConversation(g.group_id, g.name)) },
        el("span", { className: "title", textContent: g.name }),
        el("span", { className: "preview", textContent: `${g.member_count} members` })),
    ),
  );
}

// ---- a conversation ------------------------------------------------------------------

async function openConversation(id, title) {
  state.open = { id, title, seqs: new Set(), nextBefore: null };
  $("chat-title").textContent = title;
  $("messages").replaceChildren();
  $("composer").hidden = false;
  await loadOlder();
  await markRead();
  await loadConversations();
  $("composer-text").focus();
}

// A page of history, older than what is shown (newest first from the server).
async function loadOlder() {
  const open = state.open;
  const before = open.nextBefore ? `&before=${open.nextBefore}` : "";
  const page = await api("GET", `/v1/conversations/${encodeURIComponent(open.id)}/messages?limit=30${before}`);
  if (state.open !== open) return;
  for (const m of page.items) showMessage(m, true);
  open.nextBefore = page.next_before ?? null;
  $("older").hidden = open.nextBefore === null;
}

function showMessage(m, older) {
  const open = state.open;
  if (!open || open.seqs.has(m.seq)) return;
  open.seqs.add(m.seq);
  const item = el("li", { className: m.sender === state.me.user_id ? "mine" : "", dataset: { testid: "message", seq: String(m.seq) } },
    el("span", { className: "meta", textContent: `${m.sender} · ${new Date(m.send_time).toLocaleTimeString()}` }),
    el("span", { className: "text", textContent: m.text }));
  // Kept in seq order, wherever it arrives from.
  const list = $("messages");
  const after = [...list.children].find((li) => Number(li.dataset.seq) > m.seq);
  list.insertBefore(item, after ?? null);
  if (!older) item.scrollIntoView({ block: "end" });
}

// Marks the open conversation read (unless the list says nothing in it is unread).
async function markRead(force = false) {
  const c = state.conversations.get(state.open.id);
  if (!force && c && c.unread === 0) return;
  await api("POST", `/v1/conversations/${encodeURIComponent(state.open.id)}/read`, {});
}

async function send(event) {
  event.preventDefault();
  const text = $("composer-text").value;
  if (!text.trim() || !state.open) return;
  const id = state.open.id;
  // The same client_msg_id on a retry returns the first result: a double click sends once.
  const clientMsgId = $("composer").dataset.pending || crypto.randomUUID();
  $("composer").dataset.pending = clientMsgId;
  const sent = await api("POST", `/v1/conversations/${encodeURIComponent(id)}/messages`, {
    client_msg_id: clientMsgId,
    type: "text",
    text,
  });
  delete $("composer").dataset.pending;
  $("composer-text").value = "";
  if (state.open?.id === id) showMessage(sent, false);
}

// ---- search, friends, groups -----------------------------------------------------------

async function search(event) {
  event.preventDefault();
  const q = $("search-q").value.trim();
  const page = await api("GET", `/v1/search/messages?q=${encodeURIComponent(q)}&limit=20`);
  $("search-results").replaceChildren(
    ...(page.items.length === 0
      ? [el("li", { className: "preview", textContent: "No messages found" })]
      : page.items.map((m) =>
          el("li", { dataset: { testid: "search-result" }, onclick: guarded(() => openConversation(m.conversation_id, state.conversations.get(m.conversation_id)?.title ?? m.conversation_id)) },
            el("span", { className: "title", textContent: m.sender }),
            el("span", { className: "preview", textContent: m.text })),
        )),
  );
}

async function addFriend(event) {
  event.preventDefault();
  const to = $("add-friend-user").value.trim();
  await api("POST", "/v1/friend-requests", { to });
  $("add-friend-user").value = "";
  status(`Asked ${to} to be friends`);
  await loadFriends();
}

async function newGroup(event) {
  event.preventDefault();
  const members = $("new-group-members").value.split(",").map((s) => s.trim()).filter(Boolean);
  await api("POST", "/v1/groups", { name: $("new-group-name").value.trim(), join_policy: "open", members });
  $("new-group-name").value = $("new-group-members").value = "";
  await Promise.all([loadGroups(), loadConversations()]);
}

$("signin").addEventListener("submit", guarded(signIn));
$("composer").addEventListener("submit", guarded(send));
$("composer-text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("older").addEventListener("click", guarded(loadOlder));
$("search").addEventListener("submit", guarded(search));
$("add-friend").addEventListener("submit", guarded(addFriend));
$("new-group").addEventListener("submit", guarded(newGroup));
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.open) guarded(async () => { await markRead(); await loadConversations(); })();
});
