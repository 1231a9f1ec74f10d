// The auto socket of sente.js (transport choice, fallback, upgrade, reconnects, calls)
// driven by in-memory fakes of WebSocket and fetch, so each decision is checked step by step.
// The same behaviour is checked against the real server in tests/browser/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

import { HANDSHAKE, closeOf, connect, fakeNet, json, posOf, text, waitFor } from "./fakes.mjs";

const require = createRequire(import.meta.url);
const Sente = require("../../flask_sente/static/sente.js");

test("WebSocket: handshake, push, call with reply, server ping answered", async (t) => {
  const net = fakeNet();
  net.onSocket = (ws) => ws.accept();
  const chsk = connect(net);
  t.after(() => chsk.disconnect());
  const states = [];
  chsk.onState((s, old) => states.push([old.open, s.open, s.type]));
  await waitFor(() => chsk.state.open, "open");
  const ws = net.sockets[0];
  const url = new URL(ws.url);
  assert.equal(url.protocol, "ws:");
  // The token travels in the ticket request's header, never in the WebSocket URL.
  assert.deepEqual(Object.fromEntries(url.searchParams), { "client-id": chsk.clientId, protocol: "3", packer: "json", "ws-ticket": "TICKET-1" });
  assert.equal(net.tickets[0].init.headers["X-CSRF-Token"], "T");
  assert.deepEqual([chsk.state.type, chsk.state.uid, chsk.state.handshakeData], ["ws", "alice", { n: 1 }]);
  assert.deepEqual(states, [[false, true, "ws"]]);

  const got = [];
  const off = chsk.on("todo/added", (data, event) => got.push([data, event]));
  ws.push([[["todo/added", { id: 7 }], ["chsk/unknown-later"], ["other/x", 1]], null]);
  assert.deepEqual(got, [[{ id: 7 }, ["todo/added", { id: 7 }]]]);
  off();
  ws.push([[["todo/added", 8]], null]);
  assert.equal(got.length, 1);

  const reply = chsk.call(["todo/add", { text: "milk" }], { timeout: 1000 });
  const [event, cbId] = ws.sent.at(-1);
  assert.deepEqual(event, ["todo/add", { text: "milk" }]);
  assert.match(cbId, /^[A-Za-z0-9_-]{8}$/);
  ws.push([["chsk/reply", { ok: true }], cbId]);
  assert.deepEqual(await reply, { ok: true });

  ws.push([["chsk/ws-ping"], null]);
  assert.deepEqual(ws.sent.at(-1), [["chsk/ws-pong"], null]);
  assert.equal(chsk.send(["todo/log", "hi"]), true);
  assert.deepEqual(ws.sent.at(-1), [["todo/log", "hi"], null]);
});

// Issue 26: "within 4955.800000000279 ms". Broken once by passing what was left of the
// timeout to the message again, as before the fix: it read "within 42.7 ms" (about 15 ms
// having gone to connecting; unrounded, as before, it would have had a dozen decimals).
test("a call made while connecting names its own timeout when it times out", async (t) => {
  const net = fakeNet();
  net.onSocket = (ws) => setTimeout(() => { if (!ws.closedWith) ws.accept(); }, 15);  // opens late
  const chsk = connect(net, { backoffMs: () => 10000 });
  t.after(() => chsk.disconnect());
  await assert.rejects(chsk.call(["a/slow"], { timeout: 60 }),
    { name: "TimeoutError", message: "no reply to a/slow within 60 ms" });
  await assert.rejects(chsk.call(["a/slow"], { timeout: 100 / 3 }),
    { name: "TimeoutError", message: "no reply to a/slow within 33.3 ms" });
  chsk.reconnect();   // connecting again: the open waits 15 ms
  await assert.rejects(chsk.call(["a/slow"], { timeout: 5 / 3 }),
    { name: "ClosedError", message: "not connected within 1.7 ms: the call was not sent" });
});

