// Server -> client calls (protocol 3) in sente.js: a pushed ["chsk/call", {id, event,
// timeout}] runs the app's answer handler for the event's id, in its turn among the batch's
// events, and the outcome goes back as ["chsk/answer", {id, value | error}] with cb_id null.
// The pure part (readCall, the answer events, RecentIds, calls as batch items) first, then
// the channel over the fakes of fakes.mjs. tests/vectors/calls.json (vectors.test.mjs) holds
// the cases both clients run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

import { HANDSHAKE, connect, fakeNet, json, waitFor } from "./fakes.mjs";

const require = createRequire(import.meta.url);
const Sente = require("../../flask_sente/static/sente.js");
const P = Sente.protocol;

const CALL = (id, event, timeout = 20000) => ["chsk/call", { id, event, timeout }];
const MARK = (u) => ["chsk/pos", { u: ["eu", u] }];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** The chsk/answer envelopes a fake WebSocket was sent. */
const answersOf = (ws) => ws.sent.filter(([event]) => event[0] === "chsk/answer");
const value = (id, v) => [["chsk/answer", { id, value: v }], null];
const error = (id, kind, message) => [["chsk/answer", { id, error: { kind, message } }], null];

/** A channel open over a fake WebSocket; `accept(ws, n)` answers the n-th socket (0-based). */
async function openWs(t, { accept = (ws) => ws.accept(), ...options } = {}) {
  const net = fakeNet();
  net.onSocket = (ws) => accept(ws, net.sockets.indexOf(ws));
  const chsk = connect(net, options);
  t.after(() => chsk.disconnect());
  await waitFor(() => chsk.state.open, "open");
  return { net, chsk, ws: net.sockets[0] };
}

/** console.warn's messages while the test runs (and nothing printed). */
function warnings(t) {
  const mock = t.mock.method(console, "warn", () => {});
  return () => mock.mock.calls.map((c) => String(c.arguments[0]));
}

// --- the pure part ------------------------------------------------------------------------

test("readCall: {id, event, timeout}, null when there is no call id or no valid event", () => {
  assert.deepEqual(P.readCall({ id: "7@k3J9xQ2a", event: ["app/confirm", { todo: 4 }], timeout: 20000 }),
    { id: "7@k3J9xQ2a", event: ["app/confirm", { todo: 4 }], timeout: 20000 });
  assert.deepEqual(P.readCall({ id: "c", event: ["app/ping"], timeout: 5, extra: 1 }),
    { id: "c", event: ["app/ping", null], timeout: 5 }, "no data is null; unknown fields are ignored");
  for (const timeout of [undefined, null, -1, "20000", Infinity, NaN]) {
    assert.equal(P.readCall({ id: "c", event: ["a/b"], timeout }).timeout, 0, `timeout ${timeout}: not kept`);
  }
  assert.equal(P.readCall({ id: "x".repeat(80), event: ["a/b"] }).id.length, 80);
  for (const bad of [null, 7, "c", [], ["c", ["a/b"]], { event: ["a/b"] }, { id: 7, event: ["a/b"] },
    { id: "", event: ["a/b"] }, { id: "x".repeat(81), event: ["a/b"] }, { id: "c" }, { id: "c", event: "a/b" },
    { id: "c", event: ["noslash"] }, { id: "c", event: ["a/b", 1, 2] }, { id: "c", event: [7] }]) {
    assert.equal(P.readCall(bad), null, JSON.stringify(bad));
  }
  assert.equal(P.MAX_CALL_ID_LENGTH, 80);
});

