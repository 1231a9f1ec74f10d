"""The hardened WebSocket handler and socket (flask_sente.transports.websocket) on real sockets.

Tests of a fix run twice: against our handler ("sente") and against stock gevent-websocket
0.10.1 ("stock", marked ``xfail(strict=True)``), so the suite itself shows stock failing the
same check (by assertion or a bounded socket timeout, never a hang). Each stock variant names
the exception it must fail with (``raises=``), so an unrelated error on stock fails the test
instead of passing as the expected failure (shown once by setting every ``raises`` to
``KeyError``: all 30 stock variants then failed).
"""
from __future__ import annotations

import gc
import io
import os
import socket
import struct
import typing as t

import gevent
import gevent.event
import pytest
import websocket
from flask import Flask, request
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler as StockHandler

from flask_sente.exceptions import ConnectionClosed, LocalProtocolError
from flask_sente.server import make_server
from flask_sente.transports import base
from flask_sente.transports.base import UPGRADE_ENVIRON_KEY
from flask_sente.transports.frames import ServerWebSocket, _unmask

from .wsutil import (
    TIMEOUT,
    RawClient,
    close_of,
    handshake_request,
    open_ws,
    read_http_head,
    read_to_eof,
)


def variants(stock_reason: str, raises: type[BaseException] | tuple[type[BaseException], ...]
             ) -> list[t.Any]:
    """Our handler, and stock expected to fail with exactly ``raises``: the failure the test
    is named for (found by running the stock variant with ``--runxfail``). Any other error
    on stock — a refused connection, a bug in the test — fails the test."""
    return ["sente", pytest.param("stock", marks=pytest.mark.xfail(strict=True, raises=raises,
                                                                   reason=stock_reason))]


#: How the stock server shows it dropped the connection right after the 101.
DROPPED = (BrokenPipeError, ConnectionResetError, websocket.WebSocketConnectionClosedException)


def make_app(variant: str) -> tuple[Flask, t.Callable[..., t.Any]]:
    """A Flask app and the decorator for WebSocket routes (stock needs ``websocket=True``
    or Werkzeug refuses the already-upgraded request inside the app)."""
    app = Flask(__name__)

    def ws_route(path: str, **kw: t.Any) -> t.Any:
        return app.route(path, websocket=(variant == "stock"), **kw)

    return app, ws_route


@pytest.fixture
def serve() -> t.Iterator[t.Callable[..., WSGIServer]]:
    servers: list[WSGIServer] = []

    def start(app: Flask, variant: str = "sente", **kw: t.Any) -> WSGIServer:
        kw.setdefault("log", None)
        if variant == "sente":
            server = make_server(app, **kw)
        else:
            server = WSGIServer(("127.0.0.1", 0), app, handler_class=StockHandler,
                                spawn=Pool(), **kw)
        server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop(timeout=3)


def ws_url(server: WSGIServer, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.server_port}{path}"


def echo_app(variant: str, seen: list[t.Any] | None = None, **accept_kw: t.Any) -> Flask:
    app, ws_route = make_app(variant)

    @ws_route("/ws")
    def ws() -> str:
        conn = open_ws(request.environ, **accept_kw)
        try:
            while True:
                msg = conn.receive()
                if msg == "close-4000":
                    conn.close(4000, "bye")
                else:
                    conn.send(msg)
        except ConnectionClosed as ex:
            if seen is not None:
                seen.append((conn.close_code, ex))
        return ""

    return app


# --- close codes ----------------------------------------------------------------------

@pytest.mark.parametrize("variant", variants("stock close() puts only the reason on the wire",
                    websocket.WebSocketProtocolException))
