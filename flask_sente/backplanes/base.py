"""The backplane seam: everything the hub does that must reach other processes.

A push, a broadcast, a presence attach/detach and the expiry of grace windows go through a
:class:`Backplane`. It owns the logs and presence (the sans-I/O objects of
``flask_sente.core``) and reports back through a :class:`BackplaneListener` — the hub —
when logs grew (so their readers are flushed) and when presence changed (so signals and
``chsk/uidport-*`` events fire). Reporting by callback rather than by return value is what
lets an implementation learn of appends made by other processes (a Redis subscription) the
same way it learns of its own.

This module may import only the standard library and ``flask_sente.core``.
"""
from __future__ import annotations

import contextlib
import contextvars
import typing as t

from ..core.delivery import Delivery, Reader
from ..core.presence import Change, ConnectedUids, Transport


class PushRecord:
    """What one request or one handler pushed, so that its answer can be ordered after it:
    a response leaves once its request's pushes are in the shared log (causal order across
    workers), an Ajax reply tells the client which positions to reach before acting on it.
    Backplanes fill it in for the pushes made while it is :func:`current`."""

    __slots__ = ("marks", "positions", "_named")

    def __init__(self) -> None:
        #: Shared backplanes: the outbox counter of the last push queued, per backplane
        #: (``settled(upto=...)`` waits for it).
        self.marks: dict[t.Any, int] = {}
        #: ``(epoch, seq)`` of the last push per log key meant for every reader of the
        #: log, once the log gave it a seq.
        self.positions: dict[t.Hashable, tuple[str, int]] = {}
        #: Per log key, the pushes after that one that name a client (sent to one tab, or
        #: published with one excluded): ``(epoch, seq, target, exclude)``.
        self._named: dict[t.Hashable, list[tuple[str, int, str | None, str | None]]] = {}

    def add(self, key: t.Hashable, position: tuple[str, int], target: str | None = None,
            exclude: str | None = None) -> None:
        """A push got ``position`` in log ``key`` (``target``: the one client it is for;
        ``exclude``: the one client that skips it). Control records are not pushes: a
        backplane does not add them."""
        if target is None and exclude is None:
            self.positions[key] = position
            self._named.pop(key, None)
        else:
            self._named.setdefault(key, []).append((*position, target, exclude))

    def positions_for(self, client_id: str) -> dict[t.Hashable, tuple[str, int]]:
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


class BackplaneListener(t.Protocol):
    """What a backplane calls back into (the hub)."""

    def logs_appended(self, transports: tuple[Transport, ...]) -> None:
        """Readers on these transports are owed new entries: schedule a flush."""

    def presence_changed(self, changes: list[Change]) -> None:
        """Members joined or left; tell the app (signals, ``chsk/uidport-*``)."""

    def kicked(self, uid: t.Any, reason: str) -> None:
        """``uid`` was kicked (here or elsewhere): close its connections in this process."""

    def topic_command(self, uid: t.Any, client_id: str | None, kind: str, topic: str) -> None:
        """The server joined (``kind`` "join") or removed ("leave") a user or one client
        of it to/from ``topic``, here or elsewhere: apply it to this process's readers."""

    def topic_presence_changed(self, changes: list[Change]) -> None:
        """Users joined or left topics; each change's ``uid`` is ``(topic, uid)``."""