test("answer events: a value (nothing returned is null), an error with its message cut to 500", () => {
  assert.deepEqual(P.answerValue("c1", { ok: true }), ["chsk/answer", { id: "c1", value: { ok: true } }]);
  assert.deepEqual(P.answerValue("c1", undefined), ["chsk/answer", { id: "c1", value: null }]);
  assert.deepEqual(P.answerValue("c1", 0), ["chsk/answer", { id: "c1", value: 0 }]);
  assert.deepEqual(P.answerError("c2", "no-handler", "none"),
    ["chsk/answer", { id: "c2", error: { kind: "no-handler", message: "none" } }]);
  assert.equal(P.MAX_ANSWER_MESSAGE, 500);
  assert.equal(P.answerError("c", "error", "x".repeat(501))[1].error.message, "x".repeat(500));
  // Characters as the server counts them: code points, so no half of a surrogate pair.
  const cut = P.answerError("c", "error", "😀".repeat(600))[1].error.message;
  assert.equal(cut, "😀".repeat(500));
  assert.equal(P.answerError("c", "error", "é😀".repeat(250))[1].error.message, "é😀".repeat(250), "500 exactly: whole");
});

test("RecentIds: a repeat among the last n ids is refused, an older one is new again", () => {
  const seen = new P.RecentIds(3);
  assert.deepEqual(["a", "b", "a", "c", "d"].map((id) => seen.add(id)), [true, true, false, true, true]);
  assert.equal(seen.add("a"), true, "a was the oldest of four: forgotten");
  assert.equal(seen.add("c"), false);
  assert.equal(P.CALL_IDS_REMEMBERED, 1024);
});

test("takeTopicBatch gives calls as items in batch order, malformed ones with call null", () => {
  const at = P.readPositions({ u: ["eu", 0] });
  const batch = P.takeTopicBatch(at, new Map(), [["t/a", 1], CALL("c1", ["app/x", 2], 100),
    ["chsk/call", { event: ["app/x"] }], ["t/b", 3], MARK(1)]);
  assert.deepEqual(batch.items, [
    { kind: "event", event: ["t/a", 1], topic: null },
    { kind: "call", call: { id: "c1", event: ["app/x", 2], timeout: 100 }, data: { id: "c1", event: ["app/x", 2], timeout: 100 } },
    { kind: "call", call: null, data: { event: ["app/x"] } },
    { kind: "event", event: ["t/b", 3], topic: null },
  ]);
  assert.deepEqual(batch.positions, { u: ["eu", 1] });
  assert.equal(P.takeTopicBatch(batch.positions, new Map(), [CALL("c1", ["app/x"]), MARK(1)]).items.length, 0,
    "a batch seen already (a repeat) holds no call either");
});

// --- the channel ---------------------------------------------------------------------------

test("WebSocket: a value, a promise, a throw, a rejection and no handler, each answered once", async (t) => {
  const { chsk, ws } = await openWs(t);
  const seen = [];
  chsk.answer("app/value", (data, info) => { seen.push([data, info]); return { ok: true, got: data }; });
  chsk.answer("app/promise", (data) => new Promise((resolve) => setTimeout(() => resolve(data * 2), 5)));
  chsk.answer("app/throw", () => { throw new Error("boom"); });
  chsk.answer("app/reject", async () => { throw new RangeError("nope"); });
  chsk.answer("app/nothing", () => {});
  ws.push([[CALL("c1", ["app/value", { todo: 4 }]), CALL("c2", ["app/promise", 21]), CALL("c3", ["app/throw"]),
    CALL("c4", ["app/reject", 1]), CALL("c5", ["app/unknown", 1]), CALL("c6", ["app/nothing"]), MARK(1)], null]);
  assert.deepEqual(seen, [[{ todo: 4 }, { id: "c1", eventId: "app/value" }]]);
  assert.ok(Object.isFrozen(seen[0][1]));
  // Handlers that return at once are answered at once, in call order.
  assert.deepEqual(answersOf(ws), [
    value("c1", { ok: true, got: { todo: 4 } }),
    error("c3", "error", "boom"),
    error("c5", "no-handler", 'no answer handler for "app/unknown" on this client'),
    value("c6", null),
  ]);
  await waitFor(() => answersOf(ws).length === 6, "the answers of the promises");
  assert.deepEqual(answersOf(ws).slice(4), [error("c4", "error", "nope"), value("c2", 42)]);
  assert.deepEqual(chsk.positions, { u: ["eu", 1], "*": ["eb", 0] });
});

