"""Reconnecting, falling back, moving back up, failing fast, backing off, stopping."""
from __future__ import annotations

import socket
import threading
import typing as t

import pytest
from flask import Flask

from flask_sente import Sente
from flask_sente.client import Client, default_backoff
from flask_sente.exceptions import ConnectionClosed, Rejected, ReplyTimeout
from flask_sente.protocol.backoff import backoff_delay

from .conftest import TIMEOUT, Recorder, Server, WsgiToggle, expected_type, wait_until

# --- backoff ------------------------------------------------------------------------------


def test_default_backoff_schedule_is_immediate_then_doubling_and_capped():
    backoff = default_backoff()
    assert backoff(1) == 0.0
    for attempt in range(2, 80):
        step = min(30.0, 2.0 ** (attempt - 2))
        for _ in range(20):
            delay = backoff(attempt)
            assert step / 2 <= delay <= step  # equal jitter, never above the cap
    # The extremes of the jitter, computed exactly.
    assert backoff_delay(2, 0.0) == 0.5 and backoff_delay(3, 0.0) == 1.0
    assert backoff_delay(7, 0.999) < 30.0 and backoff_delay(500, 0.0) == 15.0
    capped = default_backoff(cap=5.0)
    assert max(capped(n) for n in range(2, 40) for _ in range(10)) <= 5.0


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return t.cast(int, sock.getsockname()[1])


def test_client_counts_attempts_for_its_backoff(make_client, transport):
    """The backoff function gets attempts 1, 2, 3, ... while the server is unreachable, and
    the state shows the failures and the next attempt's time."""
    attempts: list[int] = []
    lock = threading.Lock()

    def backoff(attempt: int) -> float:
        with lock:
            attempts.append(attempt)
        return 0.0 if attempt == 1 else 0.02

    chsk = make_client(f"http://127.0.0.1:{_closed_port()}/chsk", type=transport,
                       backoff=backoff)
    wait_until(lambda: len(attempts) >= 5, message="five attempts")
    assert attempts[:5] == [1, 2, 3, 4, 5]
    state = chsk.state
    assert state.active and not state.open and not state.ever_opened
    assert state.last_close.reason == "unexpected"
    assert state.attempt >= 3
    chsk.disconnect()
    assert not chsk.state.active and chsk.state.next_reconnect is None


def test_a_long_backoff_is_interrupted_by_disconnect_and_close(make_client):
    chsk = make_client(f"http://127.0.0.1:{_closed_port()}/chsk", type="ws",
                       backoff=lambda attempt: 0.0 if attempt == 1 else 3600.0)
    wait_until(lambda: chsk.state.next_reconnect is not None, message="a scheduled retry")
    chsk.close()  # must not wait an hour: the fixture's leak check would catch a stuck thread
    assert not chsk.state.active


# --- restart, pending calls ---------------------------------------------------------------


def test_reconnects_after_the_server_restarts_on_the_same_port(make_client, transport):
    # A short long-poll: while serve() shuts down, an Ajax client's next poll on its
    # keep-alive connection can still be parked, and stopping the server waits for it.
    server = Server(lp_timeout=0.5)
    with server.running():
        chsk = make_client(server.url, type=transport)
        recorder = Recorder(chsk)
        assert chsk.call(("t/echo", 1), timeout=TIMEOUT) == 1
        port = server.port
    wait_until(lambda: not chsk.state.open, message="the client to notice")
    assert chsk.state.active
    with pytest.raises(ConnectionClosed):
        chsk.call(("t/echo", 2), timeout=0.2)  # not open again within the call's timeout
    with server.running(port=port):
        assert chsk.call(("t/echo", 3), timeout=TIMEOUT) == 3
        assert chsk.state.type == expected_type(transport)
        wait_until(lambda: len(recorder.handshakes) >= 2, message="a second handshake")
        chsk.close()  # before the server stops, so no poll is parked while it does
    closes = recorder.closes()
    assert closes and closes[0].reason in ("clean", "unexpected")


def _start_call(chsk: Client, event: t.Any, timeout: float) -> tuple[threading.Thread, list]:
    outcome: list[t.Any] = []

    def run() -> None:
        try:
            outcome.append(chsk.call(event, timeout=timeout))
        except Exception as exc:  # collected for the assertion
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_pending_calls_fail_at_once_when_the_server_drops_the_connection(server, make_client,
                                                                         transport):
    chsk = make_client(server.url, type=transport)
    chsk.wait_open(TIMEOUT)
    thread, outcome = _start_call(chsk, ("t/slow",), timeout=60)
    assert server.slow_started.wait(TIMEOUT)
    server.sente.kick(chsk.state.uid)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    # ConnectionClosed, not ReplyTimeout: it did not wait for its 60 s timeout.
    assert isinstance(outcome[0], ConnectionClosed), outcome
    assert not isinstance(outcome[0], ReplyTimeout)


