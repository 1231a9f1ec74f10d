"""The client's WebSocket (flask_sente/client/websocket.py, over the RFC 6455 codec of
flask_sente/protocol/frames.py) against a scripted peer on a real socket.

The flask_sente server never sends fragments, WebSocket-level pings or broken frames, so a
small hand-written peer does: it answers the upgrade as told, sends the frames given, and
reads back what the client sent.
"""
from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
import typing as t

import pytest

from flask_sente.client.websocket import WebSocket
from flask_sente.exceptions import ConnectionClosed, Rejected, RemoteProtocolError
from flask_sente.protocol.frames import accept_key, mask

from .conftest import TIMEOUT

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = False,
          rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if masked:
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_client_frame(conn: socket.socket) -> tuple[bool, int, bytes]:
    """One frame from the client, unmasked (and checked to be masked)."""
    b0, b1 = read_exact(conn, 2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(conn, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(conn, 8))[0]
    key = read_exact(conn, 4)
    data = read_exact(conn, n)
    return bool(b0 & 0x80), b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))


class Peer:
    """Accepts one connection, answers the upgrade, then runs ``script(conn)``."""

    def __init__(self, script: t.Callable[[socket.socket], None] | None = None, *,
                 response: t.Callable[[str], bytes] | None = None) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(TIMEOUT)
        self.script = script
        self.response = response or self.accept_response
        self.request = b""
        self.error: BaseException | None = None
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.listener.getsockname()[1]}/chsk?client-id=x"

    @staticmethod
    def accept_response(key: str) -> bytes:
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            self.conn = conn
            conn.settimeout(TIMEOUT)
            while b"\r\n\r\n" not in self.request:
                self.request += conn.recv(4096)
            key = [line.split(b":", 1)[1].strip().decode()
                   for line in self.request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:")][0]
            conn.sendall(self.response(key))
            if self.script is not None:
                self.script(conn)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> None:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
        if self.error is not None:
            raise self.error


@pytest.fixture
def peers() -> t.Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        peer.finish()


def connect(peer: Peer) -> WebSocket:
    return WebSocket.connect(peer.url, headers=[("X-Test", "1")], timeout=TIMEOUT)


def test_mask_and_accept_key_match_the_rfc():
    key = b"\x01\x02\x03\x04"
    for n in (0, 1, 3, 4, 5, 1000):
        payload = os.urandom(n)
        assert mask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455


def test_fragments_pings_and_lengths(peers):
    replies: list[tuple[bool, int, bytes]] = []
    big = os.urandom(70_000)  # 64-bit length

    def script(conn: socket.socket) -> None:
        conn.sendall(frame(0x1, "hé".encode(), fin=False) + frame(0x9, b"are you there")
                     + frame(0x0, b" wor", fin=False) + frame(0x0, b"ld"))
        conn.sendall(frame(0x2, b"\x00" * 300) + frame(0x2, big) + frame(0xA, b"unasked"))
        replies.append(read_client_frame(conn))  # the pong
        for _ in range(3):
            replies.append(read_client_frame(conn))

    peer = Peer(script)
    peers.append(peer)
    ws = connect(peer)
    try:
        assert b"X-Test: 1" in peer.request and b"Sec-WebSocket-Version: 13" in peer.request
        assert ws.receive() == "hé world"
        assert ws.receive() == b"\x00" * 300
        assert ws.receive() == big
        ws.send("text ✓")
        ws.send(b"\x01\x02")
        ws.send(os.urandom(70_000))
        peer.thread.join(TIMEOUT)
        assert replies[0] == (True, 0xA, b"are you there")
        assert replies[1] == (True, 0x1, "text ✓".encode())
        assert replies[2] == (True, 0x2, b"\x01\x02")
        assert len(replies[3][2]) == 70_000
    finally:
        ws.abort()
        ws.release()


def test_server_close_is_echoed_and_reported(peers):
    echoed: list[tuple[bool, int, bytes]] = []

    def script(conn: socket.socket) -> None:
        conn.sendall(frame(0x8, struct.pack("!H", 4001) + b"kicked"))
        echoed.append(read_client_frame(conn))

    peer = Peer(script)
    peers.append(peer)
    ws = connect(peer)
    try:
        with pytest.raises(ConnectionClosed) as info:
            ws.receive()
        assert (info.value.code, ws.close_code, ws.close_reason) == (4001, 4001, "kicked")
        assert ws.close_received
        peer.thread.join(TIMEOUT)
        assert echoed == [(True, 0x8, struct.pack("!H", 4001))]
        with pytest.raises(ConnectionClosed):
            ws.send("after close")
    finally:
        ws.release()


@pytest.mark.parametrize("bad, code", [
    (frame(0x1, b"masked", masked=True), 1002),
    (frame(0x1, b"rsv", rsv=0x40), 1002),
    (frame(0x3, b"opcode 3"), 1002),
    (frame(0x0, b"no start"), 1002),
    (frame(0x9, b"x", fin=False), 1002),
    (frame(0x1, b"\xff\xfe"), 1007),
    (frame(0x2, b"x" * 2000), 1009),
])
def test_protocol_violations_close_with_the_right_code(peers, bad, code):
    closes: list[tuple[bool, int, bytes]] = []

    def script(conn: socket.socket) -> None:
        conn.sendall(bad)
        closes.append(read_client_frame(conn))

    peer = Peer(script)
    peers.append(peer)
    ws = WebSocket.connect(peer.url, timeout=TIMEOUT, max_message_size=1000)
    try:
        with pytest.raises(ConnectionClosed) as info:
            ws.receive()
        assert info.value.code == code
        peer.thread.join(TIMEOUT)
        assert closes[0][1] == 0x8 and struct.unpack("!H", closes[0][2][:2])[0] == code
    finally:
        ws.release()


def test_eof_without_close_frame_is_1006(peers):
    peer = Peer(lambda conn: conn.shutdown(socket.SHUT_RDWR))
    peers.append(peer)
    ws = connect(peer)
    try:
        with pytest.raises(ConnectionClosed) as info:
            ws.receive()
        assert info.value.code == 1006 and not ws.close_received
    finally:
        ws.release()


def test_abort_from_another_thread_ends_a_blocked_receive(peers):
    hold = threading.Event()
    peer = Peer(lambda conn: hold.wait(TIMEOUT))
    peers.append(peer)
    ws = connect(peer)
    outcome: list[BaseException] = []

    def reader() -> None:
        try:
            ws.receive()
        except ConnectionClosed as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        ws.abort()
        thread.join(TIMEOUT)
        assert not thread.is_alive() and isinstance(outcome[0], ConnectionClosed)
    finally:
        hold.set()
        ws.release()


@pytest.mark.parametrize("response, message", [
    (lambda key: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n", "Accept"),
    (lambda key: b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", "Upgrade"),
    (lambda key: b"garbage\r\n\r\n", "status line"),
])
def test_a_bad_101_is_a_protocol_error(peers, response, message):
    peer = Peer(response=response)
    peers.append(peer)
    with pytest.raises(RemoteProtocolError) as info:
        WebSocket.connect(peer.url, timeout=TIMEOUT)
    assert message in str(info.value)


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 403 FORBIDDEN\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\n"
    b"Bad CSRF token\n",
    b"HTTP/1.1 403 FORBIDDEN\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4\r\nBad \r\nb\r\nCSRF token\n\r\n0\r\n\r\n",
    b"HTTP/1.0 403 FORBIDDEN\r\n\r\nBad CSRF token\n",
])
def test_a_refused_upgrade_reports_status_and_body(peers, response):
    def close_after(conn: socket.socket) -> None:
        conn.shutdown(socket.SHUT_WR)

    peer = Peer(close_after, response=lambda key: response)
    peers.append(peer)
    with pytest.raises(Rejected) as info:
        WebSocket.connect(peer.url, timeout=TIMEOUT)
    assert (info.value.status, info.value.body) == (403, "Bad CSRF token")