test("a call id is answered once; calls never reach on() listeners, not even \"*\"", async (t) => {
  const { chsk, ws } = await openWs(t);
  const heard = [];
  chsk.on("*", (data, event) => heard.push(["*", event[0]]));
  chsk.on("app/confirm", (data, event) => heard.push(["app/confirm", event[0]]));
  chsk.on("chsk/call", (data, event) => heard.push(["chsk/call", event[0]]));
  let runs = 0;
  chsk.answer("app/confirm", () => ++runs);
  ws.push([[CALL("c1", ["app/confirm"]), CALL("c1", ["app/confirm"]), MARK(1)], null]);
  // A later batch (it moves the position, so it is new) with the same call id: a repeat.
  ws.push([[CALL("c1", ["app/confirm"]), ["t/n", 1], MARK(2)], null]);
  ws.push([[CALL("c2", ["app/confirm"]), MARK(3)], null]);
  assert.equal(runs, 2);
  assert.deepEqual(answersOf(ws), [value("c1", 1), value("c2", 2)]);
  assert.deepEqual(heard, [["*", "t/n"]]);
});

test("a call runs in its turn among the batch's events", async (t) => {
  const { chsk, ws } = await openWs(t);
  const trace = [];
  chsk.on("t/a", () => trace.push("a"));
  chsk.on("t/b", () => trace.push(`b (answers sent: ${answersOf(ws).length})`));
  chsk.answer("app/x", () => { trace.push("call"); return 1; });
  ws.push([[["t/a"], CALL("c1", ["app/x"]), ["t/b"], MARK(1)], null]);
  assert.deepEqual(trace, ["a", "call", "b (answers sent: 1)"]);
});

test("the last 1024 call ids are remembered", async (t) => {
  const { chsk, ws } = await openWs(t);
  const ran = [];
  chsk.answer("app/x", (data, { id }) => { ran.push(id); });
  const calls = Array.from({ length: 1025 }, (_, n) => CALL(`c${n}`, ["app/x"]));
  ws.push([[...calls, MARK(1)], null]);
  assert.equal(ran.length, 1025);
  ws.push([[CALL("c1024", ["app/x"]), CALL("c0", ["app/x"]), CALL("c2", ["app/x"]), MARK(2)], null]);
  assert.deepEqual(ran.slice(1025), ["c0"], "c0 was forgotten (the 1025th call came after it); c2 and c1024 were not");
  ws.push([[CALL("c1", ["app/x"]), MARK(3)], null]);
  assert.deepEqual(ran.slice(1026), ["c1"], "taking c0 again pushed c1 out");
});

test("a malformed call is ignored with a warning; the channel goes on", async (t) => {
  const warned = warnings(t);
  const { chsk, ws } = await openWs(t);
  let runs = 0;
  chsk.answer("app/x", () => ++runs);
  ws.push([[["chsk/call", { event: ["app/x"], timeout: 100 }], ["chsk/call", { id: 7, event: ["app/x"] }],
    ["chsk/call", { id: "c1", event: ["noslash"] }], ["chsk/call", ["c1", ["app/x"]]], ["chsk/call"],
    CALL("c2", ["app/x"]), MARK(1)], null]);
  assert.deepEqual(answersOf(ws), [value("c2", 1)]);
  assert.equal(runs, 1);
  assert.equal(warned().length, 5);
  assert.match(warned()[0], /^sente: ignored a malformed chsk\/call: \{"event":\["app\/x"\],"timeout":100\}$/);
  assert.equal(chsk.state.open, true);
});