def test_server_close_code_and_reason_reach_client(serve, variant):
    """A server close(4000, "bye") arrives as code 4000, reason "bye".

    Fails on stock: its close frame payload is just b"bye" (no code)."""
    server = serve(echo_app(variant), variant)
    client = websocket.create_connection(ws_url(server), timeout=TIMEOUT)
    try:
        client.send("close-4000")
        opcode, frame = client.recv_data_frame(True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert close_of(frame.data) == (4000, "bye")
    finally:
        client.close()


@pytest.mark.parametrize("variant", variants("stock echoes the reason text as the code",
                                               AssertionError))
def test_client_close_code_seen_by_server(serve, variant):
    """A client's close(4001, "client-bye") is seen as 4001 by the server, which echoes
    the code in its reply.

    Fails on stock: its reply payload is b"client-bye", read as a garbage code."""
    seen: list[t.Any] = []
    server = serve(echo_app(variant, seen), variant)
    client = websocket.create_connection(ws_url(server), timeout=TIMEOUT)
    client.close(4001, "client-bye")
    assert client.close_frame is not None
    assert close_of(client.close_frame.data)[0] == 4001
    with gevent.Timeout(TIMEOUT):
        while not seen:
            gevent.sleep(0.01)
    code, ex = seen[0]
    assert code == 4001
    assert (ex.code, ex.reason) == (4001, "client-bye")


# --- serialized writes ----------------------------------------------------------------

@pytest.mark.parametrize(
    "variant", variants("stock has no write lock: ConcurrentObjectUseError, lost frames",
                        AssertionError))
def test_concurrent_senders_with_slow_reader(serve, variant):
    """Four greenlets each send five 512 KiB frames while the client is not reading: every
    frame arrives intact, in each sender's order, and no sender raises.

    Fails on stock: the second writer gets ConcurrentObjectUseError and its frames are lost."""
    senders, per_sender, size = 4, 5, 512 * 1024
    errors: list[str] = []
    app, ws_route = make_app(variant)

    @ws_route("/ws")
    def ws() -> str:
        conn = open_ws(request.environ)

        def send_all(i: int) -> None:
            try:
                for k in range(per_sender):
                    conn.send(bytes([i, k]) + bytes([(i * 16 + k) % 251]) * size)
            except BaseException as ex:  # noqa: BLE001 - the test reports what happened
                errors.append(repr(ex))

        greenlets = [gevent.spawn(send_all, i) for i in range(senders)]
        gevent.joinall(greenlets, timeout=30)
        gevent.killall(greenlets)
        conn.close(1000)
        return ""

    server = serve(app, variant)
    client = websocket.create_connection(ws_url(server), timeout=10)
    try:
        gevent.sleep(1.0)  # a slow reader: the server's writes block meanwhile
        got: list[bytes] = []
        while True:
            opcode, frame = client.recv_data_frame(True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            got.append(frame.data)
    finally:
        client.close()
    assert errors == []
    assert len(got) == senders * per_sender
    last = {i: -1 for i in range(senders)}
    for data in got:
        i, k = data[0], data[1]
        assert len(data) == size + 2
        assert data[2:] == bytes([(i * 16 + k) % 251]) * size, "corrupted frame"
        assert k == last[i] + 1, "frames of one sender reordered or lost"
        last[i] = k


# --- size limit -----------------------------------------------------------------------

@pytest.mark.parametrize("variant", variants("stock trusts the declared length", TimeoutError))
def test_oversized_frame_refused_from_header(serve, variant):
    """A frame header declaring 2 MiB (default limit 1 MiB) gets close 1009 at once, before
    the payload is sent (the client sends only the header and 10 bytes).

    Fails on stock: it waits to buffer the whole declared payload (socket timeout)."""
    server = serve(echo_app(variant), variant)
    with RawClient(server.server_port) as client:
        client.sock.settimeout(3)
        client.send_frame(0x2, b"0123456789", declared=2 * 1024 * 1024)
        assert client.read_close()[0] == 1009


@pytest.mark.parametrize("variant", variants("stock has no limit across fragments",
                                               AssertionError))
def test_size_limit_across_fragments(serve, variant):
    """With accept(max_message_size=1000), three 400-byte fragments of one message get close
    1009 when the third header arrives, while a 1000-byte message still echoes.

    Fails on stock: no limit, the 1200-byte message is echoed."""
    accept_kw = {"max_message_size": 1000} if variant == "sente" else {}
    server = serve(echo_app(variant, **accept_kw), variant)
    with RawClient(server.server_port) as client:
        client.sock.settimeout(3)
        client.send_frame(0x2, b"a" * 1000)
        assert client.read_frame() == (True, 0x2, b"a" * 1000)
        client.send_frame(0x2, b"b" * 400, fin=False)
        client.send_frame(0x0, b"b" * 400, fin=False)
        client.send_frame(0x0, b"b" * 400, fin=True)
        _fin, op, payload = client.read_frame()
        assert op == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1009


def test_one_mebibyte_message_under_default_limit(serve):
    """Exactly 1 MiB (the default limit) is accepted; unmasking at C speed round-trips it."""
    server = serve(echo_app("sente"))
    client = websocket.create_connection(ws_url(server), timeout=TIMEOUT)
    try:
        data = os.urandom(1 << 20)
        client.send_binary(data)
        assert client.recv() == data
    finally:
        client.close()


# --- frame validation -----------------------------------------------------------------

@pytest.mark.parametrize("variant", variants("stock's close frame carries no code",
                                               AssertionError))
def test_invalid_utf8_closes_1007(serve, variant):
    """Invalid UTF-8 in a text frame gets close 1007.

    Fails on stock: it closes, but its close frame has an empty payload (no 1007)."""
    server = serve(echo_app(variant), variant)
    with RawClient(server.server_port) as client:
        client.sock.settimeout(3)
        client.send_frame(0x1, b"ok \xff\xfe")
        assert client.read_close()[0] == 1007


def test_invalid_utf8_across_fragments_closes_1007(serve):
    """UTF-8 is checked incrementally over fragments: a sequence split across two fragments
    is fine, an invalid continuation byte in the second fragment gets 1007."""
    server = serve(echo_app("sente"))
    with RawClient(server.server_port) as client:
        euro = "€".encode()
        client.send_frame(0x1, b"a" + euro[:2], fin=False)
        client.send_frame(0x0, euro[2:] + b"b", fin=True)
        assert client.read_frame() == (True, 0x1, "a€b".encode())
        client.send_frame(0x1, b"a" + euro[:2], fin=False)
        client.send_frame(0x0, b"(", fin=False)
        assert client.read_close()[0] == 1007


@pytest.mark.parametrize("variant", variants("stock accepts unmasked client frames", TimeoutError))
def test_unmasked_client_frame_closes_1002(serve, variant):
    """An unmasked client frame gets close 1002 (RFC 6455 §5.1).

    Fails on stock: the frame is accepted and echoed."""
    server = serve(echo_app(variant), variant)
    with RawClient(server.server_port) as client:
        client.sock.settimeout(3)
        client.send_frame(0x1, b"hello", mask=False)
        assert client.read_close()[0] == 1002


@pytest.mark.parametrize("case", ["rsv1", "opcode3", "opcode0xB", "orphan-continuation",
                                  "big-ping", "fragmented-ping", "close-1byte",
                                  "close-code-1005"])
@pytest.mark.parametrize("variant", variants("stock's close frame carries no code",
                                               AssertionError))
def test_protocol_violations_close_1002(serve, variant, case):
    """Reserved bits, reserved opcodes, a continuation with no message, oversized or
    fragmented control frames and malformed close frames all get close 1002.

    Fails on stock: it closes without putting 1002 on the wire."""
    server = serve(echo_app(variant), variant)
    with RawClient(server.server_port) as client:
        client.sock.settimeout(3)
        if case == "rsv1":
            client.send_frame(0x1, b"x", rsv=0x40)
        elif case == "opcode3":
            client.send_frame(0x3, b"x")
        elif case == "opcode0xB":
            client.send_frame(0xB, b"x")
        elif case == "orphan-continuation":
            client.send_frame(0x0, b"x")
        elif case == "big-ping":
            client.send_frame(0x9, b"p" * 126)
        elif case == "fragmented-ping":
            client.send_frame(0x9, b"p", fin=False)
        elif case == "close-1byte":
            client.send_frame(0x8, b"\x03")
        else:
            client.send_frame(0x8, struct.pack("!H", 1005))
        assert client.read_close()[0] == 1002


def test_ping_pong_and_fragments(serve):
    """Pings are answered with the same payload (also between fragments), pongs are
    ignored, fragmented text and binary messages are reassembled."""
    server = serve(echo_app("sente"))
    with RawClient(server.server_port) as client:
        client.send_frame(0x9, b"are you there")
        assert client.read_frame() == (True, 0xA, b"are you there")
        client.send_frame(0xA, b"unsolicited")
        client.send_frame(0x1, "héllo ".encode(), fin=False)
        client.send_frame(0x9, b"mid")
        client.send_frame(0x0, "wörld".encode(), fin=True)
        assert client.read_frame() == (True, 0xA, b"mid")
        assert client.read_frame() == (True, 0x1, "héllo wörld".encode())
        client.send_frame(0x2, b"\x00\x01", fin=False)
        client.send_frame(0x0, b"", fin=False)
        client.send_frame(0x0, b"\x02", fin=True)
        assert client.read_frame() == (True, 0x2, b"\x00\x01\x02")
        client.send_frame(0x1, b"")
        assert client.read_frame() == (True, 0x1, b"")


def test_unmask_matches_bytewise_xor():
    """The big-integer XOR gives the RFC's per-byte result for every length mod 4."""
    mask = b"\x01\x80\xfe\x37"
    for n in (0, 1, 2, 3, 4, 5, 125, 126, 65536, 65537):
        data = os.urandom(n)
        expected = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        assert _unmask(data, mask) == expected
        assert _unmask(bytearray(data), bytearray(mask)) == expected


# --- the app decides the upgrade ------------------------------------------------------

@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("variant", variants("stock sends the 101 before the app runs",
                                               pytest.fail.Exception))
def test_app_can_refuse_upgrade(serve, variant, status):
    """A view that returns 401/403 without accepting: the client reads that status, and
    nothing was sent before the app ran (no ``wsgi.websocket`` in the environ either).

    Fails on stock: the 101 is already out, the client sees a successful handshake."""
    app, ws_route = make_app(variant)
    environ_keys: list[bool] = []

    @ws_route("/ws")
    def ws() -> tuple[str, int]:
        environ_keys.append("wsgi.websocket" in request.environ)
        return "nope", status

    server = serve(app, variant)
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(ws_url(server), timeout=TIMEOUT).close()
    assert info.value.status_code == status
    assert environ_keys == [False]


@pytest.mark.parametrize(
    "variant", variants("Werkzeug refuses the upgraded request (WebsocketMismatch) "
                        "on a route without websocket=True", DROPPED))
def test_plain_route_serves_http_and_websocket(serve, variant):
    """One ordinary ``@app.route`` (no ``websocket=True``) serves GET, POST and the
    WebSocket upgrade, as Sente's single endpoint needs.

    Fails on stock: the 101 goes out, then Werkzeug raises WebsocketMismatch inside the
    app (the route is not a websocket rule) and the socket closes at once."""
    app = Flask(__name__)

    @app.route("/chsk", methods=["GET", "POST"])
    def chsk() -> str:
        conn = open_ws(request.environ)
        if conn is None:
            return f"http {request.method}"
        try:
            while True:
                conn.send(conn.receive())
        except ConnectionClosed:
            pass
        return ""

    server = serve(app, variant)
    client = websocket.create_connection(ws_url(server, "/chsk"), timeout=TIMEOUT)
    try:
        client.send("ping")
        assert client.recv() == "ping"
    finally:
        client.close()
    for method in ("GET", "POST"):
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=TIMEOUT) as s:
            s.sendall(f"{method} /chsk HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                      "Connection: close\r\n\r\n".encode())
            status, _headers, rest = read_http_head(s)
            assert status == 200
            assert read_to_eof(s, rest) == f"http {method}".encode()


@pytest.mark.parametrize("variant", variants("stock's close frame carries no code",
                                               AssertionError))
def test_response_after_accept_discarded_and_socket_closed(serve, variant):
    """A view that accepts, sends, and returns a body: the body is discarded and the socket
    is closed cleanly with 1000 when the view returns.

    Fails on stock: its close frame has no code."""
    app, ws_route = make_app(variant)

    @ws_route("/ws")
    def ws() -> str:
        open_ws(request.environ).send("hi")
        return "this body must not reach the client"

    server = serve(app, variant)
    with RawClient(server.server_port) as client:
        client.sock.settimeout(3)
        assert client.read_frame() == (True, 0x1, b"hi")
        assert client.read_close() == (1000, "")
        client.send_frame(0x8, struct.pack("!H", 1000))
        assert read_to_eof(client.sock, client.buf) == b""


def test_accept_twice_or_after_refusal_raises(serve):
    """``accept()`` works once; a second call, or a call after the app started another
    response, raises LocalProtocolError."""
    app = Flask(__name__)
    outcomes: list[str] = []

    @app.route("/ws")
    def ws() -> str:
        upgrade = request.environ[base.UPGRADE_ENVIRON_KEY]
        assert isinstance(upgrade, base.WebSocketUpgrade)
        conn = upgrade.accept()
        assert isinstance(conn, base.WebSocket)
        try:
            upgrade.accept()
        except LocalProtocolError:
            outcomes.append("second accept refused")
        conn.close()
        return ""

    server = serve(app)
    client = websocket.create_connection(ws_url(server), timeout=TIMEOUT)
    client.close()
    with gevent.Timeout(TIMEOUT):
        while not outcomes:
            gevent.sleep(0.01)
    assert outcomes == ["second accept refused"]


# --- malformed handshakes -------------------------------------------------------------

MALFORMED = {
    "non-base64 key": dict(key="abc"),
    "key of 10 bytes": dict(key="MDEyMzQ1Njc4OQ=="),
    "missing key": dict(drop=("Sec-WebSocket-Key",)),
    "HTTP/1.0": dict(version="HTTP/1.0"),
    "no Connection: Upgrade": dict(drop=("Connection",)),
    "version 12": dict(extra={"Sec-WebSocket-Version": "12"}),
    "missing version": dict(drop=("Sec-WebSocket-Version",)),
}


def _malformed_params() -> list[t.Any]:
    """Every case on both variants; stock fails each by an assertion, except the request
    without ``Connection: Upgrade``, which it hands to the app as a plain request and then
    keeps the connection open (the read times out)."""
    params = []
    for case in MALFORMED:
        raises = TimeoutError if case == "no Connection: Upgrade" else AssertionError
        for variant in variants("stock answers 500/402/426 or calls the app, with "
                                "tracebacks", raises):
            values = (variant, case) if isinstance(variant, str) else (*variant.values, case)
            marks = () if isinstance(variant, str) else variant.marks
            params.append(pytest.param(*values, marks=marks, id=f"{values[0]}-{case}"))
    return params


@pytest.mark.parametrize(("variant", "case"), _malformed_params())
def test_malformed_upgrade_gets_400(serve, variant, case, capfd):
    """Malformed upgrades get a plain 400 (with ``Sec-WebSocket-Version: 13`` when the
    version is wrong), the app is never called, and no traceback is logged.

    Fails on stock: 500 + binascii traceback (bad base64), "402" + TypeError (HTTP/1.0),
    426 (no version), the app called (no Connection: Upgrade), TypeError tracebacks
    writing str bodies (other cases)."""
    app, ws_route = make_app(variant)
    calls: list[str] = []

    @ws_route("/ws")
    def ws() -> str:
        calls.append(request.path)
        return ""

    errors = io.StringIO()
    server = serve(app, variant, error_log=errors)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=3) as s:
        s.sendall(handshake_request("/ws", **MALFORMED[case]))
        status, headers, rest = read_http_head(s)
        body = read_to_eof(s, rest)
    assert status == 400
    if "version" in case:
        assert headers.get("sec-websocket-version") == "13"
    assert body.startswith(b"Bad WebSocket handshake")
    gevent.sleep(0.05)  # let the handler finish (and log, if it would)
    assert calls == []
    assert "Traceback" not in errors.getvalue() + capfd.readouterr().err


# --- server-level fixes ---------------------------------------------------------------

@pytest.mark.parametrize(
    "variant", variants("stock's handler does not log 101s in the server access log",
                        AssertionError))
def test_access_log_has_websocket_and_http_lines(serve, variant):
    """The server's access log gets a line for a WebSocket request (status 101, written when
    it ends) and for a plain HTTP request.

    Fails on stock: its handler skips 101 lines and logs elsewhere."""
    app = echo_app(variant)

    @app.route("/plain")
    def plain() -> str:
        return "ok"

    access = io.StringIO()
    server = serve(app, variant, log=access)
    client = websocket.create_connection(ws_url(server), timeout=TIMEOUT)
    client.send("x")
    client.recv()
    client.close()
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        read_to_eof(s)
    with gevent.Timeout(TIMEOUT, False):
        while access.getvalue().count("\n") < 2:
            gevent.sleep(0.01)
    lines = access.getvalue().splitlines()
    assert any('"GET /ws HTTP/1.1" 101' in line for line in lines), lines
    assert any('"GET /plain HTTP/1.1" 200' in line for line in lines), lines


@pytest.mark.parametrize("variant", variants("stock stops without sending close frames",
                                               TimeoutError))
def test_stop_sends_1001_to_every_socket(serve, variant):
    """Stopping the embedded server sends close 1001 to each open WebSocket.

    Fails on stock: no close frame; the handlers are killed and the TCP connection drops."""
    server = serve(echo_app(variant), variant)
    clients = [RawClient(server.server_port) for _ in range(3)]
    try:
        for client in clients:
            client.sock.settimeout(3)
            client.send_frame(0x1, b"hello")
            assert client.read_frame() == (True, 0x1, b"hello")
        stopper = gevent.spawn(server.stop, timeout=3)
        for client in clients:
            assert client.read_close() == (1001, "server shutting down")
            client.send_frame(0x8, struct.pack("!H", 1001))
        stopper.join(timeout=5)
        assert stopper.dead
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("variant", variants("stock leaves Nagle's algorithm on",
                                               AssertionError))
def test_accepted_sockets_have_tcp_nodelay(serve, variant):
    """Accepted connections have TCP_NODELAY, so small responses (long-poll answers, small
    frames) leave at once instead of waiting up to ~40 ms for an ACK.

    Fails on stock: the option is off on accepted sockets."""
    app, _ = make_app(variant)

    @app.route("/nodelay")
    def nodelay() -> str:
        sock = request.environ["wsgi.input"].rfile.raw._sock
        return str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = serve(app, variant)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /nodelay HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _h, rest = read_http_head(s)
        body = read_to_eof(s, rest)
    assert status == 200
    assert body != b"0"


@pytest.mark.parametrize("variant", variants("stock sends the 101 before the app refuses",
                                               AssertionError))
def test_no_stray_bytes_after_refusal_or_gc(serve, variant):
    """After a refused upgrade (and after an accepted socket that was closed and dropped),
    garbage collection writes nothing: the client reads exactly the 403 response then EOF,
    and exactly one close frame then EOF.

    Fails on stock: the 101 (and a close frame) precede the app's 403."""
    app, ws_route = make_app(variant)

    @ws_route("/ws")
    def ws() -> t.Any:
        if request.args.get("deny"):
            request.environ.get(base.UPGRADE_ENVIRON_KEY)  # looked at, not accepted
            return "denied", 403
        conn = open_ws(request.environ)
        conn.close(1000)
        del conn
        gc.collect()
        return ""

    server = serve(app, variant)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=3) as s:
        s.sendall(handshake_request("/ws?deny=1"))
        status, headers, rest = read_http_head(s)
        gc.collect()
        body = read_to_eof(s, rest)
    assert status == 403
    assert body == b"denied"
    with RawClient(server.server_port) as client:
        client.sock.settimeout(3)
        assert client.read_close() == (1000, "")
        gc.collect()
        client.send_frame(0x8, struct.pack("!H", 1000))
        assert read_to_eof(client.sock, client.buf) == b""


