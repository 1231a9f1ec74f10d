// The pure section of flask_sente/static/sente.js, under `node --test tests/js/`.
// Vectors mirror tests/protocol/test_*.py so both clients read the wire the same way.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const Sente = require("../../flask_sente/static/sente.js");
const P = Sente.protocol;

test("loads as a CommonJS module and also sets globalThis.Sente", () => {
  assert.equal(globalThis.Sente, Sente);
  assert.equal(typeof Sente.connect, "function");
  assert.equal(Sente.PROTOCOL_VERSION, 3);
});

test("eventError gives the same reasons as events.py", () => {
  assert.equal(P.eventError(["todo/add", { t: 1 }]), null);
  assert.equal(P.eventError(["todo/add"]), null);
  assert.equal(P.eventError("todo/add"), "wrong-type");
  assert.equal(P.eventError({ 0: "a/b" }), "wrong-type");
  assert.equal(P.eventError([]), "wrong-length");
  assert.equal(P.eventError(["a/b", 1, 2]), "wrong-length");
  assert.equal(P.eventError([1, 2]), "wrong-id-type");
  for (const id of ["ab", "/ab", "ab/", ""]) assert.equal(P.eventError([id]), "unnamespaced-id", id);
  assert.equal(P.eventError(["a/b/c"]), null);
});

test("validateOutgoing refuses bad and reserved events with a TypeError", () => {
  assert.deepEqual(P.validateOutgoing(["a/b"]), ["a/b", null]);
  assert.deepEqual(P.validateOutgoing(["a/b", 0]), ["a/b", 0]);
  assert.throws(() => P.validateOutgoing(["nope"]), { name: "TypeError", message: /unnamespaced-id/ });
  assert.throws(() => P.validateOutgoing(["chsk/ws-ping"]), { name: "TypeError", message: /reserved/ });
  assert.deepEqual(P.validateOutgoing(["chsk/ws-ping"], true), ["chsk/ws-ping", null]);
});

test("client envelopes encode exactly as the protocol says", () => {
  const J = Sente.jsonPacker;
  assert.equal(J.pack(P.clientEnvelope(["todo/add", { text: "milk" }], "k3J9xQ2a")),
    '[["todo/add",{"text":"milk"}],"k3J9xQ2a"]');
  assert.equal(J.pack(P.clientEnvelope(["todo/log", null])), '[["todo/log"],null]');
  assert.equal(J.pack(P.clientEnvelope(["todo/add", { t: 1 }], P.AJAX_CB)), '[["todo/add",{"t":1}],"ajax"]');
  // data 0, false and "" are data, not "absent"
  assert.equal(J.pack(P.clientEnvelope(["a/b", 0])), '[["a/b",0],null]');
  assert.equal(J.pack(P.clientEnvelope(["a/b", false])), '[["a/b",false],null]');
});

test("the JSON packer is compact and refuses NaN/Infinity", () => {
  assert.equal(Sente.jsonPacker.pack({ a: [1, "é"] }), '{"a":[1,"é"]}');
  assert.throws(() => Sente.jsonPacker.pack([NaN]), /NaN/);
  assert.throws(() => Sente.jsonPacker.pack({ x: Infinity }), /Infinity/);
  assert.deepEqual(Sente.jsonPacker.unpack(new TextEncoder().encode("[1]").buffer), [1]);
  assert.throws(() => Sente.jsonPacker.unpack("{"), { name: "ProtocolError", kind: "protocol" });
});

test("decodeServer reads every server message kind", () => {
  const hs = P.decodeServer([["chsk/handshake", { uid: "alice", handshake_data: null, protocol: 1 }], null]);
  assert.equal(hs.kind, "handshake");
  assert.deepEqual(hs.value, { uid: "alice", handshake_data: null, protocol: 1 });

  const batch = P.decodeServer([[["a/b", 1], ["a/c"]], null]);
  assert.equal(batch.kind, "events");
  assert.deepEqual(batch.events, [["a/b", 1], ["a/c", null]]);

  // A handler replying with the string "chsk/timeout" is still a value, not a timeout.
  const reply = P.decodeServer([["chsk/reply", "chsk/timeout"], "c"]);
  assert.deepEqual([reply.kind, reply.cbId, reply.outcome, reply.value], ["reply", "c", "chsk/reply", "chsk/timeout"]);
  const failure = P.decodeServer([["chsk/timeout"], "c"]);
  assert.deepEqual([failure.kind, failure.outcome], ["reply", "chsk/timeout"]);
  const ajaxReply = P.decodeServer([["chsk/reply", { ok: true }], null]);
  assert.deepEqual([ajaxReply.kind, ajaxReply.cbId, ajaxReply.value], ["reply", null, { ok: true }]);

  assert.equal(P.decodeServer([["chsk/ws-ping"], null]).kind, "ping");
  assert.equal(P.decodeServer([["chsk/timeout"], null]).kind, "timeout");
  assert.equal(P.decodeServer([["chsk/ack"], null]).kind, "ack");
  const close = P.decodeServer([["chsk/close", { code: 4001, reason: "k" }], null]);
  assert.deepEqual([close.kind, close.value], ["close", { code: 4001, reason: "k" }]);
});

