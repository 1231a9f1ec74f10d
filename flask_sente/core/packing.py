"""Packing batches of pushes within the message size limit, without I/O.

A batch is split so that no message exceeds ``max_message_size`` (the clients' own limit
is at least the server's), keeping the events' order; one event bigger than that still goes
alone, with a warning, rather than being lost. An event the packer cannot encode is dropped
with an error log and never takes the rest of its batch with it.
"""
from __future__ import annotations

import logging
import typing as t

from ..exceptions import PackError
from ..protocol.packers import Packer
from ..protocol.wire import Wire
from .delivery import Batch, Entry, split_positions

logger = logging.getLogger("flask_sente")


def pack_prefix(packer: Packer, wire: Wire, events: list[t.Any], limit: int, *,
                tail: t.Callable[[int], list[t.Any]] | None = None) -> tuple[str | bytes, int]:
    """Pack as many leading ``events`` as fit in ``limit`` bytes (at least one); returns
    the message and how many events it covers (unpackable ones included, left out).
    ``tail(count)`` gives events to end the message with when it holds ``count`` events
    (protocol 2's position mark)."""
    count = len(events)
    while True:
        extra = tail(count) if tail is not None else []
        try:
            packed = packer.pack(wire.push(events[:count] + extra))
        except PackError:
            return _pack_skipping_bad(packer, wire, events[:count] + extra), count
        if len(packed) <= limit or count == 1:
            if len(packed) > limit:
                logger.warning("a push of %r is %d bytes, over max_message_size; sent alone",
                               events[0][0], len(packed))
            return packed, count
        count = max(1, count // 2)


def pack_all(packer: Packer, wire: Wire, events: list[t.Any],
             limit: int) -> list[str | bytes]:
    """``events`` as batches in order, each within ``limit`` bytes where possible."""
    messages: list[str | bytes] = []
    while events:
        packed, taken = pack_prefix(packer, wire, events, limit)
        messages.append(packed)
        events = events[taken:]
    return messages


def _pack_skipping_bad(packer: Packer, wire: Wire, events: list[t.Any]) -> str | bytes:
    good = []
    for event in events:
        try:
            packer.pack(event)
            good.append(event)
        except PackError as exc:
            logger.error("dropped a push of %r: %s", event[0], exc)
    return packer.pack(wire.push(good))


def pack_batch(packer: Packer, batch: Batch, wire: Wire, limit: int) -> list[str | bytes]:
    """A batch as messages within ``limit`` bytes; in protocol 2 each one ends with the
    positions it brings the client to, so a cut between two loses nothing."""
    if not wire.marks:
        return pack_all(packer, wire, batch.events, limit)
    entries = batch.entries
    try:  # the common case first: the whole batch fits in one message
        packed = packer.pack(wire.push([e.event for _, e in entries]
                                       + [wire.position_mark(batch.end)]))
        if len(packed) <= limit:
            return [packed]
    except PackError:
        pass  # the general path below drops what cannot be packed
    epochs = {name: epoch for name, (epoch, _) in batch.end.items()}
    messages: list[str | bytes] = []
    while entries:
        def with_mark(count: int, entries: list[tuple[str, Entry]] = entries) -> list[t.Any]:
            return [wire.position_mark(batch.end if count == len(entries)
                                       else split_positions(entries[:count], epochs))]

        packed, taken = pack_prefix(packer, wire, [e.event for _, e in entries], limit,
                                    tail=with_mark)
        messages.append(packed)
        entries = entries[taken:]
    return messages


def pack_owed(packer: Packer, pairs: list[tuple[str, Entry]], client_id: str, wire: Wire,
              epochs: t.Mapping[str, str], limit: int) -> tuple[str | bytes | None, int]:
    """One poll's answer from what a lazy reader is owed (``pairs``, oldest first): the
    events meant for ``client_id``, as many as fit in ``limit`` bytes, with a position mark
    in protocol 2. Returns the message (None when nothing is meant for this client) and how
    many of ``pairs`` it covers (entries for other tabs included)."""
    mine = [(i, e.event) for i, (_, e) in enumerate(pairs) if e.for_client(client_id)]
    if not mine:
        return None, len(pairs)
    events = [event for _, event in mine]

    def covered(count: int) -> int:
        return mine[count - 1][0] + 1 if count < len(mine) else len(pairs)

    if wire.marks:
        def with_mark(count: int) -> list[t.Any]:
            return [wire.position_mark(split_positions(pairs[:covered(count)], epochs))]

        packed, taken = pack_prefix(packer, wire, events, limit, tail=with_mark)
    else:
        packed, taken = pack_prefix(packer, wire, events, limit)
    return packed, covered(taken)
