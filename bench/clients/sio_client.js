// Socket.IO load client (npm `socket.io-client`) for Flask-SocketIO and python-socketio.
// One engine.io connection per client (forceNew), no reconnection, no compression;
// `transport` is "websocket" (W1-W3, W5) or "polling" (W4, with a keep-alive HTTP agent per
// client). Echo = emit("echo", msg, ack); fan-out = emit("start", m), count "ev" events;
// topic = emit("join", room, ack) per client, then emit("publish", m) to the room;
// calls = the server's call("call", data) is acked with its data.
//   node sio_client.js '{"mode": "rtt", "port": 8000, "transport": "websocket", ...}'
'use strict';
const http = require('http');
const { io } = require('socket.io-client');
const modes = require('./modes');
const lib = require('./lib');

const socketio = {
  open(i, P, stats) {
    return new Promise((resolve, reject) => {
      const polling = P.transport === 'polling';
      const s = io(`http://127.0.0.1:${P.port}`, {
        transports: [polling ? 'polling' : 'websocket'],
        upgrade: false,
        forceNew: true,
        reconnection: false,
        perMessageDeflate: false,
        timeout: 120000,
        agent: polling ? new http.Agent({ keepAlive: true }) : undefined,
      });
      const c = { add: null };
      let ready = false;
      s.on('connect', () => { ready = true; c.target = s.id; resolve(c); });
      s.on('connect_error', (err) => { stats.errors++; if (!ready) reject(err); });
      s.on('disconnect', () => { if (!stats.closing) stats.errors++; });
      s.on('ev', (data) => {
        if (Array.isArray(data)) lib.latency(data[1]);          // [i, sent ms]
        if (c.add) c.add(1);
      });
      s.on('push', (stamp) => { if (c.onPush) c.onPush(stamp); });
      c.answered = 0;
      s.on('call', (data, ack) => { c.answered++; ack(data); });
      c.where = (cb) => s.emit('where', (pid) => cb(pid));
      c.echo = (msg, cb) => s.emit('echo', msg, (answer) => cb(answer === msg));
      c.trigger = (m) => s.emit('start', m);
      c.paced = (n, ms) => s.emit('paced', [n, ms]);
      c.join = (room, cb) => s.emit('join', room, (ok) => cb(ok === true));
      c.publish = (m) => s.emit('publish', m);
      c.pushes = (kind, seconds) => s.emit('pushes', kind, seconds);
      c.close = () => s.disconnect();
    });
  },
};

modes.main(socketio);
