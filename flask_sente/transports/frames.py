"""A server-side WebSocket over a gevent socket: the I/O half of our RFC 6455 codec.

:class:`ServerWebSocket` implements :class:`.base.WebSocket`. It reads with one ``recv`` of up
to 64 KiB at a time into the buffer of a :class:`~flask_sente.protocol.frames.FrameReader`
(the sans-I/O half, shared with the Python client), which parses, unmasks (one big-integer
XOR), validates UTF-8 and refuses oversized messages from the frame header; a ``receive``
timeout never loses a partly read frame. It writes each frame with one ``send`` under a lock
(writes from several greenlets never interleave). It knows nothing of HTTP:
``websocket.py`` performs the upgrade and hands it the socket.
"""
from __future__ import annotations

import fcntl
import functools
import logging
import socket
import struct
import termios
import typing as t

import gevent
import gevent.socket
from gevent import Timeout
from gevent.lock import Semaphore

from ..exceptions import ConnectionClosed, LocalProtocolError, RemoteProtocolError
from ..protocol.closecodes import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    may_send,
)
from ..protocol.frames import (
    DEFAULT_MAX_MESSAGE_SIZE,
    FIN_BINARY,
    FIN_TEXT,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    SERVER,
    FrameReader,
    close_payload,
    parse_close,
    server_frame,
)
from ..protocol.frames import mask as _unmask  # noqa: F401 - kept for tests and tools
from .base import BUSY, PARTIAL, SENT

log = logging.getLogger(__name__)

__all__ = ["ServerWebSocket", "DEFAULT_MAX_MESSAGE_SIZE", "CLOSE_TIMEOUT", "RECV_SIZE"]

#: Seconds to wait for the peer's half of the closing handshake before dropping TCP.
CLOSE_TIMEOUT = 2.0
#: Bytes asked of the kernel per ``recv``.
RECV_SIZE = 65536
#: ``SO_LINGER`` on, 0 s: closing the descriptor resets the connection (RST) and frees it at
#: once, whatever is still queued for the peer.
_LINGER_RESET = struct.pack("ii", 1, 0)


