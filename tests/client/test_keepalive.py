"""Keep-alive in both directions: the client detects a frozen server, and answers the
server's pings so a healthy but quiet connection stays up."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import typing as t

import gevent
import pytest

from .conftest import TIMEOUT, Recorder, wait_until

SCRIPT = pathlib.Path(__file__).with_name("server_process.py")


@pytest.fixture
def server_process() -> t.Iterator[tuple[subprocess.Popen, str]]:
    """A server in a child process (so it can be paused), and its base URL."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            cwd=str(SCRIPT.parent.parent.parent))
    try:
        with gevent.Timeout(30):
            base = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert base.startswith("http://"), base
        yield proc, base
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        proc.stdout.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", ["ws", "auto"])
def test_a_frozen_server_is_detected_by_ping_timeout(server_process, make_client, transport):
    proc, base = server_process
    # A short upgrade_retry: if a WebSocket attempt times out just as the server resumes
    # while Ajax works, auto mode rightly continues on Ajax, and must move back up soon.
    chsk = make_client(base + "/chsk", type=transport, keepalive=0.5, ping_timeout=0.5,
                       connect_timeout=1.0, upgrade_retry=0.2)
    recorder = Recorder(chsk)
    assert chsk.call(("t/echo", "before"), timeout=TIMEOUT) == "before"
    assert chsk.state.type == "ws"

    os.kill(proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: any(c.reason == "ping-timeout" for c in recorder.closes()),
                   message="a ping timeout")
        assert not chsk.state.open and chsk.state.active  # it keeps trying
    finally:
        os.kill(proc.pid, signal.SIGCONT)

    # Once the server runs again, the client is back (on WebSocket) by itself.
    assert chsk.call(("t/echo", "after"), timeout=TIMEOUT) == "after"
    wait_until(lambda: chsk.state.type == "ws", message="WebSocket again")
    chsk.close()


def test_server_pings_are_answered(make_server, make_client):
    """With client pings off, the server's pings (every 0.2 s idle) get pongs, and the quiet
    connection is never closed for a ping timeout."""
    server = make_server(ws_keepalive=0.2, ws_ping_timeout=0.5)
    chsk = make_client(server.url, type="ws", keepalive=None)
    recorder = Recorder(chsk)
    assert chsk.wait_open(TIMEOUT)
    wait_until(lambda: server.pongs >= 3, message="three pongs")
    assert chsk.state.open
    assert len(recorder.handshakes) == 1 and recorder.closes() == []


def test_client_pings_keep_a_quiet_connection_open(make_server, make_client):
    """The client's own pings are answered ("pong" replies) and do not disturb calls."""
    server = make_server(ws_keepalive=None)
    chsk = make_client(server.url, type="ws", keepalive=0.1, ping_timeout=1.0)
    recorder = Recorder(chsk)
    assert chsk.wait_open(TIMEOUT)
    for i in range(5):
        gevent.sleep(0.15)  # idle long enough for a ping each time
        assert chsk.call(("t/echo", i), timeout=TIMEOUT) == i
    assert len(recorder.handshakes) == 1 and recorder.closes() == []