test("calls fail with typed errors: timeout, server failure, closed; callback form", async (t) => {
  const net = fakeNet();
  net.onSocket = (ws) => ws.accept();
  const chsk = connect(net, { backoffMs: () => 10000 });
  t.after(() => chsk.disconnect());
  await waitFor(() => chsk.state.open, "open");
  const ws = net.sockets[0];

  await assert.rejects(chsk.call(["a/slow"], { timeout: 20 }), { name: "TimeoutError", kind: "timeout" });

  const failing = chsk.call(["a/fail"], { timeout: 1000 });
  ws.push([["chsk/error", { message: "boom" }], ws.sent.at(-1)[1]]);
  await assert.rejects(failing, (e) => e instanceof Sente.ReplyError && e.kind === "error" && e.message === "boom");

  const serverTimeout = chsk.call(["a/slow"], { timeout: 1000 });
  ws.push([["chsk/timeout"], ws.sent.at(-1)[1]]);
  await assert.rejects(serverTimeout, { kind: "timeout" });

  const viaCallback = new Promise((resolve) => {
    assert.equal(chsk.call(["a/cb"], { timeout: 1000 }, (err, reply) => resolve([err, reply])), true);
  });
  ws.push([["chsk/reply", 42], ws.sent.at(-1)[1]]);
  assert.deepEqual(await viaCallback, [null, 42]);

  const pending = chsk.call(["a/never"], { timeout: 5000 });
  const started = Date.now();
  ws.drop(1001, "server shutting down", true);
  await assert.rejects(pending, { name: "ClosedError", kind: "closed" });
  assert.ok(Date.now() - started < 1000, "fails fast instead of waiting for its timeout");
  assert.deepEqual(closeOf(chsk), { reason: "clean", code: 1001, status: null, message: "server shutting down" });
  // Reconnecting (a 10 s backoff): calls wait for the open within their timeout.
  await assert.rejects(chsk.call(["a/b"], { timeout: 30 }), { kind: "closed", message: /not connected within 30 ms/ });
  chsk.disconnect();
  assert.equal(chsk.send(["a/b"]), false, "a stopped client sends nothing");
  await assert.rejects(chsk.call(["a/b"]), { kind: "closed", message: /not connected \(requested-disconnect\)/ });
  const notSent = await new Promise((resolve) => {
    const sent = chsk.call(["a/b"], {}, (err) => resolve([sent, err.kind]));
  });
  assert.deepEqual(notSent, [false, "closed"]);
  assert.throws(() => chsk.call(["bad"]), TypeError);
  assert.throws(() => chsk.send(["chsk/ws-ping"]), /reserved/);
});

test("auto: WebSocket refused but HTTP works → Ajax, then back up to WebSocket", async (t) => {
  const net = fakeNet();
  let refuseWs = true;
  net.onSocket = (ws) => (refuseWs ? ws.drop() : ws.accept());
  const parked = [];
  net.http = (req) => {
    if (req.url.searchParams.has("handshake")) return json(HANDSHAKE());
    if (req.init.method === "POST") return json([["chsk/reply", req.body[0][1] * 2], null]);
    parked.push(req);
    return "park";
  };
  const chsk = connect(net, { upgradeRetryMs: 40 });
  t.after(() => chsk.disconnect());
  await waitFor(() => chsk.state.open, "open over ajax");
  assert.equal(chsk.state.type, "ajax");
  assert.equal(chsk.state.lastClose.reason, "unexpected");
  assert.match(chsk.state.lastClose.message, /HTTP works/);
  // The probe's handshake is adopted: one handshake GET, then polls.
  assert.equal(net.requests.filter((r) => r.url.searchParams.has("handshake")).length, 1);
  const probe = net.requests[0];
  assert.equal(probe.init.headers["X-CSRF-Token"], "T");
  assert.equal(probe.url.searchParams.get("csrf-token"), null, "Ajax sends the token as a header");
  await waitFor(() => parked.length === 1, "a parked poll");

  assert.equal(await chsk.call(["math/double", 21]), 42);
  const post = net.requests.find((r) => r.init.method === "POST");
  assert.deepEqual(post.body, [["math/double", 21], "ajax"]);
  assert.equal(post.init.headers["Content-Type"], "application/json");

  // Trials keep failing while WebSocket is refused; Ajax stays up.
  await waitFor(() => net.sockets.length >= 3, "upgrade trials");
  assert.equal(chsk.state.type, "ajax");
  refuseWs = false;
  await waitFor(() => chsk.state.type === "ws", "moved up to ws");
  assert.equal(chsk.state.open, true);
  assert.ok(parked.at(-1).init.signal.aborted, "the long-poll stops");
});