test("errors: non-Error throws, empty messages, values the packer cannot encode", async (t) => {
  warnings(t);
  const { chsk, ws } = await openWs(t);
  const returns = { big: 10n, fn: () => 1, sym: Symbol("s"), nan: NaN, cyclic: (() => { const o = {}; o.o = o; return o; })() };
  chsk.answer("app/return", (name) => returns[name]);
  chsk.answer("app/throw", (thrown) => { throw thrown; });
  chsk.answer("app/empty", () => { throw new TypeError(""); });
  chsk.answer("app/long", () => Promise.reject(new Error("é".repeat(700))));
  const names = Object.keys(returns);
  ws.push([[...names.map((name) => CALL(name, ["app/return", name])),
    CALL("t1", ["app/throw", "a string"]), CALL("t2", ["app/throw", { code: 7 }]), CALL("t3", ["app/throw"]),
    CALL("e", ["app/empty"]), CALL("l", ["app/long"]), MARK(1)], null]);
  await waitFor(() => answersOf(ws).length === names.length + 5, "every answer");
  const got = Object.fromEntries(answersOf(ws).map(([[, a]]) => [a.id, a]));
  for (const name of names) {
    assert.equal(got[name].error.kind, "error", name);
    assert.match(got[name].error.message, /^the answer's value cannot be packed as json: /, name);
    assert.equal("value" in got[name], false);
  }
  assert.deepEqual(got.t1.error, { kind: "error", message: "a string" });
  assert.deepEqual(got.t2.error, { kind: "error", message: "[object Object]" });
  assert.deepEqual(got.t3.error, { kind: "error", message: "null" });
  assert.deepEqual(got.e.error, { kind: "error", message: "TypeError" }, "an empty message: the error's name");
  assert.deepEqual(got.l.error, { kind: "error", message: "é".repeat(500) });
  assert.equal(chsk.state.open, true);
});

test("answer(): ids checked like an event's, one handler per id, unregister", async (t) => {
  const { chsk, ws } = await openWs(t);
  for (const bad of ["noslash", "", 7, null, "chsk/call", "chsk/x"]) {
    assert.throws(() => chsk.answer(bad, () => 1), TypeError, String(bad));
  }
  assert.throws(() => chsk.answer("chsk/answer", () => 1), /reserved/);
  assert.throws(() => chsk.answer("app/x"), { name: "TypeError", message: "answer(eventId, fn) needs a function" });
  const off = chsk.answer("app/x", () => "first");
  assert.throws(() => chsk.answer("app/x", () => "second"),
    (e) => e.constructor === Error && /already/.test(e.message), "a second handler is an Error, not a TypeError");
  ws.push([[CALL("c1", ["app/x"]), MARK(1)], null]);
  off();
  off(); // twice: nothing more
  ws.push([[CALL("c2", ["app/x"]), MARK(2)], null]);
  const offAgain = chsk.answer("app/x", () => "third");
  off(); // the old unregister function leaves the new handler alone
  ws.push([[CALL("c3", ["app/x"]), MARK(3)], null]);
  offAgain();
  assert.deepEqual(answersOf(ws), [value("c1", "first"),
    error("c2", "no-handler", 'no answer handler for "app/x" on this client'), value("c3", "third")]);
});

test("Ajax: an answer is a POST with cb_id null, answered chsk/ack", async (t) => {
  const net = fakeNet();
  let polls = 0;
  const posts = [];
  net.http = (req) => {
    if (req.url.searchParams.has("handshake")) return json(HANDSHAKE());
    if (req.init.method === "POST") { posts.push(req); return json([["chsk/ack"], null]); }
    polls += 1;
    if (polls === 1) return json([[["t/a", 1], CALL("c1", ["app/confirm", { todo: 4 }]), MARK(1)], null]);
    return "park";
  };
  const chsk = connect(net, { type: "ajax" });
  t.after(() => chsk.disconnect());
  chsk.answer("app/confirm", async (data, info) => ({ yes: data.todo, id: info.id }));
  await waitFor(() => posts.length === 1, "the answer's POST");
  assert.deepEqual(posts[0].body, [["chsk/answer", { id: "c1", value: { yes: 4, id: "c1" } }], null]);
  assert.equal(posts[0].url.searchParams.get("protocol"), "3");
  assert.equal(posts[0].init.headers["X-CSRF-Token"], "T");
  await waitFor(() => polls >= 2, "the next poll");
  const gets = net.requests.filter((r) => r.init.method === "GET");
  assert.equal(gets.at(-1).url.searchParams.get("pos"), '{"u":["eu",1],"*":["eb",0]}');
});

/** A handler whose answers the test releases: `answer(value)` settles the oldest call. */
function held(chsk, eventId) {
  const waiting = [];
  chsk.answer(eventId, () => new Promise((resolve) => waiting.push(resolve)));
  return { count: () => waiting.length, answer: (v) => waiting.shift()(v) };
}

test("an answer made while disconnected is sent once the client is open again", async (t) => {
  // The first socket opens; later ones wait for the test.
  const { net, chsk, ws } = await openWs(t, { accept: (s, n) => { if (n === 0) s.accept(); } });
  const handler = held(chsk, "app/slow");
  ws.push([[CALL("c1", ["app/slow"], 1000), MARK(1)], null]);
  ws.drop();
  await waitFor(() => net.sockets.length === 2, "a reconnect attempt");
  handler.answer("late");
  await sleep(20);
  assert.deepEqual([answersOf(ws), answersOf(net.sockets[1])], [[], []], "kept: nothing is open");
  net.sockets[1].accept();
  await waitFor(() => answersOf(net.sockets[1]).length, "the answer on the new connection");
  assert.deepEqual(answersOf(net.sockets[1]), [value("c1", "late")]);
});

test("a kept answer is dropped once the call's timeout has passed since the call came", async (t) => {
  const warned = warnings(t);
  const { net, chsk, ws } = await openWs(t, { accept: (s, n) => { if (n === 0) s.accept(); } });
  const handler = held(chsk, "app/slow");
  ws.push([[CALL("c1", ["app/slow"], 40), CALL("c2", ["app/slow"], 40), CALL("c3", ["app/slow"], 5000), MARK(1)], null]);
  ws.drop();
  await waitFor(() => net.sockets.length === 2, "a reconnect attempt");
  handler.answer("kept, then too late"); // c1: waits for the open
  await sleep(60);
  handler.answer("too late already"); // c2: its timeout passed while the handler ran
  handler.answer("in time"); // c3
  await sleep(0); // the handlers' promises settle: their answers are made
  net.sockets[1].accept();
  await sleep(10);
  assert.deepEqual(answersOf(net.sockets[1]), [value("c3", "in time")]);
  assert.deepEqual(warned(), [
    "sente: the answer to call c1 (app/slow) was dropped: not connected within the call's timeout (40 ms)",
    "sente: the answer to call c2 (app/slow) was dropped: not connected within the call's timeout (40 ms)",
  ]);
});

test("kept answers are dropped when the client stops: disconnect(), a kick", async (t) => {
  const warned = warnings(t);
  const { net, chsk, ws } = await openWs(t, { accept: (s, n) => { if (n !== 1) s.accept(); } });
  const handler = held(chsk, "app/slow");
  ws.push([[CALL("c1", ["app/slow"]), CALL("c2", ["app/slow"]), MARK(1)], null]);
  ws.drop();
  await waitFor(() => net.sockets.length === 2, "a reconnect attempt");
  handler.answer("kept"); // c1 waits for the open...
  await sleep(0);
  chsk.disconnect(); // ...and is dropped
  handler.answer("after the stop"); // c2: dropped, even after reconnect() (the stop came first)
  chsk.reconnect();
  await waitFor(() => chsk.state.open, "open again");
  await sleep(10);
  assert.deepEqual(net.sockets.map(answersOf), [[], [], []]);
  assert.deepEqual(warned(), [
    "sente: the answer to call c1 (app/slow) was dropped: not connected (requested-disconnect)",
    "sente: the answer to call c2 (app/slow) was dropped: the client stopped since the call came",
  ]);

  // A kick (4001) stops the client too.
  const ws2 = net.sockets[2];
  ws2.push([[CALL("c3", ["app/slow"]), MARK(2)], null]);
  ws2.drop(4001, "kicked", true);
  handler.answer("after the kick");
  await sleep(0);
  chsk.reconnect();
  await waitFor(() => net.sockets.length === 4 && chsk.state.open, "open after the kick");
  await sleep(10);
  assert.deepEqual(net.sockets.map(answersOf), [[], [], [], []]);
  assert.match(warned()[2], /^sente: the answer to call c3 \(app\/slow\) was dropped: not connected \(kicked\)$/);
});

test("a kept answer is dropped when the client comes back as another user", async (t) => {
  const warned = warnings(t);
  const { net, chsk, ws } = await openWs(t, { accept: (s, n) => { if (n === 0) s.accept(); } });
  const handler = held(chsk, "app/slow");
  ws.push([[CALL("c1", ["app/slow"]), MARK(1)], null]);
  ws.drop();
  await waitFor(() => net.sockets.length === 2, "a reconnect attempt");
  handler.answer("alice's");
  net.sockets[1].accept("bob");
  await sleep(10);
  assert.deepEqual(answersOf(net.sockets[1]), []);
  assert.deepEqual(warned(), ["sente: the answer to call c1 (app/slow) was dropped: another user signed in since the call came"]);
});

test("Ajax: an answer made while reconnecting is POSTed after the new handshake", async (t) => {
  const net = fakeNet();
  let polls = 0;
  let handshakes = 0;
  let release = null; // the second handshake waits for the test
  const posts = [];
  net.http = (req) => {
    if (req.url.searchParams.has("handshake")) {
      handshakes += 1;
      if (handshakes === 1) return json(HANDSHAKE());
      const recovered = HANDSHAKE("alice", { positions: { u: ["eu", 1], "*": ["eb", 0] }, recovered: true });
      return new Promise((resolve) => { release = () => resolve(json(recovered)); });
    }
    if (req.init.method === "POST") { posts.push(req); return json([["chsk/ack"], null]); }
    polls += 1;
    if (polls === 1) return json([[CALL("c1", ["app/slow"], 5000), MARK(1)], null]);
    if (polls === 2) return new TypeError("the network went away");
    return "park";
  };
  const chsk = connect(net, { type: "ajax" });
  t.after(() => chsk.disconnect());
  const handler = held(chsk, "app/slow");
  await waitFor(() => release !== null, "a new handshake");
  assert.equal(chsk.state.open, false);
  handler.answer("made offline");
  await sleep(20);
  assert.equal(posts.length, 0, "kept: nothing is open");
  release();
  await waitFor(() => posts.length === 1, "the answer's POST");
  assert.deepEqual(posts[0].body, [["chsk/answer", { id: "c1", value: "made offline" }], null]);
});

test("Ajax: disconnect() POSTs chsk/bye (the server fails its calls at once); a cut does not", async (t) => {
  const net = fakeNet();
  const posts = [];
  net.http = (req) => {
    if (req.url.searchParams.has("handshake")) return json(HANDSHAKE());
    if (req.init.method === "POST") { posts.push(req); return json([["chsk/ack"], null]); }
    return "park";
  };
  const chsk = connect(net, { type: "ajax" });
  t.after(() => chsk.disconnect());
  await waitFor(() => chsk.state.open, "open");
  chsk.breakConnection();
  await waitFor(() => chsk.state.open, "open again");
  assert.deepEqual(posts, []);
  chsk.disconnect();
  await waitFor(() => posts.length === 1, "the goodbye POST");
  assert.deepEqual(posts[0].body, [["chsk/bye"], null]);
  assert.equal(posts[0].init.headers["X-CSRF-Token"], "T");
});
