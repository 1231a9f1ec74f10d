"""Logs and their readers, without I/O: a log's entries (``history_size`` at most, none
older than ``history_ttl``: the caller trims; ``Log.after`` answers what follows a position,
or :data:`GAP` when history no longer reaches it), one client's positions in the logs it
reads, what it is owed, and the batches that give it. ``flask_sente.core.delivery`` makes
and moves them. This module may import only the standard library and ``core.logs``.
"""
from __future__ import annotations

import typing as t

from .logs import GAP, Entry, Gap
from .presence import Transport


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


class Reader:
    """One client's positions in the logs it reads."""

    __slots__ = ("uid", "client_id", "transport", "logs", "positions", "ready", "collected_at",
                 "__weakref__")

    def __init__(self, uid: t.Any, client_id: str, transport: Transport) -> None:
        self.uid = uid
        self.client_id = client_id
        self.transport = transport
        #: The logs it reads, by the name the client knows them by.
        self.logs: dict[str, Log] = {}
        self.positions: dict[str, int] = {}
        #: Lazy (Ajax) readers only: a poll is parked and waits for :meth:`Delivery.collect`.
        self.ready = False
        #: Eager readers: when :meth:`Delivery.collect_due` last gave it a batch.
        self.collected_at = float("-inf")

    def owed(self) -> bool:
        """Whether any of its logs has entries past its position. (Asked before every
        WebSocket reply: a plain loop, no generator.)"""
        positions = self.positions
        for name, log in self.logs.items():
            if log.seq > positions[name]:
                return True
        return False


class Batch:
    """Entries for a group of readers that get exactly the same ones (packed once)."""

    __slots__ = ("entries", "readers", "end")

    def __init__(self, entries: list[tuple[str, Entry]],
                 end: dict[str, tuple[str, int]]) -> None:
        #: ``(log name, entry)`` in send order, only those meant for these readers.
        self.entries = entries
        self.readers: list[Reader] = []
        #: Where the readers stand after the batch, for the logs it moved them in:
        #: name -> (epoch, seq). Targeted entries for other tabs are passed too.
        self.end = end

    @property
    def events(self) -> list[t.Any]:
        return [entry.event for _, entry in self.entries]


#: A log a reader is owed entries of: (the reader's name for it, the log, the entries).
Part = tuple[str, Log, list[Entry]]


def owed_parts(reader: Reader) -> list[Part] | Gap:
    """For each log with entries past the reader's position, those entries; :data:`GAP`
    when some of them were trimmed."""
    parts: list[Part] = []
    positions = reader.positions
    for name, log in reader.logs.items():
        position = positions[name]
        if log.seq == position:
            continue
        entries = log.after(position)
        if entries is GAP:
            return GAP
        parts.append((name, log, t.cast("list[Entry]", entries)))
    return parts


def in_send_order(parts: list[Part]) -> list[tuple[str, Entry]]:
    """The entries of several logs as ``(log name, entry)``, merged back into send order."""
    pairs = [(name, e) for name, _, entries in parts for e in entries]
    if len(parts) > 1:
        pairs.sort(key=lambda pair: pair[1].stamp)
    return pairs


def merged_for(parts: list[Part], client_id: str) -> list[tuple[str, Entry]]:
    """The entries in send order that a reader of ``client_id`` is given (control records
    and entries for other tabs left out)."""
    return [(n, e) for n, e in in_send_order(parts) if e.for_client(client_id)]


def split_positions(entries: list[tuple[str, Entry]],
                    epochs: t.Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """Where a reader stands after ``entries`` (a prefix of a batch): the last seq per log."""
    positions: dict[str, tuple[str, int]] = {}
    for name, entry in entries:
        positions[name] = (epochs[name], entry.seq)
    return positions


def until_kick(pairs: list[tuple[str, Entry]]
               ) -> tuple[list[tuple[str, Entry]], tuple[str, Entry] | None]:
    """What one poll answers from what its reader is owed (oldest first): the entries
    before the first kick record — the pushes made before a kick reach the client before
    the close — and the kick itself when it comes first (that poll is answered with the
    close, and the reader moves past it)."""
    for i, (_, entry) in enumerate(pairs):
        if entry.control == "kick":
            return (pairs[:i], None) if i else ([], pairs[0])
    return pairs, None


def reaches(log: Log, position: tuple[str, int]) -> bool:
    """Whether ``log``'s history still holds everything after ``position``."""
    return (position[0] == log.epoch and 0 <= position[1] <= log.seq
            and log.after(position[1]) is not GAP)