def test_pending_calls_fail_at_once_on_disconnect(server, make_client, transport):
    chsk = make_client(server.url, type=transport)
    chsk.wait_open(TIMEOUT)
    thread, outcome = _start_call(chsk, ("t/slow",), timeout=60)
    assert server.slow_started.wait(TIMEOUT)
    chsk.disconnect()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert isinstance(outcome[0], ConnectionClosed), outcome


# --- auto mode: fallback and moving back up ---------------------------------------------


def test_auto_falls_back_to_ajax_and_moves_back_up(make_client):
    server = Server()
    toggle = WsgiToggle(server.app.wsgi_app)
    server.app.wsgi_app = toggle  # type: ignore[method-assign]
    with server.running():
        chsk = make_client(server.url, type="auto", upgrade_retry=0.1)
        recorder = Recorder(chsk)
        assert chsk.call(("t/echo", "via ajax"), timeout=TIMEOUT) == "via ajax"
        assert chsk.state.type == "ajax"
        assert chsk.call(("t/push", 1), timeout=TIMEOUT) is True
        assert chsk.receive(timeout=TIMEOUT) == ("t/ev", 1)
        wait_until(lambda: toggle.upgrades >= 3, message="WebSocket retries while on Ajax")
        assert chsk.state.type == "ajax"

        toggle.refuse = False
        wait_until(lambda: chsk.state.type == "ws", message="moving up to WebSocket")
        assert chsk.call(("t/echo", "via ws"), timeout=TIMEOUT) == "via ws"
        assert chsk.call(("t/push", 2), timeout=TIMEOUT) is True
        assert chsk.receive(timeout=TIMEOUT) == ("t/ev", 2)
        # One logical connection: open throughout, no close recorded, two handshakes.
        assert [hs["type"] for hs in recorder.handshakes] == ["ajax", "ws"]
        opened = False
        for old, new in recorder.states:
            if new.open:
                opened = True
            assert not (opened and not new.open), (old, new)
        assert chsk.state.last_close is None

        chsk.reconnect()  # after moving up, a reconnect goes straight to WebSocket
        assert chsk.call(("t/echo", 3), timeout=TIMEOUT) == 3
        assert chsk.state.type == "ws"
        chsk.close()


def test_auto_falls_back_when_the_upgrade_hangs(make_client):
    server = Server()
    toggle = WsgiToggle(server.app.wsgi_app)
    toggle.hold = True
    server.app.wsgi_app = toggle  # type: ignore[method-assign]
    try:
        with server.running():
            chsk = make_client(server.url, type="auto", connect_timeout=0.3,
                               upgrade_retry=None)
            assert chsk.call(("t/echo", 1), timeout=TIMEOUT) == 1
            assert chsk.state.type == "ajax"
            assert toggle.held.is_set()
            toggle.unhold.set()
            chsk.close()
    finally:
        toggle.unhold.set()


def test_auto_uses_ajax_on_a_server_that_cannot_upgrade(make_client):
    """A plain gevent WSGI server (no WebSocket support) answers upgrades with 400."""
    from gevent.pywsgi import WSGIServer

    app = Flask(__name__)
    sente = Sente(app, csrf=False)
    sente.on("t/echo")(lambda msg: msg.reply(msg.data))
    http_server = WSGIServer(("127.0.0.1", 0), app, log=None)
    http_server.start()
    try:
        url = f"http://127.0.0.1:{http_server.server_port}/chsk"
        chsk = make_client(url, type="auto", upgrade_retry=None)
        assert chsk.call(("t/echo", "x"), timeout=TIMEOUT) == "x"
        assert chsk.state.type == "ajax"
        ws_only = make_client(url, type="ws")
        wait_until(lambda: ws_only.state.last_close is not None, message="a refusal")
        assert (ws_only.state.last_close.reason, ws_only.state.last_close.status) == (
            "rejected", 400)
        # Retrying cannot make this server upgrade: a "ws" client stops and says why (an
        # auto one uses Ajax above: a refused upgrade is no reason for it to stop).
        wait_until(lambda: not ws_only.state.active, message="the ws client to stop")
        ws_only.close()
        chsk.close()
    finally:
        sente.close(app)
        http_server.stop(timeout=5)


# --- rejections -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong"])
def test_stops_on_403(make_server, make_client, transport, token):
    server = make_server(csrf=True)
    toggle = WsgiToggle(server.app.wsgi_app)
    toggle.refuse = False
    server.app.wsgi_app = toggle  # type: ignore[method-assign]
    attempts: list[int] = []
    chsk = make_client(server.url, type=transport, csrf_token=token,
                       backoff=lambda n: attempts.append(n) or 0.0)
    wait_until(lambda: not chsk.state.active, message="the client to stop")
    last = chsk.state.last_close
    assert (last.reason, last.status) == ("rejected", 403)
    assert "Bad CSRF token" in last.message
    assert attempts == [1]
    with pytest.raises(Rejected) as info:
        chsk.call(("t/echo", 1), timeout=TIMEOUT)
    assert info.value.status == 403
    with pytest.raises(Rejected):
        chsk.wait_open(TIMEOUT)
    if transport == "auto":
        assert toggle.ajax_requests == 0  # a 403 on the upgrade is no reason to fall back


