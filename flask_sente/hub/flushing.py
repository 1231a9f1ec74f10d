"""Sending what readers are owed: the flush timers, batching per connection, the packing of
each distinct batch once, and waking the Ajax polls that are owed something.

WebSocket batching is per connection: a push leaves as soon as the pusher yields (every
push made until then shares its frames), unless its connection was written less than a
window (``send_buffer_ws``) ago — then it waits for the rest of that window. So a busy
connection gets one batch per window, and a burst to a thousand users is not held back by
any of them. Ajax polls are woken at most once per ``send_buffer_ajax`` (each answer costs
the client a new poll). A pusher that does not yield (a loop over a thousand users) would
hold the timer back until it ends: a push that finds its transport's flush overdue by
:data:`OVERDUE_FLUSH` does the flush itself, so a long burst leaves in slices.
"""
from __future__ import annotations

import logging
import time
import typing as t

from ..config import Options
from ..connections import WsConnection
from ..core.delivery import GAP, Batch, Delivery, Entry, Reader
from ..core.packing import pack_batch
from ..core.presence import TRANSPORTS, Transport
from ..metrics import NoMetrics
from ..protocol.closecodes import CLOSE_TOO_SLOW
from ..protocol.packers import Packer
from ..protocol.wire import Wire, packer_of
from .loop import HubLoop
from .table import ConnectionTable

logger = logging.getLogger("flask_sente")

#: Seconds past its due time after which a pusher that has not yielded does the flush
#: itself: short enough that a burst to a thousand users leaves in slices, long enough that
#: a handler's handful of pushes still shares a frame.
OVERDUE_FLUSH = 0.001
#: Set on a parked poll to wake it: its greenlet reads what it is owed itself.
WAKE = object()
#: ``CallService.refuse_legacy``: requests about to reach a connection without calls.
RefuseCalls = t.Callable[[t.Any, t.Iterable[tuple[str, Entry]]], None]


class Flusher:
    def __init__(self, loop: HubLoop, options: Options, packer: Packer, delivery: Delivery,
                 table: ConnectionTable, metrics: NoMetrics,
                 refuse_calls: RefuseCalls | None = None) -> None:
        self.loop = loop
        #: Tells the callers of requests about to reach a client without calls (protocol
        #: 1 and 2); only such connections pay for the look.
        self._refuse_calls = refuse_calls
        self._options = options
        self._packer = packer
        self._delivery = delivery
        self._table = table
        self._metrics = metrics
        self._windows: dict[Transport, float] = {
            "ws": options.send_buffer_ws, "ajax": options.send_buffer_ajax}
        self._timers: dict[Transport, t.Any] = {"ws": None, "ajax": None}
        #: ``time.monotonic()`` of each transport's last flush (a quiet transport flushes at
        #: once), and when its pending timer is due. Real time, not the loop's cached time:
        #: a pusher that does not yield leaves the loop's clock behind.
        self._last: dict[Transport, float] = {"ws": float("-inf"), "ajax": float("-inf")}
        self._due: dict[Transport, float] = {"ws": 0.0, "ajax": 0.0}

    def logs_appended(self, transports: tuple[Transport, ...]) -> None:
        """Readers on these transports are owed new entries: schedule their flush (see the
        module docstring)."""
        if self.loop.closed:
            return
        now = time.monotonic()
        for transport in transports:
            if self._timers[transport] is None:
                due = now if transport == "ws" else max(
                    now, self._last[transport] + self._windows[transport])
                self._schedule(transport, due, now)
            elif now - self._due[transport] >= OVERDUE_FLUSH:
                self.flush(transport)

    def _schedule(self, transport: Transport, due: float, now: float) -> None:
        self._due[transport] = due
        timer = self._timers[transport] = self.loop.timer(due - now)
        timer.start(self._from_timer, transport, update=True)

    def _from_timer(self, transport: Transport) -> None:
        try:
            self.flush(transport)
        except Exception:  # runs in the event loop: never let it raise there
            logger.exception("flushing %s pushes failed", transport)

    def flush_all(self) -> None:
        """Send everything buffered now, in order (what ``flush=True`` does)."""
        for transport in TRANSPORTS:
            self.flush(transport, everything=True)

    def flush(self, transport: Transport, everything: bool = False) -> None:
        """Send what is due: every connection's batch, except (WebSocket) those written
        less than a window ago, which get a timer; ``everything``: those too."""
        timer = self._timers[transport]
        if timer is not None:
            timer.close()
            self._timers[transport] = None
        now = self._last[transport] = time.monotonic()
        window = 0.0 if everything or transport != "ws" else self._windows["ws"]
        batches, gapped, woken, later = self._delivery.collect_due(transport, now, window)
        if later is not None and not self.loop.closed:
            self._schedule(transport, later, now)
        for batch in batches:
            self._send(batch)
        for reader in gapped:  # cannot happen while WebSocket readers are collected often
            self._delivery.skip_to_head(reader)
            conn = self._table.ws(reader.uid, reader.client_id)
            if conn is not None and conn.open:
                self._too_slow(conn)
        for reader in woken:
            client = self._table.ajax(reader.uid, reader.client_id)
            if client is not None and client.parked is not None:
                client.parked.set(WAKE)

    def _send(self, batch: Batch) -> None:
        """One distinct batch to each of its readers' sockets, packed once per wire (dialect
        and protocol version) among them."""
        table = self._table
        by_wire: dict[Wire, list[str | bytes]] = {}
        for reader in batch.readers:
            conn = table.ws(reader.uid, reader.client_id)
            if conn is None or conn.reader is not reader:
                continue
            if not conn.wire.calls and self._refuse_calls is not None:
                self._refuse_calls(conn, batch.entries)
            messages = by_wire.get(conn.wire)
            if messages is None:
                messages = by_wire[conn.wire] = pack_batch(
                    packer_of(conn.wire, self._packer), batch, conn.wire,
                    self._options.max_message_size)
            for packed in messages:
                conn.offer(packed)
            self._metrics.pushed("ws", batch, messages)

    def flush_connection(self, conn: WsConnection, reader: Reader) -> None:
        """Send one connection's batch now (the others wait for their flush)."""
        batch = self._delivery.collect_reader(reader, time.monotonic())
        if batch is GAP:
            self._delivery.skip_to_head(reader)
            self._too_slow(conn)
        elif isinstance(batch, Batch):
            if not conn.wire.calls and self._refuse_calls is not None:
                self._refuse_calls(conn, batch.entries)
            messages = pack_batch(packer_of(conn.wire, self._packer), batch, conn.wire,
                                  self._options.max_message_size)
            for packed in messages:
                conn.offer(packed)
            self._metrics.pushed("ws", batch, messages)

    def _too_slow(self, conn: WsConnection) -> None:
        self._metrics.closed_1013("history-gap")
        conn.close(CLOSE_TOO_SLOW, "client too slow")

    def stop(self) -> None:
        for transport, timer in self._timers.items():
            if timer is not None:
                timer.close()
            self._timers[transport] = None
