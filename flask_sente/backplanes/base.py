"""The backplane seam: everything the hub does that must reach other processes.

A push, a broadcast, a presence attach/detach and the expiry of grace windows go through a
:class:`Backplane`. It owns the logs and presence (the sans-I/O objects of
``flask_sente.core``) and reports back through a :class:`BackplaneListener` — the hub —
when logs grew (so their readers are flushed) and when presence changed (so signals and
``chsk/uidport-*`` events fire). Reporting by callback rather than by return value is what
lets an implementation learn of appends made by other processes (a Redis subscription) the
same way it learns of its own.

The seam is declared as four small Protocols, modelled on centrifuge's ``Broker`` /
``PresenceManager`` split, so that what the hub needs of a backplane is written down in one
place and nothing is found by ``getattr``:

- :class:`LogBroker` — the logs: appends (push, broadcast, publish, kick, command) and
  readers (open, resume, close, join, leave a topic);
- :class:`PresenceManager` — who is connected, per user and per topic, with grace windows;
- :class:`ClientStore` — what a shared store keeps per client: topic grants and the
  cursors of protocol-1 long-pollers;
- :class:`Capabilities` — what a shared backplane adds (ordering across processes, health,
  the outbox), with defaults that an in-memory backplane keeps.

:class:`Backplane` is all four plus its lifecycle. The implementations subclass
:class:`~flask_sente.backplanes.common.BackplaneBase`, which owns what they share.

This module may import only the standard library, ``flask_sente.core`` and the
``flask_sente.protocol`` types.
"""
from __future__ import annotations

import contextlib
import contextvars
import typing as t

from ..core.delivery import Delivery, Position, Reader, WireEvent
from ..core.presence import Change, ConnectedUids, Transport, Uid
from ..protocol.wire import Positions


class PushRecord:
    """What one request or one handler pushed, so that its answer can be ordered after it:
    a response leaves once its request's pushes are in the shared log (causal order across
    workers), an Ajax reply tells the client which positions to reach before acting on it.
    Backplanes fill it in for the pushes made while it is :func:`current`."""

    __slots__ = ("marks", "positions", "_named")

    def __init__(self) -> None:
        #: Shared backplanes: the outbox counter of the last push queued, per outbox
        #: (``settled(upto=...)`` waits for it).
        self.marks: dict[Settling, int] = {}
        #: ``(epoch, seq)`` of the last push per log key meant for every reader of the
        #: log, once the log gave it a seq.
        self.positions: dict[t.Hashable, Position] = {}
        #: Per log key, the pushes after that one that name a client (sent to one tab, or
        #: published with one excluded): ``(epoch, seq, target, exclude)``.
        self._named: dict[t.Hashable, list[tuple[str, int, str | None, str | None]]] = {}

    def add(self, key: t.Hashable, position: Position, target: str | None = None,
            exclude: str | None = None) -> None:
        """A push got ``position`` in log ``key`` (``target``: the one client it is for;
        ``exclude``: the one client that skips it). Control records are not pushes: a
        backplane does not add them."""
        if target is None and exclude is None:
            self.positions[key] = position
            self._named.pop(key, None)
        else:
            self._named.setdefault(key, []).append((*position, target, exclude))

    def positions_for(self, client_id: str) -> dict[t.Hashable, Position]:
        """Per log key, the ``(epoch, seq)`` of the last push ``client_id`` is given.

        A push to another tab, or one that excludes this client, moves the client's
        position on the server without any batch telling it (nothing is sent when nothing
        is for it): an Ajax reply that named it would be held by its client for nothing."""
        out = dict(self.positions)
        for key, named in self._named.items():
            for epoch, seq, target, exclude in reversed(named):
                if (target is None or target == client_id) and exclude != client_id:
                    out[key] = (epoch, seq)
                    break
        return out


class Settling(t.Protocol):
    """Where a shared backplane's pushes wait for the shared log (its outbox)."""

    def settled(self, timeout: float = ..., upto: int | None = None) -> None:
        """Wait until the first ``upto`` pushes queued (all of them by default) are in the
        shared log, or ``timeout`` passed."""


#: The record of the request or handler running in this greenlet (None: nobody records).
_RECORD: contextvars.ContextVar[PushRecord | None] = contextvars.ContextVar(
    "flask_sente_push_record", default=None)


def current_record() -> PushRecord | None:
    """The :class:`PushRecord` of the request or handler running here, if any."""
    return _RECORD.get()


