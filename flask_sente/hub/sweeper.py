"""The hub's one periodic timer: WebSocket keep-alive, history expiry, grant renewal.

Started with the hub's first client, it runs every quarter of the shorter keep-alive
interval, at most every second. It pings a WebSocket silent for ``ws_keepalive`` and closes
one that then stays silent ``ws_ping_timeout`` with 4002; every few seconds it drops history
past ``history_ttl``; and it keeps the topic grants of the clients held here from expiring
in a shared backplane. It runs in the event loop: it only offers and spawns, never blocks.
"""
from __future__ import annotations

import logging
import time
import typing as t

from ..backplanes import Backplane
from ..config import Options
from ..core.delivery import Delivery
from ..exceptions import BackplaneError
from ..metrics import NoMetrics
from ..protocol.closecodes import CLOSE_PING_TIMEOUT
from ..protocol.packers import Packer
from ..protocol.wire import PackedConstants
from .loop import HubLoop
from .table import ConnectionTable

logger = logging.getLogger("flask_sente")

#: How often idle logs and history past ``history_ttl`` are dropped.
HOUSEKEEPING_INTERVAL = 5.0
#: Seconds before topic grants are renewed again after a renewal failed.
GRANT_RETRY = 60.0


class Sweeper:
    def __init__(self, loop: HubLoop, options: Options, packer: Packer, backplane: Backplane,
                 table: ConnectionTable, metrics: NoMetrics) -> None:
        self.loop = loop
        self._options = options
        self._backplane = backplane
        self._delivery: Delivery = backplane.delivery
        self._table = table
        self._metrics = metrics
        self._constants = PackedConstants(packer)
        self._timer: t.Any = None
        self._next_housekeeping = 0.0
        self._next_grant_refresh: float | None = None

    def start(self) -> None:
        if self.loop.closed or self._timer is not None:
            return
        keepalive = self._options.ws_keepalive
        ping_timeout = self._options.ws_ping_timeout
        interval = min(1.0, (keepalive or 4.0) / 4, (ping_timeout or keepalive or 4.0) / 4)
        now = time.monotonic()
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
        ttl = self._backplane.grants_ttl
        self._next_grant_refresh = None if ttl is None else now + ttl / 4
        self._timer = self.loop.timer(interval, interval, ref=False)
        self._timer.start(self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _sweep(self) -> None:
        try:
            now = time.monotonic()
            if now >= self._next_housekeeping:
                self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
                self._delivery.expire(now)
            refresh_at = self._next_grant_refresh
            if refresh_at is not None and now >= refresh_at:
                self._next_grant_refresh = now + t.cast(float, self._backplane.grants_ttl) / 4
                self.loop.spawn(self._refresh_grants)
            if self._options.ws_keepalive is not None:
                self._keep_alive(now, self._options.ws_keepalive)
        except Exception:  # runs in the event loop: never let it raise there
            logger.exception("keep-alive sweep failed")

    def _keep_alive(self, now: float, keepalive: float) -> None:
        ping_timeout = self._options.ws_ping_timeout
        for conn in self._table.all_ws():
            if not conn.open:
                continue
            if conn.pinged_at is None:
                due = now - conn.last_seen >= keepalive
            elif ping_timeout is None:
                due = now - conn.pinged_at >= keepalive  # no timeout: keep pinging
            elif now - conn.pinged_at >= ping_timeout:
                logger.info("closing a silent WebSocket (uid=%r, client_id=%r)",
                            conn.uid, conn.client_id)
                conn.open = False
                self._metrics.keepalive_closed()
                self.loop.spawn(conn.close_now, CLOSE_PING_TIMEOUT, "ping timeout")
                continue
            else:
                due = False
            if due:
                conn.pinged_at = now
                conn.offer(self._constants(conn.wire, "ping"))

    def _refresh_grants(self) -> None:
        """Renew the grants of every client held here that reads a topic: a grant lasts
        ``grants_ttl`` after the last join, and a client connected longer than that (an
        Ajax client polling one process for days) must still find it when its next request
        reaches a process that never saw the join."""
        held = [(conn.uid, conn.client_id) for transport in ("ws", "ajax")
                for conn in self._table.all(transport)
                if conn.reader is not None and self._delivery.topics_of(conn.reader)]
        if not held:
            return
        try:
            self._backplane.refresh_grants(held)
        except BackplaneError as exc:
            retry = min(GRANT_RETRY, t.cast(float, self._backplane.grants_ttl) / 4)
            self._next_grant_refresh = time.monotonic() + retry
            logger.warning("could not renew topic grants (next try in %g s): %s", retry, exc)
