"""What a handler gets, and where its reply goes.

:class:`EventMsg` is the handler's view of one event; its reply slot (:class:`Replier`)
fires once and knows its way back — the sender's WebSocket, tagged with the cb_id, or the
body of the Ajax POST that carried the event. :class:`RequestInfo` is the snapshot of the
request that opened the connection. Nothing here imports Flask or the hub.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import typing as t

import gevent
import gevent.event

from .backplanes.base import current_record
from .core.delivery import BROADCAST, TOPIC, USER, topic_log_name
from .metrics import NO_METRICS, NoMetrics
from .protocol import events as ev
from .protocol.packers import Packer
from .protocol.wire import Wire

logger = logging.getLogger("flask_sente")


class Outbox(t.Protocol):
    """Where a WebSocket reply is offered (a :class:`~flask_sente.connections.WsConnection`)."""

    #: The envelope the connection speaks: replies are built in it.
    wire: Wire

    def offer(self, packed: str | bytes) -> bool: ...


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

    def _reply_later(self) -> None:
        """The reply, if one is owed, may come after this returns: start its timeout."""
        if self._replier is not None:
            self._replier.start_timeout()

    def __repr__(self) -> str:
        return f"<EventMsg {self.id!r} uid={self.uid!r} client_id={self.client_id!r}>"


class JoinMsg:
    """A client asking to join a topic, as an ``on_join`` handler sees it.

    :ivar topic: the topic asked for, e.g. ``"room/lobby"``.
    :ivar data: what the client passed to ``join`` (None when nothing).
    :ivar uid: the client's user id.
    :ivar client_id: the client's id (one per tab / client instance).
    :ivar transport: ``"ws"`` or ``"ajax"``.
    :ivar request: the :class:`RequestInfo` of the connection.
    :ivar rejoin: True when this client was let in before (it is coming back after a
        reconnect, or the server joined it); the handler may decide again.
    """

    __slots__ = ("topic", "data", "uid", "client_id", "transport", "request", "rejoin")

    def __init__(self, topic: str, data: t.Any, uid: t.Any, client_id: str,
                 transport: str, request: RequestInfo | None, rejoin: bool) -> None:
        self.topic = topic
        self.data = data
        self.uid = uid
        self.client_id = client_id
        self.transport = transport
        self.request = request
        self.rejoin = rejoin

    def __repr__(self) -> str:
        return f"<JoinMsg {self.topic!r} uid={self.uid!r} client_id={self.client_id!r}>"


class Replier:
    """Once-only reply slot; subclasses decide where the packed answer goes.

    ``settle`` (from a shared backplane) waits until the pushes this process made so far
    are in the shared log: a reply never overtakes the pushes its handler made, so a client
    that acts on a reply finds them in order, whichever worker serves it next.
    """

    __slots__ = ("done", "_packer", "_wire", "_cb_id", "_settle")

    def __init__(self, packer: Packer, wire: Wire, cb_id: str | None,
                 settle: t.Callable[[], None] | None = None) -> None:
        self.done = False
        self._packer = packer
        #: The envelope the asking client speaks, and the cb_id its reply carries (None:
        #: the response itself is the correlation, as for an Ajax POST).
        self._wire = wire
        self._cb_id = cb_id
        self._settle = settle

    def reply(self, value: t.Any) -> bool:
        if self.done:
            return False
        packed = self._packer.pack(self._wire.reply(value, self._cb_id))  # may raise PackError
        self.done = True
        self._before_reply()
        self._deliver(packed)
        return True

    def _before_reply(self) -> None:
        """Called once the reply is packed, before it leaves: the handler's pushes first."""
        if self._settle is not None:
            self._settle()

    def fail(self, kind: str, info: t.Any = None) -> None:
        if not self.done:
            self.done = True
            self._deliver(self._packer.pack(self._wire.failure(kind, self._cb_id, info)))

    def start_timeout(self) -> None:
        """Called when the reply may not come at once (see :class:`WsReplier`)."""

    def _deliver(self, packed: str | bytes) -> None:
        raise NotImplementedError