# --- the socket API -------------------------------------------------------------------

def test_receive_timeout_keeps_partial_frame(serve):
    """``receive(timeout)`` returns None while only part of a frame has arrived, without
    losing those bytes: the next call returns the whole message."""
    results: list[t.Any] = []
    app = Flask(__name__)

    @app.route("/ws")
    def ws() -> str:
        conn = request.environ[base.UPGRADE_ENVIRON_KEY].accept()
        results.append(conn.receive(timeout=0.3))
        results.append(conn.receive(timeout=5))
        conn.send("done")
        conn.close()
        return ""

    server = serve(app)
    with RawClient(server.server_port) as client:
        head = bytes([0x81, 0x80 | 11]) + b"\x00\x00\x00\x00"
        client.sock.sendall(head + b"hello")
        with gevent.Timeout(TIMEOUT):
            while not results:
                gevent.sleep(0.01)
        client.sock.sendall(b" world")
        assert client.read_frame() == (True, 0x1, b"done")
    assert results == [None, "hello world"]


def test_socket_state_send_after_close_and_idempotent_close(serve):
    """``close()`` is idempotent, ``closed``/``close_code``/``close_reason`` report what was
    sent, ``send``/``receive`` then raise ConnectionClosed with that code; an invalid close
    code raises LocalProtocolError; closing after the peer vanished does not raise."""
    report: dict[str, t.Any] = {}
    done = gevent.event.Event()
    app = Flask(__name__)

    @app.route("/ws")
    def ws() -> str:
        conn = request.environ[base.UPGRADE_ENVIRON_KEY].accept()
        try:
            assert isinstance(conn, ServerWebSocket)
            report["open"] = (conn.closed, conn.close_code)
            with pytest.raises(LocalProtocolError):
                conn.close(1006)
            conn.close(4000, "bye")
            conn.close(4003, "again")
            report["closed"] = (conn.closed, conn.close_code, conn.close_reason)
            for call in (lambda: conn.send("x"), conn.receive):
                try:
                    call()
                except ConnectionClosed as ex:
                    report.setdefault("errors", []).append(ex.code)
        finally:
            done.set()
        return ""

    server = serve(app)
    with RawClient(server.server_port) as client:
        client.sock.settimeout(3)
        assert client.read_close() == (4000, "bye")
        client.send_frame(0x8, struct.pack("!H", 4000))
        assert done.wait(TIMEOUT)
    assert report == {"open": (False, None), "closed": (True, 4000, "bye"),
                      "errors": [4000, 4000]}


