"""One connection's worth of server state, on gevent.

:class:`WsConnection` owns one socket's outbound messages: written at once when the socket
takes them, else queued (bounded in messages and bytes) for a writer greenlet started on
demand, each write bounded by a timeout. :class:`AjaxClient` is a long-polling client across
its polls: its reader in the logs and the poll parked now, if any.

They get what they need injected (a ``spawn`` function and :class:`Limits`); they know
neither the hub nor Flask.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import time
import typing as t

import gevent
import gevent.event
import gevent.monkey

from .core.delivery import Reader
from .exceptions import ConnectionClosed
from .messages import RequestInfo
from .metrics import NO_METRICS, NoMetrics
from .protocol import wire
from .protocol.wire import DEFAULT_WIRE, Wire
from .transports.base import PARTIAL, SENT

if t.TYPE_CHECKING:  # pragma: no cover
    from .transports.base import WebSocket

logger = logging.getLogger("flask_sente")

Spawn = t.Callable[..., gevent.Greenlet]
#: The OS thread's id even under monkey-patching (where threading's is the greenlet's).
thread_ident: t.Callable[[], int] = gevent.monkey.get_original("_thread", "get_ident")
_conn_ids = itertools.count(1)


def new_conn_id() -> int:
    """A process-unique id per connection (and per Ajax poll): stale timers compare it."""
    return next(_conn_ids)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on one WebSocket's outbound side (from the options)."""

    #: Messages queued at most.
    queue_size: int
    #: Bytes queued at most.
    queue_bytes: int
    #: Longest a single write (or the close frame) may wait for the peer to read.
    write_timeout: float
    #: Where a close for being too slow is counted.
    metrics: NoMetrics = NO_METRICS


_CLOSE = object()


class WsConnection:
    """Hub-side state of one WebSocket: keep-alive bookkeeping and its outbound queue.

    A message is written at once when the socket takes it without waiting (the usual case:
    no queue, no greenlet switch); otherwise it is queued, and a writer greenlet — started
    then, ending when the queue is empty — writes the queue in order. So an idle connection
    has no writer greenlet at all, and a reply costs no extra switch.

    A peer that does not read makes the queue grow: past :class:`Limits` (messages or
    bytes) the queue is dropped and the socket closed with 1013 once the frame being
    written is out; a write stuck longer than ``write_timeout`` aborts the socket.
    """

    transport: t.Final = "ws"
    # Thousands of idle connections: no instance dict each.
    __slots__ = ("ws", "wire", "uid", "client_id", "request", "conn_id", "open", "reader",
                 "last_seen", "opened_at", "pinged_at", "_spawn", "_limits", "_pending",
                 "_pending_bytes", "_writer", "_send_nowait", "read_done")

    def __init__(self, ws: WebSocket, uid: t.Any, client_id: str, request: RequestInfo,
                 *, spawn: Spawn, limits: Limits, wire: Wire = DEFAULT_WIRE) -> None:
        self.ws = ws
        #: The envelope the client speaks (its dialect and protocol version).
        self.wire = wire
        self.uid = uid
        self.client_id = client_id
        self.request = request
        self.conn_id = new_conn_id()
        self.open = True
        #: Its reader in the logs (set by the hub once the handshake is out).
        self.reader: Reader | None = None
        #: Keep-alive state, kept by the reader and checked by the hub's sweeper (monotonic).
        self.last_seen = time.monotonic()
        #: When it opened (epoch seconds: the admin dashboard shows it).
        self.opened_at = time.time()
        self.pinged_at: float | None = None
        self._spawn = spawn
        self._limits = limits
        self._pending: collections.deque[t.Any] | None = None
        self._pending_bytes = 0
        self._writer: gevent.Greenlet | None = None
        self._send_nowait: t.Callable[[t.Any], int] | None = getattr(ws, "send_nowait", None)
        #: Set when the connection has ended, once its reading has moved off the request's
        #: greenlet (which waits for it: see ``Hub._read_loop``).
        self.read_done: gevent.event.Event | None = None

    def offer(self, packed: str | bytes) -> bool:
        """Send or queue a message; a full queue closes the socket (client too slow).

        Never blocks: it may run in a timer callback of the event loop.
        """
        if not self.open:
            return False
        if self._writer is None and self._send_nowait is not None:
            try:
                state = self._send_nowait(packed)
            except ConnectionClosed:
                self.open = False
                return False
            if state == SENT:
                return True
            if state == PARTIAL:
                self._writer = self._spawn(self._write_loop)
                return True
        pending = self._pending
        if pending is None:
            pending = self._pending = collections.deque()
        size = len(packed)
        limits = self._limits
        if (len(pending) >= limits.queue_size
                or self._pending_bytes + size > limits.queue_bytes and pending):
            self._too_slow()
            return False
        pending.append(packed)
        self._pending_bytes += size
        if self._writer is None:
            self._writer = self._spawn(self._write_loop)
        return True

    def _too_slow(self) -> None:
        logger.warning("closing a client that does not keep up (uid=%r, client_id=%r)",
                       self.uid, self.client_id)
        self.open = False
        self._limits.metrics.closed_1013("send-queue", len(self._pending or ()))
        # What is queued is dropped: the client reconnects and, with positions, learns what
        # it missed. The close frame goes out after the frame being written, if any.
        self._pending = collections.deque([(_CLOSE, wire.CLOSE_TOO_SLOW, "client too slow")])
        self._pending_bytes = 0
        if self._writer is None:
            self._writer = self._spawn(self._write_loop)

    def close(self, code: int, reason: str) -> None:
        """Close after what is already queued has been written."""
        if not self.open:
            return
        self.open = False
        if self._pending is None:
            self._pending = collections.deque()
        self._pending.append((_CLOSE, code, reason))
        if self._writer is None:
            self._writer = self._spawn(self._write_loop)

    def close_now(self, code: int, reason: str) -> None:
        self.open = False
        with gevent.Timeout(self._limits.write_timeout, False):
            self.ws.close(code, reason)

    def _write_loop(self) -> None:
        ws = self.ws
        timeout = self._limits.write_timeout
        try:
            with gevent.Timeout(timeout):
                flush = getattr(ws, "flush", None)
                if flush is not None:
                    flush()
            while True:
                pending = self._pending
                if not pending:
                    return
                item = pending.popleft()
                if type(item) is tuple and item[0] is _CLOSE:
                    self.open = False
                    self.close_now(item[1], item[2])
                    return
                self._pending_bytes -= len(item)
                with gevent.Timeout(timeout):
                    ws.send(item)
        except ConnectionClosed:
            self.open = False
        except gevent.Timeout:
            # The socket tore itself down (a frame may be half written): nothing more can
            # be sent, not even a close frame.
            logger.warning("aborting a WebSocket whose peer stopped reading for %g s "
                           "(uid=%r, client_id=%r)", timeout, self.uid, self.client_id)
            self.open = False
        finally:
            self._writer = None

    @property
    def version(self) -> int:
        """The protocol version the client speaks (its wire's)."""
        return self.wire.version

    @property
    def queued(self) -> int:
        """Messages waiting for the writer."""
        return len(self._pending) if self._pending else 0

    @property
    def writer(self) -> gevent.Greenlet | None:
        """The greenlet writing the queue now, if any (a stop waits for it)."""
        return self._writer

    def stop_writer(self) -> None:
        self.open = False
        writer = self._writer
        if writer is not None and not writer.dead:
            writer.kill(block=False)


