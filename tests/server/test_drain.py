"""Issue 14 item 4: a graceful drain on ``server.stop()`` and on gunicorn's SIGTERM.

Handlers in flight finish and their replies go out; parked long-polls are answered with
``chsk/close`` 1001 at once (clients reconnect); then WebSockets are closed with 1001."""
from __future__ import annotations

import json
import os
import signal
import sys
import typing as t

import gevent
import gevent.event
import requests
import websocket

from flask_sente.server import make_server
from tests.helpers import Proc

from .conftest import build_app, ws_connect

GOING_AWAY = [["chsk/close", {"code": 1001, "reason": "server shutting down"}], None]


def _handshake(ws: websocket.WebSocket) -> None:
    assert json.loads(ws.recv())[0][0] == "chsk/handshake"


def _replies_then_close(ws: websocket.WebSocket, n: int) -> tuple[dict[str, t.Any], int]:
    """Read until the close frame: the replies by cb_id, and the close code."""
    replies: dict[str, t.Any] = {}
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return replies, int.from_bytes(data[:2], "big")
        if opcode == websocket.ABNF.OPCODE_TEXT:
            payload, cb_id = json.loads(data)
            if cb_id is not None:
                replies[cb_id] = payload


def test_stop_lets_handlers_finish_and_tells_polls_to_reconnect():
    """``server.stop()`` during three slow WebSocket calls and one Ajax call, with a parked
    poll: the poll is answered ``chsk/close`` 1001 at once, every call gets its reply, then
    the socket is closed with 1001.

    Before: the socket was closed with 1001 at once (the calls failed and the client could
    not know whether the work was done) and the poll got a plain ``chsk/timeout``."""
    app, sente = build_app(lp_timeout=30)
    release = gevent.event.Event()

    @sente.on("t/slow")
    def slow(msg):
        release.wait(10)
        msg.reply({"done": msg.data})

    server = make_server(app, port=0, log=None, graceful_timeout=10)
    server.start()
    url = f"http://127.0.0.1:{server.server_port}/chsk"
    ws = None
    try:
        ws = ws_connect(url.replace("http", "ws") + "?client-id=w&u=ann")
        _handshake(ws)
        for n in range(3):
            ws.send(json.dumps([["t/slow", n], f"c{n}"]))
        session = requests.Session()
        session.get(url, params={"client-id": "a", "u": "bob", "handshake": 1}, timeout=5)
        poll = gevent.spawn(session.get, url, params={"client-id": "a", "u": "bob"}, timeout=10)
        call = gevent.spawn(requests.post, url, params={"client-id": "a2", "u": "bob"},
                            data=json.dumps([["t/slow", "ajax"], "ajax"]), timeout=10,
                            headers={"Content-Type": "application/json"})
        gevent.sleep(0.3)
        stopper = gevent.spawn(server.stop)
        assert poll.get(timeout=5).json() == GOING_AWAY
        release.set()
        replies, code = _replies_then_close(ws, 3)
        assert replies == {f"c{n}": ["chsk/reply", {"done": n}] for n in range(3)}
        assert code == 1001
        assert call.get(timeout=5).json() == [["chsk/reply", {"done": "ajax"}], None]
        stopper.join(timeout=15)
        assert stopper.dead
    finally:
        release.set()
        if ws is not None:
            ws.close()
        server.stop(timeout=1)
        sente.close(app)


def test_gunicorn_sigterm_drains(tmp_path):
    """SIGTERM to gunicorn (``--graceful-timeout 10``) during five 1.5 s WebSocket calls
    and an Ajax call, with a parked poll: every call gets its reply, the poll gets
    ``chsk/close`` 1001, the socket then 1001, and the worker exits in time.

    Before: all calls failed at once with the 1001 close; the poll got no close notice."""
    proc = Proc([sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker",
                 "-b", "127.0.0.1:0", "-w", "1", "--graceful-timeout", "10",
                 "--no-control-socket", "tests.server.drain_app:create_app()"],
                tmp_path, dict(os.environ))
    ws = None
    try:
        port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        proc.wait_for(r"Booting worker")
        url = f"http://127.0.0.1:{port}/chsk"
        ws = ws_connect(f"ws://127.0.0.1:{port}/chsk?client-id=w&u=ann", timeout=15)
        _handshake(ws)
        session = requests.Session()
        session.get(url, params={"client-id": "a", "u": "bob", "handshake": 1}, timeout=5)
        poll = gevent.spawn(session.get, url, params={"client-id": "a", "u": "bob"}, timeout=15)
        call = gevent.spawn(requests.post, url, params={"client-id": "a2", "u": "bob"},
                            data=json.dumps([["t/slow", "ajax"], "ajax"]), timeout=15,
                            headers={"Content-Type": "application/json"})
        for n in range(5):
            ws.send(json.dumps([["t/slow", n], f"c{n}"]))
        gevent.sleep(0.3)
        proc.proc.send_signal(signal.SIGTERM)
        assert poll.get(timeout=10).json() == GOING_AWAY
        replies, code = _replies_then_close(ws, 5)
        assert replies == {f"c{n}": ["chsk/reply", {"done": n}] for n in range(5)}
        assert code == 1001
        ws.close()
        assert call.get(timeout=10).json() == [["chsk/reply", {"done": "ajax"}], None]
        assert proc.terminate(timeout=20) == 0
    finally:
        if ws is not None:
            ws.close()
        proc.kill()
    _out, err = proc.output()
    assert "Worker graceful timeout" not in err, err
    assert "Traceback" not in err, err
