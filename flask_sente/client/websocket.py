"""A minimal RFC 6455 WebSocket client over a plain socket, for :mod:`flask_sente.client`.

Why our own: the Python client must not add an install dependency, and it needs things
generic libraries hide: the HTTP status and body of a refused upgrade (a 403 stops the
client, a 400 makes it fall back to Ajax), and a socket that another thread can abort at any
moment. Standard library only, so it works with plain threads and under gevent's
monkey-patching alike.

What it does: the opening handshake (with the ``Sec-WebSocket-Accept`` check), text and
binary messages, the server's pings answered with pongs, close codes. Frames are built and
parsed by :mod:`flask_sente.protocol.frames` (the codec the server uses too, with the
client's side of the masking rules); this module only owns the socket. No extensions, no
subprotocols.

Threading contract: one reader thread calls :meth:`WebSocket.receive`; any thread may call
:meth:`WebSocket.send` and :meth:`WebSocket.close` (writes are serialised by a lock); any
thread may call :meth:`WebSocket.abort` to unblock the reader at once.
"""
from __future__ import annotations

import base64
import io
import os
import socket
import ssl
import threading
import time
import typing as t
from http.client import parse_headers
from urllib.parse import urlsplit

from ..exceptions import ConnectionClosed, LocalProtocolError, Rejected, RemoteProtocolError
from ..protocol.closecodes import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
)
from ..protocol.frames import (
    CLIENT,
    CLIENT_MAX_MESSAGE_SIZE,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    accept_key,
    close_payload,
    encode_frame,
    mask,
    parse_close,
)

__all__ = ["WebSocket", "mask", "accept_key", "DEFAULT_MAX_MESSAGE_SIZE"]

#: Largest response head we accept for the upgrade (status line + headers).
MAX_RESPONSE_HEAD = 64 * 1024
#: Largest body of a refused upgrade we keep (it is only shown in errors and state).
MAX_REFUSAL_BODY = 64 * 1024
#: Default limit for one incoming message (see :mod:`flask_sente.protocol.frames`).
DEFAULT_MAX_MESSAGE_SIZE = CLIENT_MAX_MESSAGE_SIZE
_RECV_CHUNK = 64 * 1024