test("auto: server down at page load is retried on WebSocket, not downgraded", async (t) => {
  const net = fakeNet();
  let up = false;
  net.onSocket = (ws) => (up ? ws.accept() : ws.drop());
  net.http = () => (up ? json(HANDSHAKE()) : new TypeError("fetch failed"));
  const chsk = connect(net);
  t.after(() => chsk.disconnect());
  await waitFor(() => net.sockets.length >= 3, "retries");
  assert.equal(chsk.state.lastClose.reason, "unexpected");
  assert.match(chsk.state.lastClose.message, /^no response/);
  assert.ok(chsk.state.nextReconnectAt > 0);
  up = true;
  await waitFor(() => chsk.state.open, "open");
  assert.equal(chsk.state.type, "ws");
  assert.equal(chsk.state.nextReconnectAt, null);
});

test("403 on the probe stops retrying and reports the status; reconnect() starts again", async (t) => {
  const net = fakeNet();
  net.onSocket = (ws) => ws.drop();
  net.http = () => text("Bad CSRF token\n", 403);
  const chsk = connect(net);
  t.after(() => chsk.disconnect());
  await waitFor(() => chsk.state.lastClose, "a close");
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(net.sockets.length, 1, "no retry after 403");
  assert.deepEqual(closeOf(chsk), { reason: "rejected", code: null, status: 403, message: "Bad CSRF token" });
  assert.equal(chsk.state.nextReconnectAt, null);

  net.onSocket = (ws) => ws.accept("bob");
  chsk.reconnect();
  await waitFor(() => chsk.state.open, "open after reconnect()");
  assert.equal(chsk.state.uid, "bob");
});

test("ajax: 401 stops; kicked (chsk/close 4001) stops; 1013 makes a new handshake", async (t) => {
  const net = fakeNet();
  net.http = () => text("Unauthorized request", 401);
  const denied = connect(net, { type: "ajax" });
  t.after(() => denied.disconnect());
  await waitFor(() => denied.state.lastClose, "refused");
  assert.equal(denied.state.lastClose.status, 401);
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(net.requests.length, 1);

  const net2 = fakeNet();
  let polls = 0;
  net2.http = (req) => {
    if (req.url.searchParams.has("handshake")) return json(HANDSHAKE());
    polls += 1;
    if (polls === 1) return json([[["a/one", 1]], null]);
    if (polls === 2) return json([["chsk/timeout"], null]);
    if (polls === 3) return json([["chsk/close", { code: 1013, reason: "client too slow" }], null]);
    return json([["chsk/close", { code: 4001, reason: "kicked" }], null]);
  };
  const chsk = connect(net2, { type: "ajax" });
  t.after(() => chsk.disconnect());
  const got = [];
  chsk.on("*", (data, event) => got.push(event));
  const handshakes = [];
  chsk.on("chsk/handshake", (info) => handshakes.push(info));
  await waitFor(() => chsk.state.lastClose && chsk.state.lastClose.reason === "kicked", "kicked");
  assert.deepEqual(got, [["a/one", 1]]);
  assert.equal(handshakes.length, 2, "1013 → a fresh handshake");
  assert.deepEqual(handshakes[0], { uid: "alice", handshakeData: { n: 1 }, type: "ajax", firstHandshake: true, recovered: null });
  assert.equal(handshakes[1].firstHandshake, false);
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(polls, 4, "no polling after a kick");
});

