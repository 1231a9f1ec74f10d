"""Logs: ordered histories of pushes with an epoch and a seq per entry, without I/O.

One per user (``send``), one shared by everyone (``broadcast``), one per topic. A log keeps
``history_size`` entries at most and none older than ``history_ttl`` (the caller trims);
``Log.after`` answers what follows a position, or :data:`GAP` when history no longer
reaches it. ``flask_sente.core.delivery`` puts readers on them. This module may import only
the standard library and ``flask_sente.protocol`` (the names of logs on the wire).
"""
from __future__ import annotations

import typing as t

from ..protocol.session import BROADCAST, USER, topic_log_name
from .presence import Transport

if t.TYPE_CHECKING:  # pragma: no cover - types only: readers import logs
    from .readers import Reader

# BROADCAST is the key of the broadcast log in ``Delivery.logs`` as well as its name on
# the wire; a user's log is keyed ``(USER, uid)``, a topic's ``(TOPIC, topic)``.
__all__ = ["BROADCAST", "GAP", "TOPIC", "USER", "Entry", "Gap", "Log", "Position", "WireEvent",
           "join_target", "reaches", "split_target", "topic_log_name"]

#: Key kind of a topic's log (``(TOPIC, name)``); readers know it as ``"t:" + name``.
TOPIC = "t"

#: Where a reader stands in one log: ``(epoch, seq)``.
Position = tuple[str, int]
#: An event as logs keep it: its wire form ``[id, data]`` (a topic's wrapped in
#: ``chsk/topic``). Control records carry their value instead (a kick's reason, a topic).
WireEvent = list[t.Any]


class Gap:
    """Returned instead of entries when history no longer reaches a reader's position."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "GAP"


GAP: t.Final = Gap()


class Entry:
    """One appended push (or a control record, such as a kick, that readers act on)."""

    __slots__ = ("seq", "stamp", "event", "target", "at", "control", "exclude")

    def __init__(self, seq: int, stamp: int, event: t.Any, target: str | None,
                 at: float, control: str | None = None, exclude: str | None = None) -> None:
        self.seq = seq
        #: None for a push; else what the record asks of readers (``"kick"``, with the
        #: reason as ``event``). Control records are never delivered as events.
        self.control = control
        #: Process-wide append order: merges two logs back into send order.
        self.stamp = stamp
        #: The event in wire form (``[id, data]``).
        self.event = event
        #: The one client id that gets it, or None for every reader.
        self.target = target
        #: The one client id that skips it (a topic publish not echoed to its sender).
        self.exclude = exclude
        self.at = at

    def for_client(self, client_id: str) -> bool:
        """Whether a reader of ``client_id`` is given this entry (its position moves past
        it either way)."""
        return (self.control is None and (self.target is None or self.target == client_id)
                and self.exclude != client_id)


class Log:
    """One ordered history: entries ``first_seq .. seq`` kept, older ones trimmed."""

    __slots__ = ("key", "epoch", "seq", "entries", "readers", "counts", "idle_since")

    def __init__(self, key: t.Hashable, epoch: str, now: float) -> None:
        self.key = key
        self.epoch = epoch
        #: Seq of the last entry appended (0: none yet).
        self.seq = 0
        self.entries: list[Entry] = []
        #: Readers of this log (the broadcast log: every reader), and how many of them read
        #: over each transport: one set per log, not one per transport (a log per user).
        self.readers: set[Reader] = set()
        self.counts: dict[Transport, int] = {"ws": 0, "ajax": 0}
        #: When the last reader went away (None while it has readers).
        self.idle_since: float | None = now

    def after(self, position: int) -> list[Entry] | Gap:
        """Entries after ``position``, or :data:`GAP` if some of them were trimmed."""
        if position >= self.seq:
            return []
        first = self.entries[0].seq if self.entries else self.seq + 1
        if position + 1 < first:
            return GAP
        return self.entries[position + 1 - first:]

    def trim(self, size: int, oldest: float) -> None:
        """Keep at most ``size`` entries, none appended before ``oldest``."""
        entries = self.entries
        cut = max(0, len(entries) - size)
        while cut < len(entries) and entries[cut].at < oldest:
            cut += 1
        if cut:
            del entries[:cut]


def reaches(log: Log, position: tuple[str, int]) -> bool:
    """Whether ``log``'s history still holds everything after ``position``."""
    return (position[0] == log.epoch and 0 <= position[1] <= log.seq
            and log.after(position[1]) is not GAP)


def join_target(target: str | None, exclude: str | None) -> str | None:
    """One field for a shared store: the target client id, or ``"!"`` + the excluded one."""
    return target if exclude is None else "!" + exclude


def split_target(field: str | None) -> tuple[str | None, str | None]:
    """``(target, exclude)`` from :func:`join_target`'s field (client ids never start
    with "!")."""
    if field and field[0] == "!":
        return None, field[1:]
    return field, None
