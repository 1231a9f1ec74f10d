"""Prometheus metrics: what one worker does, counted where it happens, read by a scrape.

Off by default. Then every recorder call site (one line each, in the hub, the long-poll
side, the connections, the replies and the Redis backplane) calls a method of
:data:`NO_METRICS`, which does nothing, and ``prometheus_client`` is never imported. With
``Sente(app, metrics=True)`` (or ``SENTE_METRICS = True``) the app gets a
:class:`PrometheusMetrics` recording into ``prometheus_client``'s default registry;
``metrics=<a CollectorRegistry>`` records into that one instead.

Counters and histograms are written at the call sites. Gauges that describe a state
(connections, users online, queued messages, the Redis outbox) are *sampled* from the hub
when scraped, so keeping them costs the hot paths nothing; under prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, gunicorn ``-w N``) each worker also
samples its own every ``SAMPLE_INTERVAL`` seconds, since a scrape reaches one worker only.

No label ever holds a uid, a client id or an event id: label values come from small fixed
sets (transport, refusal reason, close cause), so the number of series stays bounded.

Mount the endpoint with one line: ``app.add_url_rule("/metrics",
view_func=sente.metrics_view)``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import typing as t
import weakref

from .exceptions import ConfigError

if t.TYPE_CHECKING:  # pragma: no cover
    from .core.delivery import Batch, Entry
    from .core.presence import ConnectedUids

logger = logging.getLogger("flask_sente")

#: Seconds between two samples of a worker's gauges in multiprocess mode.
SAMPLE_INTERVAL = 2.0
#: Buckets (seconds) of the handler latency histogram: 1 ms to 10 s.
HANDLER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
#: Buckets (seconds) of the Redis publish round trip.
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)
#: Buckets (events) of the batch size histogram.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
#: Why a request can be refused (``admission`` and the views); the label's whole range.
REFUSAL_REASONS = ("client-id", "protocol", "positions", "packer", "csrf", "origin",
                   "unauthorized", "backplane")

ContextFactory = t.Callable[[], t.ContextManager[t.Any]]


class Hub(t.Protocol):
    """What the gauges are sampled from (a :class:`flask_sente.hub.Hub`)."""

    backplane: t.Any

    @property
    def closed(self) -> bool: ...

    @property
    def connected_uids(self) -> ConnectedUids: ...

    def connections(self, transport: t.Literal["ws", "ajax"]) -> t.Sequence[t.Any]: ...

    def spawn(self, fn: t.Callable[..., t.Any], *args: t.Any) -> t.Any: ...


class NoMetrics:
    """The recorder while metrics are off: every method returns at once.

    It is also the interface :class:`PrometheusMetrics` implements; the call sites name
    the event, not how it is counted.
    """

    enabled = False

    def watch(self, hub: Hub) -> None:
        """A hub serves its first client (multiprocess mode samples it from then on)."""

    def timed(self, context: ContextFactory) -> ContextFactory:
        """The context handlers run in, timed (the router's ``context``)."""
        return context

    def handshake(self, transport: str) -> None:
        """A handshake went out."""

    def rejected(self, reason: str) -> None:
        """A request was refused before reaching the hub (one of ``REFUSAL_REASONS``)."""

    def received(self, transport: str, size: int) -> None:
        """An event arrived from a client, ``size`` long (characters for text frames)."""

    def pushed(self, transport: str, batch: Batch, messages: t.Sequence[str | bytes]) -> None:
        """A batch of pushes went to one WebSocket client as ``messages``."""

    def polled(self, pairs: list[tuple[str, Entry]], upto: int, client_id: str,
               packed: str | bytes | None) -> None:
        """A poll was answered with the first ``upto`` of ``pairs`` (those meant for
        ``client_id``), packed as ``packed``."""

    def closed_1013(self, cause: str, dropped: int = 0) -> None:
        """A connection was closed with 1013, dropping ``dropped`` queued messages; the
        cause is ``send-queue``, ``history-gap`` or ``backplane``."""

    def reply_timed_out(self, transport: str) -> None:
        """A handler did not reply within ``reply_timeout``."""

    def keepalive_closed(self) -> None:
        """A WebSocket that stopped answering pings was closed (4002)."""

    def published(self, pushes: int, seconds: float) -> None:
        """The Redis publisher wrote ``pushes`` in one round trip of ``seconds``."""

    def gap_repaired(self) -> None:
        """A Redis notification arrived out of order; the missing entries were fetched."""

    def topic_published(self, topic: str) -> None:
        """``topic`` was published to (from this process)."""

    def handler_failed(self, event_id: str, error: BaseException) -> None:
        """A handler raised, and the log has its traceback (rate-limited like the log)."""


#: The recorder of every app without metrics.
NO_METRICS = NoMetrics()

#: Metric families already made per registry (making one twice is an error in
#: prometheus_client; several apps, or one app set up again, share them).
_families: weakref.WeakKeyDictionary[t.Any, _Families] = weakref.WeakKeyDictionary()


def multiprocess_mode() -> bool:
    """Whether prometheus_client writes to ``PROMETHEUS_MULTIPROC_DIR`` (gunicorn -w N)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class PrometheusMetrics(NoMetrics):
    """Records into a ``prometheus_client`` registry; see the module docstring."""

    enabled = True

    def __init__(self, registry: t.Any = None, *, shared_backplane: bool = False) -> None:
        try:
            import prometheus_client as pc  # only here: apps without metrics never import it
        except ImportError:
            raise ConfigError("metrics=True needs prometheus_client, which is not installed: "
                              "pip install prometheus_client (or pip install '.[metrics]' in "
                              "a flask_sente checkout)") from None

        self.registry = pc.REGISTRY if registry is None else registry
        self._pc = pc
        self._sampled: weakref.WeakSet[t.Any] = weakref.WeakSet()
        families = _families.get(self.registry)
        if families is None:
            families = _families[self.registry] = _Families.make(pc, self.registry,
                                                                 shared_backplane)
        self._f = families

    # --- gauges, sampled -------------------------------------------------------------------

    def sample(self, hub: Hub) -> None:
        """Set the state gauges from ``hub`` (at a scrape, and periodically per worker in
        multiprocess mode)."""
        websockets = hub.connections("ws")
        self._f.connections.labels("ws").set(len(websockets))
        self._f.connections.labels("ajax").set(len(hub.connections("ajax")))
        self._f.send_queue.set(sum(conn.queued for conn in websockets))
        uids = hub.connected_uids
        self._f.users_online.labels("ws").set(len(uids.ws))
        self._f.users_online.labels("ajax").set(len(uids.ajax))
        self._f.users_online.labels("any").set(len(uids.any))
        depth = hub.backplane.outbox_depth
        if depth is not None:
            self._f.outbox.set(depth)

    def watch(self, hub: Hub) -> None:
        if hub not in self._sampled and multiprocess_mode():
            self._sampled.add(hub)
            hub.spawn(self._sample_forever, hub)

    def _sample_forever(self, hub: Hub) -> None:
        import gevent

        while not hub.closed:
            try:
                self.sample(hub)
            except Exception:  # a sampler that died would leave the gauges stale for good
                logger.exception("sampling the metrics failed")
            gevent.sleep(SAMPLE_INTERVAL)

    def exposition(self, hub: Hub) -> tuple[bytes, str]:
        """The scrape's body and content type: this worker's gauges sampled now, then the
        registry (every worker's files in multiprocess mode)."""
        pc = self._pc
        self.sample(hub)
        registry = self.registry
        if multiprocess_mode():
            from prometheus_client import multiprocess

            registry = pc.CollectorRegistry()
            collector: t.Any = multiprocess.MultiProcessCollector
            collector(registry)  # every worker's files, read at each scrape
        return pc.generate_latest(registry), pc.CONTENT_TYPE_LATEST

    # --- counters and histograms -----------------------------------------------------------

    def timed(self, context: ContextFactory) -> ContextFactory:
        histogram = self._f.handler_seconds
        clock = time.perf_counter

        @contextlib.contextmanager
        def timed_context() -> t.Iterator[None]:
            started = clock()
            try:
                with context():
                    yield
            finally:
                histogram.observe(clock() - started)

        return timed_context

    def handshake(self, transport: str) -> None:
        self._f.handshakes.labels(transport).inc()

    def rejected(self, reason: str) -> None:
        self._f.rejections.labels(reason if reason in REFUSAL_REASONS else "unauthorized").inc()

    def received(self, transport: str, size: int) -> None:
        self._f.events_in.labels(transport).inc()
        self._f.bytes_in.labels(transport).inc(size)

    def pushed(self, transport: str, batch: Batch, messages: t.Sequence[str | bytes]) -> None:
        self._sent(transport, len(batch.entries), sum(len(m) for m in messages))

    def polled(self, pairs: list[tuple[str, Entry]], upto: int, client_id: str,
               packed: str | bytes | None) -> None:
        if packed is None:
            return
        events = sum(1 for _, e in pairs[:upto]
                     if e.control is None and (e.target is None or e.target == client_id))
        self._sent("ajax", events, len(packed))

    def _sent(self, transport: str, events: int, size: int) -> None:
        self._f.events_out.labels(transport).inc(events)
        self._f.bytes_out.labels(transport).inc(size)
        self._f.batch.labels(transport).observe(events)

    def closed_1013(self, cause: str, dropped: int = 0) -> None:
        self._f.closes_1013.labels(cause).inc()
        if dropped:
            self._f.dropped.inc(dropped)

    def reply_timed_out(self, transport: str) -> None:
        self._f.reply_timeouts.labels(transport).inc()

    def keepalive_closed(self) -> None:
        self._f.keepalive.inc()

    def published(self, pushes: int, seconds: float) -> None:
        self._f.publish_seconds.observe(seconds)
        self._f.published.inc(pushes)

    def gap_repaired(self) -> None:
        self._f.gap_repairs.inc()


@dataclasses.dataclass(frozen=True)
class _Families:
    """Every metric flask_sente records, made once per registry."""

    connections: t.Any
    users_online: t.Any
    send_queue: t.Any
    outbox: t.Any
    handshakes: t.Any
    rejections: t.Any
    events_in: t.Any
    bytes_in: t.Any
    events_out: t.Any
    bytes_out: t.Any
    batch: t.Any
    closes_1013: t.Any
    dropped: t.Any
    reply_timeouts: t.Any
    keepalive: t.Any
    handler_seconds: t.Any
    publish_seconds: t.Any
    published: t.Any
    gap_repairs: t.Any

    @classmethod
    def make(cls, pc: t.Any, registry: t.Any, shared_backplane: bool) -> _Families:
        def counter(name: str, doc: str, *labels: str) -> t.Any:
            return pc.Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, *labels: str, mode: str = "livesum") -> t.Any:
            return pc.Gauge(name, doc, labels, registry=registry, multiprocess_mode=mode)

        def histogram(name: str, doc: str, buckets: t.Sequence[float], *labels: str) -> t.Any:
            return pc.Histogram(name, doc, labels, registry=registry, buckets=buckets)

        # A shared backplane's presence is the cluster's: every worker reports the same.
        presence_mode = "mostrecent" if shared_backplane else "livesum"
        return cls(
            connections=gauge("sente_connections", "Clients this worker serves (connected, or "
                              "within their reconnect grace), by transport", "transport"),
            users_online=gauge("sente_users_online", "Users online (cluster-wide with a shared "
                               "backplane), by transport ('any': either)", "transport",
                               mode=presence_mode),
            send_queue=gauge("sente_send_queue_messages", "Messages queued for WebSockets "
                             "that are not reading fast enough"),
            outbox=gauge("sente_redis_outbox_pushes", "Pushes waiting to be written to Redis"),
            handshakes=counter("sente_handshakes", "Handshakes sent, by transport",
                               "transport"),
            rejections=counter("sente_rejections", "Requests refused before reaching the hub, "
                               "by reason", "reason"),
            events_in=counter("sente_events_received", "Events received from clients, by "
                              "transport", "transport"),
            bytes_in=counter("sente_received_bytes", "Size of the events received (characters "
                             "for text frames), by transport", "transport"),
            events_out=counter("sente_events_pushed", "Pushed events sent to clients, one "
                               "per recipient, by transport", "transport"),
            bytes_out=counter("sente_pushed_bytes", "Size of the push messages sent, by "
                              "transport", "transport"),
            batch=histogram("sente_batch_events", "Events per batch delivered to one client",
                            BATCH_BUCKETS, "transport"),
            closes_1013=counter("sente_closes_1013", "Connections closed with 1013 (try again "
                                "later), by cause", "cause"),
            dropped=counter("sente_send_queue_dropped_messages", "Queued messages dropped "
                            "when a slow WebSocket was closed"),
            reply_timeouts=counter("sente_reply_timeouts", "Replies answered chsk/timeout on "
                                   "the handler's behalf, by transport", "transport"),
            keepalive=counter("sente_keepalive_closes", "WebSockets closed (4002) for not "
                              "answering a ping"),
            handler_seconds=histogram("sente_handler_seconds", "Time handlers ran, in the app "
                                      "context", HANDLER_BUCKETS),
            publish_seconds=histogram("sente_redis_publish_seconds", "Round trip of one "
                                      "pipelined write of pushes to Redis", PUBLISH_BUCKETS),
            published=counter("sente_redis_published_pushes", "Pushes written to Redis"),
            gap_repairs=counter("sente_redis_gap_repairs", "Notifications that arrived after a "
                                "gap, repaired by reading the stream"),
        )


def from_option(value: t.Any, *, shared_backplane: bool) -> NoMetrics:
    """The recorder the ``metrics`` option asks for: False (off), True (the default
    registry) or a ``CollectorRegistry``."""
    if value is False or value is None:
        return NO_METRICS
    return PrometheusMetrics(None if value is True else value,
                             shared_backplane=shared_backplane)