class WsReplier(Replier):
    """Replies travel back on the sender's socket, tagged with its cb_id; a libev timer
    answers ``chsk/timeout`` if the handler never replies within ``timeout`` of the
    replier's creation.

    The timer is started by :meth:`start_timeout`, which the router calls when the event
    leaves the reader's greenlet without its reply (queued for a worker, or its handler
    blocked or returned without replying): most handlers on the reader reply at once,
    and a timer per event costs about as much as the rest of the reply.
    """

    __slots__ = ("_conn", "_timer", "_metrics", "_deadline", "_ready")

    def __init__(self, packer: Packer, conn: Outbox, cb_id: str, timeout: float,
                 ready: t.Callable[[t.Any], None] | None = None,
                 metrics: NoMetrics = NO_METRICS) -> None:
        # The base's fields set here, not through super().__init__: one replier per event.
        self.done = False
        self._packer = packer
        self._wire = conn.wire
        self._cb_id: str | None = cb_id
        self._settle = None
        #: Called with the connection before the reply is offered to it: the hub sends the
        #: pushes owed to that connection first (a reply never overtakes its handler's
        #: pushes on the wire).
        self._ready = ready
        self._conn = conn
        self._metrics = metrics
        self._timer: t.Any = None
        self._deadline = time.monotonic() + timeout

    def _before_reply(self) -> None:
        if self._ready is not None:
            self._ready(self._conn)

    def start_timeout(self) -> None:
        if self.done or self._timer is not None:
            return
        timer = self._timer = gevent.get_hub().loop.timer(
            max(0.0, self._deadline - time.monotonic()))
        timer.start(self._on_timeout)

    def _on_timeout(self) -> None:
        self._metrics.reply_timed_out("ws")
        try:
            self.fail(ev.TIMEOUT)
        except Exception:  # runs in the event loop: never let it raise there
            logger.exception("could not send a reply timeout")

    def _deliver(self, packed: str | bytes) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.close()
        self._conn.offer(packed)


class AjaxReplier(Replier):
    """Replies become the body of the POST that carried the event.

    The pushes its handler made before replying travel through the client's polls, not
    this POST: the reply carries the positions they got (:attr:`after`, the response's
    ``X-Sente-After`` header), and the client acts on the reply once its polls brought it
    there. The router records the handler's pushes (``backplanes.base.recording``).
    """

    __slots__ = ("result", "_uid", "_client_id", "after")

    def __init__(self, packer: Packer, wire: Wire, settle: t.Callable[[], None] | None = None,
                 uid: t.Any = None, client_id: str = "") -> None:
        # The base's fields set here, not through super().__init__: one replier per event.
        self.done = False
        self._packer = packer
        self._wire = wire
        self._cb_id = None
        self._settle = settle
        self.result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._uid = uid
        self._client_id = client_id
        #: Log name (as the client knows it) -> ``[epoch, seq]`` of the handler's last push
        #: there, or None when it pushed nothing the client reads.
        self.after: dict[str, list[t.Any]] | None = None

    def _before_reply(self) -> None:
        super()._before_reply()  # a shared backplane: the pushes are in the log first
        record = current_record()
        if record is None:
            return
        after: dict[str, list[t.Any]] = {}
        # Only pushes this client is given: no batch would tell it it passed the others.
        for key, (epoch, seq) in record.positions_for(self._client_id).items():
            if key == BROADCAST:
                after[BROADCAST] = [epoch, seq]
            elif isinstance(key, tuple) and key[0] == TOPIC:
                after[topic_log_name(key[1])] = [epoch, seq]
            elif isinstance(key, tuple) and key[0] == USER and key[1] == self._uid:
                after[USER] = [epoch, seq]
        self.after = after or None

    def _deliver(self, packed: str | bytes) -> None:
        self.result.set(packed)
