"""What logs are made of, without I/O: entries (a push, or a control record), the
:data:`GAP` marker, the names of logs and the one field a shared store keeps a push's
target in. The logs themselves, with their readers, are in ``core.readers``. This module
may import only the standard library and ``flask_sente.protocol`` (the names of logs on the
wire).
"""
from __future__ import annotations

import typing as t

from ..protocol.session import BROADCAST, USER, topic_log_name

# BROADCAST is the key of the broadcast log in ``Delivery.logs`` as well as its name on
# the wire; a user's log is keyed ``(USER, uid)``, a topic's ``(TOPIC, topic)``.
__all__ = ["BROADCAST", "GAP", "TOPIC", "USER", "Entry", "Gap", "Position", "WireEvent",
           "join_target", "split_target", "topic_log_name"]

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


def join_target(target: str | None, exclude: str | None) -> str | None:
    """One field for a shared store: the target client id, or ``"!"`` + the excluded one."""
    return target if exclude is None else "!" + exclude


def split_target(field: str | None) -> tuple[str | None, str | None]:
    """``(target, exclude)`` from :func:`join_target`'s field (client ids never start
    with "!")."""
    if field and field[0] == "!":
        return None, field[1:]
    return field, None
