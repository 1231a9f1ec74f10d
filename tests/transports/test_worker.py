"""The gunicorn worker (``flask_sente.worker.SenteWorker``) and ``flask_sente.server.run``,
each in a subprocess serving ``tests/transports/wsapp.py`` on a free port.

The gunicorn tests also run gevent-websocket's stock ``GeventWebSocketWorker``
(``xfail(strict=True)``) to show what it gets wrong.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import sys
import typing as t
from pathlib import Path

import pytest
import websocket

from tests.helpers import Proc

from .wsutil import PeerClosed, RawClient, read_http_head, read_to_eof

WORKERS = {
    "sente": "flask_sente.worker.SenteWorker",
    "stock": "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
}


def variants(stock_reason: str, raises: type[BaseException]) -> list[t.Any]:
    """Our worker, and the stock one expected to fail with exactly ``raises`` (the failure
    the test is named for); any other error on stock fails the test."""
    return ["sente", pytest.param("stock", marks=pytest.mark.xfail(strict=True, raises=raises,
                                                                   reason=stock_reason))]


def start_gunicorn(tmp_path: Path, variant: str, *extra: str) -> tuple[Proc, int]:
    env = dict(os.environ, WSAPP_STOCK="1" if variant == "stock" else "0")
    proc = Proc([sys.executable, "-m", "gunicorn", "-k", WORKERS[variant],
                 "-b", "127.0.0.1:0", "-w", "1", "--access-logfile", "-",
                 "--graceful-timeout", "3", "--no-control-socket", *extra,
                 "tests.transports.wsapp:create_app()"], tmp_path, env)
    try:
        port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        proc.wait_for(r"Booting worker")
    except BaseException:
        proc.kill()
        raise
    return proc, port


def get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status, _headers, rest = read_http_head(s)
        return status, read_to_eof(s, rest)


@pytest.mark.parametrize("variant", variants("the stock worker writes no access-log lines",
                                               AssertionError))
def test_gunicorn_access_log_and_refusal(tmp_path, variant):
    """gunicorn's access log (``--access-logfile -``) gets a line for a WebSocket request
    (101) and for plain HTTP requests, and a view can refuse the upgrade with 403.

    Fails on stock: the access log stays empty (and the refusal is a 101)."""
    proc, port = start_gunicorn(tmp_path, variant)
    refusal: int | None = None
    try:
        client = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=10)
        try:
            client.send("hello")
            assert client.recv() == "hello"
        finally:
            client.close()
        assert get(port, "/plain") == (200, b"plain ok")
        try:
            websocket.create_connection(f"ws://127.0.0.1:{port}/ws?deny=1", timeout=10).close()
        except websocket.WebSocketBadStatusException as ex:
            refusal = ex.status_code
    finally:
        code = proc.terminate()
    out, err = proc.output()
    assert code == 0, err
    assert re.search(r'"GET /ws HTTP/1\.1" 101 ', out), out
    assert re.search(r'"GET /plain HTTP/1\.1" 200 ', out), out
    assert refusal == 403
    assert re.search(r'"GET /ws\?deny=1 HTTP/1\.1" 403 ', out), out
    assert "Traceback" not in err
    assert "--keep-alive" not in err  # not set: nothing to warn about


def test_gunicorn_keep_alive_set_is_said_not_to_apply(tmp_path):
    """``--keep-alive`` does not apply to the worker (idle connections close after the
    header timeout): setting it gets a warning at start that says what applies instead."""
    proc, port = start_gunicorn(tmp_path, "sente", "--keep-alive", "75")
    try:
        warning = proc.wait_for(r"--keep-alive 75 has no effect with SenteWorker.*?"
                                r"header timeout: ([^.]+)\.").group(1)
        assert get(port, "/plain") == (200, b"plain ok")
    finally:
        assert proc.terminate() == 0
    assert warning == "10 s"


@pytest.mark.parametrize("variant", variants("the stock worker exits without close frames",
                                               PeerClosed))
def test_gunicorn_sigterm_sends_1001(tmp_path, variant):
    """SIGTERM to gunicorn: every open WebSocket gets close 1001 before the worker exits,
    and the worker then exits promptly (well inside the 3 s graceful timeout).

    Fails on stock: no close frame; the connection just drops after the graceful timeout."""
    proc, port = start_gunicorn(tmp_path, variant)
    clients: list[RawClient] = []
    try:
        for _ in range(2):
            client = RawClient(port)
            clients.append(client)
            client.sock.settimeout(10)
            client.send_frame(0x1, b"hi")
            assert client.read_frame() == (True, 0x1, b"hi")
        proc.proc.send_signal(signal.SIGTERM)
        for client in clients:
            assert client.read_close() == (1001, "server shutting down")
            client.send_frame(0x8, (1001).to_bytes(2, "big"))
        assert proc.terminate() == 0
    finally:
        for client in clients:
            client.close()
        proc.kill()
    _out, err = proc.output()
    assert "Worker graceful timeout" not in err
    assert "Traceback" not in err


def test_the_worker_freezes_the_objects_alive_once_the_app_is_loaded(tmp_path):
    """``server.freeze_startup_objects``: full collections no longer scan the modules and
    the app (the process under test reports ``gc.get_freeze_count()``)."""
    proc, port = start_gunicorn(tmp_path, "sente")
    try:
        status, body = get(port, "/gc-frozen")
    finally:
        assert proc.terminate() == 0
    assert status == 200 and int(body) > 1000


def test_run_serves_and_stops_on_sigterm(tmp_path):
    """``flask_sente.server.run`` serves HTTP and WebSocket; SIGTERM sends close 1001 to the
    open socket and the process exits with status 0, no traceback."""
    proc = Proc([sys.executable, "-m", "tests.transports.wsapp"], tmp_path, dict(os.environ))
    try:
        port = int(proc.wait_for(r"serving on http://127\.0\.0\.1:(\d+)").group(1))
        assert get(port, "/plain") == (200, b"plain ok")
        status, frozen = get(port, "/gc-frozen")  # run() froze the startup objects
        assert status == 200 and int(frozen) > 1000
        with RawClient(port) as client:
            client.sock.settimeout(10)
            client.send_frame(0x1, b"hi")
            assert client.read_frame() == (True, 0x1, b"hi")
            proc.proc.send_signal(signal.SIGTERM)
            assert client.read_close() == (1001, "server shutting down")
            client.send_frame(0x8, (1001).to_bytes(2, "big"))
            # Wait for the exit the first SIGTERM started: a second one (what terminate()
            # sends when the process is still stopping, on a loaded machine) is the
            # impatient user's, and ends it at once with -15.
            assert proc.proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    out, err = proc.output()
    assert "Traceback" not in err, err
    assert '"GET /ws HTTP/1.1" 101' in err  # the default access log is stderr
