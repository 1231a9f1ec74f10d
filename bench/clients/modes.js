// The workloads, written once over a "dialect" (how one protocol opens a client, echoes,
// triggers a fan-out and counts pushed events). Modes:
//   rtt     closed loop: each client sends an echo request, waits for the answer, repeats;
//           round trips counted in a window after a warm-up                  (W1, W4)
//   fanout  one client asks the server for m events to everybody; time until every client
//           counted m of them (events inside batches count one each)        (W2)
//           With `paced` (bench.cluster): then `paced` events, one every `interval` ms,
//           stamped by the server (a warm-up round, then a measured one); their
//           push->client latency p50/p99.
//   topic   every client joins one topic (a room); one client asks the server to publish m
//           time-stamped events to it; deliveries/s and push -> client latency p50/p99
//   idle    server RSS (from /proc) before / after opening n more clients, then the
//           server's CPU while they sit idle for idleSeconds                  (W3)
//   push    the server pushes its clock to every client (steady: 1/s per user, spread;
//           burst: all at once, once a second); arrival - stamp percentiles (P1, P2)
//   connect n clients opened at once; time until the last is ready          (W5)
//   calls   the server asks the clients (server -> client calls, `python -m bench.calls`):
//           see calls() below
//   listen  clients sit and count what a pusher outside the app sends them, steered on
//           stdin (`python -m bench.capacity`): see listen() below
// A dialect is { open(i, P, stats) -> Promise<client> } with client = { echo(msg, cb(ok)),
// trigger(m), paced(n, ms), pushes(kind, seconds), join(topic, cb), publish(m), close() }
// that calls client.add(k) when k pushed events arrive (and lib.latency for each
// time-stamped one) and client.onPush(stamp) for each push of the push mode. For the calls
// mode a client also has `target` (what the server calls it by), `where(cb(pid))` (the
// server process it is connected to) and `answered` (the calls it answered), and answers
// every call of the server's by returning the call's data.
'use strict';
const lib = require('./lib');

async function run(dialect) {
  const P = lib.params();
  const stats = { errors: 0, closing: false };
  const open = (i) => dialect.open(i, P, stats);
  const closeAll = (clients) => {
    stats.closing = true;
    for (const c of clients) if (c) c.close();
  };
  if (P.mode === 'rtt') {
    const clients = await lib.openMany(P.conns, P.wave || P.conns, open, 60);
    const loop = lib.closedLoop(P.warmup, P.seconds, P.pid);
    clients.forEach((c, i) => {
      const msg = lib.payload(P.size, i);
      const again = () => c.echo(msg, (ok) => {
        if (!ok) stats.errors++;
        loop.tick();
        if (!stats.closing) again();
      });
      again();
    });
    const r = await loop.run();
    closeAll(clients);
    return { ...r, rate: r.count / r.seconds, errors: stats.errors, clients: clients.length };
  }
  if (P.mode === 'fanout') {
    const clients = await lib.openMany(P.conns, P.wave || 200, open, 120);
    await lib.sleep(500);
    if (P.paced) await lib.mark('pushes');
    const r = await lib.fanOutRounds(clients, P.m, P.rounds, () => clients[0].trigger(P.m),
      P.roundTimeout || 120, P.pid);
    let latency = null;
    if (P.paced) {   // then one push every P.interval ms, each stamped: push->client latency
      const paced = await lib.fanOutRounds(clients, P.paced, 1,
        () => clients[0].paced(P.paced, P.interval), P.roundTimeout || 120, null);
      latency = { ...lib.percentiles(), mismatched: paced.mismatched };
      await lib.mark('end');
    }
    closeAll(clients);
    return { ...r, rate: r.deliveries / r.seconds, errors: stats.errors,
      clients: clients.length, latency };
  }
  if (P.mode === 'topic') {
    const clients = await lib.openMany(P.conns, P.wave || 200, open, 120);
    await Promise.all(clients.map((c) => new Promise((resolve, reject) => {
      c.join(P.topic || 'bench/room', (ok) => (ok ? resolve() : reject(new Error('join refused'))));
    })));
    await lib.sleep(500);
    const r = await lib.fanOutRounds(clients, P.m, P.rounds, () => clients[0].publish(P.m),
      P.roundTimeout || 120, P.pid);
    closeAll(clients);
    return { ...r, ...lib.percentiles(), rate: r.deliveries / r.seconds,
      errors: stats.errors, clients: clients.length };
  }
  if (P.mode === 'idle') {
    const warm = await lib.openMany(P.warm, P.warm, (i) => open(P.conns + i), 60);
    await lib.sleep(P.settle * 1000);
    const before = lib.rssKiB(P.pid);
    const clients = await lib.openMany(P.conns, P.wave || 500, open, 300);
    await lib.sleep(P.settle * 1000);
    const after = lib.rssKiB(P.pid);
    // What the idle connections cost the server's core (keep-alive sweeps, timers).
    let idle_cpu = null;
    if (P.idleSeconds) {
      const meter = lib.cpuMeter(P.pid);
      meter.start();
      await lib.sleep(P.idleSeconds * 1000);
      meter.stop();
      idle_cpu = meter.result().server_cpu;
    }
    closeAll(clients);
    closeAll(warm);
    return { before_kib: before, after_kib: after, clients: clients.length,
      kib_per_client: (after - before) / clients.length, errors: stats.errors, idle_cpu };
  }
  if (P.mode === 'push') {
    const clients = await lib.openMany(P.conns, P.wave || 200, open, 120);
    await lib.sleep(500);
    const expected = clients.length * P.seconds;
    const r = await lib.pushLatency(clients, expected, P.seconds,
      () => clients[0].pushes(P.kind, P.seconds), 30, P.pid);
    closeAll(clients);
    return { ...r, errors: stats.errors + Math.abs(expected - r.count),
      clients: clients.length };
  }
  if (P.mode === 'calls') return calls(P, open, closeAll, stats);
  if (P.mode === 'listen') return listen(P, open, closeAll, stats);
  if (P.mode === 'connect') {
    const meter = lib.cpuMeter(P.pid);
    meter.start();
    const t0 = lib.now();
    const clients = await lib.openMany(P.conns, P.conns, open, 120);
    const seconds = lib.now() - t0;
    meter.stop();
    closeAll(clients);
    return { seconds, rate: clients.length / seconds, errors: stats.errors,
      clients: clients.length, ...meter.result() };
  }
  throw new Error(`unknown mode ${P.mode}`);
}

