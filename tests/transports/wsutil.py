"""Helpers for the transport tests: a raw frame-level WebSocket client, and a shim that
lets one test app run on both our handler and stock gevent-websocket."""
from __future__ import annotations

import base64
import os
import socket
import struct
import typing as t

from flask_sente.exceptions import ConnectionClosed
from flask_sente.transports.base import UPGRADE_ENVIRON_KEY

TIMEOUT = 5.0


class PeerClosed(ConnectionError):
    """The server closed the TCP connection where a frame was expected (no close frame):
    its own type, so a test expecting exactly this failure can name it."""


class StockAdapter:
    """gevent-websocket's WebSocket behind our interface (for the "stock" variants)."""

    def __init__(self, ws: t.Any) -> None:
        self.ws = ws

    def receive(self, timeout: float | None = None) -> t.Any:
        msg = self.ws.receive()
        if msg is None:
            raise ConnectionClosed("closed", None)
        return bytes(msg) if isinstance(msg, bytearray) else msg

    def send(self, message: t.Any) -> None:
        self.ws.send(message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.ws.close(code, reason)

    @property
    def closed(self) -> bool:
        return self.ws.closed

    @property
    def close_code(self) -> int | None:
        return None


def open_ws(environ: dict, **kw: t.Any) -> t.Any:
    """Accept the upgrade (ours) or wrap the already-upgraded stock socket; None if neither."""
    upgrade = environ.get(UPGRADE_ENVIRON_KEY)
    if upgrade is not None:
        return upgrade.accept(**kw)
    stock = environ.get("wsgi.websocket")
    if stock is not None:
        return StockAdapter(stock)
    return None


def handshake_request(path: str = "/ws", *, version: str = "HTTP/1.1",
                      key: str | None = None, extra: dict | None = None,
                      drop: tuple[str, ...] = ()) -> bytes:
    headers = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key if key is not None else base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    headers.update(extra or {})
    for name in drop:
        headers.pop(name, None)
    lines = [f"GET {path} {version}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_http_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read a response head; returns (status, headers lowercased, bytes already past it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"EOF before the response head: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def read_to_eof(sock: socket.socket, initial: bytes = b"") -> bytes:
    data = initial
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class RawClient:
    """A frame-level client over a plain socket: sends any frame, even broken ones."""

    def __init__(self, port: int, path: str = "/ws") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.sendall(handshake_request(path))
        status, self.headers, self.buf = read_http_head(self.sock)
        if status != 101:
            self.sock.close()
            raise AssertionError(f"expected 101, got {status}")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.close()

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
                   rsv: int = 0, declared: int | None = None) -> None:
        n = len(payload) if declared is None else declared
        head = bytes([(0x80 if fin else 0) | rsv | opcode])
        mbit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([mbit | 127]) + struct.pack("!Q", n)
        if mask:
            key = os.urandom(4)
            head += key
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + payload)

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise PeerClosed("EOF while reading a frame")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        assert not b1 & 0x80, "server frames must not be masked"
        return bool(b0 & 0x80), b0 & 0x0F, self._need(n)

    def read_close(self) -> tuple[int | None, str]:
        """Read frames until a close frame; return its (code, reason)."""
        while True:
            _fin, op, payload = self.read_frame()
            if op == 0x8:
                if len(payload) < 2:
                    return None, ""
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8")


def close_of(frame_data: bytes) -> tuple[int | None, str]:
    """(code, reason) of a websocket-client close frame's payload."""
    if len(frame_data) < 2:
        return None, frame_data.decode("utf-8", "replace")
    return struct.unpack("!H", frame_data[:2])[0], frame_data[2:].decode("utf-8", "replace")
