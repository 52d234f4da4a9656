// quart-chat page: wire protocol v1 over one WebSocket, no dependencies, no build step.
//
// Every piece of text that came from the network is put into the page with textContent
// (never parsed as markup), so a message containing HTML or script shows literally.
"use strict";

(() => {
  const CHANNEL_RE = /^[A-Za-z0-9_.:\-]{1,128}$/;
  const NAME_RE = /^[A-Za-z0-9_.\-]{1,64}$/;
  const HISTORY_LIMIT = 50;
  const BACKOFF_FIRST_MS = 250;
  const BACKOFF_MAX_MS = 10000;
  const PRESENCE_EVERY_MS = 15000;
  const MAX_KEPT = 500; // messages kept per channel
  const STORE = "quart-chat";
  const CLOSE_TOKEN_EXPIRED = 4003;
  const REFRESH_AHEAD_S = 30; // refresh at most this long before a token expires
  const REFRESH_RETRY_MS = 1000;
  const REFRESH_RETRY_MAX_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const auth = document.body.dataset.auth === "token" ? "token" : "name";

  const state = {
    name: "",
    token: "",
    ws: null,
    welcomed: false,
    everWelcomed: false,
    retries: 0,
    reconnectTimer: null,
    nextId: 1,
    pending: new Map(), // request id -> {resolve, reject}
    channels: new Map(), // name -> channel state
    current: null,
    limits: {},
    presenceTimer: null,
    refreshTimer: null,
    refreshDelay: REFRESH_RETRY_MS,
  };

  /** A deployment's token source: window.quartChatTokenProvider, a function returning a
   *  token (or a promise of one), defined by a script loaded before this one; or null. */
  function tokenProvider() {
    return auth === "token" && typeof window.quartChatTokenProvider === "function"
      ? window.quartChatTokenProvider : null;
  }

  // -- small helpers ----------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function saved() {
    try {
      return JSON.parse(localStorage.getItem(STORE) || "{}");
    } catch (e) {
      return {};
    }
  }

  function save() {
    try {
      localStorage.setItem(STORE, JSON.stringify({
        name: state.name,
        channels: [...state.channels.keys()],
        current: state.current,
      }));
    } catch (e) { /* private mode: nothing to remember */ }
  }

  function initials(name) {
    return (name || "?").replace(/[^A-Za-z0-9]/g, "").slice(0, 2).toUpperCase() || "?";
  }

  function hue(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  function avatar(name, className) {
    const node = el("span", className || "avatar", initials(name));
    node.style.setProperty("--hue", String(hue(name)));
    node.setAttribute("aria-hidden", "true");
    return node;
  }

  function clock(ts) {
    return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function parseChannels(text) {
    return text.split(/[\s,]+/).map((c) => c.replace(/^#/, "")).filter(Boolean);
  }

  // -- the connection ---------------------------------------------------------------

  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams({ batch: "1" });
    if (auth === "token") params.set("token", state.token);
    else params.set("client_id", state.name);
    return `${scheme}//${location.host}/ws?${params}`;
  }

  async function connect() {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    setStatus("connecting");
    const provider = tokenProvider();
    if (provider) {
      // A fresh token for every connection: the last one may have expired meanwhile.
      try {
        state.token = String(await provider());
      } catch (e) {
        disconnected({ code: 0 });
        return;
      }
    }
    const ws = new WebSocket(wsUrl());
    state.ws = ws;
    ws.onmessage = (event) => {
      if (state.ws !== ws) return;
      // ?batch=1: one WebSocket frame may carry several newline-separated documents.
      for (const line of String(event.data).split("\n")) {
        if (!line) continue;
        let frame;
        try {
          frame = JSON.parse(line);
        } catch (e) {
          continue;
        }
        handle(frame);
      }
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      disconnected(event);
    };
  }

  function disconnected(event) {
    const wasWelcomed = state.welcomed;
    clearTimeout(state.refreshTimer);
    state.ws = null;
    state.welcomed = false;
    for (const { reject } of state.pending.values()) {
      reject({ code: "disconnected", message: "connection lost" });
    }
    state.pending.clear();
    for (const channel of state.channels.values()) {
      channel.subscribed = false;
      forgetMembers(channel);
    }
    renderMembers();
    if (!state.everWelcomed) {
      // The very first attempt failed: a refused name/token or an unreachable server.
      showLogin(auth === "token"
        ? "Could not connect: the token was refused or the server is unreachable."
        : "Could not connect: the name was refused or the server is unreachable.");
      return;
    }
    setStatus("offline");
    if (event.code === CLOSE_TOKEN_EXPIRED && !tokenProvider()) {
      // The pasted token has expired: reconnecting with it would be refused.
      showLogin("Your token expired: paste a new one to continue.");
      return;
    }
    if (wasWelcomed) {
      const why = event.code === 1001 ? "The server is restarting" : "Connection lost";
      showBanner(`${why}. Reconnecting…`, "warn");
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.retries);
    state.retries += 1;
    const jittered = delay / 2 + Math.random() * (delay / 2);
    state.reconnectTimer = setTimeout(connect, jittered);
  }

  // -- token lifetime: refresh ahead of expiry (with window.quartChatTokenProvider) ------

  /** A JWT's exp (epoch seconds), read without verifying: only to time the refresh. */
  function tokenExp(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const exp = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "="))).exp;
      return typeof exp === "number" ? exp : null;
    } catch (e) {
      return null;
    }
  }

  /** At 80% of the remaining lifetime or 30 s before exp, whichever is earlier, but not
   *  before half of it (the Python client's rule). */
  function scheduleRefresh(delayMs) {
    clearTimeout(state.refreshTimer);
    if (!tokenProvider()) return;
    if (delayMs === undefined) {
      const exp = tokenExp(state.token);
      if (exp === null) return;
      const lifetime = exp - Date.now() / 1000;
      delayMs = 1000 * Math.min(0.8 * lifetime, lifetime - Math.min(REFRESH_AHEAD_S, lifetime / 2));
    }
    state.refreshTimer = setTimeout(refreshToken, Math.max(0, delayMs));
  }

  async function refreshToken() {
    const ws = state.ws;
    try {
      const token = String(await tokenProvider()());
      await request("refresh", { token });
      state.token = token;
      state.refreshDelay = REFRESH_RETRY_MS;
      scheduleRefresh();
    } catch (error) {
      if (state.ws !== ws || !state.welcomed) return; // a new connection brings its own token
      const delay = state.refreshDelay;
      state.refreshDelay = Math.min(delay * 2, REFRESH_RETRY_MAX_MS);
      scheduleRefresh(delay);
    }
  }

  function send(frame) {
    if (!state.ws || !state.welcomed) return false;
    state.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Send a request; resolve with its result frame, reject with its error frame. */
  function request(type, fields) {
    return new Promise((resolve, reject) => {
      const id = state.nextId++;
      if (!send({ type, id, ...fields })) {
        reject({ code: "disconnected", message: "not connected; retrying shortly" });
        return;
      }
      state.pending.set(id, { resolve, reject });
    });
  }

  // -- frames from the server -------------------------------------------------------

  const handlers = {
    welcome(frame) {
      const first = !state.everWelcomed;
      state.welcomed = true;
      state.everWelcomed = true;
      state.retries = 0;
      state.name = frame.client_id;
      state.limits = frame.limits || {};
      if (state.limits.max_text_length) $("text").maxLength = state.limits.max_text_length;
      setStatus("online");
      if (first) {
        enterApp();
      } else {
        // Back from "token expired" with a new pasted token, or a plain reconnect.
        $("login").hidden = true;
        $("app").hidden = false;
        showBanner("Reconnected.", "ok", 2500);
      }
      state.refreshDelay = REFRESH_RETRY_MS;
      scheduleRefresh();
      resubscribe();
    },
    result(frame) {
      const waiter = state.pending.get(frame.id);
      if (waiter) {
        state.pending.delete(frame.id);
        waiter.resolve(frame);
      }
    },
    error(frame) {
      const waiter = frame.id === null ? undefined : state.pending.get(frame.id);
      if (waiter) {
        state.pending.delete(frame.id);
        waiter.reject(frame);
      } else {
        showError(`${frame.code}: ${frame.message}`);
      }
    },
    message(frame) {
      addMessages(frame.channel, [frame]);
    },
    // join/leave: sent when the server runs with QUART_CHAT_JOIN_LEAVE; they keep the
    // member list live (without them it is refreshed by polling presence).
    join(frame) {
      const channel = state.channels.get(frame.channel);
      if (!channel) return;
      const name = String(frame.client_id);
      const sessions = channel.sessions.get(name) || new Set();
      sessions.add(String(frame.session));
      channel.sessions.set(name, sessions);
      if (!channel.members.includes(name)) {
        channel.members = [...channel.members, name].sort();
        if (channel.name === state.current) renderMembers();
      }
    },
    leave(frame) {
      const channel = state.channels.get(frame.channel);
      if (!channel) return;
      const name = String(frame.client_id);
      const sessions = channel.sessions.get(name);
      if (sessions) {
        sessions.delete(String(frame.session));
        if (sessions.size) return; // still here from another tab we saw join
        channel.sessions.delete(name);
      }
      if (channel.listed.has(name)) {
        // Listed by presence before we saw its sessions join: it may have others.
        refreshPresence(channel);
        return;
      }
      channel.members = channel.members.filter((member) => member !== name);
      if (channel.name === state.current) renderMembers();
    },
    unsubscribed(frame) {
      // The server left the channel for us (a refreshed token no longer allows it):
      // forget it, so it is not rejoined on reconnect.
      if (!state.channels.has(frame.channel)) return;
      forget(frame.channel);
      showError(`Left #${frame.channel}: ${frame.reason || "unsubscribed by the server"}`);
    },
    gap(frame) {
      const channel = state.channels.get(frame.channel);
      if (!channel) return;
      addNote(channel, `Messages may have been missed (${frame.reason || "gap"}).`, "gap");
      loadHistory(channel);
    },
  };

  function handle(frame) {
    const handler = handlers[frame && frame.type];
    if (handler) handler(frame);
  }

  // -- channels -----------------------------------------------------------------------

  function channelState(name) {
    let channel = state.channels.get(name);
    if (!channel) {
      channel = {
        name,
        items: [], // {kind: "message", msg} | {kind: "note"|"failed", ...}, in display order
        mids: new Set(),
        unread: 0,
        members: [],
        sessions: new Map(), // client id -> session ids seen joining (join/leave frames)
        listed: new Set(), // client ids the last presence answer listed
        subscribed: false,
        history: true, // false once the server said history_unavailable
      };
      state.channels.set(name, channel);
    }
    return channel;
  }

  /** Subscribe; with ``since`` (recovery extension) ask for what was missed after it.
   *  Resolves to true when the server recovered the missed messages itself. */
  async function subscribe(channel, since) {
    const fields = { channel: channel.name };
    if (since) fields.since = since; // servers without recovery ignore the field
    let reply = {};
    try {
      reply = await request("subscribe", fields);
    } catch (error) {
      if (error.code !== "already_subscribed") throw error;
    }
    channel.subscribed = true;
    return reply.recovered === true;
  }

  function lastMid(channel) {
    for (let i = channel.items.length - 1; i >= 0; i -= 1) {
      if (channel.items[i].kind === "message") return channel.items[i].msg.mid;
    }
    return null;
  }

  async function join(name, { open = true } = {}) {
    const channel = channelState(name);
    renderChannels();
    if (open) openChannel(name);
    try {
      await subscribe(channel);
    } catch (error) {
      state.channels.delete(name);
      if (state.current === name) state.current = null;
      renderChannels();
      if (!state.current && state.channels.size) openChannel(state.channels.keys().next().value);
      else if (!state.current) renderCurrent();
      save();
      throw error;
    }
    save();
    loadHistory(channel);
    if (state.current === name) refreshPresence();
  }

  async function resubscribe() {
    const ws = state.ws;
    await Promise.all([...state.channels.values()].map((channel) => rejoin(channel, ws, 0)));
    refreshPresence();
  }

  /** Subscribe ``channel`` again on connection ``ws``; while the broker is briefly
   *  ``unavailable``, retry with backoff as long as that connection lasts. */
  async function rejoin(channel, ws, attempt) {
    channel.subscribed = false;
    try {
      const recovered = await subscribe(channel, lastMid(channel));
      // Without recovery, history fills the log (and after a drop, what was missed).
      if (!recovered) loadHistory(channel);
      if (attempt) refreshPresence();
    } catch (error) {
      if (error.code === "disconnected" || state.ws !== ws) return;
      if (!state.channels.has(channel.name)) return;
      if (error.code === "unavailable") {
        if (!attempt) addNote(channel, "The server cannot reach its broker; retrying…", "gap");
        const delay = Math.min(BACKOFF_MAX_MS, 500 * 2 ** attempt);
        setTimeout(() => {
          if (state.ws === ws) rejoin(channel, ws, attempt + 1);
        }, delay);
        return;
      }
      addNote(channel, `Could not rejoin: ${error.code}: ${error.message}`, "error");
    }
  }

  async function leave(name) {
    const channel = state.channels.get(name);
    if (!channel) return;
    try {
      await request("unsubscribe", { channel: name });
    } catch (error) {
      if (error.code !== "not_subscribed") {
        showError(`${error.code}: ${error.message}`);
        return;
      }
    }
    forget(name);
  }

  function forget(name) {
    state.channels.delete(name);
    if (state.current === name) {
      state.current = null;
      const next = state.channels.keys().next();
      if (!next.done) openChannel(next.value);
    }
    renderChannels();
    renderCurrent();
    save();
  }

  async function loadHistory(channel) {
    if (!channel.history) return;
    let reply;
    try {
      reply = await request("history", { channel: channel.name, limit: HISTORY_LIMIT });
    } catch (error) {
      if (error.code === "history_unavailable") channel.history = false;
      return;
    }
    addMessages(channel.name, reply.messages || [], { fromHistory: true });
  }

  function addMessages(name, messages, { fromHistory = false } = {}) {
    const channel = state.channels.get(name);
    if (!channel) return;
    let added = 0;
    let unknownSender = false;
    for (const msg of messages) {
      if (!msg || typeof msg.mid !== "string" || channel.mids.has(msg.mid)) continue;
      channel.mids.add(msg.mid);
      channel.items.push({ kind: "message", msg: {
        sender: String(msg.sender), text: String(msg.text), ts: Number(msg.ts) || 0,
        mid: msg.mid, bot: msg.bot === true,
      } });
      added += 1;
      if (!fromHistory && name !== state.current) channel.unread += 1;
      if (!msg.bot && !channel.members.includes(msg.sender)) unknownSender = true;
    }
    if (!added) return;
    if (fromHistory) channel.items.sort(byTime);
    if (channel.items.length > MAX_KEPT) {
      for (const item of channel.items.splice(0, channel.items.length - MAX_KEPT)) {
        if (item.kind === "message") channel.mids.delete(item.msg.mid);
      }
    }
    if (name === state.current) {
      if (fromHistory || added > 1) renderLog();
      else appendItem(channel, channel.items[channel.items.length - 1], true);
      if (unknownSender) refreshPresence();
    } else {
      renderChannels();
    }
  }

  function byTime(a, b) {
    return itemTs(a) - itemTs(b);
  }

  function itemTs(item) {
    return item.kind === "message" ? item.msg.ts : item.ts;
  }

  function addNote(channel, text, tone, extra) {
    const item = { kind: "note", text, tone, ts: Date.now() / 1000, ...extra };
    channel.items.push(item);
    if (channel.name === state.current) appendItem(channel, item, true);
  }

  /** Ask the server who is in ``channel`` (default: the open one). */
  async function refreshPresence(channel = state.current && state.channels.get(state.current)) {
    if (!channel || !state.welcomed) return;
    try {
      const reply = await request("presence", { channel: channel.name });
      channel.members = (reply.clients || []).map(String);
    } catch (error) {
      return;
    }
    channel.listed = new Set(channel.members);
    if (channel.name === state.current) renderMembers();
  }

  function forgetMembers(channel) {
    channel.members = [];
    channel.sessions.clear();
    channel.listed.clear();
  }

  // -- rendering ----------------------------------------------------------------------

  function renderChannels() {
    const list = $("channels");
    list.replaceChildren();
    for (const channel of state.channels.values()) {
      const item = el("li");
      const button = el("button", "channel");
      button.type = "button";
      button.dataset.channel = channel.name;
      if (channel.name === state.current) {
        button.classList.add("active");
        button.setAttribute("aria-current", "true");
      }
      button.append(el("span", "hash", "#"), el("span", "channel-name", channel.name));
      if (channel.unread) {
        const badge = el("span", "unread", channel.unread > 99 ? "99+" : String(channel.unread));
        badge.setAttribute("aria-label", `${channel.unread} unread`);
        button.append(badge);
      }
      button.addEventListener("click", () => {
        openChannel(channel.name);
        closeDrawers();
      });
      item.append(button);
      list.append(item);
    }
  }

  function openChannel(name) {
    const channel = state.channels.get(name);
    if (!channel) return;
    state.current = name;
    channel.unread = 0;
    save();
    renderChannels();
    renderCurrent();
    refreshPresence();
  }

  function renderCurrent() {
    const channel = state.current && state.channels.get(state.current);
    $("channel-title").textContent = channel ? `#${channel.name}` : "No channel";
    $("text").placeholder = channel ? `Message #${channel.name}` : "Join a channel first";
    $("text").disabled = !channel;
    $("send-button").disabled = !channel;
    $("leave-button").hidden = !channel;
    renderLog();
    renderMembers();
  }

  function renderLog() {
    const log = $("log");
    log.replaceChildren();
    const channel = state.current && state.channels.get(state.current);
    if (channel) {
      for (const item of channel.items) appendItem(channel, item, false);
    }
    updateEmpty(channel);
    log.scrollTop = log.scrollHeight;
  }

  function updateEmpty(channel) {
    $("empty").hidden = !channel || channel.items.length > 0;
  }

  function appendItem(channel, item, scroll) {
    const log = $("log");
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    let node;
    if (item.kind === "message") {
      node = messageNode(item.msg, log.lastElementChild);
    } else {
      node = noteNode(item);
    }
    log.append(node);
    updateEmpty(channel);
    if (scroll && (nearBottom || (item.kind === "message" && item.msg.sender === state.name))) {
      log.scrollTop = log.scrollHeight;
    }
  }

  function messageNode(msg, previous) {
    const own = msg.sender === state.name && !msg.bot;
    const node = el("li", "message");
    node.dataset.mid = msg.mid;
    node.dataset.sender = msg.sender;
    if (own) node.classList.add("own");
    if (msg.bot) node.classList.add("bot");
    const follows = previous && previous.classList.contains("message") &&
      previous.dataset.sender === msg.sender &&
      msg.ts - Number(previous.dataset.ts) < 120;
    node.dataset.ts = String(msg.ts);
    if (follows) node.classList.add("follow");
    node.append(avatar(msg.sender, msg.bot ? "avatar bot-avatar" : "avatar"));
    const bubble = el("div", "bubble");
    const meta = el("div", "meta");
    meta.append(el("span", "sender", msg.sender));
    if (msg.bot) meta.append(el("span", "badge", "bot"));
    const time = el("time", "time", clock(msg.ts));
    time.dateTime = new Date(msg.ts * 1000).toISOString();
    time.title = new Date(msg.ts * 1000).toLocaleString();
    meta.append(time);
    bubble.append(meta, el("div", "text", msg.text));
    node.append(bubble);
    return node;
  }

  function noteNode(item) {
    const node = el("li", `note ${item.tone || ""}`.trim());
    if (item.kind === "note" && item.failedText !== undefined) {
      node.classList.add("failed");
      node.append(el("div", "failed-text", item.failedText));
      const why = el("div", "failed-why");
      why.append(el("strong", "code", item.code), el("span", "", ` ${item.text}`));
      node.append(why);
      node.dataset.code = item.code;
    } else {
      node.append(el("span", "", item.text));
    }
    return node;
  }

  function renderMembers() {
    const channel = state.current && state.channels.get(state.current);
    const list = $("members");
    list.replaceChildren();
    const members = channel ? channel.members : [];
    for (const name of members) {
      const item = el("li", "member");
      item.append(avatar(name), el("span", "member-name", name));
      if (name === state.name) item.append(el("span", "you", "you"));
      list.append(item);
    }
    $("member-count").textContent = String(members.length);
  }

  function setStatus(status) {
    const node = $("status");
    node.dataset.state = status;
    node.textContent = status;
  }

  let bannerTimer = null;
  function showBanner(text, tone, hideAfterMs) {
    const banner = $("banner");
    banner.textContent = text;
    banner.dataset.tone = tone;
    banner.hidden = false;
    clearTimeout(bannerTimer);
    if (hideAfterMs) bannerTimer = setTimeout(() => { banner.hidden = true; }, hideAfterMs);
  }

  let errorTimer = null;
  function showError(text) {
    const bar = $("error-bar");
    bar.textContent = text;
    bar.hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => { bar.hidden = true; }, 8000);
  }

  // -- login and the app shell ----------------------------------------------------------

  function showLogin(error) {
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-button").disabled = false;
    $("login-error").textContent = error || "";
  }

  function enterApp() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("me").textContent = state.name;
    $("me-avatar").replaceWith(Object.assign(avatar(state.name), { id: "me-avatar" }));
    document.title = `quart-chat · ${state.name}`;
    const wanted = state.initialChannels.filter((c) => CHANNEL_RE.test(c));
    for (const name of wanted) channelState(name);
    const preferred = saved().current;
    state.current = wanted.includes(preferred) ? preferred : wanted[0] || null;
    renderChannels();
    renderCurrent();
    clearInterval(state.presenceTimer);
    state.presenceTimer = setInterval(() => refreshPresence(), PRESENCE_EVERY_MS);
    $("text").focus();
  }

  function closeDrawers() {
    document.body.classList.remove("show-sidebar", "show-members");
    $("scrim").hidden = true;
  }

  function toggleDrawer(name) {
    const open = !document.body.classList.contains(name);
    closeDrawers();
    if (open) {
      document.body.classList.add(name);
      $("scrim").hidden = false;
    }
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const channels = parseChannels($("login-channels").value);
    const bad = channels.find((c) => !CHANNEL_RE.test(c));
    if (bad !== undefined) {
      $("login-error").textContent = `"${bad}" is not a channel name (A-Z a-z 0-9 _ . : -)`;
      return;
    }
    if (auth === "token") {
      // With a token provider, connect() asks it; otherwise the pasted token is used.
      state.token = tokenProvider() ? "" : $("token").value.trim();
      if (!state.token && !tokenProvider()) {
        $("login-error").textContent = "A token is required.";
        return;
      }
    } else {
      state.name = $("name").value.trim();
      if (!NAME_RE.test(state.name)) {
        $("login-error").textContent = "Use 1-64 letters, digits, _ . or -";
        return;
      }
    }
    state.initialChannels = channels;
    $("login-error").textContent = "";
    $("login-button").disabled = true;
    connect();
  });

  $("join-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("join-input");
    const name = input.value.trim().replace(/^#/, "");
    $("join-error").textContent = "";
    if (!name) return;
    if (!CHANNEL_RE.test(name)) {
      $("join-error").textContent = "Use 1-128 of A-Z a-z 0-9 _ . : -";
      return;
    }
    input.value = "";
    if (state.channels.has(name)) {
      openChannel(name);
      closeDrawers();
      return;
    }
    try {
      await join(name);
      closeDrawers();
    } catch (error) {
      $("join-error").textContent = `${error.code}: ${error.message}`;
    }
  });

  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("text");
    const text = input.value;
    const channel = state.current && state.channels.get(state.current);
    if (!channel || !text.trim()) return;
    input.value = "";
    autosize();
    try {
      await request("publish", { channel: channel.name, text });
    } catch (error) {
      // Shown in place: the text that was not sent, and why.
      addNote(channel, error.message || "", "error",
              { failedText: text, code: error.code || "error" });
    }
  });

  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });

  function autosize() {
    const input = $("text");
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  }
  $("text").addEventListener("input", autosize);

  $("leave-button").addEventListener("click", () => {
    if (state.current) leave(state.current);
  });
  $("menu-button").addEventListener("click", () => toggleDrawer("show-sidebar"));
  $("members-button").addEventListener("click", () => toggleDrawer("show-members"));
  $("scrim").addEventListener("click", closeDrawers);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeDrawers();
  });

  // -- start ------------------------------------------------------------------------------

  const remembered = saved();
  if (auth === "token") {
    $("name-field").hidden = true;
    $("token-field").hidden = Boolean(tokenProvider());
    $("login-hint").textContent = tokenProvider()
      ? "This site signs you in to the chat." : "This server needs an access token.";
  } else if (remembered.name) {
    $("name").value = remembered.name;
  }
  if (Array.isArray(remembered.channels) && remembered.channels.length) {
    $("login-channels").value = remembered.channels.join(", ");
  }
  state.initialChannels = [];
  (auth === "token" ? (tokenProvider() ? $("login-channels") : $("token")) : $("name")).focus();
})();
