// WebSocket echo load client of `python -m bench.echo` (issue 2), npm `ws`: N connections in
// a closed loop, round trips counted over a window after a warm-up.
//   node echo_client.js URL CONNECTIONS WARMUP_S DURATION_S SIZE
'use strict';
const WebSocket = require('ws');
const [url, nConns, warmupS, durationS, size] = process.argv.slice(2);
const msg = 'x'.repeat(Number(size));
const conns = [];
let measuring = false, count = 0, errors = 0, opened = 0;
for (let i = 0; i < Number(nConns); i++) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('open', () => { opened++; ws.send(msg); });
  ws.on('message', (data) => {
    if (data.length !== msg.length) errors++;
    if (measuring) count++;
    ws.send(msg);
  });
  ws.on('error', () => { errors++; });
  conns.push(ws);
}
setTimeout(() => {
  measuring = true;
  const t0 = process.hrtime.bigint();
  setTimeout(() => {
    measuring = false;
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(JSON.stringify({ roundtrips: count, seconds, errors, opened }));
    for (const ws of conns) ws.terminate();
    process.exit(0);
  }, Number(durationS) * 1000);
}, Number(warmupS) * 1000);