@contextlib.contextmanager
def recording() -> t.Iterator[PushRecord]:
    """Record the pushes made inside (in this greenlet only: greenlets and threads it
    starts push on their own account)."""
    record = PushRecord()
    token = _RECORD.set(record)
    try:
        yield record
    finally:
        _RECORD.reset(token)


@contextlib.contextmanager
def request_scope() -> t.Iterator[None]:
    """Serve one request inside: when it ends, whatever it pushed (through any shared
    backplane of this process) is in the shared log before the caller goes on — the
    middleware sends the response after that. So pushes of successive requests reach every
    client in request order, whichever workers served them (causal order). A request that
    pushed nothing waits for nothing. Pushes made in greenlets or threads the request
    started are not its own: they keep their own order per caller.

    The hub offers it (``Hub.request_scope``) only when its backplane is
    :attr:`~Capabilities.shared`: in memory a push is in the log when the call returns."""
    with recording() as record:
        yield
    for outbox, upto in record.marks.items():
        outbox.settled(upto=upto)


class BackplaneListener(t.Protocol):
    """What a backplane calls back into (the hub)."""

    def logs_appended(self, transports: tuple[Transport, ...]) -> None:
        """Readers on these transports are owed new entries: schedule a flush."""

    def presence_changed(self, changes: list[Change]) -> None:
        """Members joined or left; tell the app (signals, ``chsk/uidport-*``)."""

    def kicked(self, uid: Uid, reason: str) -> None:
        """``uid`` was kicked (here or elsewhere): close its connections in this process."""

    def topic_command(self, uid: Uid, client_id: str | None, kind: str, topic: str) -> None:
        """The server joined (``kind`` "join") or removed ("leave", "remove") a user or one
        client of it to/from ``topic``, here or elsewhere: apply it to this process's
        readers."""

    def topic_presence_changed(self, changes: list[Change]) -> None:
        """Users joined or left topics; each change's ``uid`` is ``(topic, uid)``."""

    def backplane_state(self, healthy: bool) -> None:
        """A shared store went away (False) or came back (True): see
        :attr:`Capabilities.healthy`."""

    def call_routed(self, outcome: CallOutcome) -> None:
        """An outcome of one of this process's server -> client calls, from the process
        that received the client's answer (or found the client cannot answer)."""

    def client_closed(self, uid_key: str, client_id: str) -> None:
        """A client closed its connection itself (``disconnect()``, a page unloading), here
        or elsewhere: its calls fail at once. ``uid_key`` is ``repr(uid)``."""

    def admin_report(self, ask: AdminAsk) -> AdminReport:
        """This process's part of the admin dashboard's picture (``hub/inspect.py``)."""


#: What travels between processes about a call: ``id``, the answering client (``uid``:
#: ``repr(uid)``, ``client``), and ``value``, or ``error``: ``[kind, message]`` with kind
#: ``no-handler``, ``error`` or ``unsupported``.
CallOutcome = dict[str, t.Any]


