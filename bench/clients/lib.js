// Shared helpers of the Node.js load clients: parameters, results, timing, RSS, waves.
// Load clients are independent of the code under test: plain npm `ws` /
// `socket.io-client` and Node's own `http`, speaking each server's wire protocol.
'use strict';
const fs = require('fs');

/** The run's parameters: one JSON object in argv[2]. */
function params() {
  return JSON.parse(process.argv[2]);
}

/** Print the result as the last line of stdout and exit. */
function done(result) {
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
}

function fail(message) {
  process.stderr.write(String(message) + '\n', () => process.exit(1));
}

const now = () => Number(process.hrtime.bigint()) / 1e9;
/** Tell the bench a phase starts or ends (`MARK name` on stdout; bench.cluster reads
 * Redis's counters there), then give it a moment to do so. */
async function mark(name) {
  process.stdout.write(`MARK ${name}\n`);
  await sleep(200);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resident set size of a process, in KiB (from /proc). */
function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** CPU seconds (user + system) a process has used so far, from /proc (100 Hz ticks). */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * Busy fractions of one core, the server's (if `pid`) and this client's, over one or more
 * windows: `start()` / `stop()` pairs accumulate; `result()` -> { server_cpu, client_cpu }.
 */
function cpuMeter(pid) {
  let t0, s0, c0;
  let wall = 0, server = 0, client = 0;
  return {
    start() { t0 = now(); s0 = pid ? cpuSeconds(pid) : 0; c0 = process.cpuUsage(); },
    stop() {
      wall += now() - t0;
      if (pid) server += cpuSeconds(pid) - s0;
      const c = process.cpuUsage(c0);
      client += (c.user + c.system) / 1e6;
    },
    result() {
      return { server_cpu: pid ? server / wall : null, client_cpu: client / wall };
    },
  };
}

/**
 * The same for several server processes (a gunicorn master's workers): `result()` ->
 * { server_cpu: the sum of their busy fractions, server_cpu_by_pid, client_cpu }.
 */
function cpuMeters(pids) {
  const meters = pids.map((pid) => cpuMeter(pid));
  return {
    start() { meters.forEach((m) => m.start()); },
    stop() { meters.forEach((m) => m.stop()); },
    result() {
      const each = meters.map((m) => m.result());
      const byPid = {};
      pids.forEach((pid, k) => { byPid[pid] = each[k].server_cpu; });
      return { server_cpu: each.reduce((sum, r) => sum + r.server_cpu, 0),
        server_cpu_by_pid: byPid, client_cpu: each.length ? each[0].client_cpu : null };
    },
  };
}

/**
 * A JSON request to the server under test on one keep-alive connection (`agent`, an
 * http.Agent with keepAlive and maxSockets 1: the same worker of a gunicorn server every
 * time, while the connection lasts). Resolves { status, body }.
 */
function requestJson(agent, port, method, path, body) {
  const http = require('http');
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const req = http.request({ host: '127.0.0.1', port, method, path, agent,
      headers: data ? { 'Content-Type': 'application/json', 'Content-Length': data.length }
        : {} }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        try { resolve({ status: res.statusCode, body: JSON.parse(text) }); } catch (e) {
          reject(new Error(`${method} ${path}: ${res.statusCode} ${text.slice(0, 300)}`));
        }
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

/** A payload of `size` characters that differs per connection (no caching tricks). */
function payload(size, i) {
  const head = `c${i}:`;
  return head + 'x'.repeat(Math.max(0, size - head.length));
}

/**
 * Open `n` clients with `open(i) -> Promise<client>`, at most `wave` at a time (all at once
 * when wave >= n). Rejects after `timeoutS` seconds.
 */
async function openMany(n, wave, open, timeoutS) {
  const clients = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      clients[i] = await open(i);
    }
  };
  const workers = [];
  for (let k = 0; k < Math.min(wave, n); k++) workers.push(worker());
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`opening ${n} clients timed out`)),
      timeoutS * 1000);
  });
  try {
    await Promise.race([Promise.all(workers), timeout]);
  } finally {
    clearTimeout(timer);
  }
  return clients;
}

/**
 * Closed-loop measurement: `start()` kicks off every client's loop; the clients call
 * `tick()` per round trip. Counts round trips in a window of `seconds` after `warmup`.
 */
