"""Server-side WebSocket for flask_sente: the upgrade handler and the servers.

This is the only module of flask_sente that imports :mod:`geventwebsocket`. With
``frames.py`` (the socket object, :class:`~.frames.ServerWebSocket`: our own RFC 6455 frame
codec over the raw gevent socket) it owns:

- :class:`~.upgrade.WebSocketUpgrade` (in ``upgrade.py``), the object offered to the WSGI
  app in ``environ[UPGRADE_ENVIRON_KEY]``;
- :class:`SenteHandler`, a subclass of gevent-websocket's ``WebSocketHandler`` that validates
  the handshake and lets the app decide whether to upgrade;
- :class:`SenteServerMixin` / :class:`SenteWSGIServer`, which keep a registry of open sockets
  so that stopping the server sends close 1001 to each of them.

Defects of stock gevent-websocket 0.10.1 fixed here (see the project's peers survey, §3.3):

1. ``close(code, reason)`` never put the code on the wire, and a client's close code was
   echoed back as garbage. We write and parse ``code + UTF-8 reason`` both ways.
2. No write lock: concurrent senders with a slow reader raised ``ConcurrentObjectUseError``
   and silently lost frames. Every write here (data, pong, close) holds one semaphore for
   the whole frame.
3. No message size limit: the declared 64-bit length was trusted. We refuse (close 1009)
   from the frame header, before the payload is buffered, also across fragments.
4. Pure-Python per-byte unmasking (~13 MB/s) and UTF-8 validation that stalled the hub. We
   unmask with one big-integer XOR and validate with ``bytes.decode`` / an incremental decoder.
5. Unmasked client frames were accepted (now close 1002).
6. The 101 was sent before the app ran, so Flask could not refuse the upgrade. Now the app
   gets a :class:`WebSocketUpgrade` and either calls ``accept()`` or returns a normal
   response (401, 403, ...) that the client reads as such.
7. Malformed upgrades gave 500 (non-base64 key) or a "402" with a ``TypeError`` (HTTP/1.0).
   They now get a plain 400 without calling the app and without a logged traceback.
8. gunicorn's access log stayed empty (the handler overrode ``log_request``); WebSocket
   requests are now logged like any request when they end (see ``flask_sente.worker``).
9. Stopping the server dropped sockets without a close frame; now each gets close 1001.
10. Accepted sockets lacked ``TCP_NODELAY``, so small responses could wait ~40 ms.
11. ``WebSocket.__del__`` wrote a close frame whenever the object was collected. Our socket
    object has no finaliser and never writes unless told to; gevent-websocket's own
    ``WebSocket`` class is never instantiated.

Werkzeug note: a request carrying ``Connection: Upgrade`` + ``Upgrade: websocket`` only
matches routes declared with ``websocket=True`` (others raise ``WebsocketMismatch``, a 400).
So that plain ``@app.route`` views (Sente serves GET, POST and WebSocket on one URL) can
take the upgrade, :class:`SenteHandler` removes the ``upgrade`` token from
``HTTP_CONNECTION`` before calling the app (the original value stays in
``environ["flask_sente.http_connection"]``; ``HTTP_UPGRADE`` is untouched). Set
``SenteHandler.hide_upgrade_from_routing = False`` to keep Werkzeug's behaviour.
"""
from __future__ import annotations

import base64
import binascii
import io
import logging
import socket
import typing as t

import gevent
from gevent.pywsgi import Input, WSGIHandler
from geventwebsocket.handler import WebSocketHandler

from ..exceptions import ConnectionClosed, LocalProtocolError, SenteError
from ..protocol.closecodes import CLOSE_NORMAL, CLOSE_SERVER_ERROR
from ..protocol.frames import accept_key
from .base import STOP_CALLBACKS_ENVIRON_KEY, UPGRADE_ENVIRON_KEY
from .frames import (
    CLOSE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    RECV_SIZE,
    ServerWebSocket,
)
from .httphead import RequestHeaders, read_header_fields
from .upgrade import WebSocketUpgrade, has_secrets, redact_secrets, redacted_environ

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ServerWebSocket",
    "WebSocketUpgrade",
    "SenteHandler",
    "redact_secrets",
    "redacted_environ",
]

#: Seconds a client has to send a complete request head (request line and headers), from
#: the moment the server starts waiting for it (also between two keep-alive requests).
DEFAULT_HEADER_TIMEOUT = 10.0
class HeaderTimeout(SenteError):
    """A client did not send a complete request head within the header timeout."""


