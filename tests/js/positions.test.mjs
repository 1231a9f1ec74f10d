// Protocol 2's pure position handling in sente.js (docs/protocol.md §10): reading positions,
// the `pos` parameter, marks moving positions forward, and the dedupe decision that keeps a
// batch seen before from reaching the app. The channel's use of them: channel.test.mjs
// (fakes) and tests/browser/test_replay_browser.py (a real server behind a cutting proxy).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const Sente = require("../../flask_sente/static/sente.js");
const P = Sente.protocol;

const AT = (u, b) => ({ u: ["eu", u], "*": ["eb", b] });
const mark = (data) => ["chsk/pos", data];

test("readPositions accepts {log: [epoch, seq]} only, and freezes a copy", () => {
  const src = { u: ["k3J9xQ2a", 42], "*": ["Zz", 0] };
  const pos = P.readPositions(src);
  assert.deepEqual(pos, src);
  assert.notEqual(pos, src);
  assert.ok(Object.isFrozen(pos) && Object.isFrozen(pos.u));
  for (const bad of [null, undefined, 7, "x", [], { u: "e" }, { u: ["e"] }, { u: ["e", 1, 2] },
    { u: [1, 1] }, { u: ["e", -1] }, { u: ["e", 1.5] }, { u: ["e", "1"] }, { u: ["e", 1], b: null }]) {
    assert.equal(P.readPositions(bad), null, JSON.stringify(bad));
  }
  assert.equal(P.readPositions({}), null, "positions in no log say nothing");
});

test("the pos parameter is the positions' JSON, absent before any; buildUrl encodes it", () => {
  assert.equal(P.posParam(null), null);
  const pos = P.readPositions({ u: ["a b&c", 3], "*": ["e", 0] });
  assert.equal(P.posParam(pos), '{"u":["a b&c",3],"*":["e",0]}');
  const url = new URL(P.buildUrl("http://h/", "/chsk", { "client-id": "c", pos: P.posParam(pos) }));
  assert.equal(url.search.includes("{"), false, "URL-encoded");
  assert.deepEqual(JSON.parse(url.searchParams.get("pos")), { u: ["a b&c", 3], "*": ["e", 0] });
  assert.equal(P.buildUrl("http://h/", "/chsk", { "client-id": "c", pos: P.posParam(null) }),
    "http://h/chsk?client-id=c", "a first connection sends no pos");
});

test("a protocol-2 handshake's positions replace the client's; protocol 1 has none", () => {
  assert.deepEqual(P.positionsAfterHandshake({ protocol: 2, positions: AT(5, 9), recovered: true }), AT(5, 9));
  assert.equal(P.positionsAfterHandshake({ protocol: 1, uid: "a" }), null);
  assert.equal(P.positionsAfterHandshake({ protocol: 2, positions: { u: "junk" } }), null);
});

test("marks move positions forward, never back within an epoch", () => {
  const at = P.readPositions(AT(5, 9));
  assert.deepEqual(P.positionsAfterMark(at, P.readPositions({ u: ["eu", 7] })), AT(7, 9));
  assert.deepEqual(P.positionsAfterMark(at, P.readPositions({ u: ["eu", 3] })), AT(5, 9), "not back");
  assert.deepEqual(P.positionsAfterMark(at, P.readPositions({ u: ["new", 1] })),
    { u: ["new", 1], "*": ["eb", 9] }, "another epoch is a new history");
  assert.deepEqual(P.positionsAfterMark(null, P.readPositions({ u: ["eu", 1] })), { u: ["eu", 1] });
  assert.equal(P.positionsAfterMark(at, null), at);
});

test("isSeenMark: a batch that moves no position was processed already", () => {
  const at = P.readPositions(AT(5, 9));
  const seen = (m) => P.isSeenMark(at, P.readPositions(m));
  assert.equal(seen({ u: ["eu", 5] }), true);
  assert.equal(seen({ u: ["eu", 4], "*": ["eb", 9] }), true);
  assert.equal(seen({ u: ["eu", 6] }), false);
  assert.equal(seen({ u: ["eu", 5], "*": ["eb", 10] }), false, "one log moved: new");
  assert.equal(seen({ u: ["other", 1] }), false, "another epoch");
  assert.equal(seen({ topic: ["t", 1] }), false, "a log the client did not know");
  assert.equal(P.isSeenMark(null, P.readPositions({ u: ["eu", 1] })), false);
  assert.equal(P.isSeenMark(at, null), false);
});

test("takeBatch: the mark is taken off, positions adopted, a repeat delivers nothing", () => {
  let pos = P.readPositions(AT(0, 0));
  const batch = [["t/n", 1], ["t/n", 2], mark({ u: ["eu", 2] })];
  const first = P.takeBatch(pos, batch);
  assert.deepEqual(first.events, [["t/n", 1], ["t/n", 2]]);
  assert.deepEqual(first.positions, AT(2, 0));
  assert.equal(first.seen, false);
  pos = first.positions;
  const again = P.takeBatch(pos, batch); // e.g. an overlapping replay
  assert.deepEqual([again.events, again.seen], [[], true]);
  assert.equal(again.positions, pos);
  const next = P.takeBatch(pos, [["b/x", 1], mark({ "*": ["eb", 1] })]);
  assert.deepEqual([next.events, next.positions], [[["b/x", 1]], AT(2, 1)]);
  // Protocol 1 (no mark): delivered, nothing moves.
  const v1 = P.takeBatch(pos, [["t/n", 3]]);
  assert.deepEqual([v1.events, v1.positions, v1.seen], [[["t/n", 3]], pos, false]);
  // Unknown chsk/ events stay for the channel to ignore; only the final mark is protocol.
  const later = P.takeBatch(pos, [["chsk/later", 1], ["t/n", 3], mark({ u: ["eu", 3] })]);
  assert.deepEqual(later.events, [["chsk/later", 1], ["t/n", 3]]);
});

test("decodeServer reads a batch with its mark as events", () => {
  const m = P.decodeServer([[["t/n", 1], ["chsk/pos", { u: ["eu", 1] }]], null]);
  assert.equal(m.kind, "events");
  assert.deepEqual(P.batchMark(m.events), { u: ["eu", 1] });
});