test("WebSocket close 4001 (kicked) does not reconnect; other codes do", async (t) => {
  const net = fakeNet();
  net.onSocket = (ws) => ws.accept();
  const chsk = connect(net);
  t.after(() => chsk.disconnect());
  await waitFor(() => chsk.state.open, "open");
  net.sockets[0].drop(4003, "replaced", true);
  await waitFor(() => net.sockets.length === 2 && chsk.state.open, "reconnected after 4003");
  net.sockets[1].drop(4001, "kicked", true);
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(net.sockets.length, 2);
  assert.deepEqual(closeOf(chsk), { reason: "kicked", code: 4001, status: null, message: "kicked" });
});

test("keep-alive: pings when idle, drops a silent socket and reconnects", async (t) => {
  const net = fakeNet();
  net.onSocket = (ws) => ws.accept();
  const chsk = connect(net, { keepAliveMs: 30, pingTimeoutMs: 30 });
  t.after(() => chsk.disconnect());
  await waitFor(() => chsk.state.open, "open");
  const ws = net.sockets[0];
  await waitFor(() => ws.sent.length === 1, "a ping");
  const [ping, cbId] = ws.sent[0];
  assert.deepEqual(ping, ["chsk/ws-ping"]);
  ws.push([["chsk/reply", "pong"], cbId]); // answered: stays open
  await waitFor(() => ws.sent.length === 2, "the next ping");
  // no answer this time
  await waitFor(() => net.sockets.length === 2, "a new socket");
  assert.equal(ws.closedWith[0], 1000);
  assert.equal(chsk.state.lastClose.reason, "ping-timeout");
});

test("disconnect() closes with 1000 and stays closed", async () => {
  const net = fakeNet();
  net.onSocket = (ws) => ws.accept();
  const chsk = connect(net);
  await waitFor(() => chsk.state.open, "open");
  const pending = chsk.call(["a/b"], { timeout: 5000 });
  chsk.disconnect();
  await assert.rejects(pending, { kind: "closed" });
  assert.deepEqual(net.sockets[0].closedWith, [1000, "requested disconnect"]);
  assert.deepEqual([chsk.state.open, chsk.state.lastClose.reason], [false, "requested-disconnect"]);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(net.sockets.length, 1);
});

test("options are checked up front", () => {
  const net = fakeNet();
  const base = { baseUrl: "http://x/", WebSocket: net.WebSocket, fetch: net.fetch, csrfToken: "" };
  assert.throws(() => Sente.connect("/chsk", { ...base, keepAlive: 5 }), /unknown Sente option "keepAlive"/);
  assert.throws(() => Sente.connect("/chsk", { ...base, type: "sse" }), /type must be/);
  assert.throws(() => Sente.connect("/chsk", { ...base, pingTimeoutMs: -1 }), /pingTimeoutMs/);
  assert.throws(() => Sente.connect("/chsk", { ...base, clientId: "" }), /clientId/);
  assert.throws(() => Sente.connect("/chsk", { ...base, packer: "msgpack" }), /msgpackPacker/);
});

// --- protocol 2: positions ------------------------------------------------------------------

const MARK = (u, b) => ["chsk/pos", { ...(u === null ? {} : { u: ["eu", u] }), ...(b === null ? {} : { "*": ["eb", b] }) }];

test("WebSocket: marks move positions, repeats never reach the app, reconnects send pos", async (t) => {
  const net = fakeNet();
  net.onSocket = (ws) => ws.accept("alice", net.sockets.length > 1
    ? { positions: { u: ["eu", 2], "*": ["eb", 1] }, recovered: true } : {});
  const chsk = connect(net);
  t.after(() => chsk.disconnect());
  const got = [];
  chsk.on("*", (data) => got.push(data));
  const handshakes = [];
  chsk.on("chsk/handshake", (info) => handshakes.push(info));
  await waitFor(() => chsk.state.open, "open");
  assert.equal(posOf(net.sockets[0].url), null, "a first connection brings no positions");
  assert.deepEqual(chsk.positions, { u: ["eu", 0], "*": ["eb", 0] });
  const ws = net.sockets[0];
  ws.push([[["t/n", 1], ["t/n", 2], MARK(2, null)], null]);
  ws.push([[["t/n", 2], MARK(2, null)], null]); // a repeat: moves nothing
  ws.push([[["t/b", 3], MARK(null, 1)], null]);
  assert.deepEqual(got, [1, 2, 3], "once each; the mark is not an event");
  assert.deepEqual(chsk.positions, { u: ["eu", 2], "*": ["eb", 1] });

  ws.drop();
  await waitFor(() => net.sockets.length === 2 && chsk.state.open, "reconnected");
  assert.deepEqual(posOf(net.sockets[1].url), { u: ["eu", 2], "*": ["eb", 1] });
  assert.deepEqual([chsk.state.recovered, handshakes.map((h) => h.recovered)], [true, [null, true]]);
  net.sockets[1].push([[["t/n", 4], MARK(3, null)], null]);
  assert.deepEqual(got, [1, 2, 3, 4]);
});

