// Issue 14, the browser client's side: the WebSocket ticket (the CSRF token out of URLs)
// and an Ajax poll answered chsk/close 1001 by a stopping server (reconnect).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const Sente = require("../../flask_sente/static/sente.js");

const HANDSHAKE = [["chsk/handshake", { uid: "alice", handshake_data: null, protocol: 3,
  positions: { u: ["e1", 0], "*": ["e2", 0] }, recovered: null }], null];
const json = (value, status = 200) => new Response(JSON.stringify(value), { status });

async function waitFor(predicate, what, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function fakeFetch(answer) {
  const requests = [];
  const fetch = (url, init) => {
    const req = { url: new URL(url), init };
    requests.push(req);
    return new Promise((resolve, reject) => {
      const abort = () => reject(Object.assign(new Error("aborted"), { name: "AbortError" }));
      if (init.signal && init.signal.aborted) return abort();
      if (init.signal) init.signal.addEventListener("abort", abort);
      Promise.resolve(answer(req)).then((res) => { if (res !== "park") resolve(res); });
    });
  };
  return { fetch, requests };
}

class FakeWebSocket {
  static made = [];
  constructor(url) { this.url = url; this.readyState = 0; FakeWebSocket.made.push(this); queueMicrotask(() => this.accept()); }
  accept() { this.readyState = 1; this.onmessage({ data: JSON.stringify(HANDSHAKE) }); }
  send() {}
  close() { this.readyState = 3; }
}

test("WebSocket: a ticket fetched with the token in a header goes in the URL, never the token", async (t) => {
  FakeWebSocket.made = [];
  const net = fakeFetch((req) => new Response(req.url.searchParams.has("new-ws-ticket") ? "1.n.sig\n" : "", { status: 200 }));
  const chsk = Sente.connect("/chsk", { baseUrl: "http://test.local/", WebSocket: FakeWebSocket, fetch: net.fetch,
    csrfToken: "SECRET", type: "ws", backoffMs: () => 5 });
  t.after(() => chsk.disconnect());
  await waitFor(() => chsk.state.open, "open");
  assert.equal(net.requests.length, 1);
  assert.equal(net.requests[0].url.searchParams.get("new-ws-ticket"), "1");
  assert.equal(net.requests[0].init.headers["X-CSRF-Token"], "SECRET");
  const url = new URL(FakeWebSocket.made[0].url);
  assert.equal(url.searchParams.get("ws-ticket"), "1.n.sig");
  assert.ok(!FakeWebSocket.made[0].url.includes("SECRET"));
});

test("WebSocket: a refused ticket stops like a refused upgrade (403 probe)", async (t) => {
  FakeWebSocket.made = [];
  const net = fakeFetch(() => new Response("Bad CSRF token\n", { status: 403 }));
  const chsk = Sente.connect("/chsk", { baseUrl: "http://test.local/", WebSocket: FakeWebSocket, fetch: net.fetch,
    csrfToken: "T", type: "ws", backoffMs: () => 5 });
  t.after(() => chsk.disconnect());
  await waitFor(() => chsk.state.lastClose, "a close");
  assert.equal(FakeWebSocket.made.length, 0, "no socket without a ticket");
  assert.deepEqual([chsk.state.lastClose.reason, chsk.state.lastClose.status], ["rejected", 403]);
});

test("ajax: a poll answered chsk/close 1001 (server stopping) reconnects with a new handshake", async (t) => {
  let handshakes = 0;
  let polls = 0;
  const net = fakeFetch((req) => {
    if (req.url.searchParams.has("handshake")) { handshakes += 1; return json(HANDSHAKE); }
    polls += 1;
    if (polls === 1) return json([["chsk/close", { code: 1001, reason: "server shutting down" }], null]);
    return "park";
  });
  const chsk = Sente.connect("/chsk", { baseUrl: "http://test.local/", fetch: net.fetch, csrfToken: "T",
    type: "ajax", backoffMs: () => 5 });
  t.after(() => chsk.disconnect());
  await waitFor(() => handshakes === 2 && chsk.state.open, "a second handshake");
  assert.deepEqual([chsk.state.lastClose.reason, chsk.state.lastClose.code], ["clean", 1001]);
});