/**
 * Server -> client calls. On one keep-alive HTTP connection (one gunicorn worker):
 * `GET /bench/where` names the process that will call; clients are opened until `conns` of
 * them answer — with `apart` (across workers) only those connected to another process than
 * the caller's count, the others stay open, idle, and there must be at least one of those
 * (a Flask-SocketIO worker starts listening to its message queue at its first Socket.IO
 * connection: without one, no answer from another worker reaches its call()); then `POST /bench/calls` makes the server
 * run `callers` closed loops of calls over them for `warmup` + `seconds` (see
 * bench/servers/calls.py) and answer with the counts, while the server processes' CPU is
 * metered over the measured window.
 */
async function calls(P, open, closeAll, stats) {
  const http = require('http');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const where = async () => (await lib.requestJson(agent, P.port, 'GET', '/bench/where')).body.pid;
  const callerPid = await where();
  const targets = [];
  const idle = [];
  let opened = 0;
  while (targets.length < P.conns || (P.apart && idle.length === 0)) {
    if (opened >= P.conns * (P.maxOpen || 20)) {
      throw new Error(`opened ${opened} clients, only ${targets.length} on another process ` +
        `than the caller's (${callerPid})`);
    }
    const want = Math.max(1, P.conns - targets.length);
    const first = opened;
    const batch = await lib.openMany(want, P.wave || 200, (k) => open(first + k), 60);
    opened += want;
    const pids = await Promise.all(batch.map((c) => new Promise((resolve) => c.where(resolve))));
    batch.forEach((c, k) => {
      c.pid = pids[k];
      if ((P.apart && c.pid === callerPid) || targets.length >= P.conns) idle.push(c);
      else targets.push(c);
    });
  }
  await lib.sleep(300);
  if (await where() !== callerPid) {
    throw new Error('the keep-alive connection to the calling process was lost');
  }
  const pids = [...new Set([callerPid, ...targets.map((c) => c.pid)])];
  const meter = lib.cpuMeters(pids);
  const ran = lib.requestJson(agent, P.port, 'POST', '/bench/calls', {
    targets: targets.map((c) => c.target), callers: P.callers, warmup: P.warmup,
    seconds: P.seconds, size: P.size, timeout: P.timeout, pid: callerPid,
  });
  await lib.sleep(P.warmup * 1000);
  meter.start();
  await lib.sleep(P.seconds * 1000);
  meter.stop();
  const r = await ran;
  await lib.sleep(200);   // answers of calls still in flight
  closeAll(targets.concat(idle));
  agent.destroy();
  if (r.status !== 200) throw new Error(`POST /bench/calls: ${r.status} ${JSON.stringify(r.body)}`);
  const { errors: callErrors, ...result } = r.body;
  return { ...result, ...meter.result(), call_errors: callErrors, errors: stats.errors,
    clients: targets.length, idle: idle.length, caller_pid: callerPid,
    answered: targets.reduce((sum, c) => sum + c.answered, 0) };
}