def unsent_bytes(sock: t.Any) -> int:
    """Bytes the kernel still holds for the peer (sent but not acknowledged, or not sent):
    ``SIOCOUTQ`` (``TIOCOUTQ``), Linux. 0 where it cannot be asked."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", buf)[0])


class ServerWebSocket:
    """One accepted server-side WebSocket (implements :class:`.base.WebSocket`).

    Reading is done by whichever greenlet calls :meth:`receive` (one at a time). Writing may
    happen from any greenlet: every frame, including pongs and close frames, is written with
    a single ``sendall`` while holding ``_wlock``, so frames never interleave or get lost.
    The object has no ``__del__``: dropping it writes nothing.
    """

    __slots__ = (
        "_sock", "_recv", "_send", "_sendall", "_raw_send", "_tail", "_wlock", "_reader",
        "_buf", "_next_frame",
        "_peer",
        "_close_sent", "_close_received", "_dead", "_code", "_reason",
        "_close_timer", "_close_timeout", "_reading", "_wait_readable", "_since_recv",
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
        plain = type(sock) is gevent.socket.socket
        self._raw_send = sock._sock.send if plain else None
        # Waits (as gevent's recv does after EAGAIN, socket timeout included) until the
        # socket is readable: see _recv_or_close.
        self._wait_readable: t.Callable[[], None] | None = (
            functools.partial(sock._wait, sock._read_event) if plain else None)
        #: Messages returned since the last recv.
        self._since_recv = 0
        #: Bytes owed to the peer before any frame: what send_nowait could not write of its
        #: frame, or (``unsent``) the 101 response, so that it leaves in one segment with
        #: the first message. Written before anything else, and before waiting to read.
        self._tail: memoryview | None = memoryview(unsent) if unsent else None
        self._wlock = Semaphore()
        self._reader = FrameReader(SERVER, self._on_control, max_message_size=max_message_size,
                                   buffered=buffered)
        # Bound once: receive() runs per message, and every lookup there counts.
        self._buf = self._reader.buffer
        self._next_frame = self._reader.next
        self._peer = peer
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
        next_frame = self._next_frame
        deadline = None if timeout is None else gevent.get_hub().loop.now() + timeout
        while True:
            try:
                frame = next_frame()
            except RemoteProtocolError as ex:
                self._fail(ex.close_code, str(ex))
            if frame is not None:
                if not self._close_sent:
                    self._since_recv += 1
                    return frame
                continue  # a message after our close frame: dropped
            # Need more bytes. The timeout covers the wait only: frames are parsed outside
            # it and writes never run under it, so a timeout cannot cut a frame in half.
            if self._tail is not None:
                self.flush()  # the peer may be waiting for the 101 before it says anything
            chunk: bytes | None
            if deadline is None:
                chunk = self._recv_or_close(None)
                assert chunk is not None  # no timeout: data or an exception
            else:
                remaining = deadline - gevent.get_hub().loop.now()
                if remaining <= 0:
                    return None
                chunk = self._recv_or_close(remaining)
                if chunk is None:
                    return None
            buf += chunk

    def _recv_or_close(self, timeout: float | None) -> bytes | None:
        """One ``recv``; None on timeout; raises ConnectionClosed on EOF or socket error.

        Without a timeout, when the last read brought exactly one message (a peer that
        waits for our answer before it sends again, the usual case) the socket is waited
        on first: a ``recv`` now would fail with EAGAIN, a syscall and an exception per
        message for nothing. A peer whose reads bring several messages is read at once.
        """
        wait_first = self._since_recv == 1
        self._since_recv = 0
        try:
            data: bytes
            if timeout is None:
                if wait_first and self._wait_readable is not None:
                    self._wait_readable()
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

    def _on_control(self, opcode: int, payload: bytes) -> None:
        """A control frame from the reader: answer pings, end on a close frame."""
        if opcode == OP_PING:
            if not self._close_sent:
                self._write_control(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self._on_close_frame(payload)
        # a pong needs nothing

    def _on_close_frame(self, payload: bytes) -> t.NoReturn:
        try:
            code, reason = parse_close(payload)
        except RemoteProtocolError as ex:
            self._fail(ex.close_code, str(ex))
        self._close_received = True
        if not self._close_sent:
            # The peer started the closing handshake: echo its code, then drop TCP (the
            # server closes the connection first, RFC 6455 §7.1.1).
            self._code, self._reason = code, reason
            self._write_control(OP_CLOSE, payload[:2], closing=True)
        log.debug("websocket %r: close %s %r received", self._peer, code, reason)
        self._teardown()
        raise self._closed_error("closed by peer")

    # -- writing -----------------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            frame = server_frame(FIN_TEXT, message.encode("utf-8"))
        else:
            frame = server_frame(FIN_BINARY, bytes(message))
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
            frame = server_frame(FIN_TEXT, message.encode("utf-8"))
        else:
            frame = server_frame(FIN_BINARY, bytes(message))
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
            # A write timeout (or a kill): the peer is not reading, and part of a frame may
            # be out. Nothing can be written again, and nothing queued would be read.
            if self._code is None:
                self._code, self._reason = CLOSE_ABNORMAL, "write interrupted"
            self._abort()
            raise

    def _write_control(
        self, opcode: int, payload: bytes, *, closing: bool = False,
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
                self._write_locked(server_frame(0x80 | opcode, payload))
            except ConnectionClosed:
                return False
            return True
        finally:
            wlock.release()

    # -- closing -----------------------------------------------------------------------

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        self._close(code, reason, lock_timeout=self._close_timeout)

    def _close(self, code: int, reason: str, *, lock_timeout: float | None) -> None:
        if not may_send(code):
            raise LocalProtocolError(f"close code {code} may not be sent")
        if self._close_sent or self._close_received or self._dead:
            return
        payload = close_payload(code, reason)
        if self._code is None:
            self._code, self._reason = code, reason
        written = self._write_control(OP_CLOSE, payload, closing=True,
                                      lock_timeout=lock_timeout)
        if not written:
            # A writer is stuck on a peer that does not read: give up on the handshake.
            log.debug("websocket %r: could not write close frame, dropping", self._peer)
            self._close_sent = True
            self._abort()
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
        if not self._dead and unsent_bytes(self._sock):
            self._abort()  # not even our close frame was read: a peer that stopped reading
        else:
            self._teardown()

    def _fail(self, code: int, reason: str) -> t.NoReturn:
        """Fail the connection (RFC 6455 §7.1.7): close frame, drop TCP, raise."""
        log.debug("websocket %r: failing with %s: %s", self._peer, code, reason)
        if self._code is None or not self._close_sent:
            self._code, self._reason = code, reason
        self._write_control(OP_CLOSE, close_payload(code, reason), closing=True,
                            lock_timeout=self._close_timeout)
        self._teardown()
        raise ConnectionClosed(reason, code)

    def _lost(self, why: str) -> t.NoReturn:
        if self._code is None:
            log.debug("websocket %r: %s", self._peer, why)
            self._code, self._reason = CLOSE_ABNORMAL, why
        self._teardown()
        raise self._closed_error(why)

    def _abort(self) -> None:
        """Tear down with a TCP reset, for a peer that stopped reading.

        A graceful close would queue a FIN behind the bytes the peer never read, and the
        socket would sit in FIN-WAIT-1 holding them (megabytes per stalled peer) until the
        kernel gives up, minutes later. With ``SO_LINGER`` {on, 0} the close of the
        descriptor (the handler's, once the connection ended) sends RST and frees it at
        once. Shut down for reading only, which wakes a reader blocked in ``recv`` with EOF
        and queues no FIN.
        """
        if self._dead:
            return
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        self._teardown(socket.SHUT_RD)

    def _teardown(self, how: int = socket.SHUT_RDWR) -> None:
        """Mark dead, stop the close timer and shut the TCP connection down (both ways,
        or as ``how`` says), once: after an abort no FIN is queued by a later call.

        The handler that owns the socket still closes the file descriptor.
        """
        was_dead, self._dead = self._dead, True
        timer = self._close_timer
        if timer is not None:
            self._close_timer = None
            timer.stop()
            timer.close()
        if was_dead:
            return
        try:
            self._sock.shutdown(how)
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