test("a kick and a change of user drop the positions", async (t) => {
  const net = fakeNet();
  let uid = "alice";
  net.onSocket = (ws) => ws.accept(uid, { positions: { u: [`e-${uid}`, 5] }, recovered: net.sockets.length > 1 ? false : null });
  const chsk = connect(net);
  t.after(() => chsk.disconnect());
  await waitFor(() => chsk.state.open, "open");
  net.sockets[0].drop(4001, "kicked", true);
  await waitFor(() => chsk.state.lastClose && chsk.state.lastClose.reason === "kicked", "kicked");
  assert.equal(chsk.positions, null);
  uid = "bob";
  chsk.reconnect();
  await waitFor(() => chsk.state.open, "open again");
  assert.equal(posOf(net.sockets[1].url), null, "after a kick the client starts afresh");

  // The user changes (a login elsewhere): bob's positions are dropped for carol's.
  const handshakes = [];
  chsk.on("chsk/handshake", (info) => handshakes.push(info));
  net.sockets[1].push([[["t/n", 1], ["chsk/pos", { u: ["e-bob", 6], "*": ["eb", 3] }]], null]);
  uid = "carol";
  net.sockets[1].drop();
  await waitFor(() => net.sockets.length === 3 && chsk.state.open, "reconnected as carol");
  assert.deepEqual(posOf(net.sockets[2].url), { u: ["e-bob", 6], "*": ["eb", 3] });
  assert.deepEqual(chsk.positions, { u: ["e-carol", 5] }, "bob's broadcast position is not kept");
  assert.deepEqual([handshakes[0].uid, handshakes[0].recovered], ["carol", false]);
});

test("Ajax: every GET names the position; a poll past history gets a recovered:false handshake", async (t) => {
  const net = fakeNet();
  let polls = 0;
  net.http = (req) => {
    // As the server: the client's own positions, recovered (what it missed follows).
    if (req.url.searchParams.has("handshake")) return json(HANDSHAKE("alice", { positions: posOf(req.url), recovered: true }));
    polls += 1;
    if (polls === 1) return json([[["t/n", 7], ["t/n", 8], MARK(8, null)], null]);
    if (polls === 2) return new TypeError("the answer was lost in flight");
    if (polls === 3) return json([[["t/n", 8], MARK(8, null)], null]); // sent again (seen: 8)
    if (polls === 4) return json(HANDSHAKE("alice", { positions: { u: ["new", 40] }, recovered: false }));
    return "park";
  };
  const chsk = connect(net, { type: "ajax", positions: { u: ["eu", 6] } });
  t.after(() => chsk.disconnect());
  const got = [];
  chsk.on("*", (data) => got.push(data));
  const recovered = [];
  chsk.on("chsk/handshake", (info) => recovered.push(info.recovered));
  await waitFor(() => polls >= 5, "five polls");
  const gets = net.requests.filter((r) => r.init.method === "GET").map((r) => posOf(r.url));
  assert.deepEqual(gets.slice(0, 6), [
    { u: ["eu", 6] },            // handshake: the app's positions option
    { u: ["eu", 6] },            // poll 1: the handshake's
    { u: ["eu", 8] },            // poll 2: lost → the connection fails
    { u: ["eu", 8] },            // a new handshake, same position
    { u: ["eu", 8] },            // poll 3
    { u: ["eu", 8] },            // poll 4 → recovered: false
  ]);
  assert.deepEqual(posOf(net.requests.at(-1).url), { u: ["new", 40] });
  assert.deepEqual(got, [7, 8], "exactly once");
  assert.deepEqual(recovered, [true, true, false]);
  assert.equal(chsk.state.recovered, false);
  assert.throws(() => connect(net, { positions: { u: "junk" } }), /positions must be/);
});

