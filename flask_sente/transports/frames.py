"""A server-side WebSocket over a gevent socket: RFC 6455 frames, our own codec.

:class:`ServerWebSocket` implements :class:`.base.WebSocket`. It reads with one ``recv`` of up
to 64 KiB at a time into its own buffer and parses frames from there (a ``receive`` timeout
never loses a partly read frame), unmasks with one big-integer XOR and validates UTF-8 with
the codec (C speed), refuses oversized messages from the frame header, and writes each frame
with one ``send`` under a lock (writes from several greenlets never interleave). It knows
nothing of HTTP: ``websocket.py`` performs the upgrade and hands it the socket.
"""
from __future__ import annotations

import codecs
import logging
import socket
import struct
import typing as t

import gevent
import gevent.socket
from gevent import Timeout
from gevent.lock import Semaphore

from ..exceptions import ConnectionClosed, LocalProtocolError
from ..protocol.wire import (
    CLOSE_GOING_AWAY,
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
)
from .base import BUSY, PARTIAL, SENT

log = logging.getLogger(__name__)

#: Default limit for one incoming message (all fragments together), in bytes.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
#: Reserved close codes: never sent, only reported locally.
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
#: Seconds to wait for the peer's half of the closing handshake before dropping TCP.
CLOSE_TIMEOUT = 2.0
#: Bytes asked of the kernel per ``recv``.
RECV_SIZE = 65536

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_VALID_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))

_utf8_incremental = codecs.getincrementaldecoder("utf-8")
_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack


def _valid_received_close_code(code: int) -> bool:
    """RFC 6455 §7.4: codes a peer may put on the wire (1012-1014 are IANA-registered)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _unmask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask`` at C speed (one big-integer XOR)."""
    n = len(data)
    if not n:
        return b""
    key = (mask * ((n + 3) >> 2))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little"
    )


def _frame(first_byte: int, payload: bytes) -> bytes:
    """An unmasked (server -> client) frame: header + payload in one bytes object."""
    n = len(payload)
    if n < 126:
        return bytes((first_byte, n)) + payload
    if n < 65536:
        return _pack_16(first_byte, 126, n) + payload
    return _pack_64(first_byte, 127, n) + payload


def _close_payload(code: int | None, reason: str) -> bytes:
    if code is None:
        return b""
    raw = reason.encode("utf-8")
    if len(raw) > 123:
        # A control frame carries at most 125 bytes: cut on a character boundary.
        raw = raw[:123].decode("utf-8", "ignore").encode("utf-8")
    return code.to_bytes(2, "big") + raw