class CallRouting(t.Protocol):
    """How server -> client calls cross processes: the request is an ordinary push
    (:meth:`LogBroker.push`); its outcome goes back to the process that asked, named by
    :attr:`node` in the call id, and a client's own close is told to every process."""

    #: This process's name among those sharing the backplane.
    node: str

    def route_call(self, node: str, outcome: CallOutcome) -> None:
        """Hand ``outcome`` to the listener of process ``node`` (``call_routed``); an
        in-memory backplane reaches only its own. Raises :class:`BackplaneError` when the
        shared store cannot be reached."""

    def await_answers(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until this process hears routed outcomes: a shared
        backplane's subscription is up. A call's request is pushed only after it, or the
        answer could be published before anyone listens."""

    def announce_closed(self, uid_key: str, client_id: str) -> None:
        """Tell every other process's listener (``client_closed``); this process's hub
        has acted already. May wait for a shared store: call it from a greenlet of its
        own, never from a connection's reader."""


#: What the admin dashboard asks every process, and one process's answer
#: (``core/overview.py`` and ``hub/inspect.py``): plain data a shared store can carry.
AdminAsk = dict[str, t.Any]
AdminReport = dict[str, t.Any]


class AdminRelay(t.Protocol):
    """How the admin dashboard sees every process: one question, every answer."""

    def gather(self, ask: AdminAsk, timeout: float) -> tuple[list[AdminReport], int]:
        """Every process's ``admin_report`` of ``ask`` (this one's included), and how many
        processes did not answer within ``timeout``. Raises :class:`BackplaneError` when the
        shared store cannot be reached."""


class LogBroker(t.Protocol):
    """The logs: appends and their fan-out, and the readers of this process.

    Appends make no round trip (they may be made in the event loop): a shared backplane
    queues them and reports them to its listener when they come back from the shared log,
    as it does other processes' appends. Opening, resuming and joining may wait for a
    shared store; closing and leaving act on this process's readers only. ``now`` is
    monotonic seconds."""

    #: This process's readers and the logs as it sees them (a shared backplane: its mirror
    #: of the logs its readers read).
    delivery: Delivery

    def push(self, uid: Uid, event: WireEvent, target: str | None, now: float) -> None:
        """Append ``event`` to ``uid``'s log (for the one client ``target`` if given)."""

    def broadcast(self, event: WireEvent, now: float) -> None:
        """Append ``event`` to the broadcast log."""

    def publish(self, topic: str, event: WireEvent, exclude: str | None, now: float) -> None:
        """Append ``event`` to the topic's log (``exclude``: one client that skips it)."""

    def kick(self, uid: Uid, reason: str, now: float) -> None:
        """Close every connection of ``uid`` everywhere, after the pushes before it."""

    def command(self, uid: Uid, client_id: str | None, kind: str, topic: str) -> None:
        """Tell every process's listener (``topic_command``), after earlier pushes to uid."""

    def open_reader(self, uid: Uid, client_id: str, transport: Transport, now: float,
                    positions: Positions | None) -> tuple[Reader, bool | None]:
        """A reader for a connecting client, resumed at ``positions`` if it brought any;
        returns it and whether those were recovered (None: it brought none). May wait for
        a shared store: call it from a request's greenlet, not the event loop."""

    def resume(self, reader: Reader, positions: Positions) -> set[str]:
        """Move an open reader to where its client says it was (an Ajax poll); returns the
        logs whose history no longer reaches (see
        :meth:`~flask_sente.core.delivery.Delivery.resume_logs`). May wait."""

    def close_reader(self, reader: Reader, now: float) -> None:
        """The connection behind ``reader`` is gone."""

    def join(self, reader: Reader | None, topic: str, now: float,
             position: Position | None) -> tuple[bool | None, Position]:
        """Make ``reader`` read ``topic`` from ``position`` (see
        :meth:`~flask_sente.core.delivery.Delivery.join`). With no reader (the client reads
        through another process, or this one forgot it between its handshake and its first
        poll) nothing reads yet, but the answer is the same: whether the history still
        reaches ``position``, and where the client stands
        (:meth:`~flask_sente.core.delivery.Delivery.topic_position`). May wait for a shared
        store."""

    def leave(self, reader: Reader, topic: str, now: float) -> None:
        """Stop ``reader`` reading ``topic``."""


class PresenceManager(t.Protocol):
    """Who is connected: members (one client of a user on one transport) with grace
    windows, per user and per topic. A user's online/offline transition is reported once
    (cluster-wide for a shared backplane); a client's own joined/left once per process.

    With a shared store the transitions (attach, detach, remove, expire and the topic
    ones) and :meth:`clients_of` make a round trip: call them from a greenlet, never from
    an event-loop callback. :attr:`connected_uids`, :meth:`is_member`, :meth:`members` and
    :meth:`next_deadline` read what this process keeps."""

    @property
    def connected_uids(self) -> ConnectedUids:
        """Connected users (cluster-wide for a shared backplane), a snapshot."""

    def clients_of(self, uid: Uid) -> dict[str, list[str]]:
        """Client ids of ``uid`` by transport. May wait for a shared store."""

    def is_member(self, uid: Uid, transport: Transport, client_id: str) -> bool:
        """Whether that client counts as present here (connected or in its grace window)."""

    def attach(self, uid: Uid, transport: Transport, client_id: str, conn_id: int) -> None:
        """A member's connection is there."""

    def detach(self, uid: Uid, transport: Transport, client_id: str, conn_id: int,
               deadline: float) -> None:
        """A member's connection ended: it leaves at ``deadline`` unless it comes back."""

    def remove(self, uid: Uid, transport: Transport, client_id: str) -> None:
        """A member is gone at once (kicked)."""

    def expire(self, now: float) -> None:
        """Grace windows that ended by ``now`` (the hub expires history on its own sweep)."""

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do."""

    def topic_attach(self, topic: str, uid: Uid, transport: Transport, client_id: str,
                     conn_id: int) -> None:
        """The client is in the topic (topic presence: the user's first client fires a
        join transition)."""

    def topic_detach(self, topic: str, uid: Uid, transport: Transport, client_id: str,
                     conn_id: int, deadline: float) -> None:
        """The client's connection ended: it leaves the topic at ``deadline`` unless it
        comes back."""

    def topic_remove(self, topic: str, uid: Uid, transport: Transport,
                     client_id: str) -> None:
        """The client left the topic at once."""

    def members(self, topic: str) -> frozenset[Uid]:
        """The users in ``topic`` (cluster-wide for a shared backplane)."""

    def topics(self) -> dict[str, int]:
        """Every topic with members, and how many users it has (cluster-wide for a
        shared backplane)."""


class ClientStore(t.Protocol):
    """What outlives one process's view of a client: the topics it was let into, and
    where a protocol-1 long-poller stands. A shared store lets any process answer the
    client (each call but :meth:`drop_grants` is then a round trip); in memory the grants
    are a dict and the reader itself is the cursor."""

    #: Seconds a grant outlives its last join or refresh; None: grants do not expire.
    grants_ttl: float | None

    def grant(self, uid: Uid, client_id: str, topic: str) -> None:
        """Record that the client was let into ``topic`` (any process may then add the
        topic to that client's reader, and a rejoin needs no new authorization)."""

    def revoke(self, uid: Uid, client_id: str, topic: str) -> None:
        """Forget a grant."""

    def granted(self, uid: Uid, client_id: str) -> set[str]:
        """The topics the client was let into. May wait for a shared store."""

    def drop_grants(self, uid: Uid, client_id: str) -> None:
        """The client is gone for good: forget its grants (a shared store lets them
        expire instead: the client may live on in another process)."""

    def refresh_grants(self, held: t.Sequence[tuple[Uid, str]]) -> None:
        """Restart the time-to-live of these ``(uid, client_id)``'s grants (the hub calls
        it every quarter of ``grants_ttl`` for the clients it holds that read a topic).
        May wait for a shared store; raises :class:`BackplaneError` when it cannot reach
        it, without marking the backplane unhealthy (this is housekeeping, not a request)."""

    def save_cursor(self, uid: Uid, client_id: str, positions: Positions) -> None:
        """Remember where a protocol-1 long-poller stands after a poll, so a process that
        never saw it can answer its next poll (an in-memory backplane needs none)."""

    def load_cursor(self, uid: Uid, client_id: str) -> dict[str, Position] | None:
        """What :meth:`save_cursor` kept, or None. May wait for a shared store."""


class Capabilities(t.Protocol):
    """What a shared backplane adds, declared on every backplane: an in-memory one keeps
    the defaults of :class:`~flask_sente.backplanes.common.BackplaneBase` (not shared,
    always healthy, no outbox, nothing to wait for, no secret to compare)."""

    #: Whether logs and presence live outside this process (other processes append to and
    #: read them). False: a push is in the log when the call returns, and the hub skips
    #: :meth:`settled`, :meth:`caught_up` and :func:`request_scope` altogether.
    shared: bool

    @property
    def healthy(self) -> bool:
        """False while the shared store cannot be reached: new handshakes and polls get 503
        (the listener's ``backplane_state`` is told of each change)."""

    @property
    def outbox_depth(self) -> int | None:
        """Pushes waiting to reach the shared store (None: appends are made at once)."""

    def settled(self, timeout: float = ..., upto: int | None = None) -> None:
        """Wait until every push of this process queued so far (or the first ``upto``) is
        in the shared log, or ``timeout`` passed: a reply sent after this cannot overtake
        its handler's pushes on another process."""

    def caught_up(self, reader: Reader, timeout: float = ...) -> None:
        """Wait (at most ``timeout``) until this process's copy of ``reader``'s logs holds
        every push this process appended to them: a reply flushed after it goes after its
        handler's pushes on the same socket. Call after :meth:`settled`."""

    def check_secret(self, fingerprint: str) -> None:
        """Log an error when this process's ``SECRET_KEY`` fingerprint differs from the one
        the other processes sharing the store left there."""


class Backplane(LogBroker, PresenceManager, ClientStore, Capabilities, CallRouting,
                AdminRelay, t.Protocol):
    """Logs, presence, per-client records, capabilities and call routing, with a
    lifecycle."""

    def start(self, listener: BackplaneListener) -> None:
        """Begin reporting to ``listener``."""

    def close(self) -> None:
        """Forget everything; report nothing more."""
