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
// A dialect is { open(i, P, stats) -> Promise<client> } with client = { echo(msg, cb(ok)),
// trigger(m), paced(n, ms), pushes(kind, seconds), join(topic, cb), publish(m), close() }
// that calls client.add(k) when k pushed events arrive (and lib.latency for each
// time-stamped one) and client.onPush(stamp) for each push of the push mode.
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

function main(dialect) {
  run(dialect).then(lib.done, (err) => lib.fail(err && err.stack ? err.stack : err));
}

module.exports = { main };
