"""The Redis backplane: many processes and hosts share logs and presence through Redis.

Every push is appended to a Redis stream by one Lua script (seq, epoch, trim, expiry,
publish), pipelined from one publisher greenlet per process. Every process holds a pattern
subscription to the logs' channels and keeps a mirror of the logs its own readers read; a
notification whose seq is not the next one is a gap, filled from the stream before
delivery; a returning client whose position is older than the mirror is replayed from the
stream. So any worker can serve any client, Ajax polls included, with the same positions,
and no sticky sessions. Presence lives in per-user sorted sets whose scripts report each
user's transition to exactly one caller, so the user signals fire once in the cluster.

This module is the facade the hub sees (:class:`~flask_sente.backplanes.base.Backplane`):
it wires the parts, each in a module of its own, and runs the two loops that drive them —

- :mod:`~flask_sente.backplanes.redis_link`: the client, scripts, key names, health;
- :mod:`~flask_sente.backplanes.redis_outbox`: this process's appends and the publisher;
- :mod:`~flask_sente.backplanes.redis_mirror`: the logs mirrored here, kept by the
  subscription;
- :mod:`~flask_sente.backplanes.redis_presence`: members, the online copy, expiry;

— and keeps what is small enough to stay here: topic grants and the cursors of protocol-1
long-pollers. What it shares with the in-memory backplane is
:class:`~flask_sente.backplanes.common.BackplaneBase`.

Needs redis-py (``pip install redis``, or ``pip install '.[redis]'`` in a flask_sente
checkout) and gevent's monkey-patching (redis-py does its I/O on ``socket``).
"""
from __future__ import annotations

import json
import logging
import time
import typing as t

import gevent
import gevent.event
import gevent.pool

from ..core.delivery import Position, Reader, WireEvent, join_target
from ..core.presence import ConnectedUids, Transport, Uid
from ..exceptions import BackplaneError
from ..metrics import NO_METRICS, NoMetrics
from ..protocol.wire import Positions
from . import redis_scripts as rs
from .base import AdminAsk, AdminReport, BackplaneListener, CallOutcome
from .common import BackplaneBase, new_epoch
from .redis_admin import AdminChannel
from .redis_link import SOCKET_TIMEOUT, RedisLink
from .redis_mirror import Mirror
from .redis_outbox import OUTBOX_LIMIT, OUTBOX_MAX_AGE, PIPELINE_MAX, Outbox, Payload
from .redis_presence import DEAD_AFTER, HEARTBEAT, RedisPresence

__all__ = ["DEAD_AFTER", "EXPIRE_EVERY", "GRANTS_TTL", "HEARTBEAT", "OUTBOX_LIMIT",
           "OUTBOX_MAX_AGE", "PIPELINE_MAX", "REFRESH_CHUNK", "SOCKET_TIMEOUT",
           "RedisBackplane", "from_url"]

logger = logging.getLogger("flask_sente")

#: How often grace windows are checked cluster-wide.
EXPIRE_EVERY = 0.25
#: How long, and how often, an answer routed to another process is published again while
#: no subscriber hears it (see ``RedisBackplane.route_call``).
ROUTE_RETRY_FOR = 3.0
ROUTE_RETRY_EVERY = 0.1
#: How long a client's topic grants outlive their last join (seconds; the Emitter's joins
#: give the same).
GRANTS_TTL = rs.GRANTS_TTL
#: Grants renewed per Redis round trip by ``refresh_grants``.
REFRESH_CHUNK = 500


