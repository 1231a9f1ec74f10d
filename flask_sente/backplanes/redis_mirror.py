"""The Redis backplane's mirror: this process's copy of the logs its readers read.

Every append, this process's or another's, comes back through the subscription as a
notification ``[epoch, seq, target, control, event]`` and is applied to the mirror (the
:class:`~flask_sente.core.delivery.Delivery` of
:class:`~flask_sente.backplanes.common.BackplaneBase`), so every process delivers the same
entries with the same positions. A notification whose seq is not the next one is a gap,
filled from the stream before delivery; a returning client whose position is older than the
mirror is replayed from the stream; a log whose epoch changed (Redis lost its data, entries
were dropped, a failover went back) puts its readers at a gap, so each is told. Control
records (a kick, a topic command) are acted on once they are applied, in order with the
pushes around them.

It also answers "are this process's own pushes back in its mirror yet?"
(:meth:`Mirror.caught_up`), which orders a WebSocket reply after its handler's pushes.
"""
from __future__ import annotations

import logging
import time
import typing as t

import gevent.event
import msgpack

from ..core.delivery import BROADCAST, TOPIC, USER, Position, Reader, join_target
from ..core.presence import Transport, Uid
from ..metrics import NoMetrics
from ..protocol.wire import Positions
from . import redis_scripts as rs
from .common import BackplaneBase, new_epoch
from .redis_link import SOCKET_TIMEOUT, RedisLink

logger = logging.getLogger("flask_sente")

#: Controls in a user's log that are topic commands (the rest: "kick", "gap").
TOPIC_COMMANDS = frozenset({"join", "leave", "remove"})

#: A stream entry: seq, event, target field, control.
_Row = tuple[int, t.Any, "str | None", "str | None"]
#: A control record to act on: control, value, target field.
_Control = tuple["str | None", t.Any, "str | None"]