test("auto: Ajax answers wait while a WebSocket upgrade is tried (no duplicate, no loss)", async (t) => {
  const net = fakeNet();
  const held = [];
  net.onSocket = (ws) => {
    if (net.sockets.length === 1) { ws.drop(); return; } // the first WebSocket: refused → Ajax
    held.push(ws); // trials: answered by the test
  };
  let polls = 0;
  net.http = (req) => {
    if (req.url.searchParams.has("handshake")) return json(HANDSHAKE());
    polls += 1;
    if (polls === 1) return new Promise((r) => setTimeout(() => r(json([[["t/n", 1], MARK(1, null)], null])), 30));
    if (polls === 2) return new Promise((r) => setTimeout(() => r(json([[["t/n", 2], MARK(2, null)], null])), 30));
    return "park";
  };
  const chsk = connect(net, { upgradeRetryMs: 10 });
  t.after(() => chsk.disconnect());
  const got = [];
  chsk.on("*", (data) => got.push(data));
  await waitFor(() => held.length === 1, "an upgrade trial");
  // Poll 1's answer arrives while the trial runs: held, and no further poll is made.
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual([got, polls], [[], 1]);
  assert.deepEqual(posOf(held[0].url), { u: ["eu", 0], "*": ["eb", 0] });
  held[0].drop(); // the trial fails: the held answer is processed, polling goes on
  await waitFor(() => got.length === 1 && polls >= 2, "the held answer");
  assert.deepEqual(got, [1]);
  // Next trial opens: what Ajax held is dropped, the WebSocket replays it from the trial's pos.
  await waitFor(() => held.length === 2, "a second trial");
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual(posOf(held[1].url), { u: ["eu", 1], "*": ["eb", 0] });
  held[1].accept("alice", { positions: { u: ["eu", 1], "*": ["eb", 0] }, recovered: true });
  assert.equal(chsk.state.type, "ws");
  held[1].push([[["t/n", 2], MARK(2, null)], null]);
  assert.deepEqual(got, [1, 2]);
});

test("ajax: the key the server gives (X-Sente-Key) goes back on every later request", async (t) => {
  const net = fakeNet();
  net.onSocket = (ws) => ws.drop();
  const parked = [];
  const keyed = (value, key) => new Response(JSON.stringify(value), {
    headers: key ? { "X-Sente-Key": key } : {},
  });
  net.http = (req) => {
    if (req.url.searchParams.has("handshake")) return keyed(HANDSHAKE(), "K1");
    if (req.init.method === "POST") return keyed([["chsk/reply", 1], null], "K2");
    parked.push(req);
    return "park";
  };
  const chsk = connect(net, { type: "ajax" });
  t.after(() => chsk.disconnect());
  await waitFor(() => parked.length === 1, "a parked poll");
  const handshake = net.requests.find((r) => r.url.searchParams.has("handshake"));
  assert.equal(handshake.init.headers["X-Sente-Key"], undefined, "no key before one is given");
  assert.equal(parked[0].init.headers["X-Sente-Key"], "K1");
  assert.equal(await chsk.call(["t/x", 0]), 1);
  const post = net.requests.find((r) => r.init.method === "POST");
  assert.equal(post.init.headers["X-Sente-Key"], "K1");
  assert.equal(await chsk.call(["t/x", 0]), 1);
  const posts = net.requests.filter((r) => r.init.method === "POST");
  assert.equal(posts[1].init.headers["X-Sente-Key"], "K2", "the latest key given");
});