def test_401_from_the_authorize_hook_stops_too(make_server, make_client, transport):
    server = make_server(authorize=lambda uid, client_id: False)
    chsk = make_client(server.url, type=transport)
    wait_until(lambda: not chsk.state.active, message="the client to stop")
    assert (chsk.state.last_close.reason, chsk.state.last_close.status) == ("rejected", 401)


def test_reconnect_on_auth_failure_keeps_trying(make_server, make_client, transport):
    server = make_server(csrf=True)
    attempts: list[int] = []
    chsk = make_client(server.url, type=transport, reconnect_on_auth_failure=True,
                       backoff=lambda n: attempts.append(n) or (0.0 if n == 1 else 0.02))
    wait_until(lambda: len(attempts) >= 3, message="three attempts")
    assert chsk.state.active
    assert chsk.state.last_close.status == 403


def test_a_rejected_client_can_be_restarted_with_a_good_token(make_server, make_client,
                                                              transport):
    import requests

    server = make_server(csrf=True)
    token: list[str | None] = [None]
    with requests.Session() as session:
        chsk = make_client(server.url, type=transport, cookies=session.cookies,
                           csrf_token=lambda: token[0])
        wait_until(lambda: not chsk.state.active, message="the client to stop")
        token[0] = session.get(server.base + "/token", timeout=TIMEOUT).text
        chsk.reconnect()
        assert chsk.call(("t/echo", "in"), timeout=TIMEOUT) == "in"


class BadPositions:
    """WSGI middleware that, once ``on``, replaces the ``pos`` parameter of every request
    that carries one with a malformed value (the seq -1 of issue 24 #2), so the server
    itself answers ``400 Bad positions`` — to polls, handshakes and WebSocket upgrades."""

    BAD = "pos=%7B%22u%22%3A%5B%22x%22%2C-1%5D%7D"  # {"u":["x",-1]}

    def __init__(self, app: t.Any) -> None:
        self.app = app
        self.on = False
        self.refused = 0

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        query = environ.get("QUERY_STRING", "")
        if self.on and "pos=" in query:
            self.refused += 1
            environ["QUERY_STRING"] = "&".join(
                self.BAD if part.startswith("pos=") else part for part in query.split("&"))
        return self.app(environ, start_response)


@pytest.mark.parametrize("transport, how", [("ajax", "poll"), ("ajax", "reconnect"),
                                            ("ws", "reconnect"), ("auto", "reconnect")])
def test_stops_on_a_refusal_that_retrying_cannot_fix(make_client, transport, how):
    """A 400 (here: the server refusing the positions the client sends, on a poll or on the
    handshake or upgrade of a reconnect) stops the client with the status and the server's
    message, and the app is told by a state change, instead of retrying forever with
    backoff (issue 24). Broken on purpose by leaving 400 out of STOP_STATUSES: the client
    kept reconnecting and stayed active, in all four cases."""
    server = Server(lp_timeout=0.5)  # the parked poll ends soon: the next one carries pos
    bad = BadPositions(server.app.wsgi_app)
    server.app.wsgi_app = bad  # type: ignore[method-assign]
    with server.running():
        attempts: list[int] = []
        chsk = make_client(server.url, type=transport, connect=False,
                           backoff=lambda n: attempts.append(n) or (0.0 if n == 1 else 0.05))
        stopped: list[t.Any] = []
        chsk.on("chsk/state", lambda change: None if change[1].active
                else stopped.append(change[1]))
        chsk.connect()
        assert chsk.wait_open(TIMEOUT)
        bad.on = True
        if how == "reconnect":
            chsk.break_connection()  # the reconnect carries the positions
        wait_until(lambda: stopped, message="the client to stop")
        state = chsk.state
        assert not state.active and not state.open
        assert (state.last_close.reason, state.last_close.status) == ("rejected", 400)
        assert state.last_close.message.startswith("Bad positions"), state.last_close
        assert stopped[-1] == state
        assert len(attempts) == (1 if how == "poll" else 2), attempts  # no retry
        with pytest.raises(Rejected) as refused:
            chsk.call(("t/echo", 1), timeout=TIMEOUT)
        assert refused.value.status == 400
        refusals = bad.refused
        bad.on = False
        chsk.reconnect()  # the app fixed what it could: reconnect() starts anew
        assert chsk.call(("t/echo", "back"), timeout=TIMEOUT) == "back"
        assert bad.refused == refusals