class RedisBackplane(BackplaneBase):
    """See the module docstring; satisfies :class:`~flask_sente.backplanes.base.Backplane`."""

    shared = True
    #: A grant's lifetime after its last join or refresh: a client that is gone for good
    #: leaves no set behind (``drop_grants`` cannot: it may live on in another process).
    grants_ttl: float | None = GRANTS_TTL

    def __init__(self, url: str, *, history_size: int, history_ttl: float,
                 node_id: str | None = None, dead_node_grace: float = 5.0,
                 metrics: NoMetrics = NO_METRICS) -> None:
        super().__init__(history_size=history_size, history_ttl=history_ttl)
        self.metrics = metrics
        self.link = link = RedisLink(url, node=node_id or new_epoch() + new_epoch(),
                                     history_size=history_size, history_ttl=history_ttl,
                                     on_health=self.report_state)
        self.url, self.prefix, self.node = url, link.prefix, link.node
        self.client: t.Any = link.client
        self._mirror = Mirror(link, self, metrics)
        self._outbox = Outbox(link, metrics, self._mirror.appended)
        #: The grace window a dead node's members get (the longer of the two transports').
        self._cluster = RedisPresence(link, self, dead_grace_ms=int(dead_node_grace * 1000))
        self._admin = AdminChannel(link, self)
        self._group = gevent.pool.Group()
        self._started = False
        #: Set by :meth:`close`: wakes the loops' pauses so that they end by themselves.
        self._stopping = gevent.event.Event()
        #: Set once the subscription is up (appends made before it are caught up from
        #: the streams anyway).
        self._subscribed = gevent.event.Event()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, listener: BackplaneListener) -> None:
        """Remember the listener; the greenlets start on first use, so a hub built and
        never used (the one ``sente.close()`` leaves ready) holds no connection."""
        super().start(listener)

    def _running(self) -> None:
        if not self._started and not self.link.closed:
            self._started = True
            self._group.spawn(self._outbox.run)
            self._group.spawn(self._subscriber)
            self._group.spawn(self._housekeeping)
            self._subscribed.wait(timeout=SOCKET_TIMEOUT)

    def close(self) -> None:
        """Stop the loops and close every connection to Redis.

        The loops are woken and let end by themselves (a round trip in progress finishes,
        bounded by the socket timeout); killed, one could be inside redis-py's connect,
        whose socket is then in no connection object: left to the garbage collector, it
        is a ResourceWarning in whatever test runs then (fresh-clone CI, three times).
        Killing is the last resort, for a loop still running after that bound. Then the
        pool's connections are closed here rather than whenever the collector gets to
        them."""
        link = self.link
        link.closed = True
        super().close()
        self._stopping.set()  # the housekeeping loop's and the subscriber's pauses
        self._outbox.stop()   # the publisher's wait for pushes
        self._wake_subscriber()
        gevent.joinall(list(self._group), timeout=SOCKET_TIMEOUT + 0.5)
        self._group.kill(block=True, timeout=5)
        link.close()

    def _wake_subscriber(self) -> None:
        """The subscriber reads its subscription up to a second at a time: a message on this
        process's own call channel ends the read now (it sees ``link.closed`` and ends)."""
        if not self._subscribed.is_set() or not self.link.healthy:
            return  # not listening: it is connecting or pausing, which ends soon anyway
        try:
            self.client.publish(f"{self.prefix}:call:{self.node}", b"")
        except self.link.errors:
            pass

    # --- capabilities ----------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self.link.healthy

    @property
    def outbox_depth(self) -> int | None:
        """Pushes waiting for the publisher (they pile up while Redis is away)."""
        return self._outbox.depth

    def settled(self, timeout: float = 2 * SOCKET_TIMEOUT, upto: int | None = None) -> None:
        self._outbox.settled(timeout, upto)

    def caught_up(self, reader: Reader, timeout: float = SOCKET_TIMEOUT) -> None:
        self._mirror.caught_up(reader, timeout)

    def check_secret(self, fingerprint: str) -> None:
        """Log an error when this worker's SECRET_KEY differs from the cluster's."""
        key = f"{self.prefix}:secret-fingerprint"
        try:
            if not self.client.set(key, fingerprint, nx=True, ex=86400):
                theirs = self.client.get(key)
                if theirs is not None and theirs.decode() != fingerprint:
                    logger.error("flask_sente: this worker's SECRET_KEY differs from the other "
                                 "workers' (a key generated per process?): their sessions and "
                                 "CSRF tokens are refused here. Give every worker the same "
                                 "SECRET_KEY.")
        except self.link.errors as exc:
            logger.warning("Redis backplane: could not compare SECRET_KEYs (%s)", exc)

    # --- logs ------------------------------------------------------------------------------

    def push(self, uid: Uid, event: WireEvent, target: str | None, now: float) -> None:
        self._queue(rs.user_key(uid), event, target or "", "", False)

    def broadcast(self, event: WireEvent, now: float) -> None:
        self._queue(rs.BROADCAST_KEY, event, "", "", True)

    def kick(self, uid: Uid, reason: str, now: float) -> None:
        self._queue(rs.user_key(uid), reason, "", "kick", False)

    def publish(self, topic: str, event: WireEvent, exclude: str | None, now: float) -> None:
        self._queue(rs.topic_key(topic), event, join_target(None, exclude) or "", "", False)

    def command(self, uid: Uid, client_id: str | None, kind: str, topic: str) -> None:
        self._queue(rs.user_key(uid), topic, client_id or "", kind, False)

    def _queue(self, ukey: str, event: Payload, target: str, control: str,
               create: bool) -> None:
        self._running()
        self._outbox.put(ukey, event, target, control, create)

    def open_reader(self, uid: Uid, client_id: str, transport: Transport, now: float,
                    positions: Positions | None) -> tuple[Reader, bool | None]:
        with self.link.calling():
            self._running()
            return self._mirror.open_reader(uid, client_id, transport, now, positions)

    def resume(self, reader: Reader, positions: Positions) -> set[str]:
        with self.link.calling():
            return self._mirror.resume(reader, positions)

    def join(self, reader: Reader | None, topic: str, now: float,
             position: Position | None) -> tuple[bool | None, Position]:
        with self.link.calling():
            self._running()
            return self._mirror.join(reader, topic, now, position)

    # --- presence --------------------------------------------------------------------------

    @property
    def connected_uids(self) -> ConnectedUids:
        self._running()
        return self._cluster.connected_uids

    def clients_of(self, uid: Uid) -> dict[str, list[str]]:
        with self.link.calling():
            return self._cluster.clients_of(uid)

    def members(self, topic: str) -> frozenset[Uid]:
        self._running()
        return super().members(topic)

    def topics(self) -> dict[str, int]:
        self._running()
        return super().topics()

    def attach(self, uid: Uid, transport: Transport, client_id: str, conn_id: int) -> None:
        self._cluster.attach(uid, transport, client_id, conn_id)

    def detach(self, uid: Uid, transport: Transport, client_id: str, conn_id: int,
               deadline: float) -> None:
        self._cluster.detach(uid, transport, client_id, conn_id, deadline)

    def remove(self, uid: Uid, transport: Transport, client_id: str) -> None:
        self._cluster.remove(uid, transport, client_id)

    def topic_attach(self, topic: str, uid: Uid, transport: Transport, client_id: str,
                     conn_id: int) -> None:
        self._cluster.topic_attach(topic, uid, transport, client_id, conn_id)

    def topic_detach(self, topic: str, uid: Uid, transport: Transport, client_id: str,
                     conn_id: int, deadline: float) -> None:
        self._cluster.topic_detach(topic, uid, transport, client_id, conn_id, deadline)

    def topic_remove(self, topic: str, uid: Uid, transport: Transport,
                     client_id: str) -> None:
        self._cluster.topic_remove(topic, uid, transport, client_id)

    def expire(self, now: float) -> None:
        self._cluster.expire(now)

    # --- grants and cursors ----------------------------------------------------------------

    def grant(self, uid: Uid, client_id: str, topic: str) -> None:
        key = rs.grants_key(self.prefix, rs.user_key(uid), client_id)
        with self.link.calling():
            self.client.pipeline(transaction=False).sadd(key, topic).pexpire(
                key, self._grants_ttl_ms()).execute()

    def refresh_grants(self, held: t.Sequence[tuple[Uid, str]]) -> None:
        ttl_ms = self._grants_ttl_ms()
        for start in range(0, len(held), REFRESH_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for uid, client_id in held[start:start + REFRESH_CHUNK]:
                pipe.pexpire(rs.grants_key(self.prefix, rs.user_key(uid), client_id), ttl_ms)
            try:
                pipe.execute()
            except self.link.errors as exc:
                # Housekeeping, not a request: no 503s for it (``calling`` would mark the
                # backplane unhealthy until a publish or a resubscription succeeds).
                raise BackplaneError(f"Redis: {exc}") from exc

    def _grants_ttl_ms(self) -> int:
        return int((self.grants_ttl or GRANTS_TTL) * 1000)

    def revoke(self, uid: Uid, client_id: str, topic: str) -> None:
        with self.link.calling():
            self.client.srem(rs.grants_key(self.prefix, rs.user_key(uid), client_id), topic)

    def granted(self, uid: Uid, client_id: str) -> set[str]:
        with self.link.calling():
            found = self.client.smembers(rs.grants_key(self.prefix, rs.user_key(uid),
                                                       client_id))
        return {topic.decode() for topic in found}

    def drop_grants(self, uid: Uid, client_id: str) -> None:
        """Grants expire instead: the client may go on in another process."""

    def save_cursor(self, uid: Uid, client_id: str, positions: Positions) -> None:
        with self.link.calling():
            self.client.set(rs.cursor_key(self.prefix, rs.user_key(uid), client_id),
                            json.dumps({k: list(v) for k, v in positions.items()}),
                            ex=self.link.ttl)

    def load_cursor(self, uid: Uid, client_id: str) -> dict[str, Position] | None:
        with self.link.calling():
            raw = self.client.get(rs.cursor_key(self.prefix, rs.user_key(uid), client_id))
        if raw is None:
            return None
        return {name: (pos[0], int(pos[1])) for name, pos in json.loads(raw).items()}

    # --- call routing ----------------------------------------------------------------------

    def route_call(self, node: str, outcome: CallOutcome) -> None:
        """This process's own outcome is handed over at once; another's is published on
        that process's call channel (a PUBLISH: an answer is not a push, it needs no log).

        A PUBLISH that reached no subscriber is made again, every
        :data:`ROUTE_RETRY_EVERY` s for :data:`ROUTE_RETRY_FOR` s: the asking process may be
        resubscribing (Redis came back, or it is a worker just started), and Redis keeps
        nothing for a channel nobody listens to (found by the chaos drill, seed 402290: an
        answer lost while the asker's subscription was reconnecting). Past that, the asker
        is gone or deaf, and its call ends by its timeout."""
        if node == self.node:
            super().route_call(node, outcome)
            return
        channel, packed = f"{self.prefix}:call:{node}", rs.pack_event(outcome)
        deadline = time.monotonic() + ROUTE_RETRY_FOR
        while True:
            with self.link.calling():
                heard = self.client.publish(channel, packed)
            if heard or time.monotonic() >= deadline:
                return
            self._stopping.wait(ROUTE_RETRY_EVERY)
            if self.link.closed:  # this process stops: no more round trips
                return

    def await_answers(self, timeout: float) -> None:
        """The subscription (this process's call channel among its channels) is started on
        first use: the first call waits for it."""
        self._running()
        self._subscribed.wait(timeout)

    def announce_closed(self, uid_key: str, client_id: str) -> None:
        """One PUBLISH, read by every other process (this one skips its own)."""
        with self.link.calling():
            self.client.publish(f"{self.prefix}:closed",
                                rs.pack_event([uid_key, client_id, self.node]))

    def _on_call_message(self, channel: str, data: bytes) -> None:
        listener = self.listener
        if listener is None:
            return
        try:
            value = rs.unpack_event(data)
            if channel.endswith(":closed"):
                uid_key, client_id, node = value
                if node != self.node:  # this process acted before it published
                    listener.client_closed(uid_key, client_id)
            else:
                listener.call_routed(value)
        except Exception:  # another process's garbage must not end the subscription
            logger.exception("Redis backplane: a call message could not be read")

    # --- the admin dashboard ---------------------------------------------------------------

    def gather(self, ask: AdminAsk, timeout: float) -> tuple[list[AdminReport], int]:
        """Every process's report, through Redis (see ``redis_admin``)."""
        self._running()
        return self._admin.gather(ask, timeout)

    # --- the loops -------------------------------------------------------------------------

    def _subscriber(self) -> None:
        """Applies every append and presence delta; after a reconnect, catches up."""
        link = self.link
        presence, topic_presence = f"{self.prefix}:presence", f"{link.topic_prefix}:presence"
        calls = (f"{self.prefix}:call:{self.node}", f"{self.prefix}:closed")
        admin = self._admin
        while not link.closed:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(f"{self.prefix}:{{*}}:ch")
                pubsub.subscribe(presence, topic_presence, *calls, *admin.channels)
                self._cluster.reload()
                self._catch_up()
                link.set_reachable(True)
                link.set_listening(True)
                self._subscribed.set()
                while not link.closed:
                    message = pubsub.get_message(timeout=1.0)
                    if message is None or link.closed:  # closed: woken by close()
                        continue
                    channel = message["channel"].decode()
                    if channel == presence:
                        self._cluster.on_delta(message["data"])
                    elif channel == topic_presence:
                        self._cluster.on_topic_delta(message["data"])
                    elif channel in calls:
                        self._on_call_message(channel, message["data"])
                    elif channel in admin.channels:
                        admin.on_message(channel, message["data"])
                    else:
                        self._mirror.on_append(channel, message["data"])
            except (link.errors, BackplaneError) as exc:
                link.set_listening(False)
                logger.warning("Redis backplane: subscription lost (%s); reconnecting", exc)
                self._stopping.wait(0.5)
            except Exception:
                logger.exception("Redis backplane: subscriber failed; reconnecting")
                self._stopping.wait(0.5)
            finally:
                try:
                    pubsub.close()
                except Exception:  # pragma: no cover
                    pass

    def _catch_up(self) -> None:
        """After (re)subscribing: bring every mirror up to its stream, and this process's
        members back into Redis (the changes that waited for it first). A log whose epoch
        changed meanwhile puts its readers at a gap: each is told it was not recovered."""
        self._mirror.catch_up()
        self._cluster.send_unsent()
        self._cluster.restore()
        self.report_appended(("ws", "ajax"))

    def _housekeeping(self) -> None:
        """Heartbeat, cluster-wide grace windows, and the TTL of logs being read here. Its
        calls are also the probe of Redis's health: once they go through again after Redis
        was away, the worker takes new clients again, whether it has pushes of its own to
        make or not."""
        link = self.link
        last_beat = 0.0
        while not link.closed:
            self._stopping.wait(EXPIRE_EVERY)
            if link.closed:
                return
            was_reachable = link.reachable
            try:
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT:
                    last_beat = now
                    self._cluster.heartbeat()
                    self._mirror.keep_alive()
                self._cluster.send_unsent()
                self._cluster.expire_cluster()
            except (link.errors, BackplaneError) as exc:
                link.set_reachable(False)
                if was_reachable:  # once per outage, not every quarter second
                    logger.warning("Redis backplane: Redis does not answer (%s)", exc)
                continue
            except Exception:
                logger.exception("Redis backplane: housekeeping failed")
                continue
            if not was_reachable:
                logger.warning("Redis backplane: Redis answers again")
            link.set_reachable(True)


def from_url(url: str, *, history_size: int, history_ttl: float, node_id: str | None = None,
             dead_node_grace: float = 5.0, metrics: NoMetrics = NO_METRICS) -> RedisBackplane:
    """A backplane for a Redis URL (the forms are in
    :mod:`flask_sente.backplanes.redis_connect`; ``?prefix=`` picks the key prefix)."""
    return RedisBackplane(url, history_size=history_size, history_ttl=history_ttl,
                          node_id=node_id, dead_node_grace=dead_node_grace, metrics=metrics)