#: What an upgraded request's handler and environ keep instead of the HTTP reader: an
#: empty body (pywsgi's own input type, so that its end-of-request discard is a no-op) and
#: a closed reader.
_NO_BODY_READER = io.BytesIO(b"")
_NO_BODY = Input(_NO_BODY_READER, 0)
_NO_BODY_READER.close()


def _discard_write(data: bytes) -> None:
    """The ``write`` callable handed to an app that responds after accepting."""


def _tokens(value: str) -> list[str]:
    return [v.strip().lower() for v in value.split(",")]


class SenteHandler(WebSocketHandler):
    """gevent-websocket's handler, with the upgrade decided by the WSGI app.

    For a request that asks for a WebSocket (``Upgrade: websocket``) the handshake is
    validated first; a malformed one gets 400 and the app is not called. For a valid one the
    app is called with a :class:`WebSocketUpgrade` in ``environ[UPGRADE_ENVIRON_KEY]`` and
    nothing sent yet. Everything else is plain pywsgi.
    """

    #: Remove the ``upgrade`` token from ``HTTP_CONNECTION`` so Werkzeug routes the request
    #: to ordinary (non-``websocket=True``) rules; see the module docstring.
    hide_upgrade_from_routing = True
    #: Seconds a socket waits for the peer's close frame (see :data:`CLOSE_TIMEOUT`).
    close_timeout: float = CLOSE_TIMEOUT

    _sente_upgrade: WebSocketUpgrade | None = None
    #: pywsgi's response status: bytes once started, a str saying what failed after an error.
    status: t.Any

    def handle(self) -> None:
        # Small frames and long-poll answers must leave at once, not after Nagle's ~40 ms.
        sock = self.socket
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        try:
            super().handle()
        finally:
            timer = self._sente_header_timer
            if timer is not None:
                self._sente_header_timer = None
                timer.close()

    #: Default for :attr:`SenteServerMixin.sente_header_timeout` when the server has none.
    header_timeout: float | None = DEFAULT_HEADER_TIMEOUT
    _sente_header_timer: t.Any = None

    def handle_one_request(self) -> t.Any:
        # Slowloris and abandoned handshakes: a request head not complete within the header
        # timeout closes the connection (no response: the client may not even be reading).
        timeout = getattr(self.server, "sente_header_timeout", self.header_timeout)
        if not timeout:
            return super().handle_one_request()
        # One timer per connection, armed for each request head (a keep-alive connection
        # serves many): cheaper than a Timeout object per request.
        timer = self._sente_header_timer
        if timer is None:
            timer = self._sente_header_timer = gevent.Timeout(timeout, HeaderTimeout)
        timer.start()
        try:
            return super().handle_one_request()
        except HeaderTimeout:  # while reading the request line
            if not self._sente_rescued and self._request_waiting():
                # The next request of a keep-alive connection arrived as its idle time ran
                # out (a busy worker sees both at once). Closing now would drop a request
                # the client has sent (it reads "connection closed", not a response, and
                # cannot tell whether the server acted on it): serve it instead, once.
                self._sente_rescued = True
                return self.handle_one_request()
            return self._header_timed_out()
        finally:
            self._sente_rescued = False
            timer.cancel()

    _sente_rescued = False

    def _request_waiting(self) -> bool:
        """Whether bytes of a request are waiting on the socket (a peek, never a wait)."""
        sock = self.socket
        try:
            timeout = sock.gettimeout()
            sock.settimeout(0.0)
            try:
                return bool(sock.recv(1, socket.MSG_PEEK))
            finally:
                sock.settimeout(timeout)
        except OSError:
            return False

    def _handle_client_error(self, ex: BaseException) -> t.Any:
        if isinstance(ex, HeaderTimeout):  # while reading the headers
            return self._header_timed_out()
        return super()._handle_client_error(ex)

    def _header_timed_out(self) -> None:
        log.info("closed a connection from %s: no complete request head within %g s",
                 self.client_address, getattr(self.server, "sente_header_timeout", 0) or 0)
        self.close_connection = True
        return None

    def read_request(self, raw_requestline: t.Any) -> t.Any:
        result = super().read_request(raw_requestline)
        timer = self._sente_header_timer
        if timer is not None:
            timer.cancel()  # the head is complete: the body and the app have no such limit
            if self.environ_upgrade_requested():  # no second request on this connection
                self._sente_header_timer = None
                timer.close()
        return result

    def _sendall(self, data: bytes) -> None:
        # One plain send takes a whole response on an idle socket; gevent's sendall would
        # first ask the kernel for the send buffer size (a getsockopt per response).
        try:
            sent = self.socket.send(data)
            if sent < len(data):
                self.socket.sendall(memoryview(data)[sent:])
        except OSError as ex:
            # pywsgi's bookkeeping for a failed write (its access log shows it).
            self.status = f"socket error: {ex}"
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def MessageClass(self, rfile: t.Any, *args: t.Any) -> RequestHeaders:  # noqa: N802
        # The header fields without the stdlib's email parser (see .httphead).
        return read_header_fields(rfile)

    def _headers(self) -> t.Iterator[tuple[str, str]]:
        headers = self.headers
        if isinstance(headers, RequestHeaders):
            return headers.environ_items()
        return t.cast("t.Iterator[tuple[str, str]]", super()._headers())

    def environ_upgrade_requested(self) -> bool:
        headers = getattr(self, "headers", None)
        return headers is not None and "websocket" in headers.get("Upgrade", "").lower()

    def read_requestline(self) -> t.Any:
        # Between two requests of a keep-alive connection the handler only waits for the
        # next request line; the server shuts such connections on stop, so stopping does not
        # sit out its whole timeout for clients that are merely connected.
        idle = getattr(self.server, "sente_idle", None)
        if idle is None:
            return super().read_requestline()
        if getattr(self.server, "sente_stopping", False):
            return None
        idle.add(self)
        try:
            return super().read_requestline()
        finally:
            idle.discard(self)

    # Write the access-log line with pywsgi's format (gevent-websocket's version skips 101s
    # and writes to a logger it reconfigures), with secrets in the query redacted. The
    # gunicorn handler puts its own first (and redacts the environ it logs from).
    def log_request(self) -> None:
        if not getattr(self.server, "sente_access_log", True):
            return
        requestline: str = getattr(self, "requestline", None) or ""
        lowered = requestline.lower()
        if ("csrf" in lowered or "ticket" in lowered) and has_secrets(requestline):
            self.requestline = redact_secrets(requestline)
            try:
                WSGIHandler.log_request(self)
            finally:
                self.requestline = requestline
        else:
            WSGIHandler.log_request(self)

    def run_application(self) -> None:
        environ = self.environ
        callbacks = getattr(self.server, "sente_stop_callbacks", None)
        if callbacks is not None:
            environ[STOP_CALLBACKS_ENVIRON_KEY] = callbacks
        if "websocket" not in _tokens(environ.get("HTTP_UPGRADE", "")):
            return WSGIHandler.run_application(self)
        problem, key = self._check_handshake()
        if problem is not None:
            return self._refuse_handshake(problem)
        upgrade = WebSocketUpgrade(self, key)
        self._sente_upgrade = upgrade
        environ[UPGRADE_ENVIRON_KEY] = upgrade
        if self.hide_upgrade_from_routing:
            connection = environ.get("HTTP_CONNECTION", "")
            environ["flask_sente.http_connection"] = connection
            kept = [v.strip() for v in connection.split(",") if v.strip().lower() != "upgrade"]
            if kept:
                environ["HTTP_CONNECTION"] = ", ".join(kept)
            else:
                environ.pop("HTTP_CONNECTION", None)
        # The client asked to switch protocols: whatever happens, no keep-alive after this.
        self.close_connection = True
        try:
            self._run_upgrade_app(upgrade)
        finally:
            environ.pop(UPGRADE_ENVIRON_KEY, None)
            upgrade._end("refused")
            self._sente_upgrade = None

    def _run_upgrade_app(self, upgrade: WebSocketUpgrade) -> None:
        failed = True
        try:
            try:
                self.result = self.application(self.environ, self._upgrade_start_response)
                if upgrade.websocket is None:
                    upgrade._end("refused")
                    self.process_result()
                failed = False
            except ConnectionClosed as ex:
                if upgrade.websocket is None:
                    raise
                # The app let the socket's own "closed" signal escape: not a server error.
                log.debug("websocket %r: app ended with %s", self.client_address, ex)
                failed = False
            finally:
                close = getattr(self.result, "close", None)
                self.result = None
                if close is not None:
                    close()
                    close = None  # it holds the app's response: not for the socket's life
            after, upgrade._after = upgrade._after, None
            if after is not None and not failed:
                failed = True
                # The app is done with the request: drop what it cached in the environ.
                self.environ.pop("werkzeug.request", None)
                try:
                    after()
                    failed = False
                except ConnectionClosed as ex:
                    log.debug("websocket %r: ended with %s", self.client_address, ex)
                    failed = False
        finally:
            ws = upgrade.websocket
            if ws is not None:
                ws._finish(CLOSE_SERVER_ERROR if failed else CLOSE_NORMAL, wait=not failed)
                registry = getattr(self.server, "sente_websockets", None)
                if registry is not None:
                    registry.discard(ws)

    def _upgrade_start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Callable[[bytes], None]:
        upgrade = self._sente_upgrade
        if upgrade is not None and upgrade.websocket is not None:
            return _discard_write  # accepted: the HTTP response is over
        if upgrade is not None:
            upgrade._end("refused")
        return self.start_response(status, headers, exc_info)

    def _check_handshake(self) -> tuple[str | None, str]:
        """Return ``(problem, key)``: problem is None for a valid RFC 6455 handshake."""
        env = self.environ
        if env.get("REQUEST_METHOD") != "GET":
            return "a WebSocket upgrade must be a GET", ""
        if self.request_version != "HTTP/1.1":
            return f"a WebSocket upgrade needs HTTP/1.1, not {self.request_version}", ""
        if "upgrade" not in _tokens(env.get("HTTP_CONNECTION", "")):
            return "missing 'Connection: Upgrade'", ""
        if env.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
            return "version", ""
        key = env.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
        if not key:
            return "missing Sec-WebSocket-Key", ""
        try:
            raw = base64.b64decode(key.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            return "Sec-WebSocket-Key is not base64", ""
        if len(raw) != 16:
            return "Sec-WebSocket-Key does not encode 16 bytes", ""
        if (self.content_length or 0) > 0 or env.get("HTTP_TRANSFER_ENCODING"):
            return "a WebSocket upgrade must not have a body", ""
        return None, key

    def _refuse_handshake(self, problem: str) -> None:
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")]
        if problem == "version":
            problem = "unsupported Sec-WebSocket-Version (this server speaks 13)"
            headers.append(("Sec-WebSocket-Version", "13"))
        log.info("refused a malformed WebSocket upgrade from %s: %s",
                 self.client_address, problem)
        body = f"Bad WebSocket handshake: {problem}\n".encode()
        headers.append(("Content-Length", str(len(body))))
        self.close_connection = True
        self.start_response("400 Bad Request", headers)
        self.write(body)

    def _take_buffered_input(self) -> bytes:
        """Bytes the HTTP reader already buffered past the request headers (normally none).

        Peeks with the socket briefly non-blocking, so it never waits for the network.
        """
        rfile = getattr(self, "rfile", None)
        if rfile is None:
            return b""
        sock = self.socket
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            pending = rfile.peek(RECV_SIZE)
        except OSError:
            pending = b""
        finally:
            sock.settimeout(timeout)
        return rfile.read(len(pending)) if pending else b""

    def _release_http_reader(self) -> None:
        """Let go of the HTTP reader once the socket reads its own frames.

        pywsgi's buffered reader holds an 8 KiB buffer, and the handler, its ``wsgi.input``
        and the environ (which the request snapshot keeps for ``msg.request``) would hold
        it for the socket's whole life: a third of an idle WebSocket's memory (W3)."""
        self.environ["wsgi.input"] = _NO_BODY
        self.wsgi_input = _NO_BODY
        rfile, self.rfile = self.rfile, _NO_BODY_READER
        rfile.close()  # the socket stays open: the reader only drops its reference

    def _accept_websocket(self, key: str, max_message_size: int | None) -> ServerWebSocket:
        if self.headers_sent or self.status:
            raise LocalProtocolError("cannot accept: the app already started a response")
        accept = accept_key(key).encode("ascii")
        headers = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", accept),
        ]
        raw = b"HTTP/1.1 101 Switching Protocols\r\n" + b"".join(
            name + b": " + value + b"\r\n" for name, value in headers
        ) + b"\r\n"
        # Bookkeeping that pywsgi (and gunicorn's access log) read when the request ends.
        self.status = b"101 Switching Protocols"
        self._orig_status = "101 Switching Protocols"
        self.code = 101
        self.response_headers = headers
        self.headers_sent = True
        self.connection_upgraded = True
        self.close_connection = True
        buffered = self._take_buffered_input()
        self._release_http_reader()
        self.response_length = len(raw)
        # The 101 leaves with the first frame (one segment, one send), or before the
        # socket's first read or close, whichever comes first.
        ws = ServerWebSocket(
            self.socket,
            max_message_size=max_message_size,
            buffered=buffered,
            close_timeout=self.close_timeout,
            peer=self.client_address,
            unsent=raw,
        )
        registry = getattr(self.server, "sente_websockets", None)
        if registry is not None:
            registry.add(ws)
            if getattr(self.server, "sente_stopping", False):
                ws._going_away("server shutting down")
        return ws
