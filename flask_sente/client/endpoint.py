"""The server as the client sees it: URLs, headers, cookies, HTTP requests, opening a
WebSocket or an Ajax session, each up to and including the handshake.

Why separate from the client: links (the open connections) need the same requests as the
connector does — an Ajax link polls and posts, its upgrader opens WebSockets — and none of
it depends on the client's state. Everything blocking here takes an :class:`Aborter`, so
another thread can end it at once.
"""
from __future__ import annotations

import http.client
import http.cookiejar
import logging
import socket
import ssl
import threading
import time
import typing as t
import urllib.request
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..exceptions import ConnectionClosed, Rejected, RemoteProtocolError
from ..protocol import PROTOCOL_VERSION, wire
from ..protocol.closecodes import NO_RECONNECT_CODES
from ..protocol.packers import Packer
from .positions import Positions
from .state import AUTH_STATUSES, CloseInfo, handshake_error
from .websocket import WebSocket

__all__ = ["Aborter", "AttemptFailed", "Endpoint", "HttpAnswer", "error_text",
           "shutdown_socket"]

logger = logging.getLogger("flask_sente.client")

Handshake = dict[str, t.Any]


class HttpAnswer(t.NamedTuple):
    """One HTTP response: its status, body and headers (an Ajax reply's ``X-Sente-After``
    is read from them)."""

    status: int
    body: bytes
    headers: http.client.HTTPMessage


class AttemptFailed(Exception):
    """One connection attempt failed (never escapes the client's threads).

    :param may_fall_back: False when no other transport should be tried (a 401/403, a
        kick, a protocol mismatch).
    """

    def __init__(self, info: CloseInfo, *, may_fall_back: bool = True) -> None:
        super().__init__(info.message or info.reason)
        self.info = info
        self.may_fall_back = may_fall_back


class Aborter:
    """Lets another thread interrupt blocking I/O: register an abort function for each
    socket in use; :meth:`fire` calls them all, and anything registered afterwards is
    aborted at once (so there is no window where an abort is missed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fns: dict[int, t.Callable[[], None]] = {}
        self._next = 0
        self.fired = False

    def register(self, fn: t.Callable[[], None]) -> int:
        with self._lock:
            self._next += 1
            token = self._next
            if not self.fired:
                self._fns[token] = fn
                return token
        _call_quietly(fn)
        return token

    def unregister(self, token: int) -> None:
        with self._lock:
            self._fns.pop(token, None)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            fns, self._fns = list(self._fns.values()), {}
        for fn in fns:
            _call_quietly(fn)


def _call_quietly(fn: t.Callable[[], None]) -> None:
    try:
        fn()
    except (OSError, ValueError):
        pass


def shutdown_socket(sock: socket.socket | None) -> None:
    """Shut ``sock`` down both ways (a blocked reader wakes up); errors are ignored."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass


def error_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def ajax_close_info(message: wire.ServerMessage) -> CloseInfo:
    """What an Ajax ``chsk/close`` means: ``kicked`` for 4001, else a ``clean`` close."""
    info = message.value if isinstance(message.value, dict) else {}
    code = info.get("code")
    reason = "kicked" if code in NO_RECONNECT_CODES else "clean"
    return CloseInfo(reason, code=code, message=str(info.get("reason", "")))


def checked_handshake(message: wire.ServerMessage) -> Handshake:
    """The handshake data of ``message``; fails the attempt on a protocol mismatch."""
    if message.kind != "handshake" or not isinstance(message.value, dict):
        raise RemoteProtocolError(f"expected the handshake first, got {message.kind!r}")
    problem = handshake_error(message.value)
    if problem is not None:
        raise AttemptFailed(CloseInfo("protocol-mismatch", message=problem), may_fall_back=False)
    return message.value


