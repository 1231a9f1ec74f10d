// The reconnect rules sente.js shares with the Python client, as pure functions: the flap
// guard (when the attempt count starts again) and auto mode's transport choice, checked
// against tests/vectors/auto_mode.json, the vectors the Python client's tests run too.
// The same rules against a real server: tests/browser/test_auto_mode_rule.py and
// tests/browser/test_browser_client.py::test_replaced_clients_back_off_instead_of_flapping.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const Sente = require("../../flask_sente/static/sente.js");
const P = Sente.protocol;
const VECTORS = JSON.parse(readFileSync(new URL("../vectors/auto_mode.json", import.meta.url), "utf8"));

// --- flap guard ---------------------------------------------------------------------------

test("flap guard: only a connection that stayed up starts the attempt count again", () => {
  assert.equal(P.STABLE_AFTER_MS, 2000, "the Python client's STABLE_AFTER");
  // Failures before any open keep counting: 1, 2, 3, ...
  assert.deepEqual([0, 1, 2].map((n) => P.nextAttempt(n, null)), [1, 2, 3]);
  // A connection that closed at once after its handshake does not reset the count...
  assert.equal(P.nextAttempt(0, 5), 1);
  assert.equal(P.nextAttempt(3, 0), 4);
  assert.equal(P.nextAttempt(3, 1999), 4);
  // ...one that stayed up does: its loss is retried at once (attempt 1).
  assert.equal(P.nextAttempt(3, 2000), 1);
  assert.equal(P.nextAttempt(7, 60000), 1);
  assert.equal(P.nextAttempt(3, 100, 50), 1, "the threshold is a parameter");
});

test("flap guard: a server that accepts and closes at once is not hammered", () => {
  // Replay a 4003 ping-pong: every connection opens and is closed 1 ms later. Without the
  // guard each close would be attempt 1, which has no delay.
  let attempt = 0;
  let waited = 0;
  for (let i = 0; i < 12; i++) {
    attempt = P.nextAttempt(attempt, 1);
    waited += P.backoffDelay(attempt, 0.5);
  }
  assert.equal(attempt, 12);
  assert.ok(waited > 60000, `twelve flaps take over a minute of backoff, not ${waited} ms`);
});

// --- auto mode: the decisions -----------------------------------------------------------

test("after a WebSocket fails before opening, the Ajax probe decides", () => {
  const ok = { status: 200, handshake: { kind: "handshake" } };
  const down = { status: 0, handshake: null };
  assert.equal(P.afterWsFailure({ auto: true, probe: ok }), "downgrade");
  // The rule does not look at whether a WebSocket opened before: a restart shows up as a
  // probe with no response, not as a working probe (see the vectors).
  assert.equal(P.afterWsFailure({ auto: true, wsEverOpened: true, probe: ok }), "downgrade");
  assert.equal(P.afterWsFailure({ auto: false, probe: ok }), "retry", "type ws never downgrades");
  // Server briefly down at page load: no permanent downgrade (Sente's pitfall).
  assert.equal(P.afterWsFailure({ auto: true, probe: down }), "retry");
  assert.equal(P.afterWsFailure({ auto: true, probe: { status: 403, handshake: null } }), "stop");
  assert.equal(P.afterWsFailure({ auto: false, probe: { status: 401, handshake: null } }), "stop");
  assert.equal(P.afterWsFailure({ auto: true, probe: { status: 401, handshake: null }, reconnectOnAuthFailure: true }), "retry");
  assert.equal(P.afterWsFailure({ auto: true, probe: { status: 400, handshake: null } }), "stop");
  assert.equal(P.afterWsFailure({ auto: true, probe: { status: 502, handshake: null } }), "retry");
});

test("the first transport of an attempt: auto goes to Ajax directly only while WebSocket is known blocked", () => {
  const first = (o) => P.firstTransport(o);
  assert.equal(first({ type: "ws", wsBlockedForMs: 0 }), "ws");
  assert.equal(first({ type: "ajax" }), "ajax");
  assert.equal(first({ type: "auto" }), "ws");
  assert.equal(first({ type: "auto", hasWebSocket: false }), "ajax");
  // Blocked 10 s ago, retried every 30 s: Ajax directly; after 30 s: WebSocket first again.
  assert.equal(first({ type: "auto", wsBlockedForMs: 10000, upgradeRetryMs: 30000 }), "ajax");
  assert.equal(first({ type: "auto", wsBlockedForMs: 30000, upgradeRetryMs: 30000 }), "ws");
  // Upgrade retries off: Ajax until reconnect() (which forgets the block).
  assert.equal(first({ type: "auto", wsBlockedForMs: 1e9, upgradeRetryMs: null }), "ajax");
});

// --- auto mode: the shared vectors --------------------------------------------------------

/**
 * Where a sente.js client settles in a scenario of the vectors, computed with the pure
 * functions the socket uses: the transport of the attempt after the drop, then (if that is
 * a WebSocket that fails) the probe's verdict.
 */
function settle({ before, ws, http }) {
  const blockedForMs = before === "ajax-fallback" ? 0 : null;
  const kind = P.firstTransport({ type: "auto", wsBlockedForMs: blockedForMs, upgradeRetryMs: null });
  const typeBefore = { fresh: "auto", "ws-opened": "ws", "ajax-fallback": "ajax" }[before];
  const httpOutcome = () => {
    if (http === "handshakes") return { open: true, type: "ajax" };
    if (http === "403") return { open: false, stopped: true, reason: "rejected", status: 403 };
    return { open: false, stopped: false, reason: "unexpected", type: typeBefore };
  };
  if (kind === "ajax") return httpOutcome();
  if (ws === "accepts" && http !== "down") return { open: true, type: "ws" };
  const probe = http === "handshakes" ? { status: 200, handshake: {} }
    : { status: http === "403" ? 403 : 0, handshake: null };
  // wsEverOpened is what Sente's rule (and sente.js's before) looked at; the rule must not.
  const verdict = P.afterWsFailure({ auto: true, wsEverOpened: before !== "fresh", probe });
  if (verdict === "downgrade") return { open: true, type: "ajax" };
  if (verdict === "stop") return httpOutcome();
  return { open: false, stopped: false, reason: "unexpected", type: typeBefore };
}

test("the shared auto-mode vectors", async (t) => {
  assert.ok(VECTORS.scenarios.length >= 9);
  for (const scenario of VECTORS.scenarios) {
    await t.test(scenario.name, () => {
      const got = settle(scenario);
      const expected = scenario.expect;
      // Compare the keys the vector states (a vector may leave one open).
      assert.deepEqual(Object.fromEntries(Object.keys(expected).map((k) => [k, got[k]])), expected);
    });
  }
});