class AjaxClient:
    """Hub-side state of one long-polling client, across its polls."""

    transport: t.Final = "ajax"
    __slots__ = ("uid", "client_id", "request", "reader", "wire", "conn_id", "parked",
                 "close_packed", "fast_key", "credentials", "turn", "opened_at", "last_seen")

    def __init__(self, uid: t.Any, client_id: str, request: RequestInfo,
                 reader: Reader) -> None:
        self.uid = uid
        self.client_id = client_id
        self.request = request
        self.reader = reader
        #: The envelope of its latest request (its dialect and protocol version).
        self.wire = DEFAULT_WIRE
        self.conn_id = new_conn_id()
        #: The poll parked now: set (to anything) to wake it.
        self.parked: gevent.event.AsyncResult | None = None
        #: A packed ``chsk/close`` to answer the next poll with (kick, server stopping).
        self.close_packed: str | bytes | None = None
        #: The key its requests may carry to be answered in front of Flask (``fastpath``),
        #: and the credentials it was admitted with last (``ajax.AjaxRequest.credentials``).
        self.fast_key: str | None = None
        self.credentials: t.Any = None
        #: Bumped by every GET of this client (:meth:`take_turn`): only the request whose
        #: turn it is may move the reader.
        self.turn = 0
        #: When it came (epoch seconds) and its latest GET (monotonic): the admin dashboard's
        #: "connected since" and "last active".
        self.opened_at = time.time()
        self.last_seen = time.monotonic()

    @property
    def version(self) -> int:
        """The protocol version the client speaks (its wire's)."""
        return self.wire.version

    def take_turn(self, superseded: str | bytes) -> int:
        """A new GET of this client is here: from now on only it moves the client's reader
        (docs/protocol.md §10). An older poll still parked — its connection is likely dead,
        since the client sent another — is answered ``superseded`` at once and may no longer
        read for the client. Called before the new request can yield: a flush in between
        would otherwise let the old poll take entries the new one is owed, and write them
        into a dead socket. Returns the new request's turn."""
        self.turn += 1
        self.last_seen = time.monotonic()
        parked, self.parked = self.parked, None
        self.reader.ready = False
        if parked is not None:
            parked.set(superseded)
        return self.turn