class Endpoint:
    """One channel-socket URL with everything a request to it carries."""

    def __init__(
        self, url: str, *, client_id: str, packer: Packer,
        headers: t.Mapping[str, str] | None, params: t.Mapping[str, t.Any] | None,
        cookies: t.Mapping[str, str] | http.cookiejar.CookieJar | None,
        csrf_token: str | t.Callable[[], str | None] | None,
        ssl_context: ssl.SSLContext | None, connect_timeout: float, ajax_timeout: float,
        max_message_size: int,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise ValueError(f"url must be an absolute http(s) or ws(s) URL, got {url!r}")
        secure = parts.scheme in ("https", "wss")
        self.http_scheme = "https" if secure else "http"
        self.netloc = parts.netloc.rpartition("@")[2]
        self.host = parts.hostname
        self.port = parts.port or (443 if secure else 80)
        self.path = parts.path or "/"
        self.base_query = parse_qsl(parts.query, keep_blank_values=True)
        self.url = urlunsplit((self.http_scheme, self.netloc, self.path, parts.query, ""))
        self.client_id = client_id
        self.packer = packer
        self.headers = dict(headers or {})
        self.params = dict(params or {})
        self.csrf_token = csrf_token
        #: The key the server last gave this client's Ajax requests (None: none yet).
        self.fast_key: str | None = None
        self.jar: http.cookiejar.CookieJar
        if isinstance(cookies, http.cookiejar.CookieJar):
            self.jar = cookies
            self.static_cookies: dict[str, str] = {}
        else:
            self.jar = http.cookiejar.CookieJar()
            self.static_cookies = dict(cookies or {})
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.ajax_timeout = ajax_timeout
        self.max_message_size = max_message_size
        #: Where the client stands in the server's logs (protocol 2).
        self.positions = Positions()

    # -- requests --

    def token(self) -> str | None:
        token = self.csrf_token
        if callable(token):
            token = token()
        return token or None

    def request_url(self, *, ws: bool = False, handshake: bool = False,
                    positions: bool = False) -> str:
        """The URL of a request; ``positions``: carry where the client stands (the
        WebSocket upgrade and every Ajax GET, so the server replays what it missed)."""
        query: list[tuple[str, t.Any]] = list(self.base_query)
        query += [(k, v) for k, v in self.params.items()]
        query += [("client-id", self.client_id), ("protocol", str(PROTOCOL_VERSION)),
                  ("packer", self.packer.name)]
        pos = self.positions.param() if positions else None
        if pos is not None:
            query.append(("pos", pos))
        if handshake:
            query.append(("handshake", "1"))
        if ws:
            scheme = "wss" if self.http_scheme == "https" else "ws"
        else:
            scheme = self.http_scheme
        return urlunsplit((scheme, self.netloc, self.path, urlencode(query), ""))

    def request_headers(self, url: str) -> dict[str, str]:
        headers = {"User-Agent": "flask_sente-client", **self.headers}
        cookie = self._cookie_header(url)
        if cookie:
            headers["Cookie"] = cookie
        # Unlike a browser, we can set headers on the WebSocket upgrade too: the token stays
        # out of URLs (and so out of access logs) on both transports.
        token = self.token()
        if token:
            headers["X-CSRF-Token"] = token
        return headers

    def _cookie_header(self, url: str) -> str | None:
        http_url = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
        request = urllib.request.Request(http_url)
        self.jar.add_cookie_header(request)
        parts = [request.get_header("Cookie") or ""]
        parts += [f"{k}={v}" for k, v in self.static_cookies.items()]
        return "; ".join(p for p in parts if p) or None

    def http_connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.http_scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, conn: http.client.HTTPConnection, method: str, url: str,
             aborter: Aborter, body: str | bytes | None = None) -> HttpAnswer:
        """One request on ``conn``; the socket is registered with ``aborter`` meanwhile."""
        if conn.sock is None:
            conn.connect()
        token = aborter.register(lambda: shutdown_socket(conn.sock))
        try:
            headers = self.request_headers(url)
            key = self.fast_key
            if key is not None:  # see docs/protocol.md §6: answered without the app's hooks
                headers[wire.FAST_KEY_HEADER] = key
            data: bytes | None = None
            if body is not None:
                binary = isinstance(body, bytes)
                name = self.packer.name
                headers["Content-Type"] = ("application/msgpack" if name == "msgpack"
                                           else "application/json" if name == "json"
                                           else "application/octet-stream" if binary
                                           else "text/plain; charset=utf-8")
                data = body if isinstance(body, bytes) else body.encode("utf-8")
            parts = urlsplit(url)
            target = parts.path + ("?" + parts.query if parts.query else "")
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            given = response.getheader(wire.FAST_KEY_HEADER)
            if given:
                self.fast_key = given
            try:
                self.jar.extract_cookies(response, urllib.request.Request(url))
            except Exception:  # a cookie the jar cannot parse must not break the connection
                logger.debug("could not store a cookie from %s", url, exc_info=True)
            if response.will_close:
                conn.close()
            return HttpAnswer(response.status, answer, response.headers)
        finally:
            aborter.unregister(token)

    def decode(self, body: bytes) -> wire.ServerMessage:
        data: str | bytes = body if self.packer.binary else body.decode("utf-8", "replace")
        return wire.decode_server(self.packer.unpack(data))

    # -- opening connections --

    def open_ws(self, aborter: Aborter) -> tuple[WebSocket, Handshake]:
        """A WebSocket up to its handshake.

        :raises AttemptFailed: refused (``may_fall_back`` False for 401/403), broken,
            kicked, or a server with another protocol version.
        """
        url = self.request_url(ws=True, positions=True)
        headers = self.request_headers(url)
        tokens: list[int] = []
        deadline = time.monotonic() + self.connect_timeout

        def on_socket(sock: socket.socket) -> None:
            tokens.append(aborter.register(lambda: shutdown_socket(sock)))

        try:
            ws = WebSocket.connect(
                url, headers=headers.items(), timeout=self.connect_timeout,
                ssl_context=self.ssl_context, max_message_size=self.max_message_size,
                on_socket=on_socket)
        except Rejected as exc:
            raise AttemptFailed(CloseInfo("rejected", status=exc.status, message=exc.body),
                                may_fall_back=exc.status not in AUTH_STATUSES) from exc
        except (OSError, ValueError, RemoteProtocolError) as exc:
            raise AttemptFailed(CloseInfo("unexpected", message=error_text(exc))) from exc
        finally:
            for token in tokens:
                aborter.unregister(token)
        token = aborter.register(ws.abort)
        try:
            handshake = checked_handshake(
                wire.decode_server(self.packer.unpack(ws.receive(deadline))))
        except ConnectionClosed as exc:
            ws.abort()
            ws.release()
            reason = "kicked" if exc.code in NO_RECONNECT_CODES else "unexpected"
            raise AttemptFailed(CloseInfo(reason, code=exc.code, message=exc.reason),
                                may_fall_back=reason != "kicked") from exc
        except AttemptFailed:
            ws.close()
            ws.abort()
            ws.release()
            raise
        except (OSError, ValueError, RemoteProtocolError) as exc:
            ws.abort()
            ws.release()
            raise AttemptFailed(CloseInfo("unexpected", message=error_text(exc))) from exc
        finally:
            aborter.unregister(token)
        ws.set_timeout(self.connect_timeout)
        return ws, handshake

    def open_ajax(self, aborter: Aborter) -> tuple[http.client.HTTPConnection, Handshake]:
        """An Ajax handshake; the connection it used then carries the long-polls.

        :raises AttemptFailed: refused, broken, closed (or kicked) by the server, or a
            server with another protocol version.
        """
        conn = self.http_connection(self.connect_timeout)
        try:
            status, body, _ = self.request(conn, "GET",
                                           self.request_url(handshake=True, positions=True),
                                           aborter)
            if status != 200:
                raise AttemptFailed(CloseInfo("rejected", status=status, message=body.decode(
                    "utf-8", "replace").strip()))
            message = self.decode(body)
            if message.kind == "close":
                raise AttemptFailed(ajax_close_info(message))
            handshake = checked_handshake(message)
        except (OSError, http.client.HTTPException, RemoteProtocolError) as exc:
            conn.close()
            raise AttemptFailed(CloseInfo("unexpected", message=error_text(exc))) from exc
        except BaseException:
            conn.close()
            raise
        # From now on the connection carries long-polls: give it the long Ajax timeout.
        conn.timeout = self.ajax_timeout
        if conn.sock is not None:
            conn.sock.settimeout(self.ajax_timeout)
        return conn, handshake
