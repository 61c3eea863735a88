// Clawrden dashboard. Vanilla JavaScript, no framework, no third-party code.
//
// Every value that comes from the warden (argv, cwd, reasons, names) reaches the page
// through textContent or createTextNode, never through HTML parsing: an argv of
// `<script>` is shown as those characters. And every such text passes through `reveal`
// (or `quoteToken` for argv): control characters and characters that are invisible or
// reorder text (U+202E, U+200B, ...) are shown as escapes, so a card cannot display one
// command while holding another. The Content-Security-Policy forbids inline
// script and style, so nothing here sets style attributes or event-handler attributes.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // Control characters, and characters that draw nothing or reorder their neighbours:
  // the same set as `is_invisible_or_control` in the policy crate (policy/src/quote.rs),
  // which a warden test compares with this line.
  const HIDDEN_CLASS = "[\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u034f\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890-\\u0891\\u08e2\\u115f-\\u1160\\u17b4-\\u17b5\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u206f\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0\\ufff9-\\ufffb\\u{110bd}\\u{110cd}\\u{13430}-\\u{1343f}\\u{1bca0}-\\u{1bca3}\\u{1d173}-\\u{1d17a}\\u{e0001}\\u{e0020}-\\u{e007f}\\u{e0100}-\\u{e01ef}]";
  const HIDDEN = new RegExp(HIDDEN_CLASS, "u");
  const HIDDEN_ALL = new RegExp(HIDDEN_CLASS, "gu");

  function escapeChar(ch) {
    if (ch === "\n") return "\\n";
    if (ch === "\t") return "\\t";
    if (ch === "\r") return "\\r";
    return "\\u{" + ch.codePointAt(0).toString(16) + "}";
  }

  /** `text` with every hidden or control character written as an escape (`\\u{202e}`). */
  function reveal(text) {
    const s = String(text);
    return HIDDEN.test(s) ? s.replace(HIDDEN_ALL, escapeChar) : s;
  }

  /** Like `reveal`, but keeps line breaks and tabs (for multi-line text such as the policy). */
  function revealLines(text) {
    return String(text).split("\n").map((line) => line.split("\t").map(reveal).join("\t")).join("\n");
  }

  /** Sets a node's text, revealed. */
  function setText(node, text) {
    node.textContent = reveal(text);
  }

  const state = {
    me: null,                 // {name, scope}
    es: null,                 // EventSource
    lastEventId: null,
    reconnectDelay: 1000,
    reconnectTimer: null,
    queue: new Map(),         // id -> {view, node, parts}
    seen: new Set(),          // pending ids already announced
    queueLoaded: false,
    skew: 0,                  // server clock minus browser clock, ms
    refreshTimer: null,
    history: { cursors: [], cursor: null, next: null, serverUid: true },
    chartRows: null,
    status: null,
    audio: null,
    route: "queue",
    routeArg: null,
  };

  // ---------- small helpers ----------

  /** Creates an element; props are DOM properties or `attrs`; children are nodes or text. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null) continue;
        if (k === "attrs") {
          for (const [a, av] of Object.entries(v)) node.setAttribute(a, String(av));
        } else if (k === "on") {
          for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
        } else if (k === "textContent" || k === "title") {
          node[k] = reveal(v);
        } else {
          node[k] = v;
        }
      }
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      if (Array.isArray(c)) append(node, c);
      else node.appendChild(c instanceof Node ? c : document.createTextNode(reveal(c)));
    }
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) {
      if (c === undefined || c === null) continue;
      node.appendChild(c instanceof Node ? c : document.createTextNode(reveal(c)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  let toastTimer = null;
  function toast(message, bad) {
    const t = $("toast");
    setText(t, message);
    t.classList.toggle("bad", !!bad);
    t.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.remove("show"), bad ? 7000 : 3500);
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Calls the API with the session cookie; throws ApiError with the server's message. */
  async function api(method, path, body) {
    const init = {
      method,
      credentials: "same-origin",
      cache: "no-store",
      // Same-origin requests must carry a real Origin for the CSRF check; under the
      // page's no-referrer policy a browser would send `Origin: null` on POST.
      referrerPolicy: "same-origin",
      headers: { Accept: "application/json" },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "unreachable", "cannot reach the warden: " + e.message);
    }
    let data = null;
    const text = await resp.text();
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!resp.ok) {
      const err = data && data.error ? data.error : {};
      const e = new ApiError(resp.status, err.code || "http_" + resp.status,
        err.message || (resp.status + " " + resp.statusText));
      if (resp.status === 401 && path !== "/api/v1/session") sessionLost(e.message);
      throw e;
    }
    return data;
  }

  // ---------- formatting ----------

  const SAFE_TOKEN = /^[A-Za-z0-9_@%+=:,./-]+$/;

  function hexEscape(bytes) {
    let out = "";
    for (const b of bytes) {
      if (b === 0x27) out += "\\'";
      else if (b === 0x5c) out += "\\\\";
      else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
      else out += "\\x" + b.toString(16).padStart(2, "0");
    }
    return "$'" + out + "'";
  }

  /** $'..' quoting of text, as the policy crate's `shell_quote` writes it: hidden and
   * control characters as their UTF-8 bytes (`\\xe2\\x80\\xae`), the rest as is. */
  function ansiCQuote(s) {
    let out = "";
    for (const ch of s) {
      if (ch === "\\") out += "\\\\";
      else if (ch === "'") out += "\\'";
      else if (ch === "\n") out += "\\n";
      else if (ch === "\t") out += "\\t";
      else if (ch === "\r") out += "\\r";
      else if (HIDDEN.test(ch)) {
        for (const b of new TextEncoder().encode(ch)) out += "\\x" + b.toString(16).padStart(2, "0");
      } else out += ch;
    }
    return "$'" + out + "'";
  }

  /** One argv token as a shell word: `{"hex":..}` tokens, control characters and invisible
   * or bidi characters as $'..'. */
  function quoteToken(t) {
    if (t && typeof t === "object" && typeof t.hex === "string") {
      const bytes = [];
      for (let i = 0; i + 1 < t.hex.length; i += 2) bytes.push(parseInt(t.hex.slice(i, i + 2), 16));
      return hexEscape(bytes);
    }
    const s = String(t);
    if (s !== "" && SAFE_TOKEN.test(s)) return s;
    if (HIDDEN.test(s)) return ansiCQuote(s);
    return "'" + s.replace(/'/g, "'\\''") + "'";
  }

  function quoteArgv(argv) {
    return (argv || []).map(quoteToken).join(" ");
  }

  function tokenText(t) {
    if (t && typeof t === "object" && typeof t.hex === "string") return quoteToken(t);
    return String(t);
  }

  /** Splits a command line typed into the explain box like a POSIX shell would (quotes, backslashes). */
  function splitCommandLine(line) {
    const out = [];
    let cur = "", inWord = false, quote = null;
    for (let i = 0; i < line.length; i++) {
      const c = line[i];
      if (quote === "'") {
        if (c === "'") quote = null; else cur += c;
      } else if (quote === '"') {
        if (c === '"') quote = null;
        else if (c === "\\" && i + 1 < line.length && '"\\$`'.includes(line[i + 1])) cur += line[++i];
        else cur += c;
      } else if (c === "'" || c === '"') {
        quote = c; inWord = true;
      } else if (c === "\\" && i + 1 < line.length) {
        cur += line[++i]; inWord = true;
      } else if (/\s/.test(c)) {
        if (inWord) { out.push(cur); cur = ""; inWord = false; }
      } else {
        cur += c; inWord = true;
      }
    }
    if (quote) throw new Error("unterminated " + quote + " quote");
    if (inWord) out.push(cur);
    return out;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "–";
    const neg = ms < 0;
    let s = Math.floor(Math.abs(ms) / 1000);
    let out;
    if (s < 60) out = s + "s";
    else if (s < 3600) out = Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    else {
      const h = Math.floor(s / 3600);
      s -= h * 3600;
      out = h + "h " + String(Math.floor(s / 60)).padStart(2, "0") + "m";
    }
    return neg ? "-" + out : out;
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms < 1000 ? ms + " ms" : fmtDuration(ms);
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const now = new Date();
    const hms = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (d.toDateString() === now.toDateString()) return hms;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hms;
  }

  function timeEl(iso) {
    return el("time", { dateTime: iso || "", title: iso || "", textContent: fmtTime(iso) });
  }

  function serverNow() { return Date.now() + state.skew; }

  function canApprove() { return !!state.me && (state.me.scope === "approve" || state.me.scope === "admin"); }
  function canAdmin() { return !!state.me && state.me.scope === "admin"; }

  /** What finally happened to a request's decision: allowed, approved, denied or pending. */
  function outcome(r) {
    if (r.approval) {
      const s = r.approval.state;
      if (s === "approved") return "approved";
      if (s === "pending") return "pending";
      return "denied";
    }
    if (r.action === "allow") return "allowed";
    if (r.action === "ask") {
      // An ask without an approval that ran was allowed by a remembered grant.
      if (r.state === "pending") return "pending";
      return r.started_at || r.state === "running" || r.state === "done" ? "approved" : "denied";
    }
    return "denied";
  }

  function decisionText(r) {
    const a = r.approval;
    if (a) {
      if (a.state === "approved") return "approved by " + (a.approver || "?");
      if (a.state === "denied") return "denied by " + (a.approver || "?");
      return "ask: " + a.state;
    }
    if (r.action === "ask" && outcome(r) === "approved") return "ask: remembered grant";
    return r.action || "–";
  }

  function exitText(r) {
    if (r.signal !== null && r.signal !== undefined) return "killed by signal " + r.signal;
    if (r.exit_code !== null && r.exit_code !== undefined) return "exit " + r.exit_code;
    return "";
  }

  function meta(pairs) {
    const dl = el("dl", { className: "meta" });
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === "") continue;
      dl.appendChild(el("dt", null, k));
      dl.appendChild(el("dd", null, v));
    }
    return dl;
  }

  function field(id, labelText, control) {
    control.id = id;
    return el("div", { className: "field" }, el("label", { htmlFor: id }, labelText), control);
  }

  function select(options, value) {
    const s = el("select");
    for (const [v, label] of options) s.appendChild(el("option", { value: v, textContent: label }));
    if (value !== undefined) s.value = value;
    return s;
  }

  // ---------- login / session ----------

  function showLogin(message) {
    closeEvents();
    state.me = null;
    $("app").hidden = true;
    $("login").hidden = false;
    setText($("login-error"), message || "");
    $("login-token").value = "";
    $("login-token").focus();
  }

  function sessionLost(message) {
    if (state.me) showLogin(message || "Your session ended; log in again.");
  }

  async function login(ev) {
    ev.preventDefault();
    const token = $("login-token").value.trim();
    setText($("login-error"), "");
    try {
      const me = await api("POST", "/api/v1/session", { token });
      $("login-token").value = "";
      startApp(me);
    } catch (e) {
      setText($("login-error"), e.message);
    }
  }

  async function logout() {
    try { await api("DELETE", "/api/v1/session"); } catch (_) { /* the cookie is gone either way */ }
    showLogin("Logged out.");
  }

  function startApp(me) {
    state.me = me;
    state.queue.clear();
    state.seen.clear();
    state.queueLoaded = false;
    clear($("queue"));
    $("login").hidden = true;
    $("app").hidden = false;
    setText($("who"), me.name + " (" + me.scope + ")");
    $("readonly-note").hidden = canApprove();
    $("lockdown-note").hidden = canAdmin();
    $("explain-note").hidden = canApprove();
    for (const b of document.querySelectorAll("#explain-form button, #explain-form input")) b.disabled = !canApprove();
    $("lockdown-toggle").disabled = !canAdmin();
    connectEvents();
    refreshQueue();
    loadStatus();
    route();
  }

  // ---------- live events ----------

  function setConn(kind, text) {
    const c = $("conn");
    c.className = "conn " + kind;
    setText(c, text);
  }

  function closeEvents() {
    clearTimeout(state.reconnectTimer);
    if (state.es) { state.es.close(); state.es = null; }
  }

  const EVENT_KINDS = ["request.pending", "request.decided", "request.started", "request.finished",
    "control", "policy.reloaded", "reset"];

  function connectEvents() {
    closeEvents();
    let url = "/api/v1/events";
    if (state.lastEventId) url += "?last_event_id=" + encodeURIComponent(state.lastEventId);
    const es = new EventSource(url);
    state.es = es;
    es.onopen = () => {
      state.reconnectDelay = 1000;
      setConn("live", "● live");
      refreshQueue();
    };
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        setConn("down", "○ offline");
        scheduleReconnect();
      } else {
        setConn("down", "○ reconnecting…");
      }
    };
    for (const kind of EVENT_KINDS) es.addEventListener(kind, (e) => onEvent(kind, e));
  }

  async function scheduleReconnect() {
    closeEvents();
    // A closed stream may mean the session ended: ask before retrying.
    try {
      await api("GET", "/api/v1/session");
    } catch (e) {
      if (e.status === 401) { sessionLost(e.message); return; }
    }
    const delay = state.reconnectDelay;
    state.reconnectDelay = Math.min(delay * 2, 30000);
    state.reconnectTimer = setTimeout(() => { if (state.me) connectEvents(); }, delay);
  }

  function onEvent(kind, e) {
    if (e.lastEventId) state.lastEventId = e.lastEventId;
    let data = {};
    try { data = JSON.parse(e.data || "{}"); } catch (_) { data = {}; }
    switch (kind) {
      case "request.pending":
      case "request.decided":
      case "request.finished":
      case "request.started":
        scheduleRefresh();
        if (state.route === "request" && data.id === state.routeArg) showRequest(state.routeArg);
        break;
      case "control":
        loadStatus();
        if (state.route === "grants") loadGrants();
        scheduleRefresh();
        break;
      case "policy.reloaded":
        if (state.route === "policy") loadPolicy();
        break;
      case "reset":
        scheduleRefresh();
        loadStatus();
        break;
    }
  }

  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refreshQueue, 60);
  }

  // ---------- queue ----------

  async function refreshQueue() {
    if (!state.me) return;
    let data;
    try {
      data = await api("GET", "/api/v1/requests?state=pending&limit=500");
    } catch (e) {
      if (e.status !== 401) setConn("down", "○ " + e.message);
      return;
    }
    const views = (data.requests || []).slice().sort((a, b) => a.created_at.localeCompare(b.created_at));
    const ids = new Set(views.map((v) => v.id));
    for (const [id, item] of state.queue) {
      if (!ids.has(id)) { item.node.remove(); state.queue.delete(id); }
    }
    const fresh = [];
    for (const v of views) {
      if (v.waited_ms !== null && v.waited_ms !== undefined) {
        state.skew = Date.parse(v.created_at) + v.waited_ms - Date.now();
      }
      let item = state.queue.get(v.id);
      if (!item) {
        item = renderCard(v);
        state.queue.set(v.id, item);
        if (state.queueLoaded && !state.seen.has(v.id)) fresh.push(v);
      }
      item.view = v;
      state.seen.add(v.id);
      $("queue").appendChild(item.node); // keeps the oldest first
    }
    state.queueLoaded = true;
    updateQueueCount();
    tick();
    if (fresh.length) announce(fresh);
  }

  function updateQueueCount() {
    const n = state.queue.size;
    const c = $("queue-count");
    setText(c, String(n));
    c.classList.toggle("hot", n > 0);
    $("queue-empty").hidden = n > 0;
    document.title = n > 0 ? "(" + n + ") Clawrden" : "Clawrden";
  }

  function renderCard(v) {
    const id = v.id;
    const waited = el("span", { className: "timer" });
    const left = el("span", { className: "timer" });
    const bar = el("progress", { max: 1000, value: 0 });
    bar.setAttribute("aria-label", "time left before this call is denied automatically");
    const remember = select([["15m", "15 minutes"], ["1h", "1 hour"], ["8h", "8 hours"], ["24h", "24 hours"]], "1h");
    const reason = el("input", { type: "text", autocomplete: "off", placeholder: "optional" });
    const buttons = [];
    const approve = el("button", { type: "button", className: "ok", textContent: "Approve" });
    const approveRemember = el("button", { type: "button", textContent: "Approve & remember" });
    const deny = el("button", { type: "button", className: "danger", textContent: "Deny" });
    buttons.push(approve, approveRemember, deny);
    approve.dataset.action = "approve";
    approveRemember.dataset.action = "approve-remember";
    deny.dataset.action = "deny";
    const run = async (what) => {
      for (const b of buttons) b.disabled = true;
      try {
        if (what === "deny") {
          const r = reason.value.trim();
          await api("POST", "/api/v1/requests/" + encodeURIComponent(id) + "/deny", r ? { reason: r } : {});
          toast("Denied " + quoteArgv(v.argv));
        } else {
          const body = what === "approve-remember" ? { remember: remember.value } : {};
          await api("POST", "/api/v1/requests/" + encodeURIComponent(id) + "/approve", body);
          toast("Approved " + quoteArgv(v.argv) + (body.remember ? " (remembered for " + body.remember + ")" : ""));
        }
        const item = state.queue.get(id);
        if (item) { item.node.remove(); state.queue.delete(id); updateQueueCount(); }
      } catch (e) {
        toast(e.message, true);
        for (const b of buttons) b.disabled = !canApprove();
      }
      scheduleRefresh();
    };
    approve.addEventListener("click", () => run("approve"));
    approveRemember.addEventListener("click", () => run("approve-remember"));
    deny.addEventListener("click", () => run("deny"));
    reason.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); run("deny"); } });
    if (!canApprove()) {
      for (const c of [approve, approveRemember, deny, remember, reason]) c.disabled = true;
    }
    const safeId = id.replace(/[^A-Za-z0-9_-]/g, "_");
    const node = el("li", { className: "card req", attrs: { "data-id": id } },
      el("h3", null,
        el("span", null, v.prisoner),
        el("span", { className: "note" }, "uid " + v.uid + (v.gid !== undefined ? " gid " + v.gid : "")),
        el("a", { href: "#/request/" + encodeURIComponent(id), className: "note" }, "details")),
      el("code", { className: "argv", textContent: quoteArgv(v.argv) }),
      meta([
        ["cwd", tokenText(v.cwd)],
        ["rule", v.rule || "(policy default)"],
        ["why", v.reason || ""],
        ["runs on", v.executor || ""],
        ["id", el("code", null, id)],
      ]),
      el("p", { className: "timers" }, "Waiting ", waited, " · auto-deny in ", left),
      bar,
      el("div", { className: "decide" },
        approve,
        el("div", { className: "row" }, field("remember-" + safeId, "Remember", remember), approveRemember),
        el("div", { className: "row" }, field("reason-" + safeId, "Reason for denying", reason), deny),
        canApprove() ? null : el("p", { className: "note" }, "Read-only token: you cannot decide.")));
    return { view: v, node, parts: { waited, left, bar } };
  }

  /** Updates every queue card's waited time and countdown. */
  function tick() {
    const now = serverNow();
    for (const item of state.queue.values()) {
      const v = item.view;
      const created = Date.parse(v.created_at);
      setText(item.parts.waited, fmtDuration(now - created));
      const exp = v.approval ? Date.parse(v.approval.expires_at) : NaN;
      if (isFinite(exp)) {
        const left = exp - now;
        setText(item.parts.left, left > 0 ? fmtDuration(left) : "now");
        item.parts.left.classList.toggle("urgent", left < 60000);
        const total = Math.max(1, exp - created);
        item.parts.bar.value = Math.max(0, Math.min(1000, Math.round(1000 * left / total)));
      } else {
        setText(item.parts.left, "–");
      }
    }
  }

  // ---------- alerts (opt-in) ----------

  function alertsOn() { return localStorage.getItem("clawrden.alerts") === "1"; }

  async function toggleAlerts() {
    const on = $("notify").checked;
    localStorage.setItem("clawrden.alerts", on ? "1" : "0");
    if (!on) return;
    // Created during the click so browsers allow it to play later.
    if (!state.audio && (window.AudioContext || window.webkitAudioContext)) {
      state.audio = new (window.AudioContext || window.webkitAudioContext)();
    }
    if ("Notification" in window && Notification.permission === "default") {
      try { await Notification.requestPermission(); } catch (_) { /* sound still works */ }
    }
    beep();
  }

  function beep() {
    const ctx = state.audio;
    if (!ctx) return;
    if (ctx.state === "suspended") ctx.resume();
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.0001, ctx.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.2, ctx.currentTime + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 0.25);
    osc.connect(gain).connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.3);
  }

  function announce(views) {
    if (!alertsOn()) return;
    beep();
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    for (const v of views.slice(0, 3)) {
      try {
        const n = new Notification("Clawrden: " + v.prisoner + " waits for approval", {
          body: quoteArgv(v.argv).slice(0, 200), tag: v.id,
        });
        n.onclick = () => { window.focus(); location.hash = "#/queue"; n.close(); };
      } catch (_) { /* some mobile browsers only notify from a service worker */ }
    }
  }

  // ---------- status, prisoners, lockdown ----------

  async function loadStatus() {
    let s;
    try { s = await api("GET", "/api/v1/status"); } catch (_) { return; }
    state.status = s;
    const lock = s.lockdown || { on: false };
    $("lockdown-badge").hidden = !lock.on;
    if (state.route === "prisoners") renderPrisoners();
  }

  function renderPrisoners() {
    const s = state.status;
    if (!s) return;
    const lock = s.lockdown || { on: false };
    const box = document.querySelector(".lockdown");
    box.classList.toggle("on", !!lock.on);
    setText($("lockdown-state"), lock.on
      ? "Lockdown is ON since " + fmtTime(lock.since) + " (by " + (lock.by || "?") + (lock.reason ? ": " + lock.reason : "") + "). Every new call is denied."
      : "Lockdown is off. Calls are decided by the policy." + (lock.by ? " Last switched by " + lock.by + (lock.since ? " at " + fmtTime(lock.since) : "") + "." : ""));
    const t = $("lockdown-toggle");
    setText(t, lock.on ? "Turn lockdown off" : "Turn lockdown on");
    t.className = lock.on ? "ok" : "danger";
    t.disabled = !canAdmin();

    const list = $("prisoners");
    clear(list);
    const prisoners = s.prisoners || [];
    $("prisoners-empty").hidden = prisoners.length > 0;
    for (const p of prisoners) list.appendChild(renderPrisoner(p));
  }

  function renderPrisoner(p) {
    const safe = p.name.replace(/[^A-Za-z0-9_-]/g, "_");
    const duration = select([["5m", "5 minutes"], ["15m", "15 minutes"], ["1h", "1 hour"], ["8h", "8 hours"], ["", "until resumed"]], "15m");
    const kill = el("button", { type: "button", className: "danger", textContent: "Kill" });
    const pause = el("button", { type: "button", textContent: "Pause" });
    const resume = el("button", { type: "button", className: "ok", textContent: "Resume" });
    kill.dataset.action = "kill"; pause.dataset.action = "pause"; resume.dataset.action = "resume";
    for (const c of [kill, pause, resume, duration]) c.disabled = !canAdmin();
    const act = async (action, text) => {
      const answer = await confirmDialog({
        title: action[0].toUpperCase() + action.slice(1) + " prisoner " + p.name + "?",
        text,
        ok: action[0].toUpperCase() + action.slice(1),
        danger: action !== "resume",
      });
      if (!answer) return;
      const body = {};
      if (answer.reason) body.reason = answer.reason;
      if (action === "pause" && duration.value) body.duration = duration.value;
      try {
        await api("POST", "/api/v1/prisoners/" + encodeURIComponent(p.name) + "/" + action, body);
        toast("Prisoner " + p.name + ": " + action + " done");
      } catch (e) {
        toast(e.message, true);
      }
      loadStatus();
    };
    kill.addEventListener("click", () => act("kill",
      "This kills the prisoner's container, its running commands and its pending approvals."));
    pause.addEventListener("click", () => act("pause",
      "New calls from " + p.name + " will be denied " + (duration.value ? "for " + duration.value : "until you resume it") + "."));
    resume.addEventListener("click", () => act("resume", "Calls from " + p.name + " will be decided by the policy again."));
    return el("li", { className: "card prisoner", attrs: { "data-name": p.name } },
      el("h3", null, p.name, " ", el("span", { className: "state act-" + (p.state === "active" ? "allowed" : "denied") }, p.state)),
      meta([
        ["container", p.container || "(local)"],
        ["socket", el("code", null, p.socket || "")],
        ["running", String(p.running)],
        ["pending", String(p.pending)],
      ]),
      el("div", { className: "decide" },
        el("div", { className: "row" }, field("pause-for-" + safe, "Pause for", duration), pause),
        el("div", { className: "actions" }, resume, kill)),
      canAdmin() ? null : el("p", { className: "note" }, "Needs an admin token."));
  }

  async function toggleLockdown() {
    const on = !(state.status && state.status.lockdown && state.status.lockdown.on);
    const kill = el("input", { type: "checkbox", id: "confirm-kill" });
    const extra = on ? el("label", { className: "check", htmlFor: "confirm-kill" }, kill, "Also kill running commands") : null;
    const answer = await confirmDialog({
      title: on ? "Turn lockdown on?" : "Turn lockdown off?",
      text: on ? "Every new call from every prisoner will be denied with reason `lockdown`."
        : "Calls will be decided by the policy again.",
      ok: on ? "Lock down" : "Lift lockdown",
      danger: on,
      extra,
    });
    if (!answer) return;
    const body = { on, kill_running: on && kill.checked };
    if (answer.reason) body.reason = answer.reason;
    try {
      await api("POST", "/api/v1/lockdown", body);
      toast(on ? "Lockdown is on" : "Lockdown is off");
    } catch (e) {
      toast(e.message, true);
    }
    loadStatus();
  }

  /** A modal confirmation with a reason field; resolves to {reason} or null. */
  function confirmDialog({ title, text, ok, danger, extra }) {
    const d = $("confirm");
    setText($("confirm-title"), title);
    setText($("confirm-text"), text);
    const box = $("confirm-extra");
    clear(box);
    if (extra) box.appendChild(extra);
    $("confirm-reason").value = "";
    const okBtn = $("confirm-ok");
    setText(okBtn, ok || "Confirm");
    okBtn.className = danger ? "danger" : "primary";
    return new Promise((resolve) => {
      const done = () => {
        d.removeEventListener("close", done);
        resolve(d.returnValue === "ok" ? { reason: $("confirm-reason").value.trim() } : null);
      };
      d.returnValue = "";
      d.addEventListener("close", done);
      d.showModal();
      $("confirm-reason").focus();
    });
  }

  // ---------- grants ----------

  async function loadGrants() {
    let data;
    try { data = await api("GET", "/api/v1/grants"); } catch (e) { toast(e.message, true); return; }
    const list = $("grants");
    clear(list);
    const grants = (data.grants || []).slice().sort((a, b) => (a.revoked_at ? 1 : 0) - (b.revoked_at ? 1 : 0));
    $("grants-empty").hidden = grants.length > 0;
    for (const g of grants) {
      const revoke = el("button", { type: "button", className: "danger", textContent: "Revoke" });
      revoke.dataset.action = "revoke";
      const expired = Date.parse(g.expires_at) <= serverNow();
      revoke.disabled = !canApprove() || !!g.revoked_at || expired;
      revoke.addEventListener("click", async () => {
        const answer = await confirmDialog({
          title: "Revoke this grant?",
          text: quoteArgv(g.argv) + " will need an approval again.",
          ok: "Revoke",
          danger: true,
        });
        if (!answer) return;
        try {
          await api("DELETE", "/api/v1/grants/" + encodeURIComponent(g.id));
          toast("Grant revoked");
        } catch (e) {
          toast(e.message, true);
        }
        loadGrants();
      });
      const status = g.revoked_at ? "revoked " + fmtTime(g.revoked_at)
        : expired ? "expired " + fmtTime(g.expires_at)
          : "expires in " + fmtDuration(Date.parse(g.expires_at) - serverNow());
      list.appendChild(el("li", { className: "card grant", attrs: { "data-id": String(g.id) } },
        el("h3", null, g.prisoner, " ", el("span", { className: "note" }, status)),
        el("code", { className: "argv", textContent: quoteArgv(g.argv) }),
        meta([
          ["cwd", tokenText(g.cwd)],
          ["for", (g.uid === null || g.uid === undefined ? "no uid (made before grants bound one)" : "uid " + g.uid) +
            " · " + (g.executor || "no executor")],
          ["by", g.created_by],
          ["created", timeEl(g.created_at)],
          ["uses", String(g.uses) + (g.last_used_at ? ", last " + fmtTime(g.last_used_at) : "")],
        ]),
        el("div", { className: "actions" }, revoke)));
    }
  }

  // ---------- policy ----------

  async function loadPolicy() {
    let p;
    try { p = await api("GET", "/api/v1/policy"); } catch (e) { toast(e.message, true); return; }
    const m = $("policy-meta");
    clear(m);
    const pairs = [
      ["file", el("code", null, p.path)],
      ["sha256", el("code", null, p.sha256)],
      ["loaded", timeEl(p.loaded_at)],
    ];
    if (p.last_reload) {
      pairs.push(["last reload", (p.last_reload.ok ? "ok" : "FAILED: " + (p.last_reload.error || "")) + " at " + fmtTime(p.last_reload.at)]);
    }
    for (const [k, v] of pairs) {
      m.appendChild(el("dt", null, k));
      m.appendChild(el("dd", null, v));
    }
    // Operator text, but a policy can hide a rule the same way (Trojan Source): revealed.
    $("policy-source").textContent = p.source === null || p.source === undefined
      ? "(the policy file no longer holds the text in force)" : revealLines(p.source);
  }

  async function explain(ev) {
    ev.preventDefault();
    const out = $("explain-out");
    let argv;
    try {
      argv = splitCommandLine($("x-argv").value);
      if (!argv.length) throw new Error("type a command line");
    } catch (e) {
      out.hidden = false;
      setText(out, "Cannot read the command line: " + e.message);
      return;
    }
    const uid = parseInt($("x-uid").value || "0", 10);
    try {
      const x = await api("POST", "/api/v1/policy/explain", {
        argv, cwd: $("x-cwd").value || "/", uid: isNaN(uid) ? 0 : uid, prisoner: $("x-prisoner").value || "default",
      });
      out.textContent = revealLines(x.text || JSON.stringify(x, null, 2));
    } catch (e) {
      setText(out, e.message);
    }
    out.hidden = false;
  }

  // ---------- history ----------

  function historyFilters() {
    const f = {};
    for (const name of ["prisoner", "command", "action", "uid", "since", "until", "q"]) {
      const v = $("history-form").elements[name].value.trim();
      if (v) f[name] = v;
    }
    return f;
  }

  function query(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") u.set(k, v);
    return u.toString();
  }

  function serverFilters(f) {
    const s = Object.assign({}, f);
    if (!state.history.serverUid) delete s.uid;
    return s;
  }

  function updateExportLinks() {
    const f = serverFilters(historyFilters());
    $("export-csv").href = "/api/v1/history/export?" + query(Object.assign({ format: "csv" }, f));
    $("export-jsonl").href = "/api/v1/history/export?" + query(Object.assign({ format: "jsonl" }, f));
  }

  /** Fetches one page; when the API has no `uid` filter, filters by uid here, reading on
   * until a page is full or the history ends. */
  async function fetchHistory(filters, cursor, limit) {
    const wanted = limit || 50;
    const uid = filters.uid;
    const tryServer = async (withUid) => {
      const f = Object.assign({}, filters);
      if (!withUid) delete f.uid;
      return api("GET", "/api/v1/history?" + query(Object.assign({ limit: wanted, cursor }, f)));
    };
    if (uid === undefined || state.history.serverUid) {
      try {
        return await tryServer(true);
      } catch (e) {
        if (!(uid !== undefined && (e.status === 400 || e.status === 422) && /uid/.test(e.message))) throw e;
        state.history.serverUid = false;
      }
    }
    const rows = [];
    let next = cursor;
    for (let i = 0; i < 20; i++) {
      const f = Object.assign({}, filters);
      delete f.uid;
      const page = await api("GET", "/api/v1/history?" + query(Object.assign({ limit: 200, cursor: next }, f)));
      for (const r of page.requests || []) if (String(r.uid) === uid) rows.push(r);
      next = page.next_cursor;
      if (!next || rows.length >= wanted) break;
    }
    return { requests: rows, next_cursor: next || null };
  }

  async function loadHistory(cursor) {
    const status = $("history-status");
    const filters = historyFilters();
    updateExportLinks();
    setText(status, "Loading…");
    let page;
    try {
      page = await fetchHistory(filters, cursor);
    } catch (e) {
      setText(status, e.message);
      return;
    }
    state.history.cursor = cursor || null;
    state.history.next = page.next_cursor || null;
    const body = $("history-rows");
    clear(body);
    for (const r of page.requests || []) body.appendChild(historyRow(r));
    const n = (page.requests || []).length;
    status.textContent = n === 0 ? "No calls match." : n + " call" + (n === 1 ? "" : "s") + (cursor ? " (later page)" : "") +
      (filters.uid && !state.history.serverUid ? "; user filter applied in the browser (not to exports)" : "");
    $("page-next").disabled = !state.history.next;
    $("page-first").disabled = !cursor;
    updateExportLinks();
  }

  function historyRow(r) {
    const o = outcome(r);
    const td = (label, ...content) => el("td", { attrs: { "data-label": label } }, el("span", null, ...content));
    const argvText = quoteArgv(r.argv);
    return el("tr", { attrs: { "data-id": r.id } },
      td("Time", el("a", { href: "#/request/" + encodeURIComponent(r.id), title: r.created_at }, fmtTime(r.created_at))),
      td("Prisoner", r.prisoner),
      td("User", String(r.uid)),
      td("Command", el("code", { className: "cmd", title: argvText }, argvText.length > 160 ? argvText.slice(0, 157) + "…" : argvText)),
      td("Decision", el("span", { className: "act-" + o }, decisionText(r))),
      td("State", r.state + (exitText(r) ? " · " + exitText(r) : "")));
  }

  // ---------- charts ----------

  async function loadCharts() {
    const rows = [];
    let cursor = null;
    try {
      for (let i = 0; i < 4; i++) {
        const page = await api("GET", "/api/v1/history?" + query({ since: "24h", limit: 500, cursor }));
        rows.push(...(page.requests || []));
        cursor = page.next_cursor;
        if (!cursor) break;
      }
    } catch (_) {
      return;
    }
    state.chartRows = rows;
    drawHourly(rows);
    drawWaits(rows);
  }

  let resizeTimer = null;
  function redrawCharts() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (state.route === "history" && state.chartRows) { drawHourly(state.chartRows); drawWaits(state.chartRows); }
    }, 150);
  }

  const CATS = ["allowed", "approved", "denied", "pending"];

  /** Chart width in CSS pixels, so that 1 SVG unit is 1 pixel and labels keep their size. */
  function chartWidth(box, fallback) {
    const w = Math.floor(box.clientWidth);
    return w >= 200 ? w : fallback;
  }

  function drawHourly(rows) {
    const box = $("chart-hourly");
    const W = chartWidth(box, 480), H = 170, L = 30, B = 22, T = 10;
    const hour = 3600000;
    const end = Math.ceil(serverNow() / hour) * hour;
    const start = end - 24 * hour;
    const buckets = Array.from({ length: 24 }, () => ({ allowed: 0, approved: 0, denied: 0, pending: 0 }));
    for (const r of rows) {
      const t = Date.parse(r.created_at);
      if (!(t >= start && t < end)) continue;
      buckets[Math.floor((t - start) / hour)][outcome(r)]++;
    }
    const totals = buckets.map((b) => CATS.reduce((s, c) => s + b[c], 0));
    const max = Math.max(1, ...totals);
    const bw = (W - L) / 24;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "Calls per hour over the last 24 hours: " + totals.reduce((a, b) => a + b, 0) + " calls, busiest hour " + max });
    chart.appendChild(svg("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }));
    chart.appendChild(svg("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, String(max)));
    chart.appendChild(svg("text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"));
    buckets.forEach((b, i) => {
      let y = H - B;
      const x = L + i * bw + 1;
      const g = svg("g", {});
      const hourStart = new Date(start + i * hour);
      g.appendChild(svg("title", {}, pad(hourStart.getHours()) + ":00 – " + CATS.map((c) => c + " " + b[c]).join(", ")));
      for (const c of CATS) {
        if (!b[c]) continue;
        const h = (H - B - T) * b[c] / max;
        y -= h;
        g.appendChild(svg("rect", { class: "bar-" + c, x: x.toFixed(1), y: y.toFixed(1), width: (bw - 2).toFixed(1), height: h.toFixed(1) }));
      }
      chart.appendChild(g);
      if (i % 6 === 0) {
        chart.appendChild(svg("text", { x: x.toFixed(1), y: H - 6 }, pad(hourStart.getHours()) + ":00"));
      }
    });
    clear(box);
    box.appendChild(chart);
    const legend = $("chart-hourly-legend");
    clear(legend);
    for (const c of CATS) {
      const n = buckets.reduce((s, b) => s + b[c], 0);
      legend.appendChild(el("li", { className: "l-" + c }, c + " " + n));
    }
  }

  function drawWaits(rows) {
    const edges = [[5000, "<5s"], [30000, "<30s"], [60000, "<1m"], [300000, "<5m"], [900000, "<15m"], [Infinity, "≥15m"]];
    const counts = edges.map(() => 0);
    const waits = [];
    for (const r of rows) {
      if (!r.approval || r.approval.state === "pending" || r.waited_ms === null || r.waited_ms === undefined) continue;
      waits.push(r.waited_ms);
      counts[edges.findIndex(([lim]) => r.waited_ms < lim)]++;
    }
    waits.sort((a, b) => a - b);
    const box = $("chart-wait");
    const W = chartWidth(box, 300), H = 170, B = 22, T = 16;
    const max = Math.max(1, ...counts);
    const bw = W / edges.length;
    const median = waits.length ? waits[Math.floor(waits.length / 2)] : null;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": waits.length + " approvals decided in the last 24 hours" + (median !== null ? ", median wait " + fmtMs(median) : "") });
    chart.appendChild(svg("line", { class: "axis", x1: 0, y1: H - B, x2: W, y2: H - B }));
    counts.forEach((n, i) => {
      const h = (H - B - T) * n / max;
      const x = i * bw + 4;
      const g = svg("g", {}, svg("title", {}, edges[i][1] + ": " + n));
      g.appendChild(svg("rect", { class: "bar-wait", x: x.toFixed(1), y: (H - B - h).toFixed(1), width: (bw - 8).toFixed(1), height: h.toFixed(1) }));
      if (n) g.appendChild(svg("text", { x: (x + (bw - 8) / 2).toFixed(1), y: (H - B - h - 3).toFixed(1), "text-anchor": "middle" }, String(n)));
      g.appendChild(svg("text", { x: (x + (bw - 8) / 2).toFixed(1), y: H - 6, "text-anchor": "middle" }, edges[i][1]));
      chart.appendChild(g);
    });
    clear(box);
    box.appendChild(chart);
    box.appendChild(el("p", { className: "note" }, waits.length
      ? waits.length + " decided, median " + fmtMs(median) + ", longest " + fmtMs(waits[waits.length - 1])
      : "No approvals decided in the last 24 hours."));
  }

  // ---------- request detail ----------

  async function showRequest(id) {
    setText($("req-id"), id);
    const body = $("req-body");
    let r;
    try {
      r = await api("GET", "/api/v1/requests/" + encodeURIComponent(id));
    } catch (e) {
      clear(body);
      body.appendChild(el("p", { className: "error" }, e.message));
      return;
    }
    const o = outcome(r);
    const items = [];
    const item = (cls, when, title, detail) => items.push(el("li", { className: cls },
      el("span", { className: "when" }, when ? fmtTime(when) : ""), el("strong", null, title), detail ? el("div", null, detail) : null));
    item("", r.created_at, "Requested", "by uid " + r.uid + " (pid " + r.pid + ") of " + r.prisoner + " in " + tokenText(r.cwd));
    const policyLine = "policy: " + (r.action || "?") + " — " + (r.rule ? "rule " + r.rule : "policy default") + (r.reason ? ": " + r.reason : "");
    if (r.approval) {
      const a = r.approval;
      item(a.state === "approved" ? "good" : a.state === "pending" ? "" : "bad", r.decided_at,
        a.state === "pending" ? "Waiting for approval (until " + fmtTime(a.expires_at) + ")"
          : a.state === "approved" ? "Approved by " + (a.approver || "?")
            : a.state === "denied" ? "Denied by " + (a.approver || "?") : "Approval " + a.state,
        [policyLine, a.note ? " · note: " + a.note : "", a.reason ? " · reason: " + a.reason : "",
          r.waited_ms !== null && r.waited_ms !== undefined ? " · waited " + fmtMs(r.waited_ms) : ""].join(""));
    } else if (r.decided_at) {
      item(o === "denied" ? "bad" : "good", r.decided_at, "Decision: " + decisionText(r), policyLine);
    }
    if (r.started_at) item("", r.started_at, "Started", "executor " + (r.executor || "?"));
    if (r.finished_at) {
      const dur = r.started_at ? Date.parse(r.finished_at) - Date.parse(r.started_at) : null;
      const ok = r.exit_code === 0;
      item(ok ? "good" : "bad", r.finished_at, "Finished: " + (exitText(r) || r.state), dur !== null ? "ran " + fmtMs(dur) : "");
    } else if (!r.started_at && (r.state === "denied" || r.state === "cancelled" || r.state === "abandoned" || r.state === "timed_out")) {
      item("bad", r.decided_at, "Not run: " + r.state, r.reason || "");
    }
    clear(body);
    body.appendChild(el("code", { className: "argv", textContent: quoteArgv(r.argv) }));
    body.appendChild(meta([
      ["prisoner", r.prisoner],
      ["user", "uid " + r.uid + ", gid " + r.gid],
      ["cwd", tokenText(r.cwd)],
      ["state", el("span", { className: "act-" + o }, r.state + (exitText(r) ? " · " + exitText(r) : ""))],
      ["rule", r.rule || "(policy default)"],
      ["reason", r.reason || ""],
      ["policy", r.policy_sha256 ? el("code", null, r.policy_sha256.slice(0, 16) + "…") : ""],
      ["parent", r.parent_request
        ? el("a", { href: "#/request/" + encodeURIComponent(r.parent_request) }, r.parent_request)
        : r.unverified_parent
          ? el("span", { className: "unverified" }, "claims " + r.unverified_parent.id + " (unverified: " + r.unverified_parent.reason + ")")
          : ""],
    ]));
    body.appendChild(el("h3", null, "Timeline"));
    body.appendChild(el("ol", { className: "timeline" }, items));
    const nested = el("ul", { className: "cards" });
    body.appendChild(el("h3", null, "Nested calls"));
    body.appendChild(nested);
    try {
      const children = [];
      let cursor = null;
      for (let i = 0; i < 5; i++) {
        const page = await api("GET", "/api/v1/history?" + query({ since: r.created_at, limit: 500, cursor }));
        for (const c of page.requests || []) if (c.parent_request === r.id) children.push(c);
        cursor = page.next_cursor;
        if (!cursor) break;
      }
      children.sort((a, b) => a.created_at.localeCompare(b.created_at));
      if (!children.length) nested.appendChild(el("li", { className: "note" }, "None."));
      for (const c of children) {
        nested.appendChild(el("li", { className: "card" },
          el("a", { href: "#/request/" + encodeURIComponent(c.id) }, fmtTime(c.created_at)), " ",
          el("code", { textContent: quoteArgv(c.argv) }), " ",
          el("span", { className: "act-" + outcome(c) }, decisionText(c)),
          " · " + c.state + (exitText(c) ? " · " + exitText(c) : "")));
      }
    } catch (_) {
      nested.appendChild(el("li", { className: "note" }, "Cannot list nested calls."));
    }
  }

  // ---------- routing ----------

  const VIEWS = ["queue", "history", "request", "prisoners", "grants", "policy"];

  function route() {
    if (!state.me) return;
    const m = location.hash.match(/^#\/([a-z]+)(?:\/(.*))?$/);
    let name = m ? m[1] : "queue";
    if (!VIEWS.includes(name)) name = "queue";
    state.route = name;
    state.routeArg = m && m[2] ? decodeURIComponent(m[2]) : null;
    for (const v of VIEWS) $("view-" + v).hidden = v !== name;
    const tab = name === "request" ? "history" : name;
    for (const a of document.querySelectorAll(".tabs a")) {
      if (a.dataset.tab === tab) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    switch (name) {
      case "queue": refreshQueue(); break;
      case "history": loadHistory(state.history.cursor); loadCharts(); break;
      case "request": showRequest(state.routeArg || ""); break;
      case "prisoners": renderPrisoners(); loadStatus(); break;
      case "grants": loadGrants(); break;
      case "policy": loadPolicy(); break;
    }
  }

  // ---------- start ----------

  function init() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("notify").checked = alertsOn();
    $("notify").addEventListener("change", toggleAlerts);
    $("lockdown-toggle").addEventListener("click", toggleLockdown);
    $("explain-form").addEventListener("submit", explain);
    $("history-form").addEventListener("submit", (e) => {
      e.preventDefault();
      state.history.cursors = [];
      loadHistory(null);
    });
    $("history-form").addEventListener("reset", () => setTimeout(() => loadHistory(null), 0));
    $("history-form").addEventListener("input", updateExportLinks);
    $("page-next").addEventListener("click", () => {
      if (!state.history.next) return;
      state.history.cursors.push(state.history.cursor);
      loadHistory(state.history.next);
    });
    $("page-first").addEventListener("click", () => { state.history.cursors = []; loadHistory(null); });
    for (const a of document.querySelectorAll(".tabs a")) {
      a.addEventListener("click", () => setTimeout(() => $("main").focus({ preventScroll: true }), 0));
    }
    window.addEventListener("hashchange", route);
    window.addEventListener("resize", redrawCharts);
    setInterval(tick, 1000);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.me) { refreshQueue(); loadStatus(); }
    });
    api("GET", "/api/v1/session").then(startApp, () => showLogin(""));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
