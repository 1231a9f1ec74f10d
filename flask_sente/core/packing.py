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

logger = logging.getLogger("flask_sente")


def pack_prefix(packer: Packer, events: list[t.Any], limit: int, *,
                tail: t.Callable[[int], list[t.Any]] | None = None) -> tuple[str | bytes, int]:
    """Pack as many leading ``events`` as fit in ``limit`` bytes (at least one); returns
    the message and how many events it covers (unpackable ones included, left out).
    ``tail(count)`` gives events to end the message with when it holds ``count`` events
    (protocol 2's position mark)."""
    count = len(events)
    while True:
        extra = tail(count) if tail is not None else []
        try:
            packed = packer.pack([events[:count] + extra, None])
        except PackError:
            return _pack_skipping_bad(packer, events[:count] + extra), count
        if len(packed) <= limit or count == 1:
            if len(packed) > limit:
                logger.warning("a push of %r is %d bytes, over max_message_size; sent alone",
                               events[0][0], len(packed))
            return packed, count
        count = max(1, count // 2)


def pack_all(packer: Packer, events: list[t.Any], limit: int) -> list[str | bytes]:
    """``events`` as batches in order, each within ``limit`` bytes where possible."""
    messages: list[str | bytes] = []
    while events:
        packed, taken = pack_prefix(packer, events, limit)
        messages.append(packed)
        events = events[taken:]
    return messages


def _pack_skipping_bad(packer: Packer, events: list[t.Any]) -> str | bytes:
    good = []
    for event in events:
        try:
            packer.pack(event)
            good.append(event)
        except PackError as exc:
            logger.error("dropped a push of %r: %s", event[0], exc)
    return packer.pack([good, None])
