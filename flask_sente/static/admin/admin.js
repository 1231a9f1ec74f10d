/*
 * The admin dashboard of flask_sente (issue 29): a live view of every process, user, client
 * and topic of the deployment, with a few actions (kick, close a client, take a user out of
 * a topic, push a test event).
 *
 * Plain ES2017, no build step, no library: the page's CSP allows scripts and styles from the
 * origin only, so nothing here writes inline styles or handlers into HTML (setting
 * `element.style` from script would be allowed, but classes do it all).
 *
 * The state comes over the page's own channel socket (sente.js): one `sente.admin/overview`
 * call at a time, the next `interval` ms after the previous answer (or its failure). The
 * server keeps no history: the rates and the chart come from consecutive snapshots kept here.
 *
 * Rendering is keyed: rows are found by a key (node, uid key, client id, topic), created when
 * new, updated in place (only text and attributes that changed are written) and removed when
 * gone, so a refresh keeps the focus, the selection and the scroll position, and only the
 * requested page of users and topics is ever in the DOM.
 */
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("sente-admin-config").textContent);
  const INTERVAL = config.interval > 0 ? config.interval : 1000;
  const ASK_TIMEOUT_MS = 3000;
  const HISTORY_S = 300; // the chart's window
  const LIMIT = 50; // rows per page
  const SEARCH_DEBOUNCE_MS = 250;
  const STATUS_CLEAR_MS = 8000;

  // --- small DOM helpers ------------------------------------------------------------------

  /** `h("td", {class: "num", "data-field": "ws"}, child...)`: attributes and children. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function setText(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setAttr(node, name, value) {
    if (value === null || value === undefined) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
    } else if (node.getAttribute(name) !== String(value)) {
      node.setAttribute(name, String(value));
    }
  }

  function toggle(node, cls, on) {
    if (node.classList.contains(cls) !== on) node.classList.toggle(cls, on);
  }

  /**
   * Make `parent`'s keyed children (after `start`, or from its first child) be one element
   * per item, in order: reused by key, `create(item)` for new keys, `update(node, item)` for
   * all, the others removed. Elements already in place are not moved (moving one would blur
   * it).
   */
  function reconcile(parent, items, keyOf, create, update, start = null) {
    const keyed = parent.__keyed || (parent.__keyed = new Map());
    const keys = items.map(keyOf);
    const wanted = new Set(keys);
    for (const [key, node] of keyed) {
      if (!wanted.has(key)) {
        node.remove();
        keyed.delete(key);
      }
    }
    let prev = start;
    items.forEach((item, i) => {
      let node = keyed.get(keys[i]);
      if (node === undefined) {
        node = create(item);
        keyed.set(keys[i], node);
      }
      update(node, item);
      const want = prev ? prev.nextSibling : parent.firstChild;
      if (want !== node) parent.insertBefore(node, want);
      prev = node;
    });
  }

  // --- formatting -------------------------------------------------------------------------

  const fmtInt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "—");

  function fmtRate(r) {
    if (r === null || r === undefined) return "—";
    return r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US");
  }

  /** A duration in seconds, two units at most: "42s", "3m 05s", "2h 10m", "4d 3h". */
  function fmtDuration(seconds) {
    let s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s}s`;
    const d = Math.floor(s / 86400); s -= d * 86400;
    const hrs = Math.floor(s / 3600); s -= hrs * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d > 0) return `${d}d ${hrs}h`;
    if (hrs > 0) return `${hrs}h ${String(m).padStart(2, "0")}m`;
    return `${m}m ${String(s).padStart(2, "0")}s`;
  }

  const fmtClock = (epoch) => new Date(epoch * 1000).toLocaleTimeString("en-GB");
  const fmtStamp = (epoch) => new Date(epoch * 1000).toISOString();

  // --- live state -------------------------------------------------------------------------

  const view = {
    users: { search: "", offset: 0 },
    topics: { search: "", offset: 0 },
  };
  /** node -> {started, now, in, out, rin, rout}: the last snapshot of each process. */
  const procPrev = new Map();
  /** topic -> {now, publishes, rate}. */
  const topicPrev = new Map();
  /** [{t, ws, ajax, in, out}] over the last HISTORY_S seconds of server time. */
  const history = [];
  let lastNow = null; // the last snapshot's server time
  let lastReplyAt = null; // performance.now() of the last snapshot

  function query() {
    return {
      users: { search: view.users.search, offset: view.users.offset, limit: LIMIT },
      topics: { search: view.topics.search, offset: view.topics.offset, limit: LIMIT },
    };
  }

  // --- the channel ------------------------------------------------------------------------

  setText($("me"), config.uid);
  setText($("version"), config.version || "");
  const chsk = Sente.connect(config.url, { csrfToken: config.csrfToken });

  chsk.onState((state) => {
    const conn = $("conn");
    let text;
    let name;
    if (state.open) {
      name = "open";
      text = `connected (${state.type === "ws" ? "WebSocket" : "Ajax"})`;
    } else if (!state.active) {
      name = "stopped";
      const close = state.lastClose;
      text = "disconnected";
      showStopped(close && close.reason === "kicked"
        ? "This page was disconnected by the server (kicked)."
        : `The connection stopped${close && close.status ? ` (HTTP ${close.status})` : ""}${
          close && close.message ? `: ${close.message}` : "."}`);
    } else {
      name = state.everOpened ? "reconnecting" : "connecting";
      text = state.everOpened ? "reconnecting…" : "connecting…";
    }
    setAttr(conn, "data-state", name);
    setText($("conn-text"), text);
  });

  function showStopped(text) {
    setText($("stopped-text"), text);
    $("stopped").hidden = false;
  }

  $("reload").addEventListener("click", () => window.location.reload());

  /** The event the page asks for the state with (sente.js refuses the reserved `chsk/` ids). */
  const OVERVIEW = "sente.admin/overview";

  function callAdmin(q, timeoutMs) {
    return chsk.call([OVERVIEW, q], { timeout: timeoutMs });
  }

  let inFlight = false;
  let askAgain = false;
  let timer = null;

  /** Ask now, or as soon as the call in flight is over: never two in flight. */
  function ask() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    if (inFlight) { askAgain = true; return; }
    inFlight = true;
    askAgain = false;
    const q = query();
    const done = (error, reply) => {
      inFlight = false;
      try {
        if (error) onAskFailed(error);
        else onReply(reply, q);
      } finally {
        timer = setTimeout(ask, askAgain ? 0 : INTERVAL);
      }
    };
    let promise;
    try {
      promise = callAdmin(q, ASK_TIMEOUT_MS);
    } catch (e) {
      done(e);
      return;
    }
    promise.then((reply) => done(null, reply), (error) => done(error));
  }

  function onAskFailed(error) {
    // A timeout or a closed connection: the header says so ("updated Ns ago" grows); the next
    // ask goes out after the interval.
    if (error && error.kind !== "timeout" && error.kind !== "closed") {
      console.warn(`sente admin: the ${OVERVIEW} call failed`, error);
    }
  }

  function onReply(reply, q) {
    if (!reply || typeof reply !== "object") return;
    if (reply.error) {
      showStopped(reply.error === "forbidden"
        ? `Forbidden: ${config.uid} is not an admin of this server.`
        : `The server refused: ${reply.error}`);
      return;
    }
    $("stopped").hidden = true;
    lastNow = reply.now;
    lastReplyAt = performance.now();
    setAttr($("updated"), "data-now", String(reply.now));
    tickUpdated();
    renderTotals(reply);
    renderProcesses(reply);
    renderChart();
    // A page asked for with another search or offset than the current one is stale: the
    // next ask (at once) brings the right one.
    const current = query();
    if (JSON.stringify(q.users) === JSON.stringify(current.users)) renderUsers(reply);
    else askAgain = true;
    if (JSON.stringify(q.topics) === JSON.stringify(current.topics)) renderTopics(reply);
    else askAgain = true;
    renderRecent(reply);
  }

  function tickUpdated() {
    const node = $("updated");
    if (lastReplyAt === null) return;
    const age = (performance.now() - lastReplyAt) / 1000;
    setText(node, age < 1.5 ? "updated just now" : `updated ${Math.round(age)}s ago`);
    toggle(node, "stale", age * 1000 > 3 * INTERVAL + ASK_TIMEOUT_MS);
    node.title = lastNow === null ? "" : `server time ${fmtStamp(lastNow)}`;
  }
  setInterval(tickUpdated, 1000);

  // --- totals and processes ---------------------------------------------------------------

  function renderTotals(reply) {
    const totals = reply.totals || {};
    for (const name of ["users", "clients", "ws", "ajax", "topics"]) {
      setText($(`totals-${name}`), fmtInt(totals[name]));
    }
    setText($("totals-processes"), fmtInt((reply.processes || []).length));
    const missing = $("missing");
    const n = reply.missing || 0;
    missing.hidden = n === 0;
    let text = "";
    if (n < 0) { // the server could not reach the backplane: its own part only
      text = "The backplane is unreachable: these numbers are the answering process's only.";
    } else if (n > 0) {
      text = `${n} process${n === 1 ? "" : "es"} did not answer in time: the numbers leave ${n === 1 ? "it" : "them"} out.`;
    }
    setText(missing, text);
  }

  function renderProcesses(reply) {
    const now = reply.now;
    let sumIn = null;
    let sumOut = null;
    const procs = reply.processes || [];
    for (const p of procs) {
      const prev = procPrev.get(p.node);
      let rin = null;
      let rout = null;
      if (prev && prev.started === p.started && now > prev.now
          && p.events_in >= prev.in && p.events_out >= prev.out) {
        rin = (p.events_in - prev.in) / (now - prev.now);
        rout = (p.events_out - prev.out) / (now - prev.now);
      } else if (prev && prev.started === p.started && now === prev.now) {
        rin = prev.rin; rout = prev.rout; // the same snapshot twice: keep the rates
      }
      procPrev.set(p.node, { started: p.started, now, in: p.events_in, out: p.events_out, rin, rout });
      if (rin !== null) { sumIn = (sumIn || 0) + rin; sumOut = (sumOut || 0) + rout; }
    }
    const nodes = new Set(procs.map((p) => p.node));
    for (const node of procPrev.keys()) if (!nodes.has(node)) procPrev.delete(node);
    const totals = reply.totals || {};
    if (history.length === 0 || history[history.length - 1].t < now) {
      history.push({ t: now, ws: totals.ws || 0, ajax: totals.ajax || 0, in: sumIn, out: sumOut });
    }
    while (history.length && history[0].t < now - HISTORY_S) history.shift();

    reconcile($("procs-body"), procs, (p) => p.node, createProcRow, (row, p) => updateProcRow(row, p, now));
  }

  const PROC_FIELDS = ["node", "pid", "host", "uptime", "ws", "ajax", "in", "out", "queue", "backplane", "outbox"];
  const NUMERIC = new Set(["pid", "ws", "ajax", "in", "out", "queue", "outbox"]);

  function createProcRow(p) {
    const row = h("tr", { "data-testid": "proc-row" });
    for (const field of PROC_FIELDS) {
      const cell = field === "node" ? h("th", { scope: "row" }, h("code")) : h("td");
      cell.setAttribute("data-field", field);
      if (NUMERIC.has(field)) cell.className = "num";
      row.append(cell);
    }
    row.__cells = Object.fromEntries(PROC_FIELDS.map((f, i) => [f, row.children[i]]));
    return row;
  }

  function updateProcRow(row, p, now) {
    const c = row.__cells;
    const rates = procPrev.get(p.node) || {};
    setAttr(row, "data-node", p.node);
    setAttr(row, "data-pid", p.pid);
    setText(c.node.firstChild, p.node);
    setText(c.pid, p.pid);
    setText(c.host, p.host);
    setText(c.uptime, fmtDuration(now - p.started));
    setAttr(c.uptime, "title", `started ${fmtStamp(p.started)}`);
    setText(c.ws, fmtInt(p.ws));
    setText(c.ajax, fmtInt(p.ajax));
    setText(c.in, fmtRate(rates.rin));
    setText(c.out, fmtRate(rates.rout));
    setText(c.queue, fmtInt(p.send_queue));
    setText(c.backplane, p.draining ? `${p.backplane} (draining)` : p.backplane);
    c.backplane.className = `bp-${p.backplane}`;
    setText(c.outbox, p.outbox === null || p.outbox === undefined ? "—" : fmtInt(p.outbox));
  }

  // --- the chart --------------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";
  const CHART = { w: 600, h: 160, left: 44, right: 10, top: 12, bottom: 22 };
  /** Until the page has seen this much, the chart spans this much (its lines start left). */
  const MIN_SPAN_S = 30;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** A round upper bound for the y axis: 1, 2, 5 x 10^n. */
  function niceMax(value) {
    if (!(value > 0)) return 1;
    const exp = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 5, 10]) if (value <= m * exp) return m * exp;
    return 10 * exp;
  }

  /** The chart's time span: what the page has seen, at least a minimum, at most 5 minutes. */
  function chartSpan() {
    const seen = history.length ? lastNow - history[0].t : 0;
    return Math.min(HISTORY_S, Math.max(MIN_SPAN_S, seen));
  }

  function fmtSpan(seconds) {
    return seconds >= 60 ? `${Math.round(seconds / 60)} min ago` : `${Math.round(seconds)}s ago`;
  }

  function drawChart(node, series) {
    const { w, h: height, left, right, top, bottom } = CHART;
    const span = chartSpan();
    const start = lastNow - span;
    let max = 0;
    for (const s of series) for (const p of s.points) if (p[1] !== null && p[1] > max) max = p[1];
    const ymax = niceMax(max);
    const x = (t) => left + ((t - start) / span) * (w - left - right);
    const y = (v) => top + (1 - v / ymax) * (height - top - bottom);
    const parts = [
      svg("line", { class: "axis", x1: left, y1: y(0), x2: w - right, y2: y(0) }),
      svg("line", { class: "axis", x1: left, y1: y(ymax), x2: w - right, y2: y(ymax) }),
      svg("text", { class: "tick", x: left - 6, y: y(ymax) + 4, "text-anchor": "end" }, fmtInt(ymax)),
      svg("text", { class: "tick", x: left - 6, y: y(0) + 4, "text-anchor": "end" }, "0"),
      svg("text", { class: "tick", x: left, y: height - 6 }, fmtSpan(span)),
      svg("text", { class: "tick", x: w - right, y: height - 6, "text-anchor": "end" }, "now"),
    ];
    let drawn = 0;
    series.forEach((s, i) => {
      // A gap (no rate yet, e.g. after a restart) breaks the line.
      let run = [];
      const flush = () => {
        if (run.length > 1) {
          parts.push(svg("polyline", { class: `line s${i}`, points: run.join(" ") }));
          drawn += 1;
        }
        run = [];
      };
      for (const [t, v] of s.points) {
        if (v === null) flush();
        else run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
      }
      flush();
    });
    if (drawn === 0) {
      parts.push(svg("text", { class: "nodata", x: w / 2, y: height / 2, "text-anchor": "middle" },
        "collecting…"));
    }
    node.replaceChildren(...parts);
  }

  function renderChart() {
    if (lastNow === null) return;
    drawChart($("chart-conns"), [
      { points: history.map((p) => [p.t, p.ws]) },
      { points: history.map((p) => [p.t, p.ajax]) },
    ]);
    drawChart($("chart-events"), [
      { points: history.map((p) => [p.t, p.in]) },
      { points: history.map((p) => [p.t, p.out]) },
    ]);
    const last = history[history.length - 1];
    if (last) {
      $("chart-conns").setAttribute("aria-label",
        `Connections over the last 5 minutes; now ${last.ws} WebSocket, ${last.ajax} Ajax`);
      $("chart-events").setAttribute("aria-label",
        `Events per second over the last 5 minutes; now ${fmtRate(last.in)} in, ${fmtRate(last.out)} out`);
    }
  }

  // --- pagination -------------------------------------------------------------------------

  function renderPager(prefix, page, total, shown) {
    const state = view[prefix];
    const range = total === 0 ? "0 of 0"
      : `${fmtInt(page.offset + 1)}–${fmtInt(page.offset + shown)} of ${fmtInt(total)}`;
    setText($(`${prefix}-range`), range);
    $(`${prefix}-prev`).disabled = state.offset === 0;
    $(`${prefix}-next`).disabled = state.offset + LIMIT >= total;
    $(`${prefix}-empty`).hidden = total !== 0;
    // Past the end (users left): back to the last page.
    if (total > 0 && state.offset >= total) {
      state.offset = Math.floor((total - 1) / LIMIT) * LIMIT;
      askAgain = true;
    }
  }

  for (const prefix of ["users", "topics"]) {
    $(`${prefix}-prev`).addEventListener("click", () => {
      view[prefix].offset = Math.max(0, view[prefix].offset - LIMIT);
      ask();
    });
    $(`${prefix}-next`).addEventListener("click", () => {
      view[prefix].offset += LIMIT;
      ask();
    });
    let debounce = null;
    $(`${prefix}-search`).addEventListener("input", (e) => {
      clearTimeout(debounce);
      const value = e.target.value;
      debounce = setTimeout(() => {
        if (value === view[prefix].search) return;
        view[prefix].search = value;
        view[prefix].offset = 0;
        ask();
      }, SEARCH_DEBOUNCE_MS);
    });
  }

  // --- users ------------------------------------------------------------------------------

  function renderUsers(reply) {
    const users = reply.users || { total: 0, offset: 0, rows: [] };
    const now = reply.now;
    const table = $("users");
    reconcile(table, users.rows, (u) => u.key, createUser, (body, u) => updateUser(body, u, now),
      table.tHead);
    renderPager("users", users, users.total, users.rows.length);
  }

  function createUser(u) {
    const body = h("tbody", { class: "user", "data-testid": "user-row" });
    const topics = h("ul", { class: "chips", "aria-label": `Topics of ${u.uid}` });
    const head = h("tr", { class: "user-head" },
      h("th", { scope: "rowgroup" }, h("span", { class: "uid" })),
      h("td", { class: "summary muted", colspan: 4 }),
      h("td", {}, topics),
      h("td", { class: "act" },
        h("button", { type: "button", class: "secondary small", "data-testid": "push", "data-action": "push" }, "Push"),
        h("button", { type: "button", class: "danger small", "data-testid": "kick", "data-action": "kick" }, "Kick")));
    body.append(head);
    body.__head = head;
    body.__topics = topics;
    return body;
  }

  function updateUser(body, u, now) {
    setAttr(body, "data-key", u.key);
    setAttr(body, "data-uid", u.uid);
    const head = body.__head;
    setText(head.querySelector(".uid"), u.uid);
    const clients = u.clients || [];
    const ws = clients.filter((c) => c.transport === "ws").length;
    const summary = clients.length === 0 ? "reconnecting…"
      : `${clients.length} client${clients.length === 1 ? "" : "s"}: ${ws} WebSocket, ${clients.length - ws} Ajax`;
    setText(head.querySelector(".summary"), summary);
    for (const button of head.querySelectorAll("button[data-action]")) {
      setAttr(button, "data-key", u.key);
      setAttr(button, "data-uid", u.uid);
      setAttr(button, "aria-label", `${button.dataset.action === "kick" ? "Kick" : "Push a test event to"} ${u.uid}`);
    }
    reconcile(body.__topics, u.topics || [], (topic) => topic, (topic) => createTopicChip(topic),
      (chip) => { for (const b of chip.querySelectorAll("button")) { setAttr(b, "data-key", u.key); setAttr(b, "data-uid", u.uid); setAttr(b, "aria-label", `Remove ${u.uid} from topic ${chip.dataset.topic}`); } });
    const rows = clients.length === 0 ? [null] : clients;
    reconcile(body, rows, (c) => (c === null ? "\u0000reconnecting" : `c:${c.client_id}`),
      (c) => (c === null ? createReconnectingRow() : createClientRow()),
      (row, c) => { if (c !== null) updateClientRow(row, c, u, now); }, head);
  }

  function createTopicChip(topic) {
    return h("li", { class: "chip", "data-topic": topic },
      h("span", {}, topic),
      h("button", { type: "button", "data-testid": "leave-topic", "data-action": "leave-topic",
        "data-topic": topic, title: "Remove from this topic" }, "×"));
  }

  function createReconnectingRow() {
    return h("tr", { class: "reconnecting-row" },
      h("td", { colspan: 7, class: "reconnecting" },
        "reconnecting… (no process reports a connection yet)"));
  }

  const CLIENT_FIELDS = ["client", "transport", "pid", "since", "active", "topics", "act"];

  function createClientRow() {
    const row = h("tr", { class: "client-row", "data-testid": "client-row" });
    for (const field of CLIENT_FIELDS) row.append(h("td", { "data-field": field }));
    const cells = Object.fromEntries(CLIENT_FIELDS.map((f, i) => [f, row.children[i]]));
    cells.client.append(h("code"));
    cells.transport.append(h("span", { class: "badge" }));
    cells.pid.className = "num";
    cells.topics.className = "topic-text";
    cells.act.className = "act";
    cells.act.append(h("button", { type: "button", class: "secondary small", "data-testid": "close-client",
      "data-action": "close-client" }, "Close"));
    row.__cells = cells;
    return row;
  }

  function updateClientRow(row, c, u, now) {
    const cells = row.__cells;
    setAttr(row, "data-client-id", c.client_id);
    setAttr(row, "data-transport", c.transport);
    setAttr(row, "data-pid", c.pid);
    setAttr(row, "data-node", c.node);
    const code = cells.client.firstChild;
    setText(code, c.client_id.length > 12 ? `${c.client_id.slice(0, 12)}…` : c.client_id);
    setAttr(code, "title", c.client_id);
    const badge = cells.transport.firstChild;
    setText(badge, c.transport === "ws" ? "WS" : "Ajax");
    badge.className = `badge ${c.transport === "ws" ? "ws" : "ajax"}`;
    setText(cells.pid, c.pid);
    setAttr(cells.pid, "title", `node ${c.node}`);
    setText(cells.since, fmtDuration(now - c.since));
    setAttr(cells.since, "title", `connected at ${fmtStamp(c.since)}`);
    setText(cells.active, `${fmtDuration(now - c.active)} ago`);
    setAttr(cells.active, "title", fmtStamp(c.active));
    setText(cells.topics, (c.topics || []).join(", ") || "—");
    const button = cells.act.firstChild;
    setAttr(button, "data-key", u.key);
    setAttr(button, "data-uid", u.uid);
    setAttr(button, "data-client-id", c.client_id);
    setAttr(button, "aria-label", `Close client ${c.client_id} of ${u.uid}`);
  }

  // --- topics -----------------------------------------------------------------------------

  function renderTopics(reply) {
    const topics = reply.topics || { total: 0, offset: 0, rows: [] };
    const now = reply.now;
    for (const row of topics.rows) {
      const prev = topicPrev.get(row.topic);
      let rate = null;
      if (prev && now > prev.now && row.publishes >= prev.publishes) {
        rate = (row.publishes - prev.publishes) / (now - prev.now);
      } else if (prev && now === prev.now) {
        rate = prev.rate;
      }
      topicPrev.set(row.topic, { now, publishes: row.publishes, rate });
    }
    // Only the topics shown are followed: one that comes back later starts again.
    const shown = new Set(topics.rows.map((r) => r.topic));
    for (const topic of topicPrev.keys()) if (!shown.has(topic)) topicPrev.delete(topic);
    reconcile($("topics-body"), topics.rows, (r) => r.topic, createTopicRow, updateTopicRow);
    renderPager("topics", topics, topics.total, topics.rows.length);
  }

  function createTopicRow() {
    const row = h("tr", { "data-testid": "topic-row" },
      h("th", { scope: "row", "data-field": "topic" }),
      h("td", { class: "num", "data-field": "members" }),
      h("td", { class: "num", "data-field": "rate" }));
    return row;
  }

  function updateTopicRow(row, r) {
    setAttr(row, "data-topic", r.topic);
    setText(row.children[0], r.topic);
    setText(row.children[1], fmtInt(r.members));
    setText(row.children[2], fmtRate((topicPrev.get(r.topic) || {}).rate));
  }

  // --- recent refusals and errors ---------------------------------------------------------

  function renderRecent(reply) {
    const recent = reply.recent || [];
    const seen = new Map();
    const keyOf = (r) => {
      const base = `${r.t}|${r.node}|${r.kind}|${r.reason}|${r.detail}`;
      const n = (seen.get(base) || 0) + 1;
      seen.set(base, n);
      return `${base}|${n}`;
    };
    const keys = recent.map(keyOf);
    const items = recent.map((r, i) => ({ r, key: keys[i] }));
    reconcile($("recent-body"), items, (it) => it.key, createRecentRow, updateRecentRow);
    $("recent-empty").hidden = recent.length !== 0;
  }

  function createRecentRow() {
    return h("tr", { "data-testid": "recent-row" },
      h("td", { "data-field": "time" }), h("td", { "data-field": "node" }, h("code")),
      h("td", { "data-field": "kind" }), h("td", { "data-field": "reason" }),
      h("td", { class: "num", "data-field": "count" }), h("td", { "data-field": "detail" }));
  }

  function updateRecentRow(row, { r }) {
    const [time, node, kind, reason, count, detail] = row.children;
    // The server counts repeats of one kind and reason in a row into the latest's `count`.
    setText(count, fmtInt(typeof r.count === "number" ? r.count : 1));
    setText(time, fmtClock(r.t));
    setAttr(time, "title", fmtStamp(r.t));
    setText(node.firstChild, r.node);
    setText(kind, r.kind);
    kind.className = `kind-${r.kind === "error" ? "error" : "refusal"}`;
    setText(reason, r.reason);
    setText(detail, r.detail === null || r.detail === undefined ? "" : r.detail);
  }

  // --- actions ----------------------------------------------------------------------------

  let statusTimer = null;

  /** Say `text` in the live region (an error when `error`). */
  function announce(text, error = false) {
    const region = $("status");
    clearTimeout(statusTimer);
    toggle(region, "error", error);
    setText(region, text);
    statusTimer = setTimeout(() => setText(region, ""), STATUS_CLEAR_MS);
  }

  /** The in-page confirmation: resolves true on OK, false on Cancel or Escape. */
  function confirmAction(text, okLabel) {
    const dialog = $("confirm");
    setText($("confirm-text"), text);
    setText($("dialog-confirm"), okLabel);
    return new Promise((resolve) => {
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("dialog-cancel").focus();
    });
  }

  const DESCRIBE = {
    kick: (d) => ({
      confirm: `Kick ${d.uid}? Every tab and device of this user is disconnected and told not to reconnect.`,
      ok: "Kick",
      done: `Kicked ${d.uid}.`,
      failed: `Could not kick ${d.uid}`,
      body: { action: "kick", uid: d.key },
    }),
    "close-client": (d) => ({
      confirm: `Close client ${d.clientId} of ${d.uid}? It is told not to reconnect.`,
      ok: "Close client",
      done: `Closed client ${d.clientId} of ${d.uid}.`,
      failed: `Could not close client ${d.clientId} of ${d.uid}`,
      body: { action: "close-client", uid: d.key, client_id: d.clientId },
    }),
    "leave-topic": (d) => ({
      done: `Removed ${d.uid} from ${d.topic}.`,
      failed: `Could not remove ${d.uid} from ${d.topic}`,
      body: { action: "leave-topic", uid: d.key, topic: d.topic },
    }),
    push: (d) => ({
      done: `Pushed sente.admin/test-push to ${d.uid}.`,
      failed: `Could not push to ${d.uid}`,
      body: { action: "push", uid: d.key },
    }),
  };

  async function act(button) {
    const what = DESCRIBE[button.dataset.action](button.dataset);
    if (what.confirm && !(await confirmAction(what.confirm, what.ok))) return;
    button.disabled = true;
    try {
      let response;
      try {
        response = await fetch(`${config.adminUrl}/act`, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": config.csrfToken },
          body: JSON.stringify(what.body),
        });
      } catch (e) {
        announce(`${what.failed}: the server did not answer (${e.message}).`, true);
        return;
      }
      let answer = null;
      try { answer = await response.json(); } catch (_) { answer = null; }
      if (response.ok && answer && answer.ok) {
        announce(what.done);
      } else {
        const reason = answer && answer.error ? answer.error : response.statusText || "refused";
        announce(`${what.failed}: ${reason} (HTTP ${response.status}).`, true);
      }
    } finally {
      button.disabled = false;
      ask(); // show the outcome without waiting for the next tick
    }
  }

  document.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (button && DESCRIBE[button.dataset.action]) act(button);
  });

  ask();
})();
