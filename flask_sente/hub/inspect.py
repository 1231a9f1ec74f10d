"""What one process tells the admin dashboard: its counters, and its part of a page.

Two pieces, both idle unless the ``admin`` option is on:

* :class:`Tally` — a metrics recorder (the interface of :class:`~flask_sente.metrics.NoMetrics`)
  that counts events in and out, publishes per topic, and keeps the recent refusals and
  handler errors, then hands every call on to the recorder it wraps (Prometheus's, or the
  no-op one). The counting happens at the call sites metrics already have, so the hot
  paths gain no new branch; with the option off the app has no Tally at all.
* :class:`Inspector` — answers the backplane's ``admin_report``: this process's counters
  and the connections it holds of the users the dashboard shows (see
  ``core/overview.py`` for the whole exchange), and closes one client when an admin asks.

No history is kept: a dashboard that is not open costs nothing but the counters.
"""
from __future__ import annotations

import collections
import os
import socket
import time
import typing as t

from ..core.overview import RECENT_SIZE, uid_key
from ..metrics import NoMetrics
from ..protocol.session import is_topic_log, topic_of

if t.TYPE_CHECKING:  # pragma: no cover
    from ..backplanes import Backplane
    from ..core.delivery import Batch, Entry
    from .table import ConnectionTable

#: Seconds within which the same refusal or error is counted on its row, not added again
#: (a flood of bad requests is one row with a count, like the log's rate limit).
COALESCE = 1.0
#: Topics whose publishes are counted at most (a pathological spread of names starts over).
MAX_COUNTED_TOPICS = 10_000


class Tally(NoMetrics):
    """Counts what the dashboard shows, then records as ``inner`` does. See the module."""

    def __init__(self, inner: NoMetrics, clock: t.Callable[[], float] = time.time) -> None:
        self.inner = inner
        self.enabled = inner.enabled
        self._clock = clock
        #: Events received from clients, and events sent to them, since the process started.
        self.events_in = 0
        self.events_out = 0
        #: Publishes made by this process, per topic.
        self.publishes: dict[str, int] = {}
        #: Recent refusals and handler errors, newest last.
        self.recent: collections.deque[dict[str, t.Any]] = collections.deque(maxlen=RECENT_SIZE)
        # Everything Tally does not count goes straight to the wrapped recorder's method:
        # no extra call on those paths.
        for name, value in vars(NoMetrics).items():
            if callable(value) and not name.startswith("_") and name not in vars(Tally):
                setattr(self, name, getattr(inner, name))

    def __getattr__(self, name: str) -> t.Any:
        """What the wrapped recorder has beyond the interface (Prometheus's exposition)."""
        return getattr(self.inner, name)

    def received(self, transport: str, size: int) -> None:
        self.events_in += 1
        self.inner.received(transport, size)

    def pushed(self, transport: str, batch: Batch, messages: t.Sequence[str | bytes]) -> None:
        self.events_out += len(batch.entries)
        self.inner.pushed(transport, batch, messages)

    def polled(self, pairs: list[tuple[str, Entry]], upto: int, client_id: str,
               packed: str | bytes | None) -> None:
        if packed is not None:
            self.events_out += sum(
                1 for _, e in pairs[:upto]
                if e.control is None and (e.target is None or e.target == client_id))
        self.inner.polled(pairs, upto, client_id, packed)

    def topic_published(self, topic: str) -> None:
        counts = self.publishes
        if topic not in counts and len(counts) >= MAX_COUNTED_TOPICS:
            counts.clear()
        counts[topic] = counts.get(topic, 0) + 1
        self.inner.topic_published(topic)

    def rejected(self, reason: str) -> None:
        self.note("refusal", reason, "")
        self.inner.rejected(reason)

    def handler_failed(self, event_id: str, error: BaseException) -> None:
        self.note("error", type(error).__name__,
                  f"the handler for {event_id!r} raised: {error}"[:300])
        self.inner.handler_failed(event_id, error)

    def note(self, kind: str, reason: str, detail: str) -> None:
        """Keep one row; the same ``kind`` and ``reason`` within :data:`COALESCE` seconds
        adds to the latest row's count instead."""
        now = self._clock()
        recent = self.recent
        if recent:
            last = recent[-1]
            if (last["kind"] == kind and last["reason"] == reason
                    and now - last["t"] < COALESCE):
                last["count"] += 1
                return
        recent.append({"t": now, "kind": kind, "reason": reason, "detail": detail,
                       "count": 1})


class Inspected(t.Protocol):
    """What the inspector reads of the hub (and the one thing it does: close a client)."""

    backplane: Backplane
    table: ConnectionTable
    metrics: NoMetrics

    @property
    def draining(self) -> bool: ...

    def close_client(self, uid: t.Any, client_id: str, reason: str) -> int: ...


class Inspector:
    """One process's answer to the dashboard (``Hub.admin_report``)."""

    def __init__(self, hub: Inspected) -> None:
        self._hub = hub
        self.started = time.time()
        self.pid = os.getpid()
        self.host = socket.gethostname()

    def report(self, ask: dict[str, t.Any]) -> dict[str, t.Any]:
        """This process's counters, its connections of ``ask["users"]`` (uids) by uid key,
        and its publishes to ``ask["topics"]``. Closes ``ask["close"]`` (``[uid, client
        id, reason]``) first when it holds that client."""
        hub = self._hub
        node = hub.backplane.node
        closed = 0
        close = ask.get("close")
        if close:
            closed = hub.close_client(close[0], close[1], close[2])
        tally = hub.metrics if isinstance(hub.metrics, Tally) else None
        users: dict[str, list[dict[str, t.Any]]] = {}
        wall, mono = time.time(), time.monotonic()
        for uid in ask.get("users", ()):
            try:
                held = hub.table.of_user(uid)
            except TypeError:  # an unhashable uid from a confused peer: nobody holds it
                continue
            rows = [{"client_id": conn.client_id, "transport": conn.transport, "node": node,
                     "pid": self.pid, "since": conn.opened_at,
                     "active": wall - (mono - conn.last_seen),
                     "topics": sorted(topic_of(name) for name in (conn.reader.logs
                                                                  if conn.reader else ())
                                      if is_topic_log(name))}
                    for conn in held]
            if rows:
                users[uid_key(uid)] = rows
        publishes = tally.publishes if tally is not None else {}
        backplane = hub.backplane
        ws = list(hub.table.all_ws())
        return {
            "process": {
                "node": node, "pid": self.pid, "host": self.host, "started": self.started,
                "ws": len(ws), "ajax": sum(1 for _ in hub.table.all_ajax()),
                "events_in": tally.events_in if tally else 0,
                "events_out": tally.events_out if tally else 0,
                "send_queue": sum(conn.queued for conn in ws),
                "backplane": ("up" if backplane.healthy else "down") if backplane.shared
                else "memory",
                "outbox": backplane.outbox_depth,
                "draining": hub.draining,
            },
            "users": users,
            "topics": {topic: publishes[topic] for topic in ask.get("topics", ())
                       if topic in publishes},
            "recent": [dict(row, node=node) for row in (tally.recent if tally else ())],
            "closed": closed,
        }