class ServerWebSocket:
    """One accepted server-side WebSocket (implements :class:`.base.WebSocket`).

    Reading is done by whichever greenlet calls :meth:`receive` (one at a time). Writing may
    happen from any greenlet: every frame, including pongs and close frames, is written with
    a single ``sendall`` while holding ``_wlock``, so frames never interleave or get lost.
    The object has no ``__del__``: dropping it writes nothing.
    """

    __slots__ = (
        "_sock", "_recv", "_send", "_sendall", "_raw_send", "_tail", "_wlock", "_buf", "_max",
        "_peer",
        "_frag_op", "_frag_parts", "_frag_size", "_frag_decoder",
        "_close_sent", "_close_received", "_dead", "_code", "_reason",
        "_close_timer", "_close_timeout", "_reading",
    )

    def __init__(
        self,
        sock: t.Any,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        buffered: bytes = b"",
        close_timeout: float | None = CLOSE_TIMEOUT,
        peer: t.Any = None,
        unsent: bytes = b"",
    ) -> None:
        self._sock = sock
        self._recv = sock.recv
        self._send = sock.send
        self._sendall = sock.sendall
        # The OS socket under a plain gevent socket (never under TLS), for send_nowait.
        self._raw_send = sock._sock.send if type(sock) is gevent.socket.socket else None
        #: Bytes owed to the peer before any frame: what send_nowait could not write of its
        #: frame, or (``unsent``) the 101 response, so that it leaves in one segment with
        #: the first message. Written before anything else, and before waiting to read.
        self._tail: memoryview | None = memoryview(unsent) if unsent else None
        self._wlock = Semaphore()
        self._buf = bytearray(buffered)
        self._max = max_message_size or 0
        self._peer = peer
        self._frag_op = 0
        self._frag_parts: list[t.Any] = []
        self._frag_size = 0
        self._frag_decoder: t.Any = None
        self._close_sent = False
        self._close_received = False
        self._dead = False
        self._code: int | None = None
        self._reason = ""
        self._close_timer: t.Any = None
        self._close_timeout = close_timeout
        self._reading = False

    def __repr__(self) -> str:
        state = "open" if not self.closed else f"closed {self._code}"
        return f"<ServerWebSocket {self._peer!r} {state}>"

    # -- state -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._close_sent or self._close_received or self._dead

    @property
    def close_code(self) -> int | None:
        return self._code

    @property
    def close_reason(self) -> str:
        return self._reason

    def _closed_error(self, default: str = "connection closed") -> ConnectionClosed:
        return ConnectionClosed(self._reason or default, self._code)

    # -- reading -----------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        if self._close_sent or self._close_received or self._dead:
            raise self._closed_error()
        self._reading = True
        try:
            return self._read_message(timeout)
        finally:
            self._reading = False

    def _read_message(self, timeout: float | None) -> str | bytes | None:
        """Parse frames from the buffer, reading more as needed, until a whole message.

        After we sent a close frame, data messages are dropped and this keeps reading until
        the peer's close frame or EOF (the closing handshake), then raises.
        """
        buf = self._buf
        deadline = None if timeout is None else gevent.get_hub().loop.now() + timeout
        while True:
            n = len(buf)
            if n >= 2:
                b0 = buf[0]
                b1 = buf[1]
                if not b1 & 0x80:
                    self._fail(CLOSE_PROTOCOL_ERROR, "client frame not masked")
                if b0 & 0x70:
                    self._fail(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension agreed)")
                op = b0 & 0x0F
                if op not in _VALID_OPCODES:
                    self._fail(CLOSE_PROTOCOL_ERROR, f"reserved opcode {op:#x}")
                length = b1 & 0x7F
                if length < 126:
                    hlen = 6
                elif length == 126:
                    if n < 4:
                        length = -1
                    else:
                        length = (buf[2] << 8) | buf[3]
                        hlen = 8
                else:
                    if n < 10:
                        length = -1
                    else:
                        length = int.from_bytes(buf[2:10], "big")
                        hlen = 14
                        if length >> 63:
                            self._fail(CLOSE_PROTOCOL_ERROR, "frame length has the top bit set")
                if length >= 0:
                    if op & 0x8:
                        if length > 125 or not b0 & 0x80:
                            self._fail(CLOSE_PROTOCOL_ERROR,
                                       "oversized or fragmented control frame")
                    elif self._max and self._frag_size + length > self._max:
                        self._fail(
                            CLOSE_TOO_BIG,
                            f"message of at least {self._frag_size + length} bytes exceeds "
                            f"the limit of {self._max}",
                        )
                    end = hlen + length
                    if n >= end:
                        payload = _unmask(buf[hlen:end], buf[hlen - 4:hlen])
                        del buf[:end]
                        message = self._on_frame(b0 & 0x80, op, payload)
                        if message is not None and not self._close_sent:
                            return message
                        continue
            # Need more bytes. The timeout covers the wait only: frames are parsed outside
            # it and writes never run under it, so a timeout cannot cut a frame in half.
            if self._tail is not None:
                self.flush()  # the peer may be waiting for the 101 before it says anything
            if deadline is None:
                data = self._recv_or_close(None)
            else:
                remaining = deadline - gevent.get_hub().loop.now()
                if remaining <= 0:
                    return None
                data = self._recv_or_close(remaining)
                if data is None:
                    return None
            buf += data

    def _recv_or_close(self, timeout: float | None) -> bytes | None:
        """One ``recv``; None on timeout; raises ConnectionClosed on EOF or socket error."""
        try:
            if timeout is None:
                data = self._recv(RECV_SIZE)
            else:
                timer = Timeout._start_new_or_dummy(timeout)
                try:
                    data = self._recv(RECV_SIZE)
                except Timeout as ex:
                    if ex is not timer:
                        raise
                    return None
                finally:
                    timer.close()
        except OSError as ex:
            self._lost(f"socket error while reading: {ex}")
        if not data:
            self._lost("peer closed the TCP connection")
        return data

    def _on_frame(self, fin: int, op: int, payload: bytes) -> str | bytes | None:
        """Handle one complete frame; return a message when one is complete."""
        if op == OP_TEXT or op == OP_BINARY:
            if self._frag_op:
                self._fail(CLOSE_PROTOCOL_ERROR, "new message started inside a fragmented one")
            if fin:
                if op == OP_BINARY:
                    return payload
                try:
                    return payload.decode("utf-8")
                except UnicodeDecodeError:
                    self._fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
            self._frag_op = op
            self._frag_size = len(payload)
            if op == OP_TEXT:
                self._frag_decoder = _utf8_incremental("strict")
                payload = self._decode_fragment(payload, False)
            self._frag_parts = [payload]
            return None
        if op == OP_CONT:
            if not self._frag_op:
                self._fail(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
            self._frag_size += len(payload)
            if self._frag_decoder is not None:
                payload = self._decode_fragment(payload, bool(fin))
            self._frag_parts.append(payload)
            if not fin:
                return None
            parts = self._frag_parts
            text = self._frag_decoder is not None
            self._frag_op = 0
            self._frag_parts = []
            self._frag_size = 0
            self._frag_decoder = None
            return "".join(parts) if text else b"".join(parts)
        if op == OP_PING:
            if not self._close_sent:
                self._write_control(0x80 | OP_PONG, payload)
            return None
        if op == OP_PONG:
            return None
        self._on_close_frame(payload)  # OP_CLOSE: always raises
        return None  # pragma: no cover

    def _decode_fragment(self, payload: bytes, final: bool) -> str:
        try:
            return self._frag_decoder.decode(payload, final)
        except UnicodeDecodeError:
            self._fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
            raise  # pragma: no cover

    def _on_close_frame(self, payload: bytes) -> t.NoReturn:
        if len(payload) == 1:
            self._fail(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if not _valid_received_close_code(code):
                self._fail(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self._fail(CLOSE_INVALID_DATA, "invalid UTF-8 in the close reason")
        else:
            code, reason = CLOSE_NO_STATUS, ""
        self._close_received = True
        if not self._close_sent:
            # The peer started the closing handshake: echo its code, then drop TCP (the
            # server closes the connection first, RFC 6455 §7.1.1).
            self._code, self._reason = code, reason
            self._write_control(0x80 | OP_CLOSE, payload[:2], closing=True)
        log.debug("websocket %r: close %s %r received", self._peer, code, reason)
        self._teardown()
        raise self._closed_error("closed by peer")

    # -- writing -----------------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            frame = _frame(0x80 | OP_TEXT, message.encode("utf-8"))
        else:
            frame = _frame(0x80 | OP_BINARY, bytes(message))
        wlock = self._wlock
        wlock.acquire()
        try:
            if self._close_sent or self._close_received or self._dead:
                raise self._closed_error()
            self._write_locked(frame)
        finally:
            wlock.release()

    def send_nowait(self, message: str | bytes) -> int:
        """Write one message now if that needs no waiting: never blocks or switches, so it
        may run in the event loop itself. Returns ``SENT``; ``PARTIAL`` when the kernel took
        only part of the frame (the rest is held and goes out before anything else: call
        :meth:`flush` from a greenlet); or ``BUSY`` when nothing was written because another
        write is in progress (use :meth:`send`). Raises ConnectionClosed like ``send``.
        """
        raw = self._raw_send
        if raw is None or self._wlock.locked():
            return BUSY
        if self._close_sent or self._close_received or self._dead:
            raise self._closed_error()
        if isinstance(message, str):
            frame = _frame(0x80 | OP_TEXT, message.encode("utf-8"))
        else:
            frame = _frame(0x80 | OP_BINARY, bytes(message))
        tail = self._tail
        if tail is not None:
            self._tail = None
            frame = bytes(tail) + frame
        try:
            sent = raw(frame)
        except BlockingIOError:
            sent = 0
        except OSError as ex:
            self._write_failed(ex)
        if sent == len(frame):
            return SENT
        self._tail = memoryview(frame)[sent:]
        return PARTIAL

    def flush(self) -> None:
        """Write what :meth:`send_nowait` left over, waiting for the peer as needed."""
        if self._tail is None:
            return
        wlock = self._wlock
        wlock.acquire()
        try:
            if self._tail is not None and not self._dead:
                self._write_locked(b"")
        finally:
            wlock.release()

    def _write_failed(self, ex: OSError) -> t.NoReturn:
        log.debug("websocket %r: write failed: %s", self._peer, ex)
        if self._code is None:
            self._code, self._reason = CLOSE_ABNORMAL, "connection lost"
        self._teardown()
        raise self._closed_error("connection lost") from None

    def _write_locked(self, frame: bytes) -> None:
        """Write one whole frame; the caller holds ``_wlock``.

        One ``send`` usually takes the whole frame; ``sendall`` (which waits for the peer to
        read) only handles what is left, since gevent's ``sendall`` costs a ``getsockopt``
        and memoryview chunking on every call.

        If the write fails the socket is dead (1006). If it is interrupted (a Timeout or a
        kill raised into this greenlet), part of a frame may be on the wire, so nothing can
        ever be written again: the socket is torn down before the exception goes on.
        """
        try:
            tail = self._tail
            if tail is not None:  # the rest of a frame send_nowait began: first, whole
                self._tail = None
                self._sendall(tail)
            if not frame:
                return
            sent = self._send(frame)
            if sent < len(frame):
                self._sendall(memoryview(frame)[sent:])
        except OSError as ex:
            self._write_failed(ex)
        except BaseException:
            if self._code is None:
                self._code, self._reason = CLOSE_ABNORMAL, "write interrupted"
            self._teardown()
            raise

    def _write_control(
        self, first_byte: int, payload: bytes, *, closing: bool = False,
        lock_timeout: float | None = None,
    ) -> bool:
        """Write a control frame if the socket can still take one; True if written."""
        wlock = self._wlock
        if not wlock.acquire(timeout=lock_timeout):
            return False
        try:
            if self._close_sent or self._dead:
                return False
            if closing:
                self._close_sent = True
            try:
                self._write_locked(_frame(first_byte, payload))
            except ConnectionClosed:
                return False
            return True
        finally:
            wlock.release()

    # -- closing -----------------------------------------------------------------------

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        self._close(code, reason, lock_timeout=self._close_timeout)

    def _close(self, code: int, reason: str, *, lock_timeout: float | None) -> None:
        if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
            raise LocalProtocolError(f"close code {code} may not be sent")
        if self._close_sent or self._close_received or self._dead:
            return
        payload = _close_payload(code, reason)
        if self._code is None:
            self._code, self._reason = code, reason
        written = self._write_control(0x80 | OP_CLOSE, payload, closing=True,
                                      lock_timeout=lock_timeout)
        if not written:
            # A writer is stuck on a peer that does not read: give up on the handshake.
            log.debug("websocket %r: could not write close frame, dropping", self._peer)
            self._close_sent = True
            self._teardown()
            return
        if not self._close_received and not self._dead:
            self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        """Bound the wait for the peer's close frame: on expiry, shut the socket down.

        A libev timer, not a greenlet, so nothing outlives the connection; shutting the
        socket down wakes a reader blocked in ``recv`` with EOF.
        """
        if self._close_timeout is None or self._close_timer is not None:
            return
        timer = gevent.get_hub().loop.timer(self._close_timeout)
        self._close_timer = timer
        timer.start(self._on_close_timeout)

    def _on_close_timeout(self) -> None:
        if not self._close_received and not self._dead:
            log.debug("websocket %r: no close frame from peer in time", self._peer)
        self._teardown()

    def _fail(self, code: int, reason: str) -> t.NoReturn:
        """Fail the connection (RFC 6455 §7.1.7): close frame, drop TCP, raise."""
        log.debug("websocket %r: failing with %s: %s", self._peer, code, reason)
        if self._code is None or not self._close_sent:
            self._code, self._reason = code, reason
        self._write_control(0x80 | OP_CLOSE, _close_payload(code, reason), closing=True,
                            lock_timeout=self._close_timeout)
        self._teardown()
        raise ConnectionClosed(reason, code)

    def _lost(self, why: str) -> t.NoReturn:
        if self._code is None:
            log.debug("websocket %r: %s", self._peer, why)
            self._code, self._reason = CLOSE_ABNORMAL, why
        self._teardown()
        raise self._closed_error(why)

    def _teardown(self) -> None:
        """Mark dead, stop the close timer and shut the TCP connection down (both ways).

        The handler that owns the socket still closes the file descriptor.
        """
        self._dead = True
        timer = self._close_timer
        if timer is not None:
            self._close_timer = None
            timer.stop()
            timer.close()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _finish(self, code: int, *, wait: bool) -> None:
        """Called by the handler when the app returned: close and end the handshake.

        With ``wait``, and if no other greenlet is reading, read (and drop) until the peer's
        close frame or ``close_timeout``, so a well-behaved client sees a clean close.
        """
        try:
            self._close(code, "", lock_timeout=self._close_timeout if wait else 0)
            if wait and not self._dead and not self._reading:
                self._reading = True
                try:
                    if self._read_message(self._close_timeout) is None:
                        log.debug("websocket %r: close handshake timed out", self._peer)
                except ConnectionClosed:
                    pass
                finally:
                    self._reading = False
        finally:
            self._teardown()

    def _going_away(self, reason: str) -> None:
        """Close 1001 for a server shutdown; never blocks longer than ``close_timeout``."""
        self._close(CLOSE_GOING_AWAY, reason, lock_timeout=self._close_timeout)