/**
 * Clients that only listen, for pushes made by another process (`python -m bench.capacity`).
 * Clients open and ask which server process they reached (`where`) until each of `workers`
 * processes has `perWorker` of them (the kernel spreads connections over gunicorn's workers
 * unevenly), at most `maxOpen` in all; those beyond `perWorker` on a process are closed
 * again (and their presence given 3 s to expire) — whatever the spread then, it is reported.
 * Each client kept joins the room `userRoom` + its index if `userRoom` is set
 * (Flask-SocketIO: a room per user) and the topic `topicPrefix` + (index mod `topics`) if
 * `topics` > 0; then `MARK ready {json}` names them (`clients`: [{target, pid, topic}]) and
 * the client reads commands on stdin, one a line:
 *   count <expected> <timeout s>  wait until `expected` events arrived since the last count
 *                                 (or the timeout), 300 ms more for duplicates, then
 *                                 `MARK count {delivered, waited, p50_ms, p99_ms}` (push ->
 *                                 client latency of the stamped events) and start afresh;
 *   quit                          close every client and print the result.
 * The end of stdin is a quit too, so the client never outlives the harness.
 */
async function listen(P, open, closeAll, stats) {
  const readline = require('readline');
  const perWorker = P.perWorker;
  const byPid = new Map();
  const opened = [];
  for (;;) {
    let deficit = Math.max(0, P.workers - byPid.size) * perWorker;
    for (const list of byPid.values()) deficit += Math.max(0, perWorker - list.length);
    if (deficit === 0 || opened.length >= P.maxOpen) break;
    const first = opened.length;
    const batch = await lib.openMany(Math.min(deficit, P.maxOpen - first), P.wave || 50,
      (k) => open(first + k), 120);
    for (const c of batch) {
      opened.push(c);
      c.pid = await new Promise((resolve) => c.where(resolve));
      if (!byPid.has(c.pid)) byPid.set(c.pid, []);
      byPid.get(c.pid).push(c);
    }
  }
  const clients = [];
  const extra = [];
  for (const list of byPid.values()) {
    clients.push(...list.slice(0, perWorker));
    extra.push(...list.slice(perWorker));
  }
  if (extra.length) {   // not errors: closed on purpose (their presence ends meanwhile)
    stats.closing = true;
    for (const c of extra) c.close();
    await lib.sleep(3000);
    stats.closing = false;
  }
  let delivered = 0;
  for (const c of clients) c.add = (k) => { delivered += k; };
  const rows = [];
  for (let i = 0; i < clients.length; i++) {
    const c = clients[i];
    const pid = c.pid;
    const rooms = [];
    if (P.userRoom) rooms.push(P.userRoom + i);
    const topic = P.topics > 0 ? P.topicPrefix + (i % P.topics) : null;
    if (topic !== null) rooms.push(topic);
    for (const room of rooms) {
      const ok = await new Promise((resolve) => c.join(room, resolve));
      if (!ok) throw new Error(`client ${i} could not join ${room}`);
    }
    rows.push({ target: c.target, pid, topic });
  }
  await lib.sleep(300);
  lib.latencies.recording = true;
  lib.latencies.values = [];
  process.stdout.write(`MARK ready ${JSON.stringify({ clients: rows })}\n`);
  const input = readline.createInterface({ input: process.stdin });
  for await (const line of input) {
    const [command, ...args] = line.trim().split(/\s+/);
    if (command === 'count') {
      const expected = Number(args[0]);
      const t0 = lib.now();
      const deadline = t0 + Number(args[1]);
      while (delivered < expected && lib.now() < deadline) await lib.sleep(20);
      const waited = lib.now() - t0;
      await lib.sleep(300);
      const got = delivered;
      delivered = 0;
      const { p50_ms, p99_ms } = lib.percentiles();
      lib.latencies.values = [];
      process.stdout.write(`MARK count ${JSON.stringify({ delivered: got, waited, p50_ms,
        p99_ms, errors: stats.errors })}\n`);
    } else if (command === 'quit') {
      break;
    }
  }
  input.close();
  closeAll(clients);
  return { clients: clients.length, opened: opened.length, errors: stats.errors,
    pids: [...byPid.keys()] };
}

function main(dialect) {
  run(dialect).then(lib.done, (err) => lib.fail(err && err.stack ? err.stack : err));
}

module.exports = { main };
