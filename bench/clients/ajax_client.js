// flask_sente's Ajax transport over Node's own `http` (docs/protocol.md §6): each client
// does a handshake GET, keeps one long-poll GET parked (re-polling when it is answered),
// and POSTs events with cb id "ajax" in a closed loop on a keep-alive connection; the
// POST's response is the reply. Every request after the handshake carries the fast-path
// key the server last gave (X-Sente-Key, docs/protocol.md §6). Modes "rtt" (W4) and
// "idle" (W3A).
//   node ajax_client.js '{"mode": "rtt", "port": 8000, "conns": 10, ...}'
'use strict';
const http = require('http');
const modes = require('./modes');

const RUN = Math.random().toString(36).slice(2, 8);

function request(port, agent, method, path, body, key) {
  return new Promise((resolve, reject) => {
    const headers = body === undefined ? {} : {
      'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body),
    };
    if (key.value) headers['X-Sente-Key'] = key.value;
    const req = http.request({ host: '127.0.0.1', port, method, path, agent, headers },
      (res) => {
        if (res.headers['x-sente-key']) key.value = res.headers['x-sente-key'];
        const chunks = [];
        res.on('data', (d) => chunks.push(d));
        res.on('end', () => resolve({ status: res.statusCode,
          text: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      });
    req.on('error', reject);
    req.end(body);
  });
}

const ajax = {
  async open(i, P, stats) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const pollAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const path = `/chsk?client-id=${RUN}-${i}&protocol=1&packer=json`;
    const key = { value: null };
    const hs = await request(P.port, agent, 'GET', path + '&handshake=1', undefined, key);
    if (hs.status !== 200 || JSON.parse(hs.text)[0][0] !== 'chsk/handshake') {
      throw new Error(`bad handshake: ${hs.status} ${hs.text}`);
    }
    const c = { add: null, closed: false };
    const poll = () => {
      request(P.port, pollAgent, 'GET', path, undefined, key).then((res) => {
        if (res.status !== 200) stats.errors++;
        if (!c.closed) poll();
      }, () => { if (!c.closed) stats.errors++; });
    };
    poll();
    c.echo = (msg, cb) => {
      request(P.port, agent, 'POST', path, JSON.stringify([['bench/echo', msg], 'ajax']), key)
        .then((res) => {
          let ok = res.status === 200;
          if (ok) {
            const answer = JSON.parse(res.text);
            ok = answer[0][0] === 'chsk/reply' && answer[0][1] === msg && answer[1] === null;
          }
          cb(ok);
        }, () => { if (!c.closed) cb(false); });
    };
    c.trigger = () => { throw new Error('no fan-out over this client'); };
    c.close = () => { c.closed = true; agent.destroy(); pollAgent.destroy(); };
    return c;
  },
};

modes.main(ajax);