function closedLoop(warmup, seconds, pid) {
  const state = { measuring: false, count: 0 };
  const meter = cpuMeter(pid);
  state.tick = () => { if (state.measuring) state.count++; };
  state.run = async () => {
    await sleep(warmup * 1000);
    state.measuring = true;
    meter.start();
    const t0 = now();
    await sleep(seconds * 1000);
    state.measuring = false;
    meter.stop();
    return { count: state.count, seconds: now() - t0, ...meter.result() };
  };
  return state;
}

/**
 * Fan-out rounds: `trigger()` asks the server for `m` events per client; each client calls
 * its `add(k)` as k events arrive. A round ends when every client has m. Returns deliveries
 * and seconds summed over the measured rounds (one warm-up round first), and `mismatched`:
 * clients that had not exactly m events 200 ms after their round (lost or duplicated).
 */
// Push -> client latencies (ms) of time-stamped events, recorded while ``recording`` (the
// measured rounds, not the warm-up). Server and client share this machine's clock.
const latencies = { recording: false, values: [] };

function latency(sentMs) {
  if (latencies.recording && typeof sentMs === 'number') latencies.values.push(Date.now() - sentMs);
}

function percentiles() {
  const v = latencies.values.slice().sort((a, b) => a - b);
  const at = (q) => (v.length ? v[Math.min(v.length - 1, Math.floor(q * v.length))] : null);
  return { p50_ms: at(0.5), p99_ms: at(0.99), samples: v.length };
}

async function fanOutRounds(clients, m, rounds, trigger, timeoutS, pid) {
  let total = 0;
  let seconds = 0;
  let mismatched = 0;
  const meter = cpuMeter(pid);
  for (let r = 0; r <= rounds; r++) {
    latencies.recording = r > 0;
    for (const c of clients) c.received = 0;
    let pending = clients.length;
    let finish;
    const finished = new Promise((resolve) => { finish = resolve; });
    for (const c of clients) {
      c.add = (k) => {
        const before = c.received;
        c.received += k;
        if (before < m && c.received >= m && --pending === 0) finish();
      };
    }
    if (r > 0) meter.start();
    const t0 = now();
    trigger();
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(
        `fan-out round timed out: ${pending} of ${clients.length} clients incomplete`)),
      timeoutS * 1000);
    });
    try {
      await Promise.race([finished, timeout]);
    } finally {
      clearTimeout(timer);
    }
    const dt = now() - t0;
    if (r > 0) { meter.stop(); total += clients.length * m; seconds += dt; }
    await sleep(200);  // let stragglers arrive before the next round resets the counters
    for (const c of clients) if (c.received !== m) mismatched++;
  }
  return { deliveries: total, seconds, mismatched, ...meter.result() };
}

/** The wall clock in ms (the servers stamp their pushes with theirs: same machine). */
function wallMs() {
  return performance.timeOrigin + performance.now();
}

/**
 * Push latency: `trigger()` asks the server for `expected` pushes in all, each stamped with
 * the server's wall clock; every client calls its `onPush(stamp)` as one arrives. Waits for
 * all of them (or `seconds + timeoutS`), then the percentiles of arrival - stamp, in ms.
 */
async function pushLatency(clients, expected, seconds, trigger, timeoutS, pid) {
  const samples = [];
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  for (const c of clients) {
    c.onPush = (stamp) => {
      samples.push(wallMs() - Number(stamp));
      if (samples.length === expected) finish();
    };
  }
  const meter = cpuMeter(pid);
  meter.start();
  trigger();
  let timer;
  await Promise.race([finished, new Promise((resolve) => {
    timer = setTimeout(resolve, (seconds + timeoutS) * 1000);
  })]);
  clearTimeout(timer);
  meter.stop();
  await sleep(200);  // duplicates would show as more than expected
  const sorted = samples.slice().sort((a, b) => a - b);
  const q = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1,
    Math.floor(p * sorted.length))] : null);
  return { count: samples.length, expected, p50: q(0.5), p99: q(0.99),
    max: sorted.length ? sorted[sorted.length - 1] : null, ...meter.result() };
}

module.exports = {
  params, done, fail, now, sleep, rssKiB, cpuSeconds, cpuMeter, cpuMeters, requestJson,
  payload, openMany,
  closedLoop, fanOutRounds, latency, latencies, percentiles, mark, pushLatency,
};
