// In-memory fakes of the server's side of WebSocket and fetch, and helpers, shared by the
// tests that drive sente.js's auto socket (channel.test.mjs, topics.test.mjs).
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const Sente = require("../../flask_sente/static/sente.js");

/** A protocol-3 handshake: positions in both logs, `recovered` null (a first connection). */
export const HANDSHAKE = (uid = "alice", { positions = { u: ["eu", 0], "*": ["eb", 0] }, recovered = null } = {}) =>
  [["chsk/handshake", { uid, handshake_data: { n: 1 }, protocol: 3, positions, recovered }], null];

/** A fake server: records sockets and requests; tests script its answers. */
export function fakeNet() {
  const net = { sockets: [], requests: [], http: null };
  net.WebSocket = class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      net.sockets.push(this);
      if (net.onSocket) queueMicrotask(() => net.onSocket(this));
    }
    send(data) { this.sent.push(JSON.parse(data)); }
    close(code, reason) { this.closedWith = [code, reason]; this.readyState = 3; }
    // server side
    accept(uid = "alice", extra = {}) { this.readyState = 1; this.push(HANDSHAKE(uid, extra)); }
    push(value) { this.onmessage({ data: JSON.stringify(value) }); }
    drop(code = 1006, reason = "", wasClean = false) { this.readyState = 3; this.onclose({ code, reason, wasClean }); }
  };
  /** `net.http(url, init)` returns a Response, a promise of one, or "park" (until aborted). */
  net.fetch = (url, init) => {
    const req = { url: new URL(url), init, body: init.body && JSON.parse(init.body) };
    // The WebSocket ticket fetched before each upgrade (docs/protocol.md §5): always granted.
    if (req.url.searchParams.has("new-ws-ticket")) {
      (net.tickets = net.tickets || []).push(req);
      return Promise.resolve(new Response(`TICKET-${net.tickets.length}`));
    }
    net.requests.push(req);
    return new Promise((resolve, reject) => {
      const abort = () => reject(Object.assign(new Error("aborted"), { name: "AbortError" }));
      if (init.signal.aborted) return abort();
      init.signal.addEventListener("abort", abort);
      Promise.resolve(net.http(req)).then((answer) => {
        if (answer === "park") return;
        if (answer instanceof Error) reject(answer); else resolve(answer);
      });
    });
  };
  return net;
}

export const json = (value, status = 200) => new Response(JSON.stringify(value), { status });
export const text = (body, status) => new Response(body, { status });

/** lastClose without its timestamp, after checking that it has one. */
export function closeOf(chsk) {
  const { at, ...rest } = chsk.state.lastClose;
  assert.ok(Number.isFinite(at) && at <= Date.now(), `lastClose.at ${at}`);
  return rest;
}

export async function waitFor(predicate, what, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

export function connect(net, options = {}) {
  return Sente.connect("/chsk", {
    baseUrl: "http://test.local/page", WebSocket: net.WebSocket, fetch: net.fetch, csrfToken: "T",
    backoffMs: () => 5, ...options,
  });
}

/** The `pos` query parameter of a request URL, parsed (null when absent). */
export const posOf = (url) => { const p = new URL(url).searchParams.get("pos"); return p === null ? null : JSON.parse(p); };
