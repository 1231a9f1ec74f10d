// WebSocket load client (npm `ws`) for flask_sente's wire protocol ("sente", as described
// in docs/protocol.md) and for the raw gevent-websocket echo server ("raw").
//   node ws_client.js '{"dialect": "sente", "mode": "rtt", "port": 8000, ...}'
'use strict';
const WebSocket = require('ws');
const modes = require('./modes');
const lib = require('./lib');

const RUN = Math.random().toString(36).slice(2, 8);

function connect(url, stats, onReady, onMessage, reject) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  let ready = false;
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? data : data.toString();
    if (!ready) {
      if (onReady(text)) { ready = true; } else { stats.errors++; }
      return;
    }
    onMessage(text);
  });
  ws.on('error', (err) => { stats.errors++; if (!ready) reject(err); });
  ws.on('close', () => { if (!stats.closing) stats.errors++; });
  return { ws, isReady: () => ready, markReady: () => { ready = true; } };
}

const sente = {
  open(i, P, stats) {
    return new Promise((resolve, reject) => {
      const url = `ws://127.0.0.1:${P.port}/chsk?client-id=${RUN}-${i}&protocol=${P.protocol || 1}&packer=json`;
      const c = { pending: null, cbid: null, len: 0, seq: 0, add: null, answered: 0,
        target: `${RUN}-${i}` };
      // A server -> client call (protocol 3, flask_sente/protocol/calls.py): answered with
      // its data if it is bench/call; a call id seen twice is an error (no reconnects here).
      const seen = new Set();
      const answer = (call) => {
        if (seen.has(call.id)) { stats.errors++; return; }
        seen.add(call.id);
        c.answered++;
        const [eventId, data] = call.event;
        c.ws.send(JSON.stringify([['chsk/answer', eventId === 'bench/call'
          ? { id: call.id, value: data }
          : { id: call.id, error: { kind: 'no-handler', message: eventId } }], null]));
      };
      const onReady = (text) => {
        const msg = JSON.parse(text);
        if (msg[0][0] !== 'chsk/handshake') return false;
        resolve(c);
        return true;
      };
      const onMessage = (text) => {
        let msg;
        try { msg = JSON.parse(text); } catch (e) { stats.errors++; return; }
        const payload = msg[0];
        if (msg[1] === 'where') {                  // bench/where's reply: the server's pid
          const cb = c.located;
          c.located = null;
          if (cb) cb(payload[1]);
        } else if (msg[1] === 'join') {            // a topic join's reply
          const cb = c.joined;
          c.joined = null;
          if (cb) cb(payload[0] === 'chsk/reply' && payload[1] && payload[1].ok === true);
        } else if (msg[1] !== null) {              // a reply, tagged with our cb id
          const cb = c.pending;
          c.pending = null;
          const ok = msg[1] === c.cbid && payload[0] === 'chsk/reply' &&
            typeof payload[1] === 'string' && payload[1].length === c.len;
          if (cb) cb(ok); else stats.errors++;
        } else if (Array.isArray(payload[0])) {    // a push batch: count the events
          let k = 0;
          for (const ev of payload) {
            if (ev[0] === 'bench/ev') {
              k++;
              if (Array.isArray(ev[1])) lib.latency(ev[1][1]);   // [i, sent ms]
            } else if (ev[0] === 'chsk/topic') {     // ["chsk/topic", [topic, ["bench/ev", [i, ms]]]]
              k++;
              lib.latency(ev[1][1][1][1]);
            } else if (ev[0] === 'bench/push' && c.onPush) {
              c.onPush(ev[1]);
            } else if (ev[0] === 'chsk/call') {      // protocol 3: answer with the data
              answer(ev[1]);
            }
          }
          if (c.add) c.add(k);
        } else if (payload[0] === 'chsk/ws-ping') {
          c.ws.send('[["chsk/ws-pong"],null]');
        }
      };
      const conn = connect(url, stats, onReady, onMessage, reject);
      c.ws = conn.ws;
      c.echo = (msg, cb) => {
        c.cbid = 'k' + (c.seq++).toString(36);
        c.len = msg.length;
        c.pending = cb;
        c.ws.send(JSON.stringify([['bench/echo', msg], c.cbid]));
      };
      c.trigger = (m) => c.ws.send(JSON.stringify([['bench/start', m], null]));
      c.paced = (n, ms) => c.ws.send(JSON.stringify([['bench/paced', [n, ms]], null]));
      c.where = (cb) => {
        c.located = cb;
        c.ws.send(JSON.stringify([['bench/where'], 'where']));
      };
      c.join = (topic, cb) => {
        c.joined = cb;
        c.ws.send(JSON.stringify([['chsk/join', { topic }], 'join']));
      };
      c.publish = (m) => c.ws.send(JSON.stringify([['bench/publish', m], null]));
      c.pushes = (kind, seconds) =>
        c.ws.send(JSON.stringify([['bench/pushes', [kind, seconds]], null]));
      c.close = () => c.ws.terminate();
    });
  },
};

const raw = {
  open(i, P, stats) {
    return new Promise((resolve, reject) => {
      const c = { pending: null, len: 0, add: null };
      const onMessage = (text) => {
        if (text.startsWith('ev ')) { if (c.add) c.add(1); return; }
        if (text.startsWith('push ')) { if (c.onPush) c.onPush(text.slice(5)); return; }
        const cb = c.pending;
        c.pending = null;
        if (cb) cb(text.length === c.len); else stats.errors++;
      };
      const conn = connect(`ws://127.0.0.1:${P.port}/`, stats, () => false, onMessage, reject);
      c.ws = conn.ws;
      c.ws.on('open', () => { conn.markReady(); resolve(c); });
      c.echo = (msg, cb) => { c.len = msg.length; c.pending = cb; c.ws.send(msg); };
      c.trigger = (m) => c.ws.send(`start ${m}`);
      c.pushes = (kind, seconds) => c.ws.send(`pushes ${kind} ${seconds}`);
      c.close = () => c.ws.terminate();
    });
  },
};

const dialects = { sente, raw };
const P = lib.params();
if (!dialects[P.dialect]) lib.fail(`unknown dialect ${P.dialect}`);
else modes.main(dialects[P.dialect]);