test("decodeServer rejects malformed messages (same table as test_wire.py)", () => {
  const bad = [null, {}, [], [1], [[], null], [["x"], null], [[["a/b"], 3], null],
    [["a/b", 1], "cb"], [["chsk/unknown"], null], [["a/b"], null], [[], null, 1]];
  for (const value of bad) {
    assert.throws(() => P.decodeServer(value), { name: "ProtocolError" }, JSON.stringify(value));
  }
});

test("replyOutcome maps failures to typed errors with a kind", () => {
  assert.deepEqual(P.replyOutcome("chsk/reply", 7), { ok: true, value: 7 });
  const timeout = P.replyOutcome("chsk/timeout", null).error;
  assert.ok(timeout instanceof Sente.TimeoutError && timeout instanceof Sente.SenteError);
  assert.equal(timeout.kind, "timeout");
  assert.equal(P.replyOutcome("chsk/closed", null).error.kind, "closed");
  const error = P.replyOutcome("chsk/error", { message: "boom" }).error;
  assert.ok(error instanceof Sente.ReplyError);
  assert.deepEqual([error.kind, error.message, error.info], ["error", "boom", { message: "boom" }]);
});

test("backoffDelay mirrors backoff.backoff_delay (ms instead of s)", () => {
  assert.equal(P.backoffDelay(1, 0.99), 0);
  assert.equal(P.backoffDelay(0, 0.5), 0);
  assert.equal(P.backoffDelay(2, 0), 500);
  assert.ok(P.backoffDelay(2, 0.999) < 1000);
  assert.equal(P.backoffDelay(3, 0), 1000);
  assert.equal(P.backoffDelay(4, 0), 2000);
  assert.equal(P.backoffDelay(4, 0.5), 3000);
  assert.equal(P.backoffDelay(50, 0), 15000);
  assert.ok(P.backoffDelay(10000, 0.999) < 30000);
  assert.ok(P.backoffDelay(10, 0.999, { cap: 5000 }) < 5000);
  // Never below half a step: a fleet restarting together spreads over [step/2, step).
  for (let n = 2; n < 12; n++) {
    const step = Math.min(30000, 1000 * 2 ** (n - 2));
    assert.equal(P.backoffDelay(n, 0), step / 2);
    assert.ok(P.backoffDelay(n, 0.9999) < step);
  }
});

test("randomId uses a URL-safe alphabet and the asked length", () => {
  const ids = new Set();
  for (let i = 0; i < 200; i++) {
    const id = P.randomId(8);
    assert.match(id, /^[A-Za-z0-9_-]{8}$/);
    ids.add(id);
  }
  assert.equal(ids.size, 200);
});

test("buildUrl maps http to ws and leaves out null parameters", () => {
  const base = "https://example.com/app/page";
  assert.equal(P.buildUrl(base, "/chsk", { "client-id": "c", "csrf-token": null }, "ws"),
    "wss://example.com/chsk?client-id=c");
  assert.equal(P.buildUrl("http://h:5/", "/chsk", { a: 1 }, "ws"), "ws://h:5/chsk?a=1");
  assert.equal(P.buildUrl(base, "wss://other/chsk", { a: 1 }, "http"), "https://other/chsk?a=1");
  assert.equal(P.buildUrl(base, "chsk", { protocol: 1, packer: "json" }), "https://example.com/app/chsk?protocol=1&packer=json");
});

