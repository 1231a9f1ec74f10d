/**
 * sente.js — the browser client of flask_sente (wire protocol version 3: version 2's positions,
 * replay and topics, plus calls from the server that the app answers, see answer()).
 *
 * One dependency-free file, loadable three ways:
 *   - classic script:  <script src="/chsk/sente.js"></script>  → global `Sente`
 *   - module script:   import "/chsk/sente.js"; const { connect } = globalThis.Sente;
 *   - node (tests):    const Sente = require(".../sente.js")   (or `import Sente from`)
 * A classic script cannot contain `export`, so the file is an IIFE that assigns
 * `globalThis.Sente` (and `module.exports` under node); that body runs unchanged as a module.
 *
 * Sections, in this order: protocol (pure: events, envelopes, packers, backoff, ids and URLs,
 * state, positions, topics, calls from the server), transports (WebSocket, Ajax), auto
 * socket (the ChannelSocket over helper objects that mirror the Python client's: Status,
 * Dispatch, Calls, Answers, Topics and Connection — transport choice, reconnects, positions
 * held during an upgrade), public API.
 * docs/protocol.md is the contract; flask_sente/protocol/*.py is the Python twin of the pure
 * section and the two must stay in step.
 */
(function (root, factory) {
  "use strict";
  const Sente = factory(root);
  if (typeof module === "object" && module && module.exports) module.exports = Sente;
  if (root) root.Sente = Sente;
})(typeof globalThis !== "undefined" ? globalThis : this, function (global) {
  "use strict";

  // =========================================================================================
  // Protocol (pure: no I/O, no timers, no globals beyond crypto for ids)
  // Python twins: flask_sente/protocol/ (events, wire, packers, backoff, closecodes) and,
  // for ids/URLs, state, positions and topics, flask_sente/client/endpoint.py, state.py,
  // positions.py (topic positions too), topicbook.py.
  // =========================================================================================

  /**
   * The version this client sends as `protocol` and expects in handshakes: 3 is 2 (positions,
   * replay, topics) plus server → client calls (chsk/call, answered with chsk/answer).
   */
  const PROTOCOL_VERSION = 3;
  const RESERVED_PREFIX = "chsk/";

  /** Event ids with a meaning on the wire (docs/protocol.md §3-4). */
  const EV = Object.freeze({
    HANDSHAKE: "chsk/handshake",
    REPLY: "chsk/reply",
    TIMEOUT: "chsk/timeout",
    ERROR: "chsk/error",
    CLOSED: "chsk/closed",
    ACK: "chsk/ack",
    CLOSE: "chsk/close",
    WS_PING: "chsk/ws-ping",
    WS_PONG: "chsk/ws-pong",
    POS: "chsk/pos", // protocol 2: the position mark that ends every push batch
    JOIN: "chsk/join", // protocol 2 topics (docs/protocol.md §11): a call, and its reply
    LEAVE: "chsk/leave",
    TOPIC: "chsk/topic", // a topic's event in a push batch: ["chsk/topic", [topic, event]]
    JOINED: "chsk/joined", // the server joined this client to a topic
    LEFT: "chsk/left", // the server took it out (or refused a rejoin)
    REJOINED: "chsk/rejoined", // a listener event only: a topic rejoined after a reconnect
    CALL: "chsk/call", // protocol 3: the server calls this client (a push, never the app's event)
    ANSWER: "chsk/answer", // ...and the client answers it (an event without reply)
    BYE: "chsk/bye", // an Ajax client stopping on purpose says so (protocol 3)
  });

  /** Reply outcomes that are not a value; they never travel as a reply's data. */
  const FAILURE_IDS = new Set([EV.TIMEOUT, EV.ERROR, EV.CLOSED]);

  /** WebSocket close codes (docs/protocol.md §5). */
  const CLOSE = Object.freeze({
    NORMAL: 1000,
    GOING_AWAY: 1001,
    ABNORMAL: 1006,
    TOO_SLOW: 1013,
    KICKED: 4001,
    PING_TIMEOUT: 4002,
    REPLACED: 4003,
    BROKEN: 3000, // breakConnection()'s default, Sente's "CLOSE_ABNORMAL"
  });

  /** The cb_id an Ajax POST sends when it wants the reply as its own response body. */
  const AJAX_CB = "ajax";

  /**
   * Defaults shared with the Python client, one value each (tests/vectors/defaults.json,
   * which both clients are checked against; the README's option tables say why). The Ajax
   * timeout is also the server's bound on its long-poll hold (flask_sente/config.py
   * CLIENT_AJAX_TIMEOUT: lp_timeout must stay below it); the call timeout is the server's
   * reply_timeout (20 s) plus the connect timeout, so a call made while connecting still
   * hears the server's chsk/timeout before its own timer.
   */
  const DEFAULTS = Object.freeze({
    keepAliveMs: 20000,
    pingTimeoutMs: 10000,
    upgradeRetryMs: 30000,
    connectTimeoutMs: 10000,
    ajaxTimeoutMs: 60000,
    callTimeoutMs: 30000,
  });

  /** Base class of the errors a call can reject with; `kind` is stable, messages are not. */
  class SenteError extends Error {
    constructor(message, kind) {
      super(message);
      this.name = new.target.name;
      this.kind = kind;
    }
  }
  /** No reply in time: the client's own timer, or the server's handler timeout. */
  class TimeoutError extends SenteError {
    constructor(message = "no reply in time") { super(message, "timeout"); }
  }
  /** The connection was not open, or closed before the reply came (the event may be lost). */
  class ClosedError extends SenteError {
    constructor(message = "the channel socket is closed") { super(message, "closed"); }
  }
  /** The server answered with a failure; `info` is what it said, `status` the HTTP status. */
  class ReplyError extends SenteError {
    constructor(message, info = null, status = null) {
      super(message, "error");
      this.info = info;
      this.status = status;
    }
  }
  /** The server refused a join (`reason`: its word, such as "forbidden"). */
  class JoinRefusedError extends SenteError {
    constructor(topic, reason) {
      super(`joining topic ${safeRepr(topic)} was refused: ${reason}`, "refused");
      this.topic = topic;
      this.reason = reason;
    }
  }
  /** The server sent something this client cannot read (a bug or a version mismatch). */
  class ProtocolError extends SenteError {
    constructor(message) { super(message, "protocol"); }
  }

  /**
   * Why `obj` is not a valid event, or null. Same reasons as events.py (Sente's names), so
   * logs read the same on both sides.
   */
  function eventError(obj) {
    if (!Array.isArray(obj)) return "wrong-type";
    if (obj.length < 1 || obj.length > 2) return "wrong-length";
    const id = obj[0];
    if (typeof id !== "string") return "wrong-id-type";
    const slash = id.indexOf("/");
    if (slash <= 0 || slash === id.length - 1) return "unnamespaced-id";
    return null;
  }

  function isEvent(obj) { return eventError(obj) === null; }

  function isReserved(eventId) { return eventId.startsWith(RESERVED_PREFIX); }

  /** `[id, data]` with data null when absent (the wire cannot tell null from missing). */
  function asEvent(arr) { return [arr[0], arr.length === 2 ? arr[1] : null]; }

  /** The wire form: one element when there is no data (as events.to_wire). */
  function toWire(event) {
    return event[1] === null || event[1] === undefined ? [event[0]] : [event[0], event[1]];
  }

  /**
   * Check an event an application is about to send. Misuse is the caller's bug, so it throws
   * synchronously (TypeError) instead of failing later on the wire.
   */
  function validateOutgoing(event, allowReserved = false) {
    const reason = eventError(event);
    if (reason !== null) {
      throw new TypeError(
        `invalid event ${safeRepr(event)} (${reason}): an event is [eventId, data] or ` +
          `[eventId] with a namespaced id such as "todo/add"`);
    }
    if (!allowReserved && isReserved(event[0])) {
      throw new TypeError(
        `event id "${event[0]}" is in the reserved "chsk/" namespace; pick another namespace`);
    }
    return asEvent(event);
  }

  function safeRepr(value) {
    try { return JSON.stringify(value); } catch (_) { return String(value); }
  }

  /** A client → server envelope: `[event, cbId]`. */
  function clientEnvelope(event, cbId = null) { return [toWire(event), cbId]; }

  /**
   * Decode an unpacked server → client message (mirror of wire.decode_server).
   * Returns `{kind, cbId, events, outcome, value}` where kind is one of handshake, events,
   * reply, ping, timeout, ack, close. Throws ProtocolError when malformed.
   */
  function decodeServer(value) {
    if (!Array.isArray(value) || value.length !== 2) {
      throw new ProtocolError("expected the envelope [payload, cb_id]");
    }
    const [payload, cbId] = value;
    if (!Array.isArray(payload) || payload.length === 0) {
      throw new ProtocolError("server payload must be an event or a list of events");
    }
    if (typeof payload[0] === "string") {
      if (!isEvent(payload)) throw new ProtocolError(`malformed server event ${safeRepr(payload)}`);
      const [id, data] = asEvent(payload);
      if (cbId !== null && cbId !== undefined) {
        if (id !== EV.REPLY && !FAILURE_IDS.has(id)) {
          throw new ProtocolError(`unexpected reply payload "${id}"`);
        }
        return { kind: "reply", cbId, events: [], outcome: id, value: data };
      }
      const kind = SINGLE_KINDS[id];
      if (kind === undefined) throw new ProtocolError(`unexpected server event "${id}"`);
      return { kind, cbId: null, events: [], outcome: id, value: data };
    }
    const events = [];
    for (const item of payload) {
      if (!isEvent(item)) throw new ProtocolError(`malformed pushed event ${safeRepr(item)}`);
      events.push(asEvent(item));
    }
    return { kind: "events", cbId: null, events, outcome: null, value: null };
  }

  const SINGLE_KINDS = Object.freeze({
    [EV.HANDSHAKE]: "handshake",
    [EV.WS_PING]: "ping",
    [EV.TIMEOUT]: "timeout",
    [EV.ACK]: "ack",
    [EV.CLOSE]: "close",
    // An Ajax POST's reply carries no cb_id: the response itself is the correlation.
    [EV.REPLY]: "reply",
    [EV.ERROR]: "reply",
    [EV.CLOSED]: "reply",
  });

  /**
   * A reply outcome as the caller sees it: `{ok: true, value}` or `{ok: false, error}`.
   * `chsk/timeout` from the server is the same failure as the client's own timer.
   */
  function replyOutcome(outcome, value) {
    if (outcome === EV.REPLY) return { ok: true, value };
    if (outcome === EV.TIMEOUT) {
      return { ok: false, error: new TimeoutError("the server's handler did not reply in time") };
    }
    if (outcome === EV.CLOSED) return { ok: false, error: new ClosedError("the server closed the call") };
    const message = value && typeof value.message === "string" ? value.message : "the server failed the call";
    return { ok: false, error: new ReplyError(message, value) };
  }

  // --- packers (protocol/packers.py) --------------------------------------------------------

  const textDecoder = typeof TextDecoder !== "undefined" ? new TextDecoder() : null;

  function rejectNonFinite(_key, value) {
    if (typeof value === "number" && !Number.isFinite(value)) {
      throw new TypeError(`cannot pack ${value} as JSON (the protocol forbids NaN and Infinity)`);
    }
    return value;
  }

  /** Compact JSON, the server's default packer; text frames. */
  const jsonPacker = Object.freeze({
    name: "json",
    binary: false,
    pack(value) { return JSON.stringify(value, rejectNonFinite); },
    unpack(data) {
      const text = typeof data === "string" ? data : textDecoder.decode(data);
      try { return JSON.parse(text); } catch (e) { throw new ProtocolError(`malformed JSON: ${e.message}`); }
    },
  });

  /**
   * A msgpack packer from a codec the page supplies, e.g. `@msgpack/msgpack`'s
   * `{encode, decode}`: the client stays dependency-free and the page picks the library.
   */
  function msgpackPacker(codec) {
    if (!codec || typeof codec.encode !== "function" || typeof codec.decode !== "function") {
      throw new TypeError("msgpackPacker needs a codec with encode() and decode(), e.g. @msgpack/msgpack");
    }
    return Object.freeze({
      name: "msgpack",
      binary: true,
      pack(value) { return codec.encode(value); },
      unpack(data) {
        if (typeof data === "string") throw new ProtocolError("msgpack data must arrive as bytes (a binary frame)");
        try { return codec.decode(data instanceof Uint8Array ? data : new Uint8Array(data)); } catch (e) {
          throw new ProtocolError(`malformed msgpack: ${e.message}`);
        }
      },
    });
  }

  /** "json", or any `{name, binary, pack, unpack}` object (the server must use the same). */
  function resolvePacker(spec) {
    if (spec === undefined || spec === "json") return jsonPacker;
    if (spec === "msgpack") {
      throw new TypeError('packer "msgpack" needs a codec: pass Sente.msgpackPacker({encode, decode})');
    }
    if (spec && typeof spec.name === "string" && typeof spec.pack === "function" &&
        typeof spec.unpack === "function") {
      return spec;
    }
    throw new TypeError(`${safeRepr(spec)} is not a packer: it needs name, binary, pack() and unpack()`);
  }

  // --- backoff (protocol/backoff.py) --------------------------------------------------------

  /**
   * Milliseconds to wait before reconnect `attempt` (1-based); `rand` in [0, 1).
   * Mirror of backoff.backoff_delay: attempt 1 is immediate (most drops are one-offs);
   * attempt n >= 2 waits in [step/2, step) with step = min(cap, base * 2^(n-2)), so a fleet
   * of tabs reconnecting after a server restart spreads out, and no tab waits over `cap`.
   */
  function backoffDelay(attempt, rand, { base = 1000, cap = 30000 } = {}) {
    if (attempt <= 1) return 0;
    const step = Math.min(cap, base * 2 ** Math.min(attempt - 2, 62));
    return step / 2 + (rand * step) / 2;
  }

  /**
   * A connection up at least this long counted as working: only its loss starts the attempt
   * count again. Mirror of the Python client's STABLE_AFTER (2 s).
   */
  const STABLE_AFTER_MS = 2000;

  /**
   * The attempt number of the reconnect that follows a close; `upMs` is how long the
   * connection had been open (null: it never opened). As in the Python client, a handshake
   * alone does not reset the count: a server that accepts and closes at once (a crash right
   * after the handshake, two tabs sharing a client id replacing each other with 4003) would
   * otherwise get attempt 1, which has no delay, hundreds of times a second.
   */
  function nextAttempt(attempt, upMs, stableAfterMs = STABLE_AFTER_MS) {
    return (upMs !== null && upMs >= stableAfterMs ? 0 : attempt) + 1;
  }

  // --- ids and URLs (client/endpoint.py) ---------------------------------------------------

  const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

  /**
   * A random id from a 64-letter alphabet (exactly 6 bits per byte, so no modulo bias).
   * getRandomValues works on plain http too, unlike crypto.randomUUID.
   */
  function randomId(length) {
    const bytes = new Uint8Array(length);
    global.crypto.getRandomValues(bytes);
    let id = "";
    for (let i = 0; i < length; i++) id += ID_ALPHABET[bytes[i] & 63];
    return id;
  }

  /**
   * The URL of one request. `kind` is "ws" (http→ws, https→wss) or "http". Query parameters
   * with null/undefined values are left out, so a missing token never travels as "null".
   */
  function buildUrl(base, path, params, kind = "http") {
    const url = new URL(path, base);
    if (kind === "ws") {
      if (url.protocol === "http:") url.protocol = "ws:";
      else if (url.protocol === "https:") url.protocol = "wss:";
    } else if (url.protocol === "ws:") url.protocol = "http:";
    else if (url.protocol === "wss:") url.protocol = "https:";
    for (const [key, value] of Object.entries(params)) {
      if (value !== null && value !== undefined) url.searchParams.set(key, String(value));
    }
    return url.toString();
  }

  // --- state (client/state.py) -------------------------------------------------------------

  /**
   * Close reasons (`state.lastClose.reason`), shared with the Python client: clean (the server
   * closed; `code`), unexpected (broke or could not be made; `message` says how), rejected
   * (an HTTP refusal; `status`), ping-timeout, kicked, requested-disconnect,
   * requested-reconnect, and protocol-mismatch. These ones are final: the client asked to
   * stop, was kicked, or speaks another protocol version.
   */
  const FINAL_REASONS = new Set(["requested-disconnect", "kicked", "protocol-mismatch"]);

  /** Refusals that would only be refused again: stop (call reconnect() after logging in). */
  const AUTH_STATUSES = new Set([401, 403]);

  /**
   * Other refusals that retrying cannot fix, so the client stops (`active` false) with the
   * status and the server's text in `lastClose` instead of retrying forever: the request
   * itself is wrong — 400 (bad positions, packer or protocol mismatch), 404 and 410 (no
   * channel socket at this URL), 405, 413, 414, 431 (too large). Every other status (408,
   * 425, 429, 5xx) and every network error is retried. Python: state.STOP_STATUSES.
   */
  const STOP_STATUSES = new Set([400, 404, 405, 410, 413, 414, 431]);

  /**
   * `active`: connected or trying to be (connecting, open, waiting to reconnect); false
   * once the client stopped — disconnect(), a kick, a refusal (AUTH_STATUSES,
   * STOP_STATUSES), a protocol mismatch — until reconnect().
   */
  function initialState(type) {
    return Object.freeze({
      type, open: false, everOpened: false, uid: null, handshakeData: null, recovered: null,
      lastClose: null, nextReconnectAt: null, active: false,
    });
  }

  function stateWithActive(state, active) {
    return state.active === active ? state : Object.freeze({ ...state, active });
  }

  /**
   * The state after a handshake over `type` ("ws" or "ajax"). `recovered` is the server's
   * word on the positions this client came back with (docs/protocol.md §10): null when it
   * brought none, true when nothing was missed, false when the app should reload its state.
   */
  function stateAfterHandshake(state, type, info) {
    return Object.freeze({
      ...state, type, open: true, everOpened: true,
      uid: info.uid === undefined ? null : info.uid,
      handshakeData: info.handshake_data === undefined ? null : info.handshake_data,
      recovered: typeof info.recovered === "boolean" ? info.recovered : null,
      nextReconnectAt: null,
    });
  }

  /**
   * The state after a connection closed or failed; `close` is `{reason, code, status,
   * message}`, recorded with `at`, the time (ms since the epoch) it happened.
   */
  function stateAfterClose(state, close, at = Date.now()) {
    return Object.freeze({ ...state, open: false, lastClose: Object.freeze({ ...close, at }) });
  }

  function stateWithRetryAt(state, at) {
    return Object.freeze({ ...state, nextReconnectAt: at });
  }

  /** Whether to reconnect on our own after `close` (see FINAL_REASONS, AUTH_STATUSES, STOP_STATUSES). */
  function shouldReconnect(close, { reconnectOnAuthFailure = false } = {}) {
    if (close.reason === "rejected" && AUTH_STATUSES.has(close.status)) return reconnectOnAuthFailure;
    if (close.reason === "rejected" && STOP_STATUSES.has(close.status)) return false;
    if (close.code === CLOSE.KICKED) return false;
    return !FINAL_REASONS.has(close.reason);
  }

  /** A close description; every field present so apps can destructure it. */
  function closeInfo(reason, { code = null, status = null, message = null } = {}) {
    return { reason, code, status, message };
  }

  /**
   * How a WebSocket that had completed its handshake ended. `localReason` is set when this
   * client closed it on purpose (ping timeout, bad package).
   */
  function describeWsClose(code, text, wasClean, localReason = null) {
    const message = text || null;
    if (localReason) return closeInfo(localReason, { code, message });
    if (code === CLOSE.KICKED) return closeInfo("kicked", { code, message });
    return closeInfo(wasClean ? "clean" : "unexpected", { code, message });
  }

  /**
   * How an HTTP exchange failed: status 0 means no response at all (network down, server
   * gone, request timed out). 401/403 and STOP_STATUSES are final; others are retried.
   */
  function describeHttpFailure(status, message = null) {
    if (!status) return closeInfo("unexpected", { message: message || "no response" });
    return closeInfo("rejected", { status, message });
  }

  /**
   * What to do after a WebSocket failed before its handshake, given the Ajax handshake probe
   * that followed (a browser cannot read the status of a refused upgrade, the probe can).
   * The verdicts below agree with shouldReconnect() on the close the owner records:
   *   "downgrade" — auto mode and the probe got a handshake: HTTP works where WebSocket does
   *                 not, so use Ajax. Also when a WebSocket has opened before (the Python
   *                 client's rule, and unlike Sente): a restart shows up as a probe with no
   *                 response, so a working probe means the path changed (a new proxy, a
   *                 network that blocks upgrades), and upgrade retries move back up later;
   *   "stop"      — the server refused us (401/403, STOP_STATUSES), retrying would be
   *                 refused too;
   *   "retry"     — anything else (server down, WS blocked in "ws" mode): back off, retry.
   * `probe` is `{status, handshake}`: status 0 when the probe got no response.
   */
  function afterWsFailure({ auto, probe, reconnectOnAuthFailure = false }) {
    if (AUTH_STATUSES.has(probe.status)) return reconnectOnAuthFailure ? "retry" : "stop";
    if (STOP_STATUSES.has(probe.status)) return "stop";
    if (probe.handshake && auto) return "downgrade";
    return "retry";
  }

  /**
   * The transport a (re)connection attempt starts with, as the Python client picks it:
   * forced types are kept; auto starts with WebSocket, except after a WebSocket failed while
   * HTTP worked (`wsBlockedForMs` ago, null: it did not): then Ajax directly until
   * `upgradeRetryMs` has passed (null: until reconnect() or a successful upgrade), so a
   * blocked path does not cost a failed WebSocket and a probe on every reconnect.
   */
  function firstTransport({ type, hasWebSocket = true, wsBlockedForMs = null, upgradeRetryMs = null }) {
    if (type === "ws") return "ws";
    if (type === "ajax" || !hasWebSocket) return "ajax";
    if (wsBlockedForMs === null) return "ws";
    return upgradeRetryMs && wsBlockedForMs >= upgradeRetryMs ? "ws" : "ajax";
  }

  /** Why we cannot talk to the server that sent handshake `info`, or null (mirror of
   * state.handshake_error): a server that names no version is accepted, any other differs. */
  function handshakeError(info) {
    if (info.protocol === undefined || info.protocol === PROTOCOL_VERSION) return null;
    return `the server speaks protocol ${info.protocol}, this client ${PROTOCOL_VERSION}; reload the page`;
  }

  // --- positions, protocol 2 (client/positions.py) -----------------------------------------
  //
  // Where this client stands in each log it reads: null (none yet: the next handshake is a
  // first connection) or a frozen `{log: [epoch, seq]}`, the last entry it was given
  // (docs/protocol.md §10). The server's handshake sets them, each batch's mark moves them
  // forward, every reconnect sends them back so the server replays what was missed, and a
  // batch that does not move them is one this client has already processed.

  /**
   * `value` as positions (a frozen copy), or null when it is not `{log: [epoch, seq]}` with
   * a string epoch and an integer seq >= 0 for every log. An empty object is null too:
   * positions in no log tell the server nothing.
   */
  function readPositions(value) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) return null;
    const out = {};
    for (const [name, pos] of Object.entries(value)) {
      if (!Array.isArray(pos) || pos.length !== 2) return null;
      const [epoch, seq] = pos;
      if (typeof epoch !== "string" || !Number.isSafeInteger(seq) || seq < 0) return null;
      out[name] = Object.freeze([epoch, seq]);
    }
    return Object.keys(out).length ? Object.freeze(out) : null;
  }

  /**
   * The `pos` query parameter for `positions` (null: leave it out, a first connection).
   * buildUrl URL-encodes it.
   */
  function posParam(positions) {
    return positions ? JSON.stringify(positions) : null;
  }

  /**
   * The positions after a handshake: the server's replace the client's (they are where the
   * server put it: its own after a recovery, the head otherwise). A protocol-1 handshake
   * or one without positions leaves none. Topic logs it may name are ignored, whatever
   * their value (§10: a handshake never carries them now; older servers did, even at seq
   * -1): a topic's position stays the client's own until the topic's rejoin answers for it.
   */
  function positionsAfterHandshake(info) {
    const given = info && info.protocol >= 2 ? info.positions : null;
    if (!given || typeof given !== "object" || Array.isArray(given)) return null;
    const main = {};
    for (const [name, pos] of Object.entries(given)) if (!isTopicLog(name)) main[name] = pos;
    return readPositions(main);
  }

  /** The mark's data when `events` (a decoded batch) ends with one, else null. */
  function batchMark(events) {
    const last = events.length ? events[events.length - 1] : null;
    return last && last[0] === EV.POS ? readPositions(last[1]) : null;
  }

  /**
   * Whether a batch with this mark was processed already: every log it names is at or below
   * this client's position in the same epoch. A mark naming a log in another epoch (or one
   * the client does not know) moves it, so its batch is new. Marks only ever increase within
   * an epoch (docs/protocol.md §10), so a batch that does not move any position is a repeat
   * — an Ajax answer sent again, or a replay that overlaps what another connection gave.
   */
  function isSeenMark(positions, mark) {
    if (!mark) return false;
    for (const [name, [epoch, seq]] of Object.entries(mark)) {
      const ours = positions && positions[name];
      if (!ours || ours[0] !== epoch || seq > ours[1]) return false;
    }
    return true;
  }

  /** The positions after a mark: each log it names moves forward, never back in an epoch. */
  function positionsAfterMark(positions, mark) {
    if (!mark) return positions;
    const out = { ...(positions || {}) };
    for (const [name, pos] of Object.entries(mark)) {
      const ours = out[name];
      if (!ours || ours[0] !== pos[0] || pos[1] > ours[1]) out[name] = pos;
    }
    return Object.freeze(out);
  }

  /**
   * What to do with one decoded push batch: `{events, positions, seen}` — the events to hand
   * to the app (the mark taken off; none when the batch was `seen` already, so a duplicate
   * never reaches the app) and the positions after it. A batch without a mark (protocol 1)
   * is delivered and moves nothing.
   */
  function takeBatch(positions, events) {
    const mark = batchMark(events);
    if (mark === null) {
      const hasMark = events.length && events[events.length - 1][0] === EV.POS;
      return { events: hasMark ? events.slice(0, -1) : events, positions, seen: false };
    }
    if (isSeenMark(positions, mark)) return { events: [], positions, seen: true };
    return { events: events.slice(0, -1), positions: positionsAfterMark(positions, mark), seen: false };
  }

  // --- topics, protocol 2 (client/positions.py's topic part, client/topics.py) -------------
  //
  // A topic is a named log like the user's (docs/protocol.md §11): a mark names it
  // "t:" + topic, and this client keeps its position there beside the user's and the
  // broadcast's, in a Map `topic → [epoch, seq] | null` (null: joining, no position yet) of
  // the topics it is in or joining. A topic's events travel in the user's batches wrapped as
  // ["chsk/topic", [topic, event]]; "chsk/joined" and "chsk/left" say the server moved this
  // client in or out. Membership changes, positions and what to hand to the app are decided
  // here, per batch, so the channel only applies them.

  const TOPIC_LOG_PREFIX = "t:";
  /** The server's default SENTE_MAX_TOPIC_LENGTH; a longer name is refused there anyway. */
  const MAX_TOPIC_LENGTH = 200;

  /** Why `topic` is not a topic name, or null: a non-empty string of at most 200 characters. */
  function topicError(topic) {
    if (typeof topic !== "string") return "a topic name is a string";
    if (!topic) return "a topic name cannot be empty";
    // Characters as the server counts them (code points), not UTF-16 units.
    if (topic.length > MAX_TOPIC_LENGTH && Array.from(topic).length > MAX_TOPIC_LENGTH) {
      return `a topic name is at most ${MAX_TOPIC_LENGTH} characters`;
    }
    return null;
  }

  /** Check a topic name the application passes; misuse throws at once (TypeError). */
  function validateTopic(topic) {
    const reason = topicError(topic);
    if (reason !== null) throw new TypeError(`invalid topic ${safeRepr(topic)}: ${reason}`);
    return topic;
  }

  /** The name a mark (and the `pos` parameter) gives a topic's log. */
  function topicLog(topic) { return TOPIC_LOG_PREFIX + topic; }

  function isTopicLog(name) { return name.startsWith(TOPIC_LOG_PREFIX); }

  /** One `[epoch, seq]` (frozen), or null when `value` is not one. */
  function readPosition(value) {
    const read = readPositions({ p: value });
    return read ? read.p : null;
  }

  /** `positions` without topic logs (null when nothing is left). */
  function mainPositions(positions) {
    if (!positions) return null;
    const out = {};
    for (const [name, pos] of Object.entries(positions)) if (!isTopicLog(name)) out[name] = pos;
    return Object.keys(out).length ? Object.freeze(out) : null;
  }

  /** `positions` with each topic's position added under its log name (null: none at all). */
  function withTopicLogs(positions, topics) {
    const out = { ...(positions || {}) };
    for (const [topic, pos] of topics) if (pos) out[topicLog(topic)] = pos;
    return Object.keys(out).length ? Object.freeze(out) : null;
  }

  /** The mark cut down to the logs this client reads: its own and the `topics` it tracks. */
  function trackedMark(mark, topics) {
    const out = {};
    for (const [name, pos] of Object.entries(mark)) {
      if (!isTopicLog(name) || topics.has(name.slice(TOPIC_LOG_PREFIX.length))) out[name] = pos;
    }
    return Object.keys(out).length ? out : null;
  }

  /** `ours` moved forward to `pos`: never back within an epoch (as positionsAfterMark). */
  function forwardPosition(ours, pos) {
    return !ours || ours[0] !== pos[0] || pos[1] > ours[1] ? pos : ours;
  }

  /** A ["chsk/topic", …] event's data as `{topic, event}`, or null when malformed. */
  function readTopicEvent(data) {
    if (!Array.isArray(data) || data.length !== 2 || topicError(data[0]) !== null || !isEvent(data[1])) return null;
    return { topic: data[0], event: asEvent(data[1]) };
  }

  /** chsk/joined or chsk/left data as `{topic, position, reason}`, or null. */
  function readTopicNotice(data) {
    if (data === null || typeof data !== "object" || topicError(data.topic) !== null) return null;
    return {
      topic: data.topic,
      position: readPosition(data.position),
      reason: typeof data.reason === "string" ? data.reason : null,
    };
  }

  /**
   * What to do with one decoded push batch when the client is in `topics` (Map topic →
   * position | null): `{items, positions, topics, seen}`. `items`, in batch order, are
   *   {kind: "event", event, topic}   — for the app; topic null for a user or broadcast push;
   *   {kind: "joined", topic, position} / {kind: "left", topic, reason};
   *   {kind: "call", call, data}      — a chsk/call (protocol 3): `call` as readCall reads
   *                                     `data`, null when malformed; never an app's event;
   * `positions` and `topics` (a new Map) are where the client stands after the batch.
   * As takeBatch, a batch whose mark moves none of the logs this client reads was processed
   * already (`seen`: nothing to do). Logs of topics it is not in do not count: their events
   * are dropped (they were in flight when it left), and a repeat is still a repeat. A topic
   * the batch joins counts from its "chsk/joined" on; one it leaves, until its "chsk/left".
   */
  function takeTopicBatch(positions, topics, events) {
    const mark = batchMark(events);
    const body = events.length && events[events.length - 1][0] === EV.POS ? events.slice(0, -1) : events;
    const tracked = new Map(topics);
    for (const [id, data] of body) {
      const notice = id === EV.JOINED ? readTopicNotice(data) : null;
      if (notice && !tracked.has(notice.topic)) tracked.set(notice.topic, notice.position);
    }
    if (mark !== null) {
      const ours = trackedMark(mark, tracked);
      if (ours === null || isSeenMark(withTopicLogs(positions, tracked), ours)) {
        return { items: [], positions, topics, seen: true };
      }
    }
    const members = new Map(topics);
    const items = [];
    for (const event of body) {
      const [id, data] = event;
      if (id === EV.TOPIC) {
        const inner = readTopicEvent(data);
        if (inner && members.has(inner.topic)) items.push({ kind: "event", event: inner.event, topic: inner.topic });
      } else if (id === EV.JOINED || id === EV.LEFT) {
        const notice = readTopicNotice(data);
        if (notice === null) continue;
        const { topic, position, reason } = notice;
        if (id === EV.JOINED) {
          if (!members.has(topic)) members.set(topic, position);
          items.push({ kind: "joined", topic, position });
        } else if (members.delete(topic)) {
          items.push({ kind: "left", topic, reason });
        }
      } else if (id === EV.CALL) {
        items.push({ kind: "call", call: readCall(data), data });
      } else if (!isReserved(id)) {
        items.push({ kind: "event", event, topic: null });
      }
    }
    if (mark === null) return { items, positions, topics: members, seen: false };
    for (const [topic, ours] of members) {
      const pos = mark[topicLog(topic)];
      if (pos) members.set(topic, forwardPosition(ours, pos));
    }
    return { items, positions: positionsAfterMark(positions, mainPositions(mark)), topics: members, seen: false };
  }

  /**
   * An Ajax reply's X-Sente-After header (docs/protocol.md §6, "Replies after their
   * pushes"): `{log: [epoch, seq]}` where the handler's pushes went, or null when absent or
   * malformed (the reply is then delivered at once). Python: positions.read_after.
   */
  function readAfter(text) {
    if (typeof text !== "string" || !text) return null;
    let value;
    try { value = JSON.parse(text); } catch (_) { return null; }
    return readPositions(value);
  }

  /**
   * Whether this client stands where `after` (see readAfter) says: in every log named that
   * it reads — its own (`positions`) and the topics it is in or joining (`topics`, Map topic
   * → position | null) — at that seq or past it in the same epoch, or in another epoch (a
   * handshake moved it on: nothing left to wait for). Logs it does not read, or has no
   * position in yet (a join not answered), are skipped. Python: Positions.reached.
   */
  function afterReached(positions, topics, after) {
    for (const [name, [epoch, seq]] of Object.entries(after)) {
      let ours;
      if (isTopicLog(name)) {
        const topic = name.slice(TOPIC_LOG_PREFIX.length);
        if (!topics.has(topic)) continue;
        ours = topics.get(topic);
      } else {
        ours = positions ? positions[name] : null;
      }
      if (ours && ours[0] === epoch && ours[1] < seq) return false;
    }
    return true;
  }

  /**
   * A chsk/join reply as `{ok: true, data, position, recovered}` or `{ok: false,
   * reason}`; a reply that is neither is the server's bug (ProtocolError).
   */
  function readJoinReply(value) {
    if (value && value.ok === true) {
      return {
        ok: true,
        data: value.data === undefined ? null : value.data,
        position: readPosition(value.position),
        recovered: typeof value.recovered === "boolean" ? value.recovered : null,
      };
    }
    if (value && value.ok === false) {
      return { ok: false, reason: typeof value.reason === "string" && value.reason ? value.reason : "refused" };
    }
    throw new ProtocolError(`a join reply is {ok: true|false, …}, got ${safeRepr(value)}`);
  }
  // The topic records of a channel: a Map topic → {state, data, position, moves}, in join
  // order. `state` is "joining" until a join's reply lets the client in, then "joined";
  // `data` is what the topic was joined with (sent again on each rejoin); `moves` counts
  // the marks that moved `position`, so a join's reply can tell whether one came first.
  // What a handshake does to them is the rule client/topicbook.py follows too, stated once
  // as data in tests/vectors/topics_handshake.json.

  /** A topic this client is joining (see above). */
  function newTopicRecord(data) {
    return { state: "joining", data, position: null, moves: 0 };
  }

  /** Map topic → "joining" | "joined" of the records `topics`, in join order. */
  function topicStates(topics) {
    const out = new Map();
    for (const [topic, record] of topics) out.set(topic, record.state);
    return out;
  }

  /** Map topic → position | null of the records `topics` (what takeTopicBatch reads). */
  function topicPositions(topics) {
    const out = new Map();
    for (const [topic, record] of topics) out.set(topic, record.position);
    return out;
  }

  /** Whether the handshake `info` names another user than `state` did (never the first). */
  function userChanged(state, info) {
    return state.everOpened && !sameUid(state.uid, info.uid);
  }

  /**
   * What a handshake does to the topics whose `states` are given (see topicStates):
   * `{rejoin, dropped}`, lists of topics in join order. A new connection starts with no
   * topics on the server, so every topic the client is in is rejoined from its position —
   * unless the user changed (see userChanged): its topics were the other user's and are
   * dropped (the app gets "chsk/left", reason "user-changed"). A topic still joining is
   * in neither list: its own join call answers for it.
   */
  function topicsAtHandshake(states, changed) {
    const joined = [...states].filter(([, state]) => state === "joined").map(([topic]) => topic);
    return changed ? { rejoin: [], dropped: joined } : { rejoin: joined, dropped: [] };
  }

  /**
   * The position a join's reply leaves its topic at: the reply's, unless a mark moved the
   * topic since the join was sent (`movedSince`: over Ajax a batch can overtake the reply,
   * and its mark is the newer word).
   */
  function positionAfterJoin(position, movedSince, replied) {
    return replied !== null && !movedSince ? replied : position;
  }

  /**
   * Whether a refused join call drops its topic, given the topic's `state` ("joining" or
   * "joined") when the refusal came: a rejoin's refusal does (the new connection is not in
   * it: the app gets "chsk/left"), and so does the refusal of a first join; the refusal of
   * an app's join of a topic the client is in already does not — the server still sends
   * it. Python: TopicBook.failed and Topics._rejoin.
   */
  function dropsOnRefusal(state, rejoin) {
    return rejoin || state === "joining";
  }

  /**
   * Apply a batch (what takeTopicBatch answered) to the records `topics`: a server-side
   * join becomes a joined record (no join call of ours to wait for), the topics the batch
   * left are removed, and moved positions are taken (counted in `moves`).
   */
  function adoptTopicBatch(topics, batch) {
    for (const item of batch.items) {
      if (item.kind !== "joined") continue;
      let record = topics.get(item.topic);
      if (!record) {
        record = newTopicRecord(null);
        topics.set(item.topic, record);
      }
      record.state = "joined";
    }
    for (const [topic, record] of [...topics]) {
      if (!batch.topics.has(topic)) { topics.delete(topic); continue; }
      const position = batch.topics.get(topic);
      if (position !== record.position) { record.position = position; record.moves += 1; }
    }
  }

  // --- calls from the server, protocol 3 ---------------------------------------------------
  //
  // The server calls this client with a push ["chsk/call", {id, event, timeout}] inside an
  // ordinary batch (so in order with the pushes around it, with a position, replayed after a
  // reconnect like them). The app's answer handler for the event's id runs, and its outcome
  // goes back as an event without reply: ["chsk/answer", {id, value}] or ["chsk/answer",
  // {id, error: {kind, message}}], kind "no-handler" or "error".

  /** The longest call id the server sends. */
  const MAX_CALL_ID_LENGTH = 80;
  /** How many call ids a client remembers to answer each call at most once. */
  const CALL_IDS_REMEMBERED = 1024;
  /** An error answer's message is cut to this many characters. */
  const MAX_ANSWER_MESSAGE = 500;

  /** `text` cut to `max` characters, counted as the server counts them (code points). */
  function cutText(text, max) {
    if (text.length <= max) return text;
    const chars = Array.from(text);
    return chars.length <= max ? text : chars.slice(0, max).join("");
  }

  /**
   * A chsk/call's data as `{id, event, timeout}` (event as asEvent gives it; timeout in ms),
   * or null when it is malformed: no call id (a string of 1 to 80 characters) or no valid
   * event. A timeout that is not a number of ms >= 0 counts as 0: the answer is sent if the
   * client is open when it is ready, and not kept for later. Other fields are ignored.
   */
  function readCall(data) {
    if (data === null || typeof data !== "object" || Array.isArray(data)) return null;
    const { id, event, timeout } = data;
    if (typeof id !== "string" || !id || cutText(id, MAX_CALL_ID_LENGTH) !== id) return null;
    if (!isEvent(event)) return null;
    const ms = typeof timeout === "number" && Number.isFinite(timeout) && timeout >= 0 ? timeout : 0;
    return { id, event: asEvent(event), timeout: ms };
  }

  /** The answer event of call `id` with the handler's `value` (nothing returned: null). */
  function answerValue(id, value) {
    return [EV.ANSWER, { id, value: value === undefined ? null : value }];
  }

  /** The answer event of call `id` that failed: `kind` "no-handler" or "error". */
  function answerError(id, kind, message) {
    return [EV.ANSWER, { id, error: { kind, message: cutText(String(message), MAX_ANSWER_MESSAGE) } }];
  }

  /** What a handler threw or rejected with, as an answer's message (Python: str(exc)). */
  function errorText(error) {
    if (error !== null && typeof error === "object" && typeof error.message === "string") {
      return error.message || (typeof error.name === "string" && error.name) || "error";
    }
    try { return String(error); } catch (_) { return safeRepr(error); }
  }

  /**
   * The ids of the last `size` calls: `add(id)` is false for an id among them (a repeat:
   * the handler ran already), true for a new one, which is remembered in place of the oldest.
   */
  class RecentIds {
    constructor(size = CALL_IDS_REMEMBERED) {
      this._size = size;
      this._ids = new Set(); // insertion order: the oldest first
    }

    add(id) {
      if (this._ids.has(id)) return false;
      this._ids.add(id);
      if (this._ids.size > this._size) this._ids.delete(this._ids.values().next().value);
      return true;
    }
  }


  // =========================================================================================
  // Transports (client/links.py, ajax.py, websocket.py): one object per connection attempt,
  // reporting to its owner through hooks:
  //   hooks.handshake(transport, info), hooks.message(transport, decoded),
  //   hooks.closed(transport, close)   — once, only for closes this client did not ask for.
  // `close()` from the owner is silent: the owner already knows why it closed.
  // =========================================================================================

  const monotonicNow = () =>
    (typeof performance !== "undefined" && performance.now ? performance.now() : Date.now());

  /** Read whatever an HTTP response says about a refusal, for logs and `lastClose.message`. */
  async function readErrorText(response) {
    try { return (await response.text()).trim().slice(0, 300) || null; } catch (_) { return null; }
  }

  /**
   * One HTTP request to the channel socket URL with a timeout; never rejects, so callers
   * branch on data. Resolves to `{status, decoded, after}` on 2xx (`after`: the
   * X-Sente-After header's text, or null), `{status, message}` otherwise:
   * status 0 when there was no response (network error, abort, or `timedOut`), -1 with
   * `protocolError` when the body could not be read.
   */
  async function ajaxRequest(env, { method = "GET", query, body, timeoutMs, signal }) {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; controller.abort(); }, timeoutMs);
    const onAbort = () => controller.abort();
    if (signal) {
      if (signal.aborted) controller.abort();
      else signal.addEventListener("abort", onAbort);
    }
    const headers = { ...env.headers() };
    const token = env.csrfToken();
    if (token) headers["X-CSRF-Token"] = token;
    // The key the server gave this client (docs/protocol.md §6): its later requests are
    // answered without the app's full request handling while the credentials stay as they
    // were. Only readable same-origin, so a cross-origin client never sends it.
    if (env.fastKey.value) headers["X-Sente-Key"] = env.fastKey.value;
    if (body !== undefined) {
      headers["Content-Type"] = env.packer.binary ? "application/msgpack" : "application/json";
    }
    try {
      const response = await env.fetch(env.httpUrl(query), {
        method, headers, body, signal: controller.signal, cache: "no-store",
        credentials: "same-origin",
      });
      const key = response.headers && response.headers.get("X-Sente-Key");
      if (key) env.fastKey.value = key;
      if (!response.ok) return { status: response.status, message: await readErrorText(response) };
      const data = env.packer.binary ? new Uint8Array(await response.arrayBuffer()) : await response.text();
      // A reply's X-Sente-After: where the handler's pushes went (docs/protocol.md §6).
      const after = (response.headers && response.headers.get("X-Sente-After")) || null;
      return { status: response.status, decoded: decodeServer(env.packer.unpack(data)), after };
    } catch (error) {
      if (error instanceof ProtocolError) return { status: -1, message: error.message, protocolError: error };
      return { status: 0, message: timedOut ? "request timed out" : String((error && error.message) || error), timedOut };
    } finally {
      clearTimeout(timer);
      if (signal) signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Fetch a WebSocket ticket: `GET <url>?client-id=…&new-ws-ticket=1` with the CSRF token
   * in the X-CSRF-Token header; the body is the ticket. Never rejects: `{ticket}` or
   * `{message}`. The caller's connect timer bounds it (abort through `signal`).
   */
  async function fetchWsTicket(env, signal) {
    try {
      const response = await env.fetch(env.httpUrl({ "new-ws-ticket": 1 }), {
        method: "GET", headers: { "X-CSRF-Token": env.csrfToken() }, signal,
        cache: "no-store", credentials: "same-origin",
      });
      const body = (await response.text()).trim();
      if (response.ok && body) return { ticket: body };
      return { message: `no WebSocket ticket: HTTP ${response.status} ${body.slice(0, 200)}`.trim() };
    } catch (error) {
      return { message: `no WebSocket ticket: ${(error && error.message) || error}` };
    }
  }

  /**
   * A WebSocket connection: opening handshake (first message), keep-alive with timeout,
   * frames in and out. It counts as open only once the server's handshake arrived.
   */
  class WsTransport {
    constructor(env, hooks) {
      this.type = "ws";
      this.env = env;
      this.hooks = hooks;
      this.opened = false;
      this.done = false;
      this.socket = null;
      this.lastReceivedAt = 0;
      this.pingSentAt = null;
      this.pingCbId = null;
      this.timer = null;
      this.deaf = false; // breakConnection({closeWs: false}): the socket lives on, unheard
      this.ticketController = null;
    }

    start() {
      const env = this.env;
      // A proxy may hold an upgrade forever; do not wait on it (nor on the ticket) longer.
      this._setTimer(() => this._fail(closeInfo("unexpected", { code: CLOSE.ABNORMAL, message: "no handshake in time" }),
        true), env.connectTimeoutMs);
      if (!env.csrfToken()) { this._open(null); return; }
      // The CSRF token never goes in the URL (access logs): a single-use ticket fetched
      // with the token in a header stands for it (docs/protocol.md §5).
      this.ticketController = new AbortController();
      fetchWsTicket(env, this.ticketController.signal).then((res) => {
        this.ticketController = null;
        if (this.done) return;
        if (res.ticket) this._open(res.ticket);
        // Like a refused upgrade: the owner's Ajax probe reads the status and decides.
        else this._fail(closeInfo("unexpected", { code: CLOSE.ABNORMAL, message: res.message }));
      });
    }

    _open(ticket) {
      const env = this.env;
      try {
        // Protocol 2: where this client stands, so the server replays what it missed.
        this.socket = new env.WebSocket(env.wsUrl({
          ...(ticket ? { "ws-ticket": ticket } : {}), pos: env.pos() }));
      } catch (error) {
        // Bad URL, blocked by CSP, no WebSocket at all: the same as failing to connect.
        setTimeout(() => this._fail(closeInfo("unexpected", { code: CLOSE.ABNORMAL, message: String(error) })), 0);
        return;
      }
      this.socket.binaryType = "arraybuffer";
      this.socket.onmessage = (e) => this._onMessage(e.data);
      this.socket.onclose = (e) => this._onClose(e);
      this.socket.onerror = () => {}; // onclose follows with the details
    }

    /** Send one packed envelope; false when the socket cannot take it. */
    sendPacked(data) {
      if (this.done || !this.socket || this.socket.readyState !== 1) return false;
      try { this.socket.send(data); return true; } catch (_) { return false; }
    }

    /**
     * breakConnection(): fail now as if the network had, or (closeWs false) stop hearing the
     * socket, like a half-open TCP connection that only the keep-alive can find out about.
     */
    breakLink({ closeWs = true, wsCode = CLOSE.BROKEN } = {}) {
      if (this.done) return;
      if (!closeWs) { this.deaf = true; return; }
      this._fail(closeInfo("unexpected", { code: wsCode, message: BROKEN_ON_PURPOSE }), true, wsCode);
    }

    /** Close on the owner's behalf: no hook is called. */
    close(code = CLOSE.NORMAL, reason = "") {
      if (this.done) return;
      this.done = true;
      this._clearTimer();
      if (this.ticketController) this.ticketController.abort();
      const socket = this.socket;
      if (socket) {
        socket.onmessage = socket.onclose = null;
        try { socket.close(code, reason); } catch (_) { try { socket.close(); } catch (_e) { /* already gone */ } }
      }
    }

    _onMessage(raw) {
      if (this.done || this.deaf) return;
      this.lastReceivedAt = monotonicNow();
      this.pingSentAt = null; // any traffic proves the server alive
      let msg;
      try { msg = decodeServer(this.env.packer.unpack(raw)); } catch (error) {
        this._fail(closeInfo("unexpected", { code: CLOSE.NORMAL, message: `bad package: ${error.message}` }), true);
        return;
      }
      if (!this.opened) {
        if (msg.kind !== "handshake") {
          this._fail(closeInfo("unexpected", { code: CLOSE.NORMAL, message: "bad package: the first message was not a handshake" }), true);
          return;
        }
        this.opened = true;
        this._clearTimer(); // the connect timeout
        this._scheduleKeepAlive(this.env.keepAliveMs);
        this.hooks.handshake(this, msg.value || {});
        return;
      }
      if (msg.kind === "ping") { this.sendPacked(this.env.packer.pack([[EV.WS_PONG], null])); return; }
      if (msg.kind === "reply" && msg.cbId !== null && msg.cbId === this.pingCbId) { this.pingCbId = null; return; }
      this.hooks.message(this, msg);
    }

    _onClose(event) {
      if (this.done || this.deaf) return;
      const close = this.opened
        ? describeWsClose(event.code, event.reason, event.wasClean)
        : closeInfo("unexpected", { code: event.code, message: event.reason || null });
      this._fail(close);
    }

    /** End the connection and tell the owner; `closeSocket` when the socket is still up. */
    _fail(close, closeSocket = false, code = CLOSE.NORMAL) {
      if (this.done) return;
      this.close(code, closeSocket ? String(close.reason) : "");
      this.hooks.closed(this, close);
    }

    /**
     * Sliding-window keep-alive: ping once nothing arrived for keepAliveMs, then drop the
     * socket if nothing at all arrives within pingTimeoutMs. Browsers hide control frames,
     * so a half-open TCP connection is only found this way.
     */
    _scheduleKeepAlive(delay) {
      if (!this.env.keepAliveMs) return;
      this._setTimer(() => this._keepAliveTick(), delay);
    }

    _keepAliveTick() {
      if (this.done) return;
      const now = monotonicNow();
      const { keepAliveMs, pingTimeoutMs } = this.env;
      if (this.pingSentAt !== null) {
        const waited = now - this.pingSentAt;
        if (waited >= pingTimeoutMs) {
          this._fail(closeInfo("ping-timeout", { code: CLOSE.NORMAL, message: "no answer to a keep-alive ping" }), true);
        } else {
          this._scheduleKeepAlive(pingTimeoutMs - waited);
        }
        return;
      }
      const idle = now - this.lastReceivedAt;
      if (idle < keepAliveMs) { this._scheduleKeepAlive(keepAliveMs - idle); return; }
      this.pingCbId = randomId(8);
      this.pingSentAt = now;
      if (!this.sendPacked(this.env.packer.pack([[EV.WS_PING], this.pingCbId]))) {
        this._fail(closeInfo("unexpected", { code: CLOSE.ABNORMAL, message: "could not send a ping" }), true);
        return;
      }
      this._scheduleKeepAlive(pingTimeoutMs);
    }

    _setTimer(fn, delay) { this._clearTimer(); this.timer = setTimeout(fn, Math.max(0, delay)); }

    _clearTimer() { if (this.timer !== null) { clearTimeout(this.timer); this.timer = null; } }
  }

  /**
   * An Ajax long-polling connection: a handshake GET (or one already made by the WebSocket
   * probe), then back-to-back polls. Events go out as POSTs through `ajaxRequest`.
   */
  class AjaxTransport {
    constructor(env, hooks, handshakeMessage = null) {
      this.type = "ajax";
      this.env = env;
      this.hooks = hooks;
      this.opened = false;
      this.done = false;
      this.controller = new AbortController();
      this.handshakeMessage = handshakeMessage;
      this.paused = null; // a promise the poll loop waits on before its next poll
      this._unpause = null;
    }

    start() { this._run(); }

    /**
     * Poll no more after the running poll until resume(): while a WebSocket upgrade is
     * tried, so the two connections never both move this client's positions.
     */
    pause() {
      if (this.paused) return;
      this.paused = new Promise((resolve) => { this._unpause = resolve; });
    }

    resume() {
      const unpause = this._unpause;
      this.paused = this._unpause = null;
      if (unpause) unpause();
    }

    /** breakConnection(): the running long-poll is aborted, as a network failure would. */
    breakLink() { this._fail(closeInfo("unexpected", { message: BROKEN_ON_PURPOSE })); }

    close(code) {
      if (this.done) return;
      this.done = true;
      this.controller.abort();
      this.resume(); // a paused loop wakes up and sees it is done
      // A client leaving on purpose says so (protocol 3): the server fails the calls it was
      // asked at once, as it does when a WebSocket client closes. Best effort, not awaited.
      if (code === CLOSE.NORMAL && this.opened) {
        ajaxRequest(this.env, { method: "POST", body: this.env.packer.pack([[EV.BYE], null]),
                                timeoutMs: BYE_TIMEOUT_MS }).catch(() => {});
      }
    }

    async _run() {
      let msg = this.handshakeMessage;
      if (!msg) {
        const res = await this._get(true);
        if (this.done) return;
        if (!res.decoded) { this._fail(this._failure(res)); return; }
        msg = res.decoded;
      }
      if (msg.kind !== "handshake") {
        this._fail(closeInfo("unexpected", { message: `bad package: expected a handshake, got "${msg.outcome}"` }));
        return;
      }
      this.opened = true;
      this.hooks.handshake(this, msg.value || {});
      while (!this.done) {
        if (this.paused) await this.paused;
        if (this.done) return;
        const res = await this._get(false);
        if (this.done) return;
        if (!res.decoded) { this._fail(this._failure(res)); return; }
        const m = res.decoded;
        if (m.kind === "close") {
          const info = m.value || {};
          const code = typeof info.code === "number" ? info.code : null;
          const reason = code === CLOSE.KICKED ? "kicked" : "clean";
          this._fail(closeInfo(reason, { code, message: info.reason || null }));
          return;
        }
        if (m.kind === "handshake") this.hooks.handshake(this, m.value || {});
        else if (m.kind === "events") this.hooks.message(this, m);
        // "timeout" (nothing to say within lp_timeout) and anything else: just poll again.
      }
    }

    _get(handshake) {
      // Protocol 2: every GET names the position, read now: a poll answered with everything
      // after it, or again with the same events when the last answer was lost in flight.
      const pos = this.env.pos();
      return ajaxRequest(this.env, {
        query: handshake ? { handshake: 1, pos } : { pos },
        timeoutMs: handshake ? this.env.connectTimeoutMs : this.env.ajaxTimeoutMs,
        signal: this.controller.signal,
      });
    }

    _failure(res) {
      if (res.protocolError) return closeInfo("unexpected", { message: `bad package: ${res.message}` });
      return describeHttpFailure(res.status, res.message);
    }

    _fail(close) {
      if (this.done) return;
      this.done = true;
      this.controller.abort();
      this.hooks.closed(this, close);
    }
  }

  // =========================================================================================
  // Auto socket: the ChannelSocket (client/core.py) and the helpers it is made of, one for
  // one with the Python client's objects: Status (client/status.py: the state, the
  // connection in use, the stop, where the client stands, the waits for the open), Dispatch
  // (client/dispatch.py: the app's listeners), Calls (client/calls.py: calls, sends, the
  // replies and their hold), Answers (protocol 3: the answer handlers and the answers to the
  // server's calls), Topics (client/topics.py: join, leave, turns, rejoins) and
  // Connection (client/connection.py: transport choice, reconnects with backoff, moves
  // between WS and Ajax, the page's lifecycle). Each gets what it shares with the others in
  // its constructor; none reaches into another's fields.
  // =========================================================================================

  /** lastClose.message after breakConnection(). */
  const BROKEN_ON_PURPOSE = "connection broken on purpose (breakConnection)";
  /** How long the goodbye POST of an Ajax client stopping on purpose may take. */
  const BYE_TIMEOUT_MS = 2000;

  /** lastClose.message when the probe shows HTTP working where the WebSocket was not. */
  const WS_REFUSED = "the WebSocket could not open but HTTP works (a proxy refusing upgrades?)";

  const OPTION_NAMES = new Set(["type", "csrfToken", "packer", "params", "clientId", "keepAliveMs",
    "pingTimeoutMs", "backoffMs", "upgradeRetryMs", "reconnectOnAuthFailure", "connectTimeoutMs",
    "ajaxTimeoutMs", "callTimeoutMs", "headers", "positions", "WebSocket", "fetch", "baseUrl"]);

  /** Whether two handshakes name the same user (uids are JSON values: compare as such). */
  function sameUid(a, b) { return a === b || safeRepr(a) === safeRepr(b); }

  function metaContent(name) {
    const doc = global.document;
    if (!doc || typeof doc.querySelector !== "function") return undefined;
    const el = doc.querySelector(`meta[name="${name}"]`);
    return el ? el.getAttribute("content") : undefined;
  }

  function warnNotSent(ev, why) {
    if (typeof console !== "undefined") console.warn(`sente: ${ev[0]} was not sent: ${why}`);
  }

  /** Add `fn` to the set of `key` in `listeners` (a Map); returns its unsubscribe fn. */
  function addListener(listeners, key, fn) {
    let set = listeners.get(key);
    if (!set) { set = new Set(); listeners.set(key, set); }
    set.add(fn);
    return () => {
      set.delete(fn);
      if (!set.size && listeners.get(key) === set) listeners.delete(key);
    };
  }

  /** A duration (ms) as messages show it: as given, to a tenth of a millisecond at most. */
  function formatMs(ms) { return String(Math.round(ms * 10) / 10); }

  /** The `timeout` option of a call (default `fallback`), checked. */
  function callTimeout(options, fallback) {
    const timeout = options && options.timeout !== undefined ? options.timeout : fallback;
    if (!(typeof timeout === "number" && timeout > 0)) throw new TypeError("timeout must be a positive number of milliseconds");
    return timeout;
  }

  /** The `meta` of a listener call for a user or broadcast push. */
  const NO_TOPIC = Object.freeze({ topic: null });

  function reportListenerError(error) {
    if (typeof global.reportError === "function") global.reportError(error);
    else if (typeof console !== "undefined") console.error("sente: a listener threw", error);
  }

  // --- Dispatch (client/dispatch.py) -------------------------------------------------------

  /**
   * The app's listeners: on(eventId) ones and onState ones. A listener that throws is
   * reported (reportError) and changes nothing else.
   */
  class Dispatch {
    constructor() {
      this._listeners = new Map(); // eventId (or "*") → Set of fn(data, event, meta)
      this._stateListeners = new Set();
    }

    on(eventId, fn) { return addListener(this._listeners, eventId, fn); }

    onState(fn) {
      this._stateListeners.add(fn);
      return () => this._stateListeners.delete(fn);
    }

    /** Listeners get `fn(data, event, meta)`; `meta.topic` is null but for topic events. */
    emit(eventId, data, event = [eventId, data], meta = NO_TOPIC) {
      const set = this._listeners.get(eventId) || (isReserved(eventId) ? null : this._listeners.get("*"));
      if (!set) return;
      for (const fn of [...set]) {
        try { fn(data, event, meta); } catch (error) { reportListenerError(error); }
      }
    }

    /** The state went from `old` to `next`: tell the onState listeners. */
    stateChanged(next, old) {
      for (const fn of [...this._stateListeners]) {
        try { fn(next, old); } catch (error) { reportListenerError(error); }
      }
    }
  }

  // --- Status (client/status.py) -----------------------------------------------------------

  /**
   * Where one channel socket stands, shared by its helpers: the state snapshot, the
   * transport in use, whether it stopped, its positions in the server's logs and the records
   * of the topics it is in or joining (see newTopicRecord), and the calls and sends waiting
   * for the open. The Connection changes most of it; Calls and Topics read it and wait on it.
   */
  class Status {
    constructor(dispatch, state, positions) {
      this._dispatch = dispatch;
      this.state = state;
      this.conn = null; // the transport in use (open or connecting)
      this.stopped = false;
      this.stops = 0; // how many times it stopped: what was under way before a stop is dropped
      // Memory only: nothing is kept across page loads unless the app passes `positions`.
      this.positions = positions;
      // Topics this client is in or joining: topic → {state: "joining" | "joined", data,
      // position, moves}, in join order; `moves` counts the marks that moved the position
      // (a join reply's position loses to a mark that came first, see Topics._joinCall).
      this.topics = new Map();
      this._openWaiters = new Set(); // calls and sends made while connecting: {resolve, reject, timer}
    }

    setState(next) {
      const old = this.state;
      if (next === old) return;
      this.state = next;
      this._dispatch.stateChanged(next, old);
      this._settleOpenWaiters();
    }

    isOpen() { return this.state.open && this.conn !== null && this.conn.opened === true; }

    /** Stopped for good, until reconnect(): disconnect(), a kick, a refusal, a mismatch. */
    stop() {
      this.stopped = true;
      this.stops += 1;
    }

    /** Map topic → position | null of the topics this client is in or joining. */
    topicPositions() { return topicPositions(this.topics); }

    /**
     * Resolves once the socket is open; rejects with ClosedError when the client stops
     * (disconnect(), 401/403, kick) or `timeoutMs` passes first. This is how a call made
     * while connecting — right after connect(), or during a reconnect — goes out when it can,
     * as in the Python client: a bounded wait, not an offline queue.
     */
    whenOpen(timeoutMs) {
      return new Promise((resolve, reject) => {
        const waiter = { resolve, reject, timer: null };
        waiter.timer = setTimeout(() => {
          this._openWaiters.delete(waiter);
          reject(new ClosedError(`not connected within ${formatMs(timeoutMs)} ms`));
        }, timeoutMs);
        this._openWaiters.add(waiter);
      });
    }

    _settleOpenWaiters() {
      if (!this._openWaiters.size) return;
      let error = null;
      if (this.stopped) error = this.stoppedError();
      else if (!this.isOpen()) return;
      const waiters = [...this._openWaiters];
      this._openWaiters.clear();
      for (const waiter of waiters) {
        clearTimeout(waiter.timer);
        if (error) waiter.reject(error); else waiter.resolve();
      }
    }

    /** Why nothing can be sent on a stopped client, for the caller's error. */
    stoppedError() {
      const last = this.state.lastClose;
      const why = last ? last.reason + (last.status ? ` ${last.status}` : "") : "stopped";
      return new ClosedError(`not connected (${why})`);
    }
  }

  // --- Calls (client/calls.py) -------------------------------------------------------------

  /**
   * Sends and calls on the open connection (waiting for it while connecting), the calls
   * waiting for their reply, and the hold on an Ajax reply until its handler's pushes have
   * arrived (docs/protocol.md §6).
   */
  class Calls {
    constructor(status, env) {
      this._status = status;
      this._env = env;
      this._pending = new Map(); // cbId → {resolve, reject, timer, transport}
      this._ajaxCalls = new Set(); // {transport, fail(error)}: POSTs waiting for a reply
      this._heldReplies = new Set(); // {after, deliver, timer}: Ajax replies waiting for their pushes
    }

    /** ChannelSocket.send, `ev` validated, `timeout` checked. */
    send(ev, timeout) {
      const packed = this._env.packer.pack(clientEnvelope(ev, null)); // bad data throws now
      if (this._status.isOpen()) return this.sendNow(ev, packed);
      if (this._status.stopped) return false;
      this._status.whenOpen(timeout).then(
        () => { if (!this.sendNow(ev, packed)) warnNotSent(ev, "the connection closed at once"); },
        (error) => warnNotSent(ev, error.message));
      return true;
    }

    /**
     * Send `ev`, packed already, on the open connection (false when it is not open or could
     * not take it): a WebSocket frame, or an Ajax POST, which the server answers chsk/ack.
     */
    sendNow(ev, packed) {
      const conn = this._status.conn;
      if (!this._status.isOpen()) return false;
      if (conn.type === "ws") return conn.sendPacked(packed);
      ajaxRequest(this._env, { method: "POST", body: packed, timeoutMs: this._env.ajaxTimeoutMs }).then((res) => {
        if (!res.decoded && typeof console !== "undefined") {
          console.warn(`sente: sending ${ev[0]} failed (${res.status || "no response"}): ${res.message}`);
        }
      });
      return true;
    }

    /**
     * A call of `ev` (validated) with `timeout` ms for the wait for the open and the reply:
     * `{sent, promise}`, `sent` false when it failed at once.
     */
    call(ev, timeout) {
      const status = this._status;
      if (status.isOpen()) return this._callNow(ev, timeout);
      const notSent = (error) => new ClosedError(`${error.message}: the call was not sent`);
      if (status.stopped) return { sent: false, promise: Promise.reject(notSent(status.stoppedError())) };
      this._env.packer.pack(clientEnvelope(ev, null)); // bad data throws now, not after the wait
      const deadline = monotonicNow() + timeout;
      const promise = status.whenOpen(timeout).then(
        () => this._callNow(ev, Math.max(1, deadline - monotonicNow()), timeout).promise,
        (error) => { throw notSent(error); });
      return { sent: true, promise };
    }

    /**
     * The call on the open connection (or a ClosedError when it closed in the meantime).
     * `timeout` is what is left of the call's; a TimeoutError names the call's own, `given`
     * (a call made while connecting spent some of it waiting for the open).
     */
    _callNow(ev, timeout, given = timeout) {
      const conn = this._status.conn;
      if (!this._status.isOpen()) {
        return { sent: false, promise: Promise.reject(new ClosedError("not connected: the call was not sent")) };
      }
      if (conn.type === "ws") {
        const cbId = randomId(8);
        const packed = this._env.packer.pack(clientEnvelope(ev, cbId)); // throws before anything waits
        let entry;
        const promise = new Promise((resolve, reject) => { entry = { resolve, reject, transport: conn, timer: null }; });
        entry.timer = setTimeout(() => {
          if (this._pending.delete(cbId)) entry.reject(new TimeoutError(`no reply to ${ev[0]} within ${formatMs(given)} ms`));
        }, timeout);
        this._pending.set(cbId, entry);
        if (!conn.sendPacked(packed)) {
          this._pending.delete(cbId);
          clearTimeout(entry.timer);
          entry.reject(new ClosedError("the connection could not take the call"));
          return { sent: false, promise };
        }
        return { sent: true, promise };
      }
      const packed = this._env.packer.pack(clientEnvelope(ev, AJAX_CB));
      const controller = new AbortController();
      const deadline = monotonicNow() + timeout;
      let call;
      const promise = new Promise((resolve, reject) => {
        call = { transport: conn, fail: (error) => { this._ajaxCalls.delete(call); controller.abort(); reject(error); } };
        this._ajaxCalls.add(call);
        ajaxRequest(this._env, { method: "POST", body: packed, timeoutMs: timeout, signal: controller.signal }).then((res) => {
          if (!this._ajaxCalls.delete(call)) return; // failed already (connection closed)
          if (res.decoded) {
            const m = res.decoded;
            if (m.kind !== "reply") { reject(new ProtocolError(`expected a reply to ${ev[0]}, got "${m.outcome}"`)); return; }
            const result = replyOutcome(m.outcome, m.value);
            // The handler's pushes come through the polls: the reply waits for them.
            this._afterPushes(readAfter(res.after), deadline,
              () => { if (result.ok) resolve(result.value); else reject(result.error); });
          } else if (res.timedOut) {
            reject(new TimeoutError(`no reply to ${ev[0]} within ${formatMs(given)} ms`));
          } else if (res.status > 0) {
            reject(new ReplyError(res.message || `HTTP ${res.status}`, null, res.status));
          } else if (res.protocolError) {
            reject(res.protocolError);
          } else {
            reject(new ClosedError(`the call could not reach the server: ${res.message}`));
          }
        });
      });
      return { sent: true, promise };
    }

    /** A reply that came over the WebSocket: to its call (gone if it timed out already). */
    resolve(msg) {
      const entry = this._pending.get(msg.cbId);
      if (!entry) return; // timed out already: the caller has moved on
      this._pending.delete(msg.cbId);
      clearTimeout(entry.timer);
      const result = replyOutcome(msg.outcome, msg.value);
      if (result.ok) entry.resolve(result.value); else entry.reject(result.error);
    }

    /**
     * Deliver an Ajax reply once this client's positions reach `after`, where its handler's
     * pushes went (docs/protocol.md §6, "Replies after their pushes"): the polls bring
     * them, and their listeners run before the reply's promise resolves, as over WebSocket.
     * Bounded by the call's `deadline`, then delivered anyway; at once on a stopped client.
     */
    _afterPushes(after, deadline, deliver) {
      const status = this._status;
      if (after === null || status.stopped || afterReached(status.positions, status.topicPositions(), after)) {
        deliver();
        return;
      }
      const held = { after, deliver, timer: null };
      held.timer = setTimeout(() => { this._heldReplies.delete(held); deliver(); },
        Math.max(0, deadline - monotonicNow()));
      this._heldReplies.add(held);
    }

    /** Deliver the held replies whose pushes have arrived (`all`: every one, now). */
    releaseReplies(all = false) {
      if (!this._heldReplies.size) return;
      const topics = this._status.topicPositions();
      for (const held of [...this._heldReplies]) {
        if (all || afterReached(this._status.positions, topics, held.after)) {
          this._heldReplies.delete(held);
          clearTimeout(held.timer);
          held.deliver();
        }
      }
    }

    /** `transport` closed (`close`): its calls fail now, not at their timeout. */
    failPending(transport, close) {
      const error = new ClosedError(`the connection closed (${close.reason}) before the reply came`);
      for (const [cbId, entry] of this._pending) {
        if (entry.transport === transport) {
          this._pending.delete(cbId);
          clearTimeout(entry.timer);
          entry.reject(error);
        }
      }
      for (const call of this._ajaxCalls) {
        if (call.transport === transport) call.fail(error);
      }
    }
  }

  // --- Answers (protocol 3) -----------------------------------------------------------------

  /** Whether `value` is a promise or another thenable (what an answer handler may return). */
  function isThenable(value) {
    return value !== null && (typeof value === "object" || typeof value === "function") &&
      typeof value.then === "function";
  }

  /**
   * The app's answer handlers and the answers to the server's calls: each call of a batch is
   * taken in its turn among the batch's events, once per call id (RecentIds: a repeat is
   * ignored), and answered with what the handler of its event id returns or throws, or
   * "no-handler". An answer goes out as an event without reply (Calls.sendNow). One that
   * cannot, the client not being open, waits for the open up to the call's timeout from
   * when the call arrived (the server has given up by then), and is dropped when the client
   * stops (disconnect(), a kick, a refusal) or another user signs in: it was computed for the
   * user the call was made to.
   */
  class Answers {
    constructor(status, calls, packer) {
      this._status = status;
      this._calls = calls;
      this._packer = packer;
      this._handlers = new Map(); // eventId → {fn}: an object, so an old unregister fn cannot remove a newer one
      this._seen = new RecentIds(CALL_IDS_REMEMBERED);
    }

    /** ChannelSocket.answer, `eventId` and `fn` checked. */
    register(eventId, fn) {
      if (this._handlers.has(eventId)) {
        throw new Error(`an answer handler for "${eventId}" is registered already; ` +
          "call the function answer() returned to unregister it first");
      }
      const entry = { fn };
      this._handlers.set(eventId, entry);
      return () => { if (this._handlers.get(eventId) === entry) this._handlers.delete(eventId); };
    }

    /** A chsk/call item of a batch (see takeTopicBatch), in its turn among the events. */
    take(item) {
      const call = item.call;
      if (call === null) {
        if (typeof console !== "undefined") console.warn(`sente: ignored a malformed chsk/call: ${cutText(String(safeRepr(item.data)), 200)}`);
        return;
      }
      if (!this._seen.add(call.id)) return; // its handler ran already: the server has its answer
      const [eventId, data] = call.event;
      const status = this._status;
      const pending = {
        id: call.id, eventId, timeout: call.timeout, deadline: monotonicNow() + call.timeout,
        uid: status.state.uid, stops: status.stops,
      };
      const entry = this._handlers.get(eventId);
      if (!entry) {
        this._send(pending, answerError(call.id, "no-handler", `no answer handler for "${eventId}" on this client`));
        return;
      }
      let result;
      let thenable;
      try {
        result = entry.fn(data, Object.freeze({ id: call.id, eventId }));
        thenable = isThenable(result);
      } catch (error) {
        this._send(pending, answerError(call.id, "error", errorText(error)));
        return;
      }
      if (!thenable) { this._send(pending, answerValue(call.id, result)); return; }
      Promise.resolve(result).then(
        (value) => this._send(pending, answerValue(call.id, value)),
        (error) => this._send(pending, answerError(call.id, "error", errorText(error))));
    }

    /** Pack `answer` (a value the packer cannot encode is answered as an error), then send it. */
    _send(pending, answer) {
      let packed;
      try {
        const value = answer[1].value;
        // JSON would leave the field out instead of failing: no value is no answer.
        if (typeof value === "function" || typeof value === "symbol") throw new TypeError(`a ${typeof value} is not data`);
        packed = this._packer.pack(clientEnvelope(answer, null));
      } catch (error) {
        answer = answerError(pending.id, "error",
          `the answer's value cannot be packed as ${this._packer.name}: ${errorText(error)}`);
        packed = this._packer.pack(clientEnvelope(answer, null));
      }
      this._deliver(pending, answer, packed);
    }

    /** Send now if open, else once open again before the call's deadline; or drop it. */
    _deliver(pending, answer, packed) {
      const status = this._status;
      const drop = (why) => {
        if (typeof console !== "undefined") console.warn(`sente: the answer to call ${pending.id} (${pending.eventId}) was dropped: ${why}`);
      };
      if (status.stopped) { drop(status.stoppedError().message); return; }
      // Stopped and started again (reconnect()) since the call came: the stop dropped it.
      if (status.stops !== pending.stops) { drop("the client stopped since the call came"); return; }
      if (!sameUid(pending.uid, status.state.uid)) { drop("another user signed in since the call came"); return; }
      if (status.isOpen() && this._calls.sendNow(answer, packed)) return;
      const late = `not connected within the call's timeout (${formatMs(pending.timeout)} ms)`;
      const left = pending.deadline - monotonicNow();
      if (left <= 0) { drop(late); return; }
      status.whenOpen(left).then(() => this._deliver(pending, answer, packed),
        (error) => drop(status.stops !== pending.stops ? error.message : late)); // a stop, or the timer
    }
  }

  // --- Topics (client/topics.py) -----------------------------------------------------------

  /**
   * The topics of one channel socket: join and leave calls in turns, the onTopic listeners,
   * what a batch, a handshake and a kick do to the records (`status.topics`), and the
   * rejoins after each handshake. The rules are the pure functions above.
   */
  class Topics {
    constructor(status, calls, dispatch, { packer, callTimeoutMs }) {
      this._records = status.topics;
      this._calls = calls;
      this._dispatch = dispatch;
      this._packer = packer;
      this._callTimeoutMs = callTimeoutMs;
      this._listeners = new Map(); // topic → Set of fn(eventId, data)
      // topic → a promise settled once the topic's last join or leave call is done: the
      // calls of one topic go out one at a time, in order (see _turn).
      this._turns = new Map();
    }

    /** ChannelSocket.join, the topic and `timeout` checked. */
    join(topic, data, timeout) {
      let record = this._records.get(topic);
      const created = record === undefined;
      if (created) {
        record = newTopicRecord(data);
        this._records.set(topic, record);
      }
      try { // data the packer cannot pack: the caller's bug, thrown at once
        this._packer.pack(clientEnvelope([EV.JOIN, { topic, data, position: null }], null));
      } catch (error) {
        if (created) this._records.delete(topic);
        throw error;
      }
      return this._joinCall(topic, record, data, timeout).then(
        ({ answer }) => {
          if (!answer.ok) throw new JoinRefusedError(topic, answer.reason);
          return { data: answer.data, recovered: answer.recovered };
        },
        (error) => {
          // A first join that did not go through is no membership (a refusal removed it).
          if (created && record.state === "joining" && this._records.get(topic) === record) this._records.delete(topic);
          throw error;
        });
    }

    /** ChannelSocket.leave, the topic and `timeout` checked. */
    leave(topic, timeout) {
      this._records.delete(topic);
      // In the topic's turn: after its join or rejoin still unanswered (see _turn).
      return this._turn(topic, timeout, EV.LEAVE,
        (left) => this._calls.call([EV.LEAVE, { topic }], left).promise).then((reply) => {
        if (!reply || reply.ok !== true) {
          throw new ReplyError(`leaving topic ${safeRepr(topic)} failed`, reply);
        }
      });
    }

    /** The names of the topics this client is in (joins still waiting for a reply left out). */
    names() {
      return [...this._records].filter(([, record]) => record.state === "joined").map(([topic]) => topic);
    }

    onTopic(topic, fn) { return addListener(this._listeners, topic, fn); }

    /** A pushed event: to on(id) listeners and, for a topic's, to its onTopic listeners. */
    deliver(event, topic) {
      if (topic === null) { this._dispatch.emit(event[0], event[1], event); return; }
      this._dispatch.emit(event[0], event[1], event, Object.freeze({ topic }));
      const set = this._listeners.get(topic);
      if (!set) return;
      for (const fn of [...set]) {
        try { fn(event[0], event[1]); } catch (error) { reportListenerError(error); }
      }
    }

    /** Apply a batch's membership changes and topic positions (see takeTopicBatch). */
    adopt(batch) { adoptTopicBatch(this._records, batch); }

    /**
     * A handshake names another user: the topics it was in were the other user's. A join
     * still in flight stays: its call goes out on this connection, as this user's (a join
     * right after a login's reconnect() is not lost).
     */
    userChanged() {
      for (const topic of topicsAtHandshake(topicStates(this._records), true).dropped) {
        this._records.delete(topic);
        this._dispatch.emit(EV.LEFT, { topic, reason: "user-changed" });
      }
    }

    /** Forget every topic (a kick): nothing to rejoin, the app is told (a join in flight fails). */
    dropAll(reason) {
      const dropped = [...this._records].filter(([, record]) => record.state === "joined");
      this._records.clear();
      for (const [topic] of dropped) this._dispatch.emit(EV.LEFT, { topic, reason });
    }

    /**
     * After each handshake: join every topic again, from its position, so the server
     * replays what this client missed in it — or says `recovered: false` in a
     * "chsk/rejoined" listener event. A refused rejoin is a "chsk/left" with the reason.
     * A rejoin cut off by the connection is made again after the next handshake. A topic
     * left meanwhile gets neither event (as in the Python client). Returns a promise
     * settled once every rejoin is done, or null when there is none.
     */
    rejoin() {
      const rejoins = [];
      for (const topic of topicsAtHandshake(topicStates(this._records), false).rejoin) {
        const record = this._records.get(topic);
        rejoins.push(this._joinCall(topic, record, record.data, this._callTimeoutMs, true).then(
          (result) => {
            if (result === null || !result.current) return; // left meanwhile: no news
            const { answer } = result;
            if (answer.ok) this._dispatch.emit(EV.REJOINED, { topic, recovered: answer.recovered });
            else this._dispatch.emit(EV.LEFT, { topic, reason: answer.reason });
          },
          (error) => {
            if (typeof console !== "undefined") console.warn(`sente: rejoining ${topic} failed: ${error.message}`);
          }));
      }
      return rejoins.length ? Promise.all(rejoins) : null;
    }

    /**
     * Run `makeCall(msLeft)` — a join or leave call of `topic`, or null for none after all
     * — once the calls of that topic made before it are done: one at a time, in order.
     * The server runs a client's events side by side, so a leave sent while a join of the
     * same topic is unanswered (a rejoin whose handler takes its time, a join the app did
     * not await) could be done first, and the join would then put the client back in:
     * the server would go on sending the topic to a client that drops it. `timeout` covers
     * the wait for the turn and the call; a call whose turn did not come in time is not
     * made (TimeoutError). Python: Topics._topic_turn.
     */
    _turn(topic, timeout, eventId, makeCall) {
      const deadline = monotonicNow() + timeout;
      const before = this._turns.get(topic);
      let done;
      const turn = new Promise((resolve) => { done = resolve; });
      this._turns.set(topic, turn);
      turn.then(() => { if (this._turns.get(topic) === turn) this._turns.delete(topic); });
      const run = (resolve, reject) => {
        let call;
        try { call = makeCall(Math.max(1, deadline - monotonicNow())); } catch (error) { call = Promise.reject(error); }
        Promise.resolve(call).then(
          (value) => { done(); resolve(value); },
          (error) => { done(); reject(error); });
      };
      return new Promise((resolve, reject) => {
        if (before === undefined) { run(resolve, reject); return; } // its turn now: sent at once
        let timer = setTimeout(() => {
          timer = null;
          reject(new TimeoutError(`${eventId} of ${safeRepr(topic)} not sent: the call of that ` +
            "topic before it is still unanswered"));
        }, timeout);
        before.then(() => {
          if (timer === null) { done(); return; } // given up: the next call may go
          clearTimeout(timer);
          run(resolve, reject);
        });
      });
    }

    /**
     * The chsk/join call for `record` (the topic's entry in the records), in the topic's
     * turn, resolving with `{answer, current}`: the reply read by readJoinReply, and
     * whether `record` was still the topic's when it came (not left, nor dropped). The
     * reply's position is where the server put the client, unless a mark moved it since
     * the call went out: over Ajax the topic's first batch can overtake the reply, and its
     * mark is the newer word. A refusal drops the topic as dropsOnRefusal says. A rejoin
     * (`rejoin`) of a topic left before its turn came is not made (resolves with null).
     */
    _joinCall(topic, record, data, timeout, rejoin = false) {
      return this._turn(topic, timeout, EV.JOIN, (left) => {
        if (rejoin && this._records.get(topic) !== record) return null;
        const moves = record.moves;
        const payload = { topic, data, position: record.position };
        return this._calls.call([EV.JOIN, payload], left).promise.then((reply) => {
          const answer = readJoinReply(reply);
          const current = this._records.get(topic) === record;
          if (!answer.ok) {
            if (current && dropsOnRefusal(record.state, rejoin)) this._records.delete(topic);
          } else if (current) {
            record.state = "joined";
            record.data = data;
            record.position = positionAfterJoin(record.position, record.moves !== moves, answer.position);
            this._calls.releaseReplies();
          }
          return { answer, current };
        });
      });
    }
  }

  // --- Connection (client/connection.py) ---------------------------------------------------

  /**
   * The connection machinery: which transport to open, what its handshakes, messages and
   * closes mean, reconnects with backoff and the flap guard, the Ajax probe after a failed
   * WebSocket, the WebSocket tried while on Ajax (and what the Ajax connection received
   * meanwhile, held), and the page's lifecycle.
   */
  class Connection {
    constructor(status, env, { calls, topics, answers, dispatch, type, backoffMs, upgradeRetryMs, reconnectOnAuthFailure }) {
      this._status = status;
      this._env = env;
      this._calls = calls;
      this._topics = topics;
      this._answers = answers;
      this._dispatch = dispatch;
      this._type = type;
      this._backoffMs = backoffMs;
      this._upgradeRetryMs = upgradeRetryMs;
      this._reconnectOnAuthFailure = reconnectOnAuthFailure;
      this._hooks = {
        handshake: (t, info) => this._onHandshake(t, info),
        message: (t, msg) => this._onMessage(t, msg),
        closed: (t, close) => this._onClosed(t, close),
      };
      this._held = []; // what the Ajax connection received while a WebSocket upgrade was tried
      this._trial = null; // a WebSocket tried while on Ajax, to move back up
      this._wsBlockedAt = null; // monotonic time of the last fallback to Ajax (auto mode)
      this._openedAt = 0; // monotonic time the current connection opened (flap guard)
      this._attempt = 0;
      this._retryTimer = null;
      this._upgradeTimer = null;
      this._unloading = false;
      this._retrySuppressed = false; // a retry was due while the page was unloading
      this._unloadTimer = null;
      this._pageListeners = [];
    }

    /** Connect (the ChannelSocket does at once). */
    start() {
      this._listenToPage();
      this._open();
    }

    // --- what the ChannelSocket asks for ---------------------------------------------------

    /** ChannelSocket.breakConnection: false when there was no open connection to break. */
    breakLink(options) {
      if (!this._status.isOpen()) return false;
      this._status.conn.breakLink(options);
      return true;
    }

    /** ChannelSocket.disconnect. */
    disconnect() {
      const status = this._status;
      status.stop();
      this._closeConn(CLOSE.NORMAL, "requested disconnect", closeInfo("requested-disconnect"));
      this._calls.releaseReplies(true); // no more pushes will come: the replies go as they are
      this._unlistenToPage();
      const close = closeInfo("requested-disconnect", { code: CLOSE.NORMAL });
      status.setState(Object.freeze({ ...stateAfterClose(status.state, close), nextReconnectAt: null, active: false }));
    }

    /** ChannelSocket.reconnect. */
    reconnect() {
      const status = this._status;
      this._closeConn(CLOSE.NORMAL, "requested reconnect", closeInfo("requested-reconnect"));
      this._listenToPage();
      status.stopped = false;
      this._retrySuppressed = false;
      this._attempt = 0;
      this._wsBlockedAt = null; // auto mode tries WebSocket first again
      status.setState(Object.freeze({ ...stateAfterClose(status.state, closeInfo("requested-reconnect")), nextReconnectAt: null, active: true }));
      this._open();
    }

    // --- connecting ----------------------------------------------------------------------

    _open() {
      const status = this._status;
      this._clearRetry();
      // The planned attempt is happening (or held back): no stale time for the page to show.
      if (status.state.nextReconnectAt !== null) status.setState(stateWithRetryAt(status.state, null));
      if (status.stopped) return;
      if (this._unloading) { this._retrySuppressed = true; return; }
      const kind = firstTransport({
        type: this._type, hasWebSocket: Boolean(this._env.WebSocket), upgradeRetryMs: this._upgradeRetryMs,
        wsBlockedForMs: this._wsBlockedAt === null ? null : monotonicNow() - this._wsBlockedAt,
      });
      const transport = kind === "ws"
        ? new WsTransport(this._env, this._hooks)
        : new AjaxTransport(this._env, this._hooks);
      status.conn = transport;
      transport.start();
    }

    _onHandshake(transport, info) {
      const status = this._status;
      if (transport === this._trial) { this._promote(transport); } else if (transport !== status.conn) { return; }
      if (this._holding(transport)) { this._held.push(["handshake", info]); return; }
      if (handshakeError(info) !== null) {
        console.error(`sente: ${handshakeError(info)}`);
        const close = closeInfo("protocol-mismatch");
        this._closeConn(CLOSE.NORMAL, "protocol mismatch", close);
        status.stop();
        status.setState(stateWithActive(stateAfterClose(status.state, close), false));
        return;
      }
      // The attempt count is not reset here but when the connection closes, and only if it
      // stayed up (see nextAttempt): a handshake alone proves little.
      if (!status.state.open) this._openedAt = monotonicNow();
      if (transport.type === "ws") this._wsBlockedAt = null;
      const firstHandshake = !status.state.everOpened;
      // Another user's positions mean nothing for this one (a login or logout in between):
      // dropped, so only what the server says now counts; and so are its topics.
      if (userChanged(status.state, info)) {
        status.positions = null;
        this._topics.userChanged();
      }
      status.positions = positionsAfterHandshake(info) || status.positions;
      status.setState(stateAfterHandshake(status.state, transport.type, info));
      if (transport.type === "ajax" && this._type === "auto") this._scheduleUpgrade();
      this._dispatch.emit(EV.HANDSHAKE, {
        uid: status.state.uid, handshakeData: status.state.handshakeData, type: transport.type,
        firstHandshake, recovered: status.state.recovered,
      });
      this._calls.releaseReplies(); // positions in another epoch: nothing left to wait for
      if (status.conn === transport) this._rejoin(transport);
    }

    /**
     * The topics' rejoins after a handshake on `transport`. Over Ajax the long-poll waits
     * for their replies: it names the topics' positions, which the replies may move (to the
     * head, when a topic's history is gone), and a poll naming a position the server no
     * longer holds is answered with another handshake, and another round of rejoins.
     */
    _rejoin(transport) {
      const rejoins = this._topics.rejoin();
      if (rejoins === null || transport.type !== "ajax") return;
      transport.pause();
      rejoins.then(() => {
        // A WebSocket trial started meanwhile resumes the poll itself when it fails.
        if (this._status.conn === transport && this._trial === null) transport.resume();
      });
    }

    /**
     * Whether what the Ajax connection `transport` delivers waits: while a WebSocket upgrade
     * is tried, the trial asked the server to replay from the positions this client had
     * when it started, so nothing may move them until the trial opens (the held answer is
     * then dropped: the WebSocket replays it) or fails (it is processed then).
     */
    _holding(transport) { return this._trial !== null && transport === this._status.conn && transport.type === "ajax"; }

    _onMessage(transport, msg) {
      const status = this._status;
      if (transport !== status.conn) return;
      if (msg.kind === "events") {
        if (this._holding(transport)) { this._held.push(["message", msg]); return; }
        const batch = takeTopicBatch(status.positions, status.topicPositions(), msg.events);
        if (batch.seen) return;
        // Adopted before the listeners run (the batch is delivered whole either way), so a
        // listener that reconnects mid-batch does not get the batch's events a second time.
        status.positions = batch.positions;
        this._topics.adopt(batch);
        // Unknown chsk/ events (the mark among them) are the protocol's, never the app's:
        // takeTopicBatch left them out. A call is taken in its turn, even if a listener
        // before it closed the connection: its position is adopted, it will not come again.
        for (const item of batch.items) {
          if (item.kind === "event") this._topics.deliver(item.event, item.topic);
          else if (item.kind === "call") this._answers.take(item);
          else if (item.kind === "left") this._dispatch.emit(EV.LEFT, { topic: item.topic, reason: item.reason });
        }
        this._calls.releaseReplies(); // after the listeners: they have seen the pushes
      } else if (msg.kind === "reply" && msg.cbId !== null) {
        this._calls.resolve(msg);
      }
    }

    _onClosed(transport, close) {
      const status = this._status;
      if (transport === this._trial) {
        this._trial = null;
        this._releaseHeld();
        this._scheduleUpgrade();
        return;
      }
      if (transport !== status.conn) return;
      status.conn = null;
      const upMs = transport.opened ? monotonicNow() - this._openedAt : null;
      this._cancelUpgrade();
      this._calls.failPending(transport, close);
      if (transport.type === "ws" && !transport.opened && !status.stopped) {
        this._probe(close);
        return;
      }
      this._afterClose(close, upMs);
    }

    /**
     * A WebSocket failed before its handshake: a browser hides the status of a refused
     * upgrade, so ask the same URL over plain HTTP. The answer decides between stopping
     * (401/403), falling back to Ajax (auto mode, HTTP works) and retrying later.
     */
    async _probe(wsClose) {
      const status = this._status;
      const marker = {};
      status.conn = marker; // "connecting": disconnect()/reconnect() replace it
      const res = await ajaxRequest(this._env, {
        query: { handshake: 1, pos: this._env.pos() }, timeoutMs: this._env.connectTimeoutMs });
      if (status.conn !== marker) return;
      status.conn = null;
      const handshake = res.decoded && res.decoded.kind === "handshake" ? res.decoded : null;
      const decision = afterWsFailure({
        auto: this._type === "auto",
        probe: { status: res.status, handshake }, reconnectOnAuthFailure: this._reconnectOnAuthFailure,
      });
      if (decision === "downgrade") {
        this._wsBlockedAt = monotonicNow();
        status.setState(stateAfterClose(status.state, closeInfo("unexpected", { code: wsClose.code, message: WS_REFUSED })));
        const transport = new AjaxTransport(this._env, this._hooks, handshake);
        status.conn = transport;
        transport.start();
        return;
      }
      // "stop" and "retry" follow from the close's reason (see shouldReconnect).
      let close;
      if (res.protocolError) close = closeInfo("unexpected", { code: wsClose.code, message: `bad package: ${res.message}` });
      else if (handshake) close = closeInfo("unexpected", { code: wsClose.code, message: WS_REFUSED });
      else if (res.status > 0) close = describeHttpFailure(res.status, res.message);
      else close = closeInfo("unexpected", { code: wsClose.code, message: `no response: ${res.message}` });
      this._afterClose(close);
    }

    /** Record a close and reconnect or stop; `upMs`: how long it had been open (null: never). */
    _afterClose(close, upMs = null) {
      const status = this._status;
      const retry = !status.stopped &&
        shouldReconnect(close, { reconnectOnAuthFailure: this._reconnectOnAuthFailure });
      // A stop (401/403, kick) is final until reconnect(): calls waiting for the open fail now.
      if (!retry) status.stop();
      // Kicked (signed out, banned): whatever comes next — reconnect() after a new login —
      // starts afresh, it does not resume the old session's logs.
      if (close.reason === "kicked" || close.code === CLOSE.KICKED) {
        status.positions = null;
        this._topics.dropAll("kicked");
      }
      const closed = stateAfterClose(status.state, close);
      status.setState(retry ? closed : stateWithActive(stateWithRetryAt(closed, null), false));
      if (!retry) {
        if (close.reason === "rejected" && typeof console !== "undefined") {
          console.error(`sente: the server refused this client with ${close.status}` +
            `${close.message ? ` (${close.message})` : ""}: stopped, as retrying cannot fix it; ` +
            "reconnect() starts again");
        }
        this._calls.releaseReplies(true);
        return;
      }
      this._attempt = nextAttempt(this._attempt, upMs);
      if (this._unloading) this._retrySuppressed = true;
      else this._scheduleRetry();
    }

    /** Plan attempt `this._attempt` after its backoff delay. */
    _scheduleRetry() {
      this._clearRetry();
      const delay = Math.max(0, Number(this._backoffMs(this._attempt)) || 0);
      this._status.setState(stateWithRetryAt(this._status.state, Date.now() + delay));
      this._retryTimer = setTimeout(() => { this._retryTimer = null; this._open(); }, delay);
    }

    _clearRetry() {
      if (this._retryTimer !== null) { clearTimeout(this._retryTimer); this._retryTimer = null; }
    }

    /** While on Ajax in auto mode, try a WebSocket now and then and move up when one opens. */
    _scheduleUpgrade() {
      if (this._upgradeTimer !== null || this._trial) return; // one attempt at a time
      if (!this._upgradeRetryMs || !this._env.WebSocket || this._type !== "auto") return;
      this._upgradeTimer = setTimeout(() => {
        this._upgradeTimer = null;
        const conn = this._status.conn;
        if (!conn || conn.type !== "ajax" || !this._status.state.open || this._trial) return;
        conn.pause(); // see _holding
        this._trial = new WsTransport(this._env, this._hooks);
        this._trial.start();
      }, this._upgradeRetryMs);
    }

    _cancelUpgrade() {
      if (this._upgradeTimer !== null) { clearTimeout(this._upgradeTimer); this._upgradeTimer = null; }
      if (this._trial) { this._trial.close(CLOSE.NORMAL, "upgrade cancelled"); this._trial = null; }
      // Only ever cancelled with the connection that held it: unprocessed, so the positions
      // did not move, and the next connection gets it again.
      this._held = [];
    }

    /** The trial failed: the Ajax connection goes on, with what it received meanwhile. */
    _releaseHeld() {
      const conn = this._status.conn;
      const held = this._held;
      this._held = [];
      for (const [kind, value] of held) {
        if (this._status.conn !== conn) return; // a listener closed or replaced it
        if (kind === "handshake") this._onHandshake(conn, value); else this._onMessage(conn, value);
      }
      if (conn && this._status.conn === conn && conn.resume) conn.resume();
    }

    /**
     * The trial WebSocket opened: it becomes the connection and the long-poll stops. Calls
     * already POSTed keep going (their replies come in their own responses).
     */
    _promote(trial) {
      this._trial = null;
      this._held = []; // the WebSocket replays it, from where the client stood at its start
      const old = this._status.conn;
      this._status.conn = trial;
      this._wsBlockedAt = null;
      if (old && old.close) old.close();
    }

    /** Close the current connection on purpose (no hook runs) and fail what waits on it. */
    _closeConn(code = CLOSE.NORMAL, reason = "", close = closeInfo("requested-disconnect")) {
      this._clearRetry();
      this._cancelUpgrade();
      const conn = this._status.conn;
      this._status.conn = null;
      if (conn && conn.close) {
        conn.close(code, reason);
        this._calls.failPending(conn, close);
      }
    }

    // --- page lifecycle ------------------------------------------------------------------

    /**
     * Page events: come back at once when the network returns or the tab is shown again
     * (instead of waiting out a long backoff), and stay quiet while the page unloads (a
     * reconnect then would only add noise and dangling server-side clients).
     */
    _listenToPage() {
      const win = global.window;
      const doc = global.document;
      if (!win || typeof win.addEventListener !== "function" || this._pageListeners.length) return;
      const add = (target, name, fn) => { target.addEventListener(name, fn); this._pageListeners.push([target, name, fn]); };
      add(win, "online", () => this._retryNow());
      if (doc && typeof doc.addEventListener === "function") {
        add(doc, "visibilitychange", () => { if (doc.visibilityState === "visible") this._retryNow(); });
      }
      add(win, "pagehide", () => this._suspend());
      add(win, "pageshow", (e) => { if (e.persisted) this._resume(); });
      // beforeunload may be cancelled (a "leave site?" prompt): resume if the page lives on.
      add(win, "beforeunload", () => {
        this._suspend();
        clearTimeout(this._unloadTimer);
        this._unloadTimer = setTimeout(() => this._resume(), 5000);
      });
    }

    /** The page is going away (or into the back/forward cache): no new connections. */
    _suspend() {
      this._unloading = true;
      if (this._retryTimer !== null) { this._clearRetry(); this._retrySuppressed = true; }
    }

    /** The page lives on after all: make up the retry that was held back. */
    _resume() {
      if (!this._unloading) return;
      this._unloading = false;
      if (this._retrySuppressed && !this._status.stopped) { this._retrySuppressed = false; this._open(); }
    }

    _unlistenToPage() {
      for (const [target, name, fn] of this._pageListeners) target.removeEventListener(name, fn);
      this._pageListeners = [];
      clearTimeout(this._unloadTimer);
    }

    /** Skip the rest of a backoff wait (only when one is running: stops stay stops). */
    _retryNow() {
      if (this._retryTimer === null || this._status.stopped || this._unloading) return;
      this._open();
    }
  }

  // --- ChannelSocket (client/core.py) ------------------------------------------------------

  /**
   * A channel socket: the public API, over the helpers above (built in the constructor,
   * each handed what it shares with the others).
   */
  class ChannelSocket {
    /** Use `Sente.connect()`; see there for the options. */
    constructor(url, options = {}) {
      for (const name of Object.keys(options)) {
        if (!OPTION_NAMES.has(name)) {
          throw new TypeError(`unknown Sente option "${name}"; known: ${[...OPTION_NAMES].join(", ")}`);
        }
      }
      const type = options.type === undefined ? "auto" : options.type;
      if (!["auto", "ws", "ajax"].includes(type)) {
        throw new TypeError(`type must be "auto", "ws" or "ajax", got ${safeRepr(type)}`);
      }
      const WebSocketImpl = options.WebSocket || global.WebSocket;
      if (type === "ws" && !WebSocketImpl) throw new TypeError('type "ws" needs WebSocket, which this environment lacks');
      const fetchImpl = options.fetch || (global.fetch && global.fetch.bind(global));
      if (type !== "ws" && !fetchImpl) throw new TypeError("Ajax needs fetch, which this environment lacks");

      const clientId = options.clientId === undefined ? randomId(32) : options.clientId;
      if (typeof clientId !== "string" || !clientId.trim() || clientId.length > 128) {
        throw new TypeError("clientId must be a non-blank string of at most 128 characters");
      }
      let csrf = options.csrfToken;
      if (csrf === undefined) {
        csrf = metaContent("sente-csrf-token");
        if (csrf === undefined && typeof console !== "undefined") {
          console.warn("sente: no csrfToken option and no <meta name=\"sente-csrf-token\"> " +
            "(put {{ sente_script() }} in the template); connections will be refused with 403 " +
            "if the server checks CSRF, as it does by default");
        }
      }
      const csrfToken = typeof csrf === "function" ? () => csrf() || null : () => csrf || null;
      const packer = resolvePacker(options.packer);
      const params = options.params;
      const base = options.baseUrl || (global.location && global.location.href);
      if (!base && !/^(wss?|https?):/.test(url)) {
        throw new TypeError("a relative url needs a page (location) or the baseUrl option");
      }
      /** A duration option; `canDisable` ones also take 0/null ("never"). */
      const number = (name, canDisable = false) => {
        const value = options[name] === undefined ? DEFAULTS[name] : options[name];
        if (canDisable && (value === null || value === 0)) return null;
        if (!(typeof value === "number" && value > 0)) {
          throw new TypeError(`${name} must be a positive number of milliseconds` +
            (canDisable ? " (or 0/null to disable)" : ""));
        }
        return value;
      };
      const headers = options.headers === undefined ? {} : options.headers;
      if (headers === null || (typeof headers !== "object" && typeof headers !== "function")) {
        throw new TypeError("headers must be an object or a function returning one");
      }
      const backoffMs = options.backoffMs || ((attempt) => backoffDelay(attempt, Math.random()));
      if (typeof backoffMs !== "function") throw new TypeError("backoffMs must be a function (attempt) => ms");
      let positions = null;
      if (options.positions !== undefined && options.positions !== null) {
        positions = readPositions(options.positions);
        if (positions === null) {
          throw new TypeError("positions must be what chsk.positions gave: {log: [epoch, seq], ...}");
        }
      }
      const upgradeRetryMs = number("upgradeRetryMs", true);
      const callTimeoutMs = number("callTimeoutMs");

      this.url = url;
      this.clientId = clientId;
      this._callTimeoutMs = callTimeoutMs;
      const dispatch = new Dispatch();
      const status = new Status(dispatch, stateWithActive(initialState(type), true), positions); // it connects at once
      const query = (extra) => ({
        ...(typeof params === "function" ? params() : params),
        "client-id": clientId, protocol: PROTOCOL_VERSION, packer: packer.name, ...extra,
      });
      /** What transports need, in one place. */
      const env = Object.freeze({
        packer, csrfToken, WebSocket: WebSocketImpl, fetch: fetchImpl, fastKey: { value: null },
        // Read again per request, like csrfToken, so a rotated credential is picked up.
        headers: typeof headers === "function" ? () => headers() || {} : () => headers,
        keepAliveMs: number("keepAliveMs", true), pingTimeoutMs: number("pingTimeoutMs"),
        connectTimeoutMs: number("connectTimeoutMs"), ajaxTimeoutMs: number("ajaxTimeoutMs"),
        // Topic logs included: an Ajax poll names every log its answer may move.
        pos: () => posParam(withTopicLogs(status.positions, status.topicPositions())),
        wsUrl: (extra) => buildUrl(base, url, query(extra), "ws"),
        httpUrl: (extra) => buildUrl(base, url, query(extra), "http"),
      });
      const calls = new Calls(status, env);
      const topics = new Topics(status, calls, dispatch, { packer, callTimeoutMs });
      const answers = new Answers(status, calls, packer);
      this._env = env;
      this._status = status;
      this._dispatch = dispatch;
      this._calls = calls;
      this._topics = topics;
      this._answers = answers;
      this._connection = new Connection(status, env, {
        calls, topics, answers, dispatch, type, backoffMs, upgradeRetryMs,
        reconnectOnAuthFailure: Boolean(options.reconnectOnAuthFailure),
      });
      this._connection.start();
    }

    get state() { return this._status.state; }

    /**
     * Where this client stands in each log it reads (`{log: [epoch, seq]}`, frozen), or null
     * when it has none: before the first handshake (unless the `positions` option gave some)
     * and after a kick. Pass it back as the `positions` option of a later connect() to resume
     * from there (see the README).
     */
    get positions() { return this._status.positions; }

    /**
     * Listen to pushed events with this id ("*": every pushed id without a listener of its
     * own; "chsk/handshake": each handshake; "chsk/left" and "chsk/rejoined": see join()).
     * `fn(data, event, meta)`: `meta.topic` names the topic of a topic's event (null for a
     * push to the user or a broadcast). Returns an unsubscribe fn.
     */
    on(eventId, fn) {
      if (typeof fn !== "function") throw new TypeError("on(eventId, fn) needs a function");
      if (eventId !== "*" && eventId !== EV.HANDSHAKE) validateOutgoing([eventId], true);
      return this._dispatch.on(eventId, fn);
    }

    /** `fn(state, oldState)` on every state change; returns an unsubscribe fn. */
    onState(fn) {
      if (typeof fn !== "function") throw new TypeError("onState(fn) needs a function");
      return this._dispatch.onState(fn);
    }

    /**
     * Send an event, no reply wanted. While connecting (or reconnecting) it waits for the
     * open, up to `timeout` ms (default connectTimeoutMs, as the Python client), then sends;
     * an event that could not go out in time is dropped with a console warning. Returns
     * false when it cannot be sent at all: the client is stopped (disconnect(), 401/403,
     * kick). Nothing is kept beyond the wait: stale events replayed after a long outage
     * surprise more than they help.
     */
    send(event, options = {}) {
      const ev = validateOutgoing(event);
      const timeout = options && options.timeout !== undefined ? options.timeout : this._env.connectTimeoutMs;
      if (!(typeof timeout === "number" && timeout > 0)) throw new TypeError("timeout must be a positive number of milliseconds");
      return this._calls.send(ev, timeout);
    }

    /**
     * Send an event and wait for the handler's reply. Promise form resolves with the reply
     * and rejects with TimeoutError / ClosedError / ReplyError; with a callback
     * `cb(error, reply)` it returns false when the call failed at once instead. A call made
     * while connecting waits for the open; `timeout` covers that wait and the reply.
     */
    call(event, options = {}, callback = undefined) {
      if (typeof options === "function") { callback = options; options = {}; }
      const timeout = callTimeout(options, this._callTimeoutMs);
      const { sent, promise } = this._calls.call(validateOutgoing(event), timeout);
      if (typeof callback !== "function") return promise;
      promise.then((reply) => callback(null, reply), (error) => callback(error));
      return sent;
    }

    /**
     * Answer the server's calls of `eventId` (protocol 3): for each call, `fn(data, info)`
     * runs (`info`: `{id, eventId}`, id being the call's) and what it returns, a value or a
     * promise of one, goes back to the server; a throw or a rejection goes back as an error
     * with its message (cut to 500 characters). Calls never reach on() listeners; one with
     * no handler is answered "no-handler". One handler per event id: registering a second
     * throws an Error. Returns the function that unregisters it. An answer made while the
     * client is not open is sent once it is open again, within the call's timeout.
     */
    answer(eventId, fn) {
      validateOutgoing([eventId]); // a malformed or reserved id: TypeError
      if (typeof fn !== "function") throw new TypeError("answer(eventId, fn) needs a function");
      return this._answers.register(eventId, fn);
    }

    /**
     * Join `topic` (a non-empty string of at most 200 characters): the server's join handler
     * for it decides. Resolves with `{data, recovered}` — the handler's join data (null when
     * it just allowed) and null on a first join — and from then on the topic's events reach
     * on(eventId) listeners with `meta.topic` set, and onTopic(topic) listeners. Rejects with
     * JoinRefusedError (`.reason`: the server's, such as "forbidden") or the errors of call().
     * Joined topics are joined again after every reconnect (see "chsk/rejoined").
     */
    join(topic, data = null, options = {}) {
      validateTopic(topic);
      return this._topics.join(topic, data, callTimeout(options, this._callTimeoutMs));
    }

    /**
     * Leave `topic`: its events stop at once (later ones in flight are dropped) and it is
     * not rejoined. Resolves once the server confirms; rejects with the errors of call().
     */
    leave(topic, options = {}) {
      validateTopic(topic);
      return this._topics.leave(topic, callTimeout(options, this._callTimeoutMs));
    }

    /** The names of the topics this client is in (joins still waiting for a reply left out). */
    topics() { return this._topics.names(); }

    /**
     * `fn(eventId, data)` for each event of `topic` (also given to on(eventId) listeners);
     * returns an unsubscribe fn. Listening is not joining: see join().
     */
    onTopic(topic, fn) {
      validateTopic(topic);
      if (typeof fn !== "function") throw new TypeError("onTopic(topic, fn) needs a function");
      return this._topics.onTopic(topic, fn);
    }

    /**
     * Drop the connection as if the network had failed (Sente's chsk-break-connection!):
     * lastClose becomes "unexpected" and the client reconnects by its usual rules (backoff,
     * flap guard, auto mode), so an app can rehearse its offline handling, or drop a link it
     * knows is stale. A WebSocket is closed with `wsCode` (default 3000); with `closeWs:
     * false` it is left open but no longer heard, like a half-open TCP connection, until the
     * keep-alive gives up on it (ping-timeout). Over Ajax the long-poll is aborted. Returns
     * whether there was an open connection to break.
     */
    breakConnection({ closeWs = true, wsCode = CLOSE.BROKEN } = {}) {
      return this._connection.breakLink({ closeWs, wsCode });
    }

    /** Close and stay closed (until reconnect()). Calls waiting for a reply fail with ClosedError. */
    disconnect() { this._connection.disconnect(); }

    /**
     * Close and connect again at once: picks up a new session (the uid is fixed per
     * handshake, so call it after login/logout), tries WebSocket again in auto mode, and
     * restarts a client stopped by 401/403 or a kick.
     */
    reconnect() { this._connection.reconnect(); }
  }

  // =========================================================================================
  // Public API (client/core.py)
  // =========================================================================================

  /**
   * Open a channel socket. `url` defaults to the page's <meta name="sente-url"> (written by
   * `{{ sente_script() }}`), else "/chsk"; it may be omitted: `connect({type: "ajax"})`.
   * Options (the README's "Browser client" section has the reasons for each default):
   *   type: "auto" | "ws" | "ajax"   csrfToken: string | () => string (default: meta tag)
   *   packer: "json" | {name, binary, pack, unpack}   params: object | () => object
   *   clientId, keepAliveMs 20000, pingTimeoutMs 10000, backoffMs(attempt) => ms,
   *   upgradeRetryMs 30000, reconnectOnAuthFailure false, connectTimeoutMs 10000,
   *   ajaxTimeoutMs 60000, callTimeoutMs 30000, headers: object | () => object (Ajax only).
   */
  function connect(url, options) {
    if (url !== null && typeof url === "object" && options === undefined) { options = url; url = undefined; }
    if (url === undefined || url === null) url = metaContent("sente-url") || "/chsk";
    return new ChannelSocket(url, options || {});
  }

  return Object.freeze({
    connect,
    ChannelSocket,
    SenteError,
    TimeoutError,
    ClosedError,
    ReplyError,
    ProtocolError,
    JoinRefusedError,
    msgpackPacker,
    jsonPacker,
    PROTOCOL_VERSION,
    CLOSE,
    DEFAULTS,
    /** The pure protocol section, exported for tests and for tools that speak the wire. */
    protocol: Object.freeze({
      EV, AJAX_CB, eventError, isEvent, isReserved, asEvent, toWire, validateOutgoing,
      clientEnvelope, decodeServer, replyOutcome, resolvePacker, backoffDelay, randomId, buildUrl,
      initialState, stateAfterHandshake, stateAfterClose, stateWithRetryAt, stateWithActive, shouldReconnect,
      AUTH_STATUSES, STOP_STATUSES,
      closeInfo, describeWsClose, describeHttpFailure, afterWsFailure, firstTransport,
      nextAttempt, STABLE_AFTER_MS, handshakeError,
      readPositions, posParam, positionsAfterHandshake, batchMark, isSeenMark, positionsAfterMark,
      takeBatch,
      topicError, validateTopic, topicLog, mainPositions, withTopicLogs, takeTopicBatch, readJoinReply,
      readAfter, afterReached,
      MAX_TOPIC_LENGTH,
      newTopicRecord, topicStates, topicPositions, userChanged, topicsAtHandshake, positionAfterJoin,
      adoptTopicBatch, dropsOnRefusal,
      MAX_CALL_ID_LENGTH, CALL_IDS_REMEMBERED, MAX_ANSWER_MESSAGE, readCall, answerValue, answerError,
      RecentIds,
    }),
  });
});