def test_peer_vanishing_gives_1006(serve):
    """A client that drops TCP without a close frame: ``receive`` raises ConnectionClosed
    with 1006, and a later ``close()`` does not raise."""
    seen: list[t.Any] = []
    app = Flask(__name__)

    @app.route("/ws")
    def ws() -> str:
        conn = request.environ[base.UPGRADE_ENVIRON_KEY].accept()
        try:
            conn.receive()
        except ConnectionClosed as ex:
            seen.append(ex.code)
        conn.close()
        seen.append(conn.close_code)
        return ""

    server = serve(app)
    client = RawClient(server.server_port)
    client.send_frame(0x1, b"par", declared=10)  # hang up mid-frame
    client.close()
    with gevent.Timeout(TIMEOUT):
        while len(seen) < 2:
            gevent.sleep(0.01)
    assert seen == [1006, 1006]


@pytest.mark.parametrize("peer_replies", [True, False])
def test_close_from_another_greenlet_wakes_the_reader(serve, peer_replies):
    """``close(4000)`` from another greenlet while the app's greenlet is blocked in
    ``receive()``: the reader raises ConnectionClosed(4000) once the peer answers the close,
    or, if it never does, after the close timeout (the server then drops TCP)."""
    from flask_sente.transports.websocket import SenteHandler

    class QuickHandler(SenteHandler):
        close_timeout = 0.3

    seen: list[t.Any] = []
    app = Flask(__name__)

    @app.route("/ws")
    def ws() -> str:
        conn = request.environ[base.UPGRADE_ENVIRON_KEY].accept()
        closer = gevent.spawn_later(0.1, conn.close, 4000, "kicked")
        try:
            conn.receive()
        except ConnectionClosed as ex:
            seen.append((ex.code, ex.reason))
        closer.join()
        return ""

    server = serve(app, handler_class=QuickHandler)
    with RawClient(server.server_port) as client:
        client.sock.settimeout(3)
        assert client.read_close() == (4000, "kicked")
        if peer_replies:
            client.send_frame(0x8, struct.pack("!H", 4000))
        assert read_to_eof(client.sock, client.buf) == b""
    with gevent.Timeout(TIMEOUT):
        while not seen:
            gevent.sleep(0.01)
    assert seen == [(4000, "kicked")]