test("state: handshake opens, close records why, retries are scheduled", () => {
  const s0 = P.initialState("auto");
  assert.deepEqual({ ...s0 }, { type: "auto", open: false, everOpened: false, uid: null, handshakeData: null, recovered: null, lastClose: null, nextReconnectAt: null, active: false });
  assert.ok(Object.isFrozen(s0));
  assert.equal(P.stateWithActive(s0, false), s0, "no change, same state");
  assert.equal(P.stateWithActive(s0, true).active, true);
  const s1 = P.stateAfterHandshake(P.stateWithRetryAt(s0, 123), "ws", { uid: "alice", handshake_data: { n: 1 }, protocol: 1 });
  assert.deepEqual([s1.type, s1.open, s1.everOpened, s1.uid, s1.handshakeData, s1.nextReconnectAt], ["ws", true, true, "alice", { n: 1 }, null]);
  assert.equal(s1.recovered, null, "protocol 1: no word on recovery");
  for (const recovered of [true, false, null]) {
    const s = P.stateAfterHandshake(s1, "ajax", { uid: "alice", protocol: 2, positions: {}, recovered });
    assert.equal(s.recovered, recovered);
  }
  const close = P.describeWsClose(1001, "server shutting down", true);
  const s2 = P.stateAfterClose(s1, close, 1700000000000);
  assert.deepEqual([s2.open, s2.everOpened, s2.uid], [false, true, "alice"]);
  assert.deepEqual(s2.lastClose, { reason: "clean", code: 1001, status: null, message: "server shutting down", at: 1700000000000 });
  // Recorded with the time it happened (ms since the epoch), like the Python client's `at`.
  const before = Date.now();
  const at = P.stateAfterClose(s1, close).lastClose.at;
  assert.ok(at >= before && at <= Date.now(), String(at));
  assert.equal(s0.open, false, "states are snapshots");
});

test("close descriptions and the reconnect decision", () => {
  const kicked = P.describeWsClose(4001, "kicked", true);
  assert.equal(kicked.reason, "kicked");
  assert.equal(P.shouldReconnect(kicked), false);
  assert.equal(P.shouldReconnect(P.describeWsClose(1006, "", false)), true);
  assert.equal(P.describeWsClose(1006, "", false).reason, "unexpected");
  assert.equal(P.describeWsClose(1000, "", true, "ping-timeout").reason, "ping-timeout");
  for (const code of [1000, 1001, 1002, 1007, 1009, 1013, 4002, 4003]) {
    assert.equal(P.shouldReconnect(P.describeWsClose(code, "", true)), true, String(code));
  }
  // Ajax's chsk/close carries the code too.
  assert.equal(P.shouldReconnect(P.closeInfo("clean", { code: 4001 })), false);
  assert.equal(P.shouldReconnect(P.closeInfo("clean", { code: 1013 })), true);

  // 401/403 stop (they would be refused again), so do the STOP_STATUSES; others are retried.
  const forbidden = P.describeHttpFailure(403, "Bad CSRF token");
  assert.deepEqual(forbidden, { reason: "rejected", code: null, status: 403, message: "Bad CSRF token" });
  assert.equal(P.shouldReconnect(forbidden), false);
  assert.equal(P.shouldReconnect(P.describeHttpFailure(401)), false);
  assert.equal(P.shouldReconnect(forbidden, { reconnectOnAuthFailure: true }), true);
  assert.equal(P.shouldReconnect(P.describeHttpFailure(400, "Packer mismatch")), false);
  assert.equal(P.shouldReconnect(P.describeHttpFailure(429)), true);
  assert.equal(P.shouldReconnect(P.describeHttpFailure(502)), true);
  assert.deepEqual(P.describeHttpFailure(0, "fetch failed"), { reason: "unexpected", code: null, status: null, message: "fetch failed" });
  for (const reason of ["requested-disconnect", "kicked", "protocol-mismatch"]) {
    assert.equal(P.shouldReconnect(P.closeInfo(reason)), false, reason);
  }
  for (const reason of ["requested-reconnect", "unexpected", "clean", "ping-timeout"]) {
    assert.equal(P.shouldReconnect(P.closeInfo(reason)), true, reason);
  }
});

test("msgpackPacker wraps a page-supplied codec and insists on bytes", () => {
  const codec = { encode: (v) => new TextEncoder().encode(JSON.stringify(v)), decode: (b) => JSON.parse(new TextDecoder().decode(b)) };
  const packer = Sente.msgpackPacker(codec);
  assert.deepEqual([packer.name, packer.binary], ["msgpack", true]);
  assert.deepEqual(packer.unpack(packer.pack([1, "a"]).buffer), [1, "a"]);
  assert.throws(() => packer.unpack("text"), { name: "ProtocolError" });
  assert.throws(() => Sente.msgpackPacker({}), TypeError);
  assert.equal(P.resolvePacker(undefined), Sente.jsonPacker);
  assert.equal(P.resolvePacker(packer), packer);
  assert.throws(() => P.resolvePacker("msgpack"), /msgpackPacker/);
  assert.throws(() => P.resolvePacker({ name: "x" }), TypeError);
});
