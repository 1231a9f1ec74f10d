"""Issue 14 item 1: header timeout, connection limit, running out of descriptors, for the
embedded server (in-process and ``run`` in a subprocess) and gunicorn's ``SenteWorker``."""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
import typing as t

import gevent
import pytest
from gevent.monkey import get_original

from flask_sente.server import make_server
from tests.helpers import Proc

from .test_worker import get
from .wsapp import create_app
from .wsutil import RawClient, read_http_head

PARTIAL = b"GET /plain HTTP/1.1\r\nHost: x\r\nX-Slow: "   # a request head never finished


def _outcome(sock: socket.socket) -> str:
    """What a stalled client gets: ``"503"``, ``"closed"`` (EOF or reset, no response)."""
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return "closed"
    if not data:
        return "closed"
    assert data.startswith(b"HTTP/1.1 503 "), data
    assert b"Retry-After: 1" in data
    return "503"


def _stall(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(PARTIAL)
        socks.append(s)
    return socks


@pytest.fixture
def served() -> t.Iterator[t.Callable[..., t.Any]]:
    servers = []

    def start(**kw: t.Any) -> t.Any:
        server = make_server(create_app(), port=0, log=None, **kw)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(timeout=1)


def test_header_timeout_closes_stalled_requests(served):
    """Connections that send part of a request head and stall are closed once the header
    timeout passes; a WebSocket (whose head was complete) outlives it.

    Before: every stalled connection was held for as long as the client liked."""
    server = served(header_timeout=0.5)
    port = server.server_port
    with RawClient(port) as ws:     # a complete upgrade: not subject to the header timeout
        socks = _stall(port, 20)
        try:
            started = time.monotonic()
            assert [_outcome(s) for s in socks] == ["closed"] * 20
            assert time.monotonic() - started < 0.5 + 5   # it closes at all, in bounded time
        finally:
            for s in socks:
                s.close()
        gevent.sleep(0.6)
        ws.sock.settimeout(5)
        ws.send_frame(0x1, b"still here")
        assert ws.read_frame() == (True, 0x1, b"still here")
    assert get(port, "/plain") == (200, b"plain ok")


def test_connection_limit_answers_503_at_once(served):
    """Beyond ``max_connections`` a new connection gets a 503 with Retry-After at once;
    once connections end, new ones are served again.

    Before: no limit; the server took connections until it ran out of descriptors."""
    server = served(max_connections=5, header_timeout=30)
    port = server.server_port
    socks = _stall(port, 5)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            extra.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _rest = read_http_head(extra)
            assert status == 503 and headers["retry-after"] == "1"
    finally:
        for s in socks:
            s.close()
    with gevent.Timeout(5, AssertionError("never served again")):
        while True:
            try:
                if get(port, "/plain") == (200, b"plain ok"):
                    break
            except ConnectionError:
                pass
            gevent.sleep(0.05)


@pytest.mark.parametrize("limit", ["default", "none"])
def test_out_of_descriptors_no_traceback(tmp_path, limit):
    """``flask_sente.run`` with ``ulimit -n 64`` and 100 stalled connections: every client
    gets a 503 or is closed by the header timeout; the server then serves again, and its
    log has no traceback. ``default``: the connection limit (from the descriptor limit)
    answers first; ``none``: no limit, accept() itself fails with EMFILE.

    Before: 23 EMFILE tracebacks in the log and the server down until clients gave up."""
    env = dict(os.environ, WSAPP_NOFILE="64", WSAPP_HEADER_TIMEOUT="1")
    if limit == "none":
        env["WSAPP_MAX_CONNECTIONS"] = "none"
    proc = Proc([sys.executable, "-m", "tests.transports.wsapp"], tmp_path, env)
    socks: list[socket.socket] = []
    try:
        port = int(proc.wait_for(r"serving on http://127\.0\.0\.1:(\d+)").group(1))
        socks = _stall(port, 100)
        outcomes = [_outcome(s) for s in socks]
        assert set(outcomes) <= {"503", "closed"}
        assert outcomes.count("503") >= 30, (outcomes, proc.output())
        for s in socks:
            s.close()
        with gevent.Timeout(10, AssertionError("never served again")):
            while True:
                try:
                    if get(port, "/plain") == (200, b"plain ok"):
                        break
                except ConnectionError:
                    pass
                gevent.sleep(0.1)
        assert proc.terminate() == 0
    finally:
        for s in socks:
            s.close()
        proc.kill()
    _out, err = proc.output()
    assert "Traceback" not in err, err
    assert err.count("out of file descriptors") <= 2 and err.count("refusing new") <= 2, err


def test_gunicorn_worker_limits(tmp_path):
    """``SenteWorker`` with ``--worker-connections 10`` and ``FLASK_SENTE_HEADER_TIMEOUT=1``:
    stalled connections beyond 10 get a 503 at once, the 10 others are closed by the header
    timeout, and the worker serves again, without a traceback.

    Before: the worker stopped accepting with a full pool (the extra clients waited in the
    backlog with no answer) and held stalled connections forever."""
    env = dict(os.environ, FLASK_SENTE_HEADER_TIMEOUT="1")
    proc = Proc([sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker",
                 "-b", "127.0.0.1:0", "-w", "1", "--worker-connections", "10",
                 "--graceful-timeout", "3", "--no-control-socket",
                 "tests.transports.wsapp:create_app()"], tmp_path, env)
    socks: list[socket.socket] = []
    try:
        port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        proc.wait_for(r"Booting worker")
        socks = _stall(port, 15)
        outcomes = [_outcome(s) for s in socks]
        assert sorted(outcomes) == ["503"] * 5 + ["closed"] * 10, outcomes
        for s in socks:
            s.close()
        with gevent.Timeout(10, AssertionError("never served again")):
            while get(port, "/plain") != (200, b"plain ok"):
                gevent.sleep(0.1)
        assert proc.terminate() == 0
    finally:
        for s in socks:
            s.close()
        proc.kill()
    _out, err = proc.output()
    assert "Traceback" not in err, err


KEEP_ALIVE_GET = b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response on a keep-alive connection (with a Content-Length); (status, body)."""
    status, headers, rest = read_http_head(sock)
    assert headers.get("connection", "keep-alive").lower() != "close", headers
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        rest += chunk
    return status, rest


def test_keep_alive_request_arriving_with_the_idle_timeout_is_served(served):
    """A request that reached a keep-alive connection in the same turn of the event loop in
    which its idle time (the header timeout) ran out is answered, not dropped by closing
    the connection under it. The event loop is held (a blocking sleep) past the timeout;
    then a timer of the test sends the request just before the header timer fires, which is
    what a busy worker sees when both are due at once.

    Before: the connection was closed with the request unread, and the client
    (``requests.Session`` under ``gunicorn -w 3``) got ``RemoteDisconnected`` on a POST."""
    server = served(header_timeout=0.3)
    hold_event_loop = get_original("time", "sleep")
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
        sock.sendall(KEEP_ALIVE_GET)
        assert _read_response(sock) == (200, b"plain ok")
        gevent.sleep(0.05)                      # the server waits for the next request
        # Default priority: runs before the header timer (gevent's timeouts run last).
        sender = gevent.get_hub().loop.timer(0.1)
        sender.start(sock.send, KEEP_ALIVE_GET)
        try:
            hold_event_loop(0.5)
            assert _read_response(sock) == (200, b"plain ok")
        finally:
            sender.close()
        # Once really idle, the connection is closed by the timeout as before.
        assert sock.recv(4096) == b""


def test_keep_alive_request_sent_as_a_stopped_worker_times_out_is_served(tmp_path):
    """The same under gunicorn: the worker is stopped (SIGSTOP) while the idle timeout
    passes and the next request arrives, so both are due when it runs again. (Which one the
    event loop takes first varies here; the test above forces the order.)"""
    env = dict(os.environ, FLASK_SENTE_HEADER_TIMEOUT="0.5")
    proc = Proc([sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker",
                 "-b", "127.0.0.1:0", "-w", "1", "--graceful-timeout", "3",
                 "--no-control-socket", "tests.transports.wsapp:create_app()"], tmp_path, env)
    worker = 0
    try:
        port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        worker = int(proc.wait_for(r"Booting worker with pid: (\d+)").group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(KEEP_ALIVE_GET)
            assert _read_response(sock) == (200, b"plain ok")
            os.kill(worker, signal.SIGSTOP)
            try:
                time.sleep(0.8)                 # the idle timeout passes...
                sock.sendall(KEEP_ALIVE_GET)
                time.sleep(0.2)                 # ...and the next request arrives
            finally:
                os.kill(worker, signal.SIGCONT)
            assert _read_response(sock) == (200, b"plain ok")
            # The connection still obeys the idle timeout once it is really idle.
            sock.settimeout(5)
            assert sock.recv(4096) == b""
        assert proc.terminate() == 0
    finally:
        if worker:
            try:
                os.kill(worker, signal.SIGCONT)
            except OSError:
                pass
        proc.kill()
    _out, err = proc.output()
    assert "Traceback" not in err, err
