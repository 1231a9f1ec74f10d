"""One connection's worth of server state: what a handler gets, and where replies go.

:class:`EventMsg` is the handler's view of one event; its reply slot (:class:`Replier`)
fires once and knows its way back — the sender's WebSocket, tagged with the cb_id, or the
body of the Ajax POST that carried the event. :class:`WsConnection` owns one socket's
outbound messages (written at once, or queued for a writer greenlet started on demand);
:class:`AjaxClient` keeps a long-polling client's parked poll and backlog between polls.
The hub (``hub.py``) keeps the tables of these objects; nothing here imports Flask.
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

from .exceptions import ConnectionClosed
from .protocol import events as ev
from .protocol import wire
from .protocol.packers import Packer
from .transports.base import PARTIAL, SENT

if t.TYPE_CHECKING:  # pragma: no cover
    from .hub import Hub
    from .transports.base import WebSocket

logger = logging.getLogger("flask_sente")

Transport = t.Literal["ws", "ajax"]
_conn_ids = itertools.count(1)


def new_conn_id() -> int:
    """A process-unique id per connection (and per Ajax poll): stale timers compare it."""
    return next(_conn_ids)


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """A read-only snapshot of the request that opened a connection (or sent an Ajax event).

    Handlers see it as ``msg.request``. It is a copy: events cannot set cookies or change the
    session; do that over plain HTTP.
    """

    method: str
    path: str
    url: str
    remote_addr: str | None
    headers: t.Mapping[str, str]
    cookies: t.Mapping[str, str]
    args: t.Mapping[str, str]
    session: t.Mapping[str, t.Any]


class EventMsg:
    """One event as a handler sees it.

    :ivar event: the ``(event_id, data)`` tuple.
    :ivar id: the event id, e.g. ``"todo/add"``.
    :ivar data: the event's data (None when absent).
    :ivar uid: the sender's user id (``ANONYMOUS_UID`` when anonymous).
    :ivar client_id: the sender's client id (one per tab / client instance).
    :ivar transport: ``"ws"`` or ``"ajax"``.
    :ivar request: the :class:`RequestInfo` of the connection (None for hub events).
    """

    __slots__ = ("event", "id", "data", "uid", "client_id", "transport", "request", "_replier")

    def __init__(
        self,
        event: ev.Event,
        uid: t.Any,
        client_id: str | None,
        transport: str | None,
        request: RequestInfo | None,
        replier: Replier | None = None,
    ) -> None:
        self.event = event
        self.id, self.data = event
        self.uid = uid
        self.client_id = client_id
        self.transport = transport
        self.request = request
        self._replier = replier

    @property
    def expects_reply(self) -> bool:
        """True when the client asked for a reply and none was given yet."""
        return self._replier is not None and not self._replier.done

    def reply(self, value: t.Any) -> bool:
        """Answer the client's callback with ``value``; only the first reply counts.

        Returns False when no reply was asked for or one was already given (or timed out).
        Raises :class:`~flask_sente.exceptions.PackError` if ``value`` cannot be packed.
        """
        return self._replier is not None and self._replier.reply(value)

    def _fail(self, kind: str, info: t.Any = None) -> None:
        if self._replier is not None:
            self._replier.fail(kind, info)

    def __repr__(self) -> str:
        return f"<EventMsg {self.id!r} uid={self.uid!r} client_id={self.client_id!r}>"


class Replier:
    """Once-only reply slot; subclasses decide where the packed answer goes."""

    __slots__ = ("done", "_packer")

    def __init__(self, packer: Packer) -> None:
        self.done = False
        self._packer = packer

    def reply(self, value: t.Any) -> bool:
        if self.done:
            return False
        packed = self._packer.pack(self._envelope_reply(value))  # may raise PackError
        self.done = True
        self._deliver(packed)
        return True

    def fail(self, kind: str, info: t.Any = None) -> None:
        if not self.done:
            self.done = True
            self._deliver(self._packer.pack(self._envelope_failure(kind, info)))

    def _envelope_reply(self, value: t.Any) -> list[t.Any]:
        raise NotImplementedError

    def _envelope_failure(self, kind: str, info: t.Any) -> list[t.Any]:
        raise NotImplementedError

    def _deliver(self, packed: str | bytes) -> None:
        raise NotImplementedError


class WsReplier(Replier):
    """Replies travel back on the sender's socket, tagged with its cb_id; a libev timer
    answers ``chsk/timeout`` if the handler never replies."""

    __slots__ = ("_conn", "_cb_id", "_timer")

    def __init__(self, packer: Packer, conn: WsConnection, cb_id: str, timeout: float) -> None:
        super().__init__(packer)
        self._conn = conn
        self._cb_id = cb_id
        self._timer = gevent.get_hub().loop.timer(timeout)
        self._timer.start(self._on_timeout)

    def _on_timeout(self) -> None:
        try:
            self.fail(ev.TIMEOUT)
        except Exception:  # runs in the event loop: never let it raise there
            logger.exception("could not send a reply timeout")

    def _envelope_reply(self, value: t.Any) -> list[t.Any]:
        return wire.reply(value, self._cb_id)

    def _envelope_failure(self, kind: str, info: t.Any) -> list[t.Any]:
        return wire.failure(kind, self._cb_id, info)

    def _deliver(self, packed: str | bytes) -> None:
        self._timer.close()
        self._conn.offer(packed)


class AjaxReplier(Replier):
    """Replies become the body of the POST that carried the event."""

    __slots__ = ("result",)

    def __init__(self, packer: Packer) -> None:
        super().__init__(packer)
        self.result: gevent.event.AsyncResult = gevent.event.AsyncResult()

    def _envelope_reply(self, value: t.Any) -> list[t.Any]:
        return wire.reply(value, None)

    def _envelope_failure(self, kind: str, info: t.Any) -> list[t.Any]:
        return wire.failure(kind, None, info)

    def _deliver(self, packed: str | bytes) -> None:
        self.result.set(packed)


_CLOSE = object()


class WsConnection:
    """Hub-side state of one WebSocket: keep-alive bookkeeping and its outbound queue.

    A message is written at once when the socket takes it without waiting (the usual case:
    no queue, no greenlet switch); otherwise it is queued, and a writer greenlet — started
    then, ending when the queue is empty — writes the queue in order. So an idle connection
    has no writer greenlet at all, and a reply costs no extra switch.
    """

    transport: Transport = "ws"

    def __init__(self, hub: Hub, ws: WebSocket, uid: t.Any, client_id: str,
                 request: RequestInfo) -> None:
        self.hub = hub
        self.ws = ws
        self.uid = uid
        self.client_id = client_id
        self.request = request
        self.conn_id = new_conn_id()
        self.open = True
        #: Keep-alive state, kept by the reader and checked by the hub's sweeper (monotonic).
        self.last_seen = time.monotonic()
        self.pinged_at: float | None = None
        self._pending: collections.deque[t.Any] | None = None
        self._writer: gevent.Greenlet | None = None
        self._send_nowait: t.Callable[[t.Any], int] | None = getattr(ws, "send_nowait", None)

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
                self._writer = self.hub.spawn(self._write_loop)
                return True
        pending = self._pending
        if pending is None:
            pending = self._pending = collections.deque()
        if len(pending) >= self.hub.options.send_queue_size:
            logger.warning("closing a client that does not keep up (uid=%r, client_id=%r)",
                           self.uid, self.client_id)
            self.open = False
            # offer() may run in a timer callback of the event loop, where a socket must not
            # block: close from a greenlet of our own.
            self.hub.spawn(self.ws.close, wire.CLOSE_TOO_SLOW, "client too slow")
            return False
        pending.append(packed)
        if self._writer is None:
            self._writer = self.hub.spawn(self._write_loop)
        return True

    def close(self, code: int, reason: str) -> None:
        """Close after what is already queued has been written."""
        if not self.open:
            return
        self.open = False
        if self._pending is None:
            self._pending = collections.deque()
        self._pending.append((_CLOSE, code, reason))
        if self._writer is None:
            self._writer = self.hub.spawn(self._write_loop)

    def close_now(self, code: int, reason: str) -> None:
        self.open = False
        self.ws.close(code, reason)

    def _write_loop(self) -> None:
        ws = self.ws
        try:
            flush = getattr(ws, "flush", None)
            if flush is not None:
                flush()
            pending = self._pending
            while pending:
                item = pending.popleft()
                if type(item) is tuple and item[0] is _CLOSE:
                    self.open = False
                    ws.close(item[1], item[2])
                    return
                ws.send(item)
        except ConnectionClosed:
            self.open = False
        finally:
            self._writer = None

    def stop_writer(self) -> None:
        self.open = False
        writer = self._writer
        if writer is not None and not writer.dead:
            writer.kill(block=False)


class AjaxClient:
    """Hub-side state of one long-polling client, across its polls."""

    transport: Transport = "ajax"

    def __init__(self, uid: t.Any, client_id: str, request: RequestInfo) -> None:
        self.uid = uid
        self.client_id = client_id
        self.request = request
        self.conn_id = new_conn_id()
        self.parked: gevent.event.AsyncResult | None = None
        #: Events pushed while no poll was parked, in order (wire form).
        self.backlog: list[t.Any] = []
        #: A packed ``chsk/close`` to answer the next poll with (kick, too slow).
        self.close_packed: str | bytes | None = None