def test_accept_lets_go_of_the_http_reader(serve):
    """Once accepted, the socket reads its own frames: pywsgi's buffered reader (8 KiB) is
    closed and neither the handler nor the environ (kept by the request snapshot for the
    socket's life) holds it. Bytes it had already buffered — a frame sent in the same
    segment as the upgrade request — still reach the socket."""
    seen: dict[str, t.Any] = {}

    def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        upgrade = environ[UPGRADE_ENVIRON_KEY]
        reader = upgrade._handler.rfile
        ws = upgrade.accept()
        seen["reader closed"] = reader.closed
        seen["handler reader"] = upgrade._handler.rfile is reader
        body = environ["wsgi.input"]
        seen["environ input"] = "the reader" if body is reader else body.read()
        ws.send(ws.receive())
        return []

    server = serve(app)
    payload, key = b"early bird", b"\x01\x02\x03\x04"
    frame = bytes([0x81, 0x80 | len(payload)]) + key + bytes(
        b ^ key[i % 4] for i, b in enumerate(payload))
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(handshake_request("/ws") + frame)
        status, _headers, rest = read_http_head(sock)
        assert status == 101
        while len(rest) < 2 + len(payload):
            chunk = sock.recv(4096)
            assert chunk, rest
            rest += chunk
        assert rest[:2 + len(payload)] == bytes([0x81, len(payload)]) + payload
    assert seen == {"reader closed": True, "handler reader": False, "environ input": b""}