class Mirror:
    """See the module docstring. ``home`` is the backplane whose delivery this mirrors
    and whose listener hears of appends and controls."""

    def __init__(self, link: RedisLink, home: BackplaneBase, metrics: NoMetrics) -> None:
        self.link = link
        self.home = home
        self.delivery = home.delivery
        self.metrics = metrics
        #: The last append of this process per log mirrored here, and who waits for the
        #: mirror to hold it (:meth:`caught_up`).
        self._own: dict[t.Hashable, Position] = {}
        self._waiters: list[tuple[list[tuple[t.Any, Position]], gevent.event.Event]] = []

    # --- this process's own appends --------------------------------------------------------

    def appended(self, log_key: t.Hashable, position: Position) -> None:
        """One of this process's appends got ``position`` (the outbox tells)."""
        if log_key in self.delivery.logs:
            self._own[log_key] = position

    def caught_up(self, reader: Reader, timeout: float = SOCKET_TIMEOUT) -> None:
        """Wait (at most ``timeout``) until this process's mirror holds every push this
        process appended to a log ``reader`` reads (they come back through the
        subscription): a reply flushed after it goes after its handler's pushes on the same
        socket. Call after the outbox's ``settled``."""
        own = self._own
        pending = [(log, own[log.key]) for log in reader.logs.values()
                   if log.key in own and log.epoch == own[log.key][0]
                   and log.seq < own[log.key][1]]
        if not pending:
            return
        waiter: gevent.event.Event = gevent.event.Event()
        self._waiters.append((pending, waiter))
        waiter.wait(timeout)

    def _moved(self) -> None:
        """Wake the :meth:`caught_up` waiters whose logs are now far enough."""
        waiting, self._waiters = self._waiters, []
        for pending, waiter in waiting:
            if all(log.epoch != mark[0] or log.seq >= mark[1] for log, mark in pending):
                waiter.set()
            else:
                self._waiters.append((pending, waiter))

    # --- readers ---------------------------------------------------------------------------

    def open_reader(self, uid: Uid, client_id: str, transport: Transport, now: float,
                    positions: Positions | None) -> tuple[Reader, bool | None]:
        """A reader at the head of the user's and the broadcast log, both made sure of in
        Redis first; resumed at ``positions`` if the client brought any."""
        for log_key in ((USER, uid), BROADCAST):
            self.sync_log(log_key, now)
        reader = self.delivery.open_reader(uid, client_id, transport, now)
        if positions is None:
            return reader, None
        return reader, not self.resume(reader, positions)

    def resume(self, reader: Reader, positions: Positions) -> set[str]:
        """Move ``reader`` to ``positions``, replaying from the streams what the mirror
        has not seen; the logs whose history no longer reaches."""
        for name, log in reader.logs.items():
            self._backfill(log.key, positions.get(name))
        return self.delivery.resume_logs(reader, positions)

    def join(self, reader: Reader | None, topic: str, now: float,
             position: Position | None) -> tuple[bool | None, Position]:
        """The topic's log made sure of in Redis, its history back to ``position``; then
        the join of :class:`~flask_sente.core.delivery.Delivery` (or, with no reader, its
        answer)."""
        log_key = (TOPIC, topic)
        self.sync_log(log_key, now)
        self._backfill(log_key, position)
        if reader is None:
            return self.delivery.topic_position(topic, now, position)
        return self.delivery.join(reader, topic, now, position)

    def _backfill(self, log_key: t.Hashable, given: Position | None) -> None:
        """Bring the mirror's history back to ``given`` when a returning client stood
        further back than this process has seen (same epoch only)."""
        log = self.delivery.logs.get(log_key)
        if log is None or given is None or given[0] != log.epoch:
            return
        first = log.entries[0].seq if log.entries else log.seq + 1
        if given[1] + 1 < first:
            older = [row for row in self._fetch(log_key, given[1]) if row[0] < first]
            self.delivery.backfill(log_key, older, time.monotonic())

    # --- notifications ---------------------------------------------------------------------

    def on_append(self, channel: str, data: bytes) -> None:
        """A notification from a log's channel ``P:{U}:ch`` (ignored unless mirrored)."""
        ukey = channel[len(self.link.prefix) + 2:-4]  # "P:{" ukey "}:ch"
        log_key = self.link.log_key_of(ukey)
        if log_key not in self.delivery.logs:
            return
        epoch, seq, target, control, event = msgpack.unpackb(data, raw=True)
        self._apply(log_key, epoch.decode(), seq, event, target, control)

    def _apply(self, log_key: t.Hashable, epoch: str, seq: int, event: bytes,
               target: bytes, control: bytes) -> None:
        now = time.monotonic()
        if self._diverged(log_key, epoch, seq, event, target, control):
            self.sync_log(log_key, now, diverged=True)   # a new epoch: readers at a gap
            self.home.report_appended(("ws", "ajax"))
            return
        value = rs.unpack_event(event)
        kind, field = control.decode() or None, target.decode() or None
        due = self.delivery.apply(log_key, epoch, seq, value, field, kind, now)
        controls: list[_Control] = [(kind, value, field)] if kind and due is not None else []
        if due is None:  # entries missing before this one: fetch them, then apply all
            self.metrics.gap_repaired()
            controls = self.fill(log_key)
            self.home.report_appended(("ws", "ajax"))
        else:
            self.home.report_appended(due)
        if self._waiters:
            self._moved()
        for kind, value, field in controls:
            self._control(log_key, kind, value, field)

    def _control(self, log_key: t.Hashable, kind: str | None, value: t.Any,
                 field: str | None) -> None:
        """Act on a control record of a user's log (applied here, or filled in a gap)."""
        if not isinstance(log_key, tuple) or log_key[0] != USER:
            return
        if kind == "kick":
            self.home.report_kicked(log_key[1], value)
        elif kind in TOPIC_COMMANDS:
            self.home.report_command(log_key[1], field, kind, value)

    def _diverged(self, log_key: t.Hashable, epoch: str, seq: int, event: bytes,
                  target: bytes, control: bytes) -> bool:
        """Whether this append reuses a seq of the mirror's epoch for another entry: the
        log went back (a failover lost entries this process saw). A repeat of an entry
        already here (gap repair and the notification both bring it) is not."""
        log = self.delivery.logs.get(log_key)
        if log is None or log.epoch != epoch or seq > log.seq or not log.entries:
            return False
        index = seq - log.entries[0].seq
        if not 0 <= index < len(log.entries):
            return False
        seen = log.entries[index]
        return (seen.event, join_target(seen.target, seen.exclude), seen.control) != (
            rs.unpack_event(event), target.decode() or None, control.decode() or None)

    # --- streams ---------------------------------------------------------------------------

    def _fetch(self, log_key: t.Hashable, after: int) -> list[_Row]:
        _, log, _ = self.link.keys(log_key)
        rows = self.link.client.xrange(log, min=f"{after + 1}-0", max="+")
        return [(int(rid.split(b"-")[0]), rs.unpack_event(f[b"e"]), f[b"t"].decode() or None,
                 f[b"k"].decode() or None) for rid, f in rows]

    def fill(self, log_key: t.Hashable) -> list[_Control]:
        """Apply every stream entry after the mirror's last seq (gap repair, catch-up);
        returns the control records among them, for the caller to act on."""
        log = self.delivery.logs.get(log_key)
        if log is None:
            return []
        now = time.monotonic()
        controls: list[_Control] = []
        for seq, event, target, control in self._fetch(log_key, log.seq):
            if self.delivery.apply(log_key, log.epoch, seq, event, target, control,
                                   now) is not None and control:
                controls.append((control, event, target))
        return controls

    def catch_up(self) -> None:
        """After (re)subscribing: bring every mirror up to its stream. A log whose epoch
        changed meanwhile (Redis lost its data, or entries were dropped) puts its readers
        at a gap: each is told it was not recovered."""
        now = time.monotonic()
        for log_key, log in list(self.delivery.logs.items()):
            if log.idle_since is None:  # read here now: make sure Redis still has it
                self.sync_log(log_key, now)
            else:
                self.fill(log_key)

    def sync_log(self, log_key: t.Hashable, now: float, diverged: bool = False) -> None:
        """Make the log exist in Redis (and its expiry start again) and bring this process's
        mirror of it to the stream: a new epoch there (Redis lost its data, or entries were
        dropped) puts the mirror's readers at a gap, so each is told. A log that went back
        behind the mirror (a failover lost entries) gets that new epoch here."""
        meta, stream, _ = self.link.keys(log_key)
        mirrored = self.delivery.logs.get(log_key)
        seen = ([] if mirrored is None
                else [mirrored.epoch, mirrored.seq, "1" if diverged else "0"])
        epoch_raw, seq_raw = self.link.scripts["TOUCH"](
            keys=[meta, stream], args=[new_epoch(), self.link.ttl, *seen])
        epoch, seq = epoch_raw.decode(), int(seq_raw)
        known = self.delivery.logs.get(log_key)
        if known is not None and known.epoch != epoch:
            logger.warning("Redis backplane: the history of %r is gone; its readers are told",
                           log_key)
        if self.delivery.mirror(log_key, epoch, seq, now).seq < seq:
            self.fill(log_key)

    def keep_alive(self) -> None:
        """Restart the expiry of the logs read here (the housekeeping loop's heartbeat)."""
        for log_key, log in list(self.delivery.logs.items()):
            if log.idle_since is None:
                meta, stream, _ = self.link.keys(log_key)
                self.link.client.expire(meta, self.link.ttl)
                self.link.client.expire(stream, self.link.ttl)