class Backplane(t.Protocol):
    """Logs, presence and their fan-out. Methods never block: they may run in the event
    loop. ``now`` is monotonic seconds."""

    #: This process's readers and the logs as it sees them.
    delivery: Delivery

    def start(self, listener: BackplaneListener) -> None:
        """Begin reporting to ``listener``."""

    @property
    def connected_uids(self) -> ConnectedUids:
        """Connected users (cluster-wide for a shared backplane), a snapshot."""

    def clients_of(self, uid: t.Any) -> dict[str, list[str]]:
        """Client ids of ``uid`` by transport."""

    def is_member(self, uid: t.Any, transport: Transport, client_id: str) -> bool:
        """Whether that client counts as present (connected or in its grace window)."""

    def open_reader(self, uid: t.Any, client_id: str, transport: Transport, now: float,
                    positions: t.Mapping[str, tuple[str, int]] | None
                    ) -> tuple[Reader, bool | None]:
        """A reader for a connecting client, resumed at ``positions`` if it brought any;
        returns it and whether those were recovered (None: it brought none). May wait for
        a shared store: call it from a request's greenlet, not the event loop."""

    def close_reader(self, reader: Reader, now: float) -> None:
        """The connection behind ``reader`` is gone."""

    def resume(self, reader: Reader, positions: t.Mapping[str, tuple[str, int]]) -> set[str]:
        """Move an open reader to where its client says it was (an Ajax poll); returns the
        logs whose history no longer reaches (see
        :meth:`~flask_sente.core.delivery.Delivery.resume_logs`). May wait."""

    def kick(self, uid: t.Any, reason: str, now: float) -> None:
        """Close every connection of ``uid`` everywhere, after the pushes before it."""

    def push(self, uid: t.Any, event: t.Any, target: str | None, now: float) -> None:
        """Append ``event`` to ``uid``'s log (for the one client ``target`` if given)."""

    def broadcast(self, event: t.Any, now: float) -> None:
        """Append ``event`` to the broadcast log."""

    # --- topics (each is one more log; membership per client, presence per user) --------

    def join(self, reader: Reader | None, topic: str, now: float,
             position: tuple[str, int] | None) -> tuple[bool | None, tuple[str, int]]:
        """Make ``reader`` read ``topic`` from ``position`` (see
        :meth:`~flask_sente.core.delivery.Delivery.join`). With no reader (the client reads
        through another process, or this one forgot it between its handshake and its first
        poll) nothing reads yet, but the answer is the same: whether the history still
        reaches ``position``, and where the client stands
        (:meth:`~flask_sente.core.delivery.Delivery.topic_position`). May wait for a shared
        store."""

    def leave(self, reader: Reader, topic: str, now: float) -> None:
        """Stop ``reader`` reading ``topic``."""

    def publish(self, topic: str, event: t.Any, exclude: str | None, now: float) -> None:
        """Append ``event`` to the topic's log (``exclude``: one client that skips it)."""

    def grant(self, uid: t.Any, client_id: str, topic: str) -> None:
        """Record that the client was let into ``topic`` (any process may then add the
        topic to that client's reader, and a rejoin needs no new authorization)."""

    def revoke(self, uid: t.Any, client_id: str, topic: str) -> None:
        """Forget a grant."""

    #: Seconds a grant outlives its last join or refresh; None: grants do not expire.
    grants_ttl: float | None = None

    def refresh_grants(self, held: t.Sequence[tuple[t.Any, str]]) -> None:
        """Restart the time-to-live of these ``(uid, client_id)``'s grants (the hub calls
        it every quarter of ``grants_ttl`` for the clients it holds that read a topic).
        May wait for a shared store; raises :class:`BackplaneError` when it cannot reach
        it, without marking the backplane unhealthy (this is housekeeping, not a request)."""

    def granted(self, uid: t.Any, client_id: str) -> set[str]:
        """The topics the client was let into. May wait for a shared store."""

    def drop_grants(self, uid: t.Any, client_id: str) -> None:
        """The client is gone for good: forget its grants (a shared store lets them
        expire instead: the client may live on in another process)."""

    def command(self, uid: t.Any, client_id: str | None, kind: str, topic: str) -> None:
        """Tell every process's listener (``topic_command``), after earlier pushes to uid."""

    def topic_attach(self, topic: str, uid: t.Any, transport: Transport, client_id: str,
                     conn_id: int) -> None:
        """The client is in the topic (topic presence: the user's first client fires a
        join transition)."""

    def topic_detach(self, topic: str, uid: t.Any, transport: Transport, client_id: str,
                     conn_id: int, deadline: float) -> None:
        """The client's connection ended: it leaves the topic at ``deadline`` unless it
        comes back."""

    def topic_remove(self, topic: str, uid: t.Any, transport: Transport,
                     client_id: str) -> None:
        """The client left the topic at once."""

    def members(self, topic: str) -> frozenset[t.Any]:
        """The users in ``topic`` (cluster-wide for a shared backplane)."""

    # --- protocol-1 Ajax clients (they send no positions) ----------------------------------

    def save_cursor(self, uid: t.Any, client_id: str,
                    positions: t.Mapping[str, tuple[str, int]]) -> None:
        """Remember where a protocol-1 long-poller stands after a poll, so a process that
        never saw it can answer its next poll (an in-memory backplane needs none)."""

    def load_cursor(self, uid: t.Any, client_id: str) -> dict[str, tuple[str, int]] | None:
        """What :meth:`save_cursor` kept, or None. May wait for a shared store."""

    def attach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int) -> None:
        """A member's connection is there."""

    def detach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int,
               deadline: float) -> None:
        """A member's connection ended: it leaves at ``deadline`` unless it comes back."""

    def remove(self, uid: t.Any, transport: Transport, client_id: str) -> None:
        """A member is gone at once (kicked)."""

    def expire(self, now: float) -> None:
        """Grace windows that ended by ``now`` (the hub expires history on its own sweep)."""

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do."""

    def close(self) -> None:
        """Forget everything; report nothing more."""

    # Optional: ``settled()`` - block until this process's pushes are in the shared log.
    # The hub calls it before a reply leaves (replies never overtake their handler's
    # pushes); an in-memory backplane, whose pushes are in the log at once, leaves it out.
