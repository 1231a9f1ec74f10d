"""The write-only emitter: from a plain process (no Flask, no gevent) to clients of a
worker, through a real Redis; it raises when Redis is unreachable."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import websocket

from flask_sente.emitter import Emitter
from flask_sente.exceptions import BackplaneError

from .test_backplane import TIMEOUT, numbers, recv, wait_for, worker

EMITTER_SCRIPT = textwrap.dedent("""
    import sys
    from flask_sente.emitter import Emitter
    e = Emitter(sys.argv[1])
    with e.batch():
        for i in range(3):
            e.send("eve", ("t/n", i))
    e.send("eve", ("t/n", 3))
    e.broadcast(("t/n", 4))
    assert "eve" in e.connected_uids.ws, e.connected_uids
    e.kick("eve", "bye")
    bad = [m for m in ("gevent", "flask") if m in sys.modules]
    sys.exit(f"imported {bad}" if bad else 0)
""")


def test_an_emitter_process_reaches_clients_of_a_worker(redis_server):
    with worker(redis_server.url) as (a, sa, _):
        ws = websocket.create_connection(
            a.replace("http", "ws") + "/chsk?client-id=c&u=eve&protocol=2", timeout=TIMEOUT)
        try:
            recv(ws)
            wait_for(lambda: "eve" in sa.connected_uids.ws)
            subprocess.run([sys.executable, "-c", EMITTER_SCRIPT, redis_server.url],
                           check=True, timeout=30)
            got = []
            code = None
            while code is None:
                opcode, data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big")
                else:
                    got.append(json.loads(data))
            assert numbers(got) == [0, 1, 2, 3, 4]       # then the kick, after them
            assert code == 4001
        finally:
            ws.close()


def test_the_emitter_raises_when_redis_is_unreachable(redis_server):
    url = redis_server.url
    redis_server.stop()
    emitter = Emitter(url, socket_timeout=0.5)
    try:
        with pytest.raises(BackplaneError):
            emitter.send("x", ("t/n", 1))
        with pytest.raises(BackplaneError):
            with emitter.batch():
                emitter.broadcast(("t/n", 1))
        with pytest.raises(BackplaneError):
            _ = emitter.connected_uids
    finally:
        emitter.close()