def _check_header_text(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise LocalProtocolError(f"header names and values may not contain CR/LF: {text!r}")
    return text


class WebSocket:
    """One client WebSocket. Create it with :meth:`connect`.

    ``last_activity`` (``time.monotonic()``) is updated whenever any frame arrives, so a
    keep-alive watchdog in another thread can tell a silent peer from a busy one.
    ``close_received`` / ``close_code`` / ``close_reason`` tell how the connection ended.
    """

    def __init__(self, sock: socket.socket, buffered: bytes = b"", *,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._sock = sock
        self._reader = FrameReader(CLIENT, self._on_control, max_message_size=max_message_size,
                                   buffered=buffered)
        #: The receive buffer: the upgrade response is read into it, and what follows the
        #: response head is already the first frames.
        self._buf = self._reader.buffer
        self._write_lock = threading.Lock()
        self.last_activity = time.monotonic()
        self.close_sent = False
        self.close_received = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._aborted = False
        self._released = False

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        headers: t.Iterable[tuple[str, str]] = (),
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        on_socket: t.Callable[[socket.socket], None] | None = None,
    ) -> WebSocket:
        """Open a WebSocket to ``url`` (``ws://`` or ``wss://``); the socket keeps ``timeout``.

        :param on_socket: called with the connected socket before the upgrade request is
            sent, so the caller can register it for aborting from another thread.
        :raises Rejected: the server answered with a status other than 101 (its body is kept).
        :raises RemoteProtocolError: the answer was a 101 that breaks RFC 6455.
        :raises OSError: the TCP connection failed or timed out.
        """
        parts = urlsplit(url)
        secure = parts.scheme in ("wss", "https")
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise LocalProtocolError(f"not a WebSocket URL: {url!r}")
        host = parts.hostname
        port = parts.port or (443 if secure else 80)
        deadline = time.monotonic() + timeout
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if secure:
                context = ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=host)
            if on_socket is not None:
                on_socket(sock)
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            netloc = parts.netloc.rpartition("@")[2]
            lines = [
                f"GET {target} HTTP/1.1",
                f"Host: {netloc}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
            ]
            lines += [f"{_check_header_text(k)}: {_check_header_text(v)}" for k, v in headers]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            ws = cls(sock, max_message_size=max_message_size)
            ws._finish_upgrade(key, deadline)
            return ws
        except BaseException:
            _close_quietly(sock)
            raise

    def _finish_upgrade(self, key: str, deadline: float) -> None:
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buf) > MAX_RESPONSE_HEAD:
                raise RemoteProtocolError("the upgrade response head is too large")
            if not self._fill(deadline):
                raise ConnectionResetError("the server closed the connection during the upgrade")
        head = bytes(self._buf[:end + 4])
        del self._buf[:end + 4]
        status_line, _, header_block = head.partition(b"\r\n")
        fields = status_line.decode("latin-1").split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
            raise RemoteProtocolError(f"malformed status line {status_line[:100]!r}")
        status = int(fields[1])
        headers = parse_headers(io.BytesIO(header_block))
        if status != 101:
            body = self._read_refusal_body(headers, deadline)
            raise Rejected(status, body.decode("utf-8", "replace").strip())
        if headers.get("Upgrade", "").lower() != "websocket":
            raise RemoteProtocolError("101 without 'Upgrade: websocket'")
        if "upgrade" not in [v.strip().lower() for v in headers.get("Connection", "").split(",")]:
            raise RemoteProtocolError("101 without 'Connection: Upgrade'")
        if headers.get("Sec-WebSocket-Accept", "").strip() != accept_key(key):
            raise RemoteProtocolError("101 with a wrong Sec-WebSocket-Accept")
        if headers.get("Sec-WebSocket-Extensions"):
            raise RemoteProtocolError("the server chose an extension the client did not offer")
        # Whatever followed the head in the buffer already belongs to the first frames.

    def _read_refusal_body(self, headers: t.Any, deadline: float) -> bytes:
        """The body of a non-101 answer, as far as it can be read by ``deadline``."""
        try:
            length = headers.get("Content-Length")
            if length is not None and length.strip().isdigit():
                wanted = min(int(length), MAX_REFUSAL_BODY)
                while len(self._buf) < wanted and self._fill(deadline):
                    pass
                return bytes(self._buf[:wanted])
            if "chunked" in headers.get("Transfer-Encoding", "").lower():
                return self._read_chunked(deadline)
            while len(self._buf) < MAX_REFUSAL_BODY and self._fill(deadline):
                pass
            return bytes(self._buf[:MAX_REFUSAL_BODY])
        except (OSError, ValueError):
            return bytes(self._buf[:MAX_REFUSAL_BODY])

    def _read_chunked(self, deadline: float) -> bytes:
        body = bytearray()
        while len(body) < MAX_REFUSAL_BODY:
            while b"\r\n" not in self._buf:
                if not self._fill(deadline):
                    return bytes(body)
            line, _, _ = bytes(self._buf).partition(b"\r\n")
            size = int(line.split(b";")[0].strip() or b"0", 16)
            del self._buf[:len(line) + 2]
            if size == 0:
                return bytes(body)
            while len(self._buf) < size + 2:
                if not self._fill(deadline):
                    return bytes(body + self._buf[:size])
            body += self._buf[:size]
            del self._buf[:size + 2]
        return bytes(body[:MAX_REFUSAL_BODY])

    # --- reading -------------------------------------------------------------------------

    def _fill(self, deadline: float | None) -> bool:
        """Read more bytes into the buffer; False at EOF.

        A socket timeout is retried until ``deadline`` (None: forever), so the reader may
        block for long but an :meth:`abort` from another thread always ends it.
        """
        while True:
            if self._aborted:
                raise ConnectionAbortedError("the connection was aborted")
            try:
                chunk = self._sock.recv(_RECV_CHUNK)
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                continue
            if not chunk:
                return False
            self._buf += chunk
            return True

    def receive(self, deadline: float | None = None) -> str | bytes:
        """The next whole message: ``str`` for text, ``bytes`` for binary.

        Pings are answered and pongs swallowed here. Raises :class:`ConnectionClosed`
        (``code`` set) when the connection ends: after a close frame from the server (echoed
        back), on EOF or error (1006), or when the server broke the protocol (we send
        1002 / 1007 / 1009 first). Raises ``socket.timeout`` when ``deadline``
        (``time.monotonic()``) passes first.
        """
        while True:
            try:
                frame = self._reader.next()
            except RemoteProtocolError as exc:
                self._fail(exc.close_code, str(exc))
            if frame is not None:
                self.last_activity = time.monotonic()
                return frame
            self._read_more(deadline)

    def _read_more(self, deadline: float | None) -> None:
        try:
            more = self._fill(deadline)
        except (OSError, ValueError) as exc:
            if isinstance(exc, socket.timeout) and not self._aborted:
                raise
            self._closed_abnormally(str(exc) or type(exc).__name__)
        if not more:
            self._closed_abnormally("the server closed the connection without a close frame")

    def _on_control(self, opcode: int, payload: bytes) -> None:
        """A control frame from the reader: answer pings, echo and end on a close frame."""
        self.last_activity = time.monotonic()
        if opcode == OP_PING:
            try:
                self._write(OP_PONG, payload)
            except (OSError, ConnectionClosed):
                pass  # the reader will notice the broken socket itself
        elif opcode == OP_CLOSE:
            try:
                code, reason = parse_close(payload)
            except RemoteProtocolError as exc:
                self._fail(exc.close_code, str(exc))
            self.close_received = True
            self.close_code, self.close_reason = code, reason
            if not self.close_sent:
                echo = CLOSE_NORMAL if code == CLOSE_NO_STATUS else code
                try:
                    self._write(OP_CLOSE, close_payload(echo))
                except (OSError, ConnectionClosed):
                    pass
                self.close_sent = True
            raise ConnectionClosed(reason or "closed by the server", code)

    def _fail(self, code: int, reason: str) -> t.NoReturn:
        """The server broke the protocol: say so with a close frame and end."""
        self.close(code, reason)
        self.close_code, self.close_reason = code, reason
        self.abort()
        raise ConnectionClosed(reason, code)

    def _closed_abnormally(self, reason: str) -> t.NoReturn:
        if self.close_code is None:
            self.close_code, self.close_reason = CLOSE_ABNORMAL, reason
        raise ConnectionClosed(reason, self.close_code)

    # --- writing -------------------------------------------------------------------------

    def _write(self, opcode: int, payload: bytes) -> None:
        frame = encode_frame(opcode, payload, os.urandom(4))
        with self._write_lock:
            if self.close_sent:
                raise ConnectionClosed("the close frame was already sent", self.close_code)
            self._sock.sendall(frame)

    def send(self, message: str | bytes) -> None:
        """Send one message: a text frame for ``str``, a binary frame for ``bytes``.

        :raises ConnectionClosed: after a close frame went out.
        :raises OSError: the socket failed (or its timeout passed while the peer did not read).
        """
        if isinstance(message, str):
            self._write(OP_TEXT, message.encode("utf-8"))
        else:
            self._write(OP_BINARY, bytes(message))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame (once); the reader then gets the server's echo and ends."""
        frame = encode_frame(OP_CLOSE, close_payload(code, reason), os.urandom(4))
        with self._write_lock:
            if self.close_sent:
                return
            self.close_sent = True
            try:
                self._sock.sendall(frame)
            except OSError:
                pass

    def abort(self) -> None:
        """Shut the socket down now, from any thread: a blocked :meth:`receive` ends."""
        self._aborted = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    def set_timeout(self, seconds: float | None) -> None:
        """The socket timeout: bounds each send (and how often an idle reader wakes up)."""
        self._sock.settimeout(seconds)

    def release(self) -> None:
        """Close the file descriptor (after the reader has finished). Idempotent."""
        if not self._released:
            self._released = True
            _close_quietly(self._sock)


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
