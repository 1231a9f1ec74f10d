"""The Redis backplane: many processes and hosts share logs and presence through Redis.

Every push is appended to a Redis stream by one Lua script (seq, epoch, trim, expiry,
publish), pipelined from one publisher greenlet per process. Every process holds a pattern
subscription to the logs' channels and keeps a mirror of the logs its own readers read
(``flask_sente.core.delivery``); a notification whose seq is not the next one is a gap,
filled from the stream before delivery; a returning client whose position is older than the
mirror is replayed from the stream. So any worker can serve any client, Ajax polls
included, with the same positions, and no sticky sessions.

Presence lives in per-user sorted sets; the scripts that change them report each user's
online/offline transition to exactly one caller, so ``chsk/uidport-open/close`` and the user
signals fire once in the cluster. Workers heartbeat; the members of a worker silent for
``DEAD_AFTER`` seconds start their grace window. ``connected_uids`` is a local copy of the
online sets kept current by the deltas every change publishes.

Needs redis-py (``pip install redis``, or ``pip install '.[redis]'`` in a flask_sente
checkout) and gevent's monkey-patching (redis-py does its I/O on ``socket``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import typing as t

import gevent
import gevent.event
import gevent.monkey
import gevent.pool
import gevent.queue
import msgpack

from ..core.delivery import BROADCAST, TOPIC, USER, Delivery, Reader, join_target
from ..core.presence import Change, ConnectedUids, Presence, Transport
from ..exceptions import BackplaneError, ConfigError
from ..metrics import NO_METRICS, NoMetrics
from . import redis_scripts as rs
from .base import BackplaneListener, PushRecord, current_record, recording
from .local import new_epoch, track_members
from .redis_connect import connect, import_redis, parse_url

logger = logging.getLogger("flask_sente")

#: Heartbeat period, and the silence after which a worker counts as dead.
HEARTBEAT = 2.0
DEAD_AFTER = 6.0
#: How often grace windows are checked cluster-wide.
EXPIRE_EVERY = 0.25
#: Pushes pipelined in one round trip at most.
PIPELINE_MAX = 500
#: Connections to Redis per process at most (the subscription holds one).
MAX_CONNECTIONS = 64
#: Pushes kept while Redis is away, at most, and for how long (seconds).
OUTBOX_LIMIT = 10_000
OUTBOX_MAX_AGE = 30.0
#: redis-py timeouts: without them a dead Redis stalls a publish for seconds.
SOCKET_TIMEOUT = 2.0
#: How long a client's topic grants outlive their last join (seconds).
GRANTS_TTL = 86_400
#: Grants renewed per Redis round trip by ``refresh_grants``.
REFRESH_CHUNK = 500
#: Controls in a user's log that are topic commands (the rest: "kick", "gap").
TOPIC_COMMANDS = frozenset({"join", "leave", "remove"})


#: An append waiting for the publisher: writer counter, user key, event, target, control,
#: create, and the record of the request or handler that made it.
_Item = tuple[int, str, t.Any, str, str, bool, PushRecord | None]


def _ms() -> int:
    return int(time.time() * 1000)


class RedisBackplane:
    """See the module docstring; satisfies :class:`~flask_sente.backplanes.base.Backplane`."""

    def __init__(self, url: str, *, history_size: int, history_ttl: float,
                 node_id: str | None = None, dead_node_grace: float = 5.0,
                 metrics: NoMetrics = NO_METRICS) -> None:
        redis = import_redis("the Redis backplane")
        if not gevent.monkey.is_module_patched("socket"):
            raise ConfigError("the Redis backplane needs gevent's monkey-patching (redis-py "
                              "uses the socket module): call gevent.monkey.patch_all() first, "
                              "or run under gunicorn -k flask_sente.worker.SenteWorker")
        self._redis_mod = redis
        self.metrics = metrics
        self.url = url
        target = parse_url(url)
        self.prefix = target.prefix
        #: Topic presence: the same scripts and keys under this prefix.
        self.topic_prefix = f"{self.prefix}:tp"
        self.node = node_id or new_epoch() + new_epoch()
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._ttl = max(1, int(history_ttl))
        #: The grace window a dead node's members get (the longer of the two transports').
        self._dead_grace_ms = int(dead_node_grace * 1000)
        # A burst of handshakes makes one Redis call each, at once: a bounded pool makes
        # them wait their turn for a connection instead of failing past redis-py's limit.
        self.client: t.Any = connect(target, socket_timeout=SOCKET_TIMEOUT,
                                     max_connections=MAX_CONNECTIONS)
        self.delivery = Delivery(history_size=history_size, history_ttl=history_ttl,
                                 new_epoch=new_epoch)
        #: This process's members only (client-level signals, grace timers, who to drop).
        self.presence = Presence()
        self.topic_presence = Presence()
        self._topic_members: dict[str, set[t.Any]] = {}
        self._scripts = {name: self.client.register_script(getattr(rs, name)) for name in
                         ("APPEND", "TOUCH", "ATTACH", "DETACH", "REMOVE", "EXPIRE",
                          "HEARTBEAT")}
        self._listener: BackplaneListener | None = None
        self._outbox: gevent.queue.Queue[_Item] = gevent.queue.Queue()
        self._group = gevent.pool.Group()
        self._online: dict[str, set[t.Any]] = {"ws": set(), "ajax": set()}
        self._snapshot: ConnectedUids | None = None
        self._closed = False
        self._started = False
        #: Pushes queued and written so far (``settled`` waits for the second to catch up).
        self._queued = 0
        self._written = 0
        #: This process's writer counter (Redis skips an entry it already appended).
        self._counter = 0
        #: User keys whose pushes were dropped while Redis was away, and how many.
        self._gapped: set[str] = set()
        self._dropped = 0
        self._settle_waiters: list[tuple[int, gevent.event.AsyncResult]] = []
        #: Set once the subscription is up (appends made before it are caught up from
        #: the streams anyway).
        self._subscribed = gevent.event.Event()
        #: False while Redis cannot be reached (new handshakes and polls get 503): the last
        #: call to Redis failed, or the subscription is down. Probed, not only inferred:
        #: the housekeeping loop's calls (every ``EXPIRE_EVERY``) mark it reachable again.
        self.healthy = True
        self._reachable = True
        self._listening = True
        #: The last append of this process per log mirrored here, and who waits for the
        #: mirror to hold it (:meth:`caught_up`).
        self._own: dict[t.Hashable, tuple[str, int]] = {}
        self._mirror_waiters: list[tuple[list[tuple[t.Any, tuple[str, int]]],
                                         gevent.event.Event]] = []
        #: Users gone at once by a detach with no grace: told after their client's leaving.
        self._offline_due: list[Change] = []
        #: Membership changes that could not reach Redis yet, oldest first.
        self._unsent: list[tuple[str, str, str, tuple[t.Any, ...]]] = []

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, listener: BackplaneListener) -> None:
        """Remember the listener; the greenlets start on first use, so a hub built and
        never used (the one ``sente.close()`` leaves ready) holds no connection."""
        self._listener = listener

    def _running(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self._group.spawn(self._publisher)
            self._group.spawn(self._subscriber)
            self._group.spawn(self._housekeeping)
            self._subscribed.wait(timeout=SOCKET_TIMEOUT)

    def close(self) -> None:
        self._closed = True
        self._listener = None
        self._group.kill(block=True, timeout=5)
        try:
            self.client.close()
        except Exception:  # pragma: no cover - closing a dead connection
            pass

    # --- logs ------------------------------------------------------------------------------

    def _keys(self, log_key: t.Hashable) -> tuple[str, str, str]:
        if log_key == BROADCAST:
            return rs.log_keys(self.prefix, rs.BROADCAST_KEY)
        kind, name = t.cast("tuple[str, t.Any]", log_key)
        return rs.log_keys(self.prefix, rs.topic_key(name) if kind == TOPIC
                           else rs.user_key(name))

    def push(self, uid: t.Any, event: t.Any, target: str | None, now: float) -> None:
        self._queue((rs.user_key(uid), event, target or "", "", False))

    def broadcast(self, event: t.Any, now: float) -> None:
        self._queue((rs.BROADCAST_KEY, event, "", "", True))

    def kick(self, uid: t.Any, reason: str, now: float) -> None:
        self._queue((rs.user_key(uid), reason, "", "kick", False))

    def _queue(self, item: tuple[str, t.Any, str, str, bool]) -> None:
        """Hand one append to the publisher (``item``: user key, event, target, control,
        create). Made while a :class:`PushRecord` records, the record learns it."""
        self._running()
        if self._outbox.qsize() >= OUTBOX_LIMIT:
            # Redis has been away too long: this push is lost, and its readers will be
            # told (the log gets a new epoch once Redis is back).
            self._gapped.add(item[0])
            self._dropped += 1
            return
        self._queued += 1
        self._counter += 1
        record = current_record()
        if record is not None:  # its request (or handler) answers after this is in Redis
            record.marks[self] = self._queued
        self._outbox.put((self._counter, *item, record))

    @staticmethod
    @contextlib.contextmanager
    def request_scope() -> t.Iterator[None]:
        """Serve one request inside: when it ends, whatever it pushed (through any Redis
        backplane of this process) is in Redis before the caller goes on — the middleware
        sends the response after that. So pushes of successive requests reach every
        client in request order, whichever workers served them (causal order). A request
        that pushed nothing waits for nothing. Pushes made in greenlets or threads the
        request started are not its own: they keep their own order per caller."""
        with recording() as record:
            yield
        for backplane, upto in record.marks.items():
            backplane.settled(upto=upto)

    def caught_up(self, reader: Reader, timeout: float = SOCKET_TIMEOUT) -> None:
        """Wait (at most ``timeout``) until this process's mirror holds every push this
        process appended to a log ``reader`` reads (they come back through the
        subscription): a reply flushed after it goes after its handler's pushes on the same
        socket. Call after :meth:`settled`."""
        own = self._own
        pending = [(log, own[log.key]) for log in reader.logs.values()
                   if log.key in own and log.epoch == own[log.key][0]
                   and log.seq < own[log.key][1]]
        if not pending:
            return
        waiter: gevent.event.Event = gevent.event.Event()
        self._mirror_waiters.append((pending, waiter))
        waiter.wait(timeout)

    def _mirror_moved(self) -> None:
        """Wake the :meth:`caught_up` waiters whose logs are now far enough."""
        waiting, self._mirror_waiters = self._mirror_waiters, []
        for pending, waiter in waiting:
            if all(log.epoch != mark[0] or log.seq >= mark[1] for log, mark in pending):
                waiter.set()
            else:
                self._mirror_waiters.append((pending, waiter))

    @property
    def outbox_depth(self) -> int:
        """Pushes waiting for the publisher (they pile up while Redis is away)."""
        return int(self._outbox.qsize())

    def settled(self, timeout: float = 2 * SOCKET_TIMEOUT, upto: int | None = None) -> None:
        """Wait until every push queued so far (or the first ``upto``) is in Redis, or
        ``timeout`` passed: a reply sent after this cannot overtake its handler's pushes on
        another worker. Returns at once while Redis is away (the outbox keeps the order of
        this process's pushes; no order with other workers' can be promised then)."""
        target = self._queued if upto is None else upto
        if self._written >= target or not self.healthy:
            return
        waiter: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._settle_waiters.append((target, waiter))
        waiter.wait(timeout)

    def _publisher(self) -> None:
        """Drains the outbox in order, pipelining whatever queued since the last round trip.

        A batch that fails (Redis down, or too slow) is sent again until it goes through;
        each entry carries this process's counter, so one that did reach Redis the first
        time is not appended twice. While Redis stays away, the outbox is bounded in count
        (``OUTBOX_LIMIT``) and age (``OUTBOX_MAX_AGE``): what is dropped marks its log, and
        the log gets a new epoch when Redis is back, so its readers learn they missed it.
        """
        script = self._scripts["APPEND"]
        batch: list[_Item] = []
        failing_since: float | None = None
        while not self._closed:
            if not batch:
                if self._gapped and failing_since is None:
                    batch = [self._gap_record(ukey) for ukey in self._gapped]
                    self._gapped = set()
                else:
                    batch.append(self._outbox.get())
                while len(batch) < PIPELINE_MAX and not self._outbox.empty():
                    batch.append(self._outbox.get_nowait())
            started = time.monotonic()
            try:
                pipe = self.client.pipeline(transaction=False)
                for counter, ukey, event, target, control, create, _ in batch:
                    keys, args = rs.append_call(
                        self.prefix, ukey, rs.pack_event(event), target=target,
                        size=self.history_size, ttl=self._ttl, epoch=new_epoch(),
                        create=create, control=control, writer=self.node, counter=counter,
                        rotate=control == "gap")
                    script(keys=keys, args=args, client=pipe)
                results = pipe.execute()
            except (self._redis_mod.RedisError, BackplaneError) as exc:
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    logger.warning("Redis backplane: pushes wait for Redis (%s)", exc)
                self._set_healthy(False)
                if now - failing_since > OUTBOX_MAX_AGE:
                    for item in batch:
                        self._gapped.add(item[1])
                    while not self._outbox.empty():
                        self._gapped.add(self._outbox.get_nowait()[1])
                    self._dropped += len(batch)
                    self._written = self._queued
                    batch = []
                gevent.sleep(0.5)
                continue
            if failing_since is not None:
                logger.warning("Redis backplane: Redis is back; %d pushes could not wait",
                               self._dropped)
                failing_since = None
            self.metrics.published(len(batch), time.monotonic() - started)
            self._appended(batch, results)
            self._written += sum(1 for item in batch if item[4] != "gap")
            batch = []
            self._set_healthy(True)
            if self._settle_waiters:
                waiting = self._settle_waiters
                self._settle_waiters = [w for w in waiting if w[0] > self._written]
                for wanted, waiter in waiting:
                    if wanted <= self._written:
                        waiter.set()

    def _appended(self, batch: list[_Item], results: list[t.Any]) -> None:
        """Note the seq each append got: per log mirrored here (:meth:`caught_up`), and in
        the record of the request or handler that made it. An entry sent again after a
        timeout whose first try had reached Redis gets no answer (it was not appended
        twice): its seq stays unknown, and nothing waits for it."""
        logs = self.delivery.logs
        for item, result in zip(batch, results, strict=True):
            if not result:
                continue
            log_key = self._log_key_of(item[1])
            position = (result[0].decode(), int(result[1]))
            if log_key in logs:
                self._own[log_key] = position
            record = item[6]
            if record is not None:
                record.positions[log_key] = position

    def _gap_record(self, ukey: str) -> _Item:
        self._counter += 1
        return (self._counter, ukey, None, "", "gap", ukey == rs.BROADCAST_KEY, None)

    def _set_healthy(self, healthy: bool) -> None:
        """A call to Redis failed (False) or went through (True)."""
        self._reachable = healthy
        self._update_health()

    def _set_listening(self, listening: bool) -> None:
        """The subscription was lost (False), or is up and caught up again (True)."""
        self._listening = listening
        self._update_health()

    def _update_health(self) -> None:
        healthy = self._reachable and self._listening
        if healthy != self.healthy:
            self.healthy = healthy
            report = getattr(self._listener, "backplane_state", None)
            if report is not None:
                report(healthy)

    def _subscriber(self) -> None:
        """Applies every append and presence delta; after a reconnect, catches up."""
        while not self._closed:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(f"{self.prefix}:{{*}}:ch")
                presence = f"{self.prefix}:presence"
                topic_presence = f"{self.topic_prefix}:presence"
                pubsub.subscribe(presence, topic_presence)
                self._reload_online()
                self._reload_topic_members()
                self._catch_up()
                self._set_healthy(True)
                self._set_listening(True)
                self._subscribed.set()
                while not self._closed:
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    channel = message["channel"].decode()
                    if channel == presence:
                        self._on_presence(message["data"])
                    elif channel == topic_presence:
                        self._on_topic_presence(message["data"])
                    else:
                        self._on_append(channel, message["data"])
            except (self._redis_mod.RedisError, BackplaneError) as exc:
                self._set_listening(False)
                logger.warning("Redis backplane: subscription lost (%s); reconnecting", exc)
                gevent.sleep(0.5)
            except Exception:
                logger.exception("Redis backplane: subscriber failed; reconnecting")
                gevent.sleep(0.5)
            finally:
                try:
                    pubsub.close()
                except Exception:  # pragma: no cover
                    pass

    def _log_key_of(self, ukey: str) -> t.Hashable:
        if ukey == rs.BROADCAST_KEY:
            return BROADCAST
        if ukey.startswith("t:"):
            return (TOPIC, ukey[2:])
        return (USER, rs.uid_of(ukey))

    def _on_append(self, channel: str, data: bytes) -> None:
        ukey = channel[len(self.prefix) + 2:-4]  # "P:{" ukey "}:ch"
        log_key = self._log_key_of(ukey)
        if log_key not in self.delivery.logs:
            return
        epoch, seq, target, control, event = msgpack.unpackb(data, raw=True)
        self._apply(log_key, epoch.decode(), seq, event, target, control)

    def _apply(self, log_key: t.Hashable, epoch: str, seq: int, event: bytes,
               target: bytes, control: bytes) -> None:
        now = time.monotonic()
        if self._diverged(log_key, epoch, seq, event, target, control):
            self._sync_log(log_key, now, diverged=True)   # a new epoch: readers at a gap
            if self._listener is not None:
                self._listener.logs_appended(("ws", "ajax"))
            return
        value = rs.unpack_event(event)
        kind, field = control.decode() or None, target.decode() or None
        due = self.delivery.apply(log_key, epoch, seq, value, field, kind, now)
        controls: list[tuple[str | None, t.Any, str | None]] = (
            [(kind, value, field)] if kind and due is not None else [])
        if due is None:  # entries missing before this one: fetch them, then apply all
            self.metrics.gap_repaired()
            controls = self._fill(log_key)
            due = ("ws", "ajax")
        if due and self._listener is not None:
            self._listener.logs_appended(due)
        if self._mirror_waiters:
            self._mirror_moved()
        for kind, value, field in controls:
            self._control(log_key, kind, value, field)

    def _control(self, log_key: t.Hashable, kind: str | None, value: t.Any,
                 field: str | None) -> None:
        """Act on a control record of a user's log (applied here, or filled in a gap)."""
        listener = self._listener
        if listener is None or not isinstance(log_key, tuple) or log_key[0] != USER:
            return
        if kind == "kick":
            listener.kicked(log_key[1], value)
        elif kind in TOPIC_COMMANDS:
            listener.topic_command(log_key[1], field, kind, value)

    def _diverged(self, log_key: t.Hashable, epoch: str, seq: int, event: bytes,
                  target: bytes, control: bytes) -> bool:
        """Whether this append reuses a seq of the mirror's epoch for another entry: the
        log went back (a failover lost entries this process saw). A repeat of an entry
        already here (gap repair and the notification both bring it) is not."""
        log = self.delivery.logs.get(log_key)
        if log is None or log.epoch != epoch or seq > log.seq or not log.entries:
            return False
        index = seq - log.entries[0].seq
        if not 0 <= index < len(log.entries):
            return False
        seen = log.entries[index]
        return (seen.event, join_target(seen.target, seen.exclude), seen.control) != (
            rs.unpack_event(event), target.decode() or None, control.decode() or None)

    def _fetch(self, log_key: t.Hashable, after: int) -> list[tuple[int, t.Any, str | None,
                                                                    str | None]]:
        _, log, _ = self._keys(log_key)
        rows = self.client.xrange(log, min=f"{after + 1}-0", max="+")
        return [(int(rid.split(b"-")[0]), rs.unpack_event(f[b"e"]), f[b"t"].decode() or None,
                 f[b"k"].decode() or None) for rid, f in rows]

    def _fill(self, log_key: t.Hashable) -> list[tuple[str | None, t.Any, str | None]]:
        """Apply every stream entry after the mirror's last seq (gap repair, catch-up);
        returns the control records among them, for the caller to act on."""
        log = self.delivery.logs.get(log_key)
        if log is None:
            return []
        now = time.monotonic()
        controls: list[tuple[str | None, t.Any, str | None]] = []
        for seq, event, target, control in self._fetch(log_key, log.seq):
            if self.delivery.apply(log_key, log.epoch, seq, event, target, control,
                                   now) is not None and control:
                controls.append((control, event, target))
        return controls

    def _catch_up(self) -> None:
        """After (re)subscribing: bring every mirror up to its stream, and this process's
        members back into Redis. A log whose epoch changed meanwhile (Redis lost its data,
        or entries were dropped) puts its readers at a gap: each is told it was not
        recovered. Presence lost with Redis's data is re-established from here (its
        users may see a second ``uidport-open``)."""
        now = time.monotonic()
        for log_key, log in list(self.delivery.logs.items()):
            if log.idle_since is None:  # read here now: make sure Redis still has it
                self._sync_log(log_key, now)
            else:
                self._fill(log_key)
        self._send_unsent()
        for uid, transport, client_id in self.presence.connected():
            self._run("ATTACH", rs.user_key(uid), transport, self.node, client_id, _ms(), "0")
        for (topic, uid), transport, client_id in self.topic_presence.connected():
            self._run_in(self.topic_prefix, "ATTACH", rs.topic_user_key(topic, uid), transport,
                         self.node, client_id, _ms(), "1" if transport == "ajax" else "0")
        if self._listener is not None:
            self._listener.logs_appended(("ws", "ajax"))

    def _sync_log(self, log_key: t.Hashable, now: float, diverged: bool = False) -> None:
        """Make the log exist in Redis (and its expiry start again) and bring this process's
        mirror of it to the stream: a new epoch there (Redis lost its data, or entries were
        dropped) puts the mirror's readers at a gap, so each is told. A log that went back
        behind the mirror (a failover lost entries) gets that new epoch here."""
        meta, stream, _ = self._keys(log_key)
        mirrored = self.delivery.logs.get(log_key)
        seen = ([] if mirrored is None
                else [mirrored.epoch, mirrored.seq, "1" if diverged else "0"])
        epoch_raw, seq_raw = self._scripts["TOUCH"](keys=[meta, stream],
                                                    args=[new_epoch(), self._ttl, *seen])
        epoch, seq = epoch_raw.decode(), int(seq_raw)
        known = self.delivery.logs.get(log_key)
        if known is not None and known.epoch != epoch:
            logger.warning("Redis backplane: the history of %r is gone; its readers are told",
                           log_key)
        if self.delivery.mirror(log_key, epoch, seq, now).seq < seq:
            self._fill(log_key)

    # --- readers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _calling(self) -> t.Iterator[None]:
        """A call made for a request: Redis's errors become BackplaneError (the hub answers
        503 or closes the socket with 1013), and mark the backplane unhealthy."""
        try:
            yield
        except self._redis_mod.RedisError as exc:
            self._set_healthy(False)
            raise BackplaneError(f"Redis: {exc}") from exc

    def open_reader(self, uid: t.Any, client_id: str, transport: Transport, now: float,
                    positions: t.Mapping[str, tuple[str, int]] | None
                    ) -> tuple[Reader, bool | None]:
        with self._calling():
            return self._open_reader(uid, client_id, transport, now, positions)

    def _open_reader(self, uid: t.Any, client_id: str, transport: Transport, now: float,
                     positions: t.Mapping[str, tuple[str, int]] | None
                     ) -> tuple[Reader, bool | None]:
        self._running()
        for log_key in ((USER, uid), BROADCAST):
            self._sync_log(log_key, now)
        reader = self.delivery.open_reader(uid, client_id, transport, now)
        if positions is None:
            return reader, None
        return reader, not self._resume(reader, positions)

    def resume(self, reader: Reader, positions: t.Mapping[str, tuple[str, int]]) -> set[str]:
        with self._calling():
            return self._resume(reader, positions)

    def _resume(self, reader: Reader, positions: t.Mapping[str, tuple[str, int]]
                ) -> set[str]:
        for name, log in reader.logs.items():
            self._backfill(log.key, positions.get(name))
        return self.delivery.resume_logs(reader, positions)

    def _backfill(self, log_key: t.Hashable, given: tuple[str, int] | None) -> None:
        """Bring the mirror's history back to ``given`` when a returning client stood
        further back than this process has seen (same epoch only)."""
        log = self.delivery.logs.get(log_key)
        if log is None or given is None or given[0] != log.epoch:
            return
        first = log.entries[0].seq if log.entries else log.seq + 1
        if given[1] + 1 < first:
            older = [row for row in self._fetch(log_key, given[1]) if row[0] < first]
            self.delivery.backfill(log_key, older, time.monotonic())

    def close_reader(self, reader: Reader, now: float) -> None:
        self.delivery.close_reader(reader, now)

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
        except self._redis_mod.RedisError as exc:
            logger.warning("Redis backplane: could not compare SECRET_KEYs (%s)", exc)

    # --- topics ----------------------------------------------------------------------------

    def join(self, reader: Reader | None, topic: str, now: float,
             position: tuple[str, int] | None) -> tuple[bool | None, tuple[str, int]]:
        with self._calling():
            self._running()
            log_key = (TOPIC, topic)
            self._sync_log(log_key, now)
            self._backfill(log_key, position)
            if reader is None:
                return self.delivery.topic_position(topic, now, position)
            return self.delivery.join(reader, topic, now, position)

    def leave(self, reader: Reader, topic: str, now: float) -> None:
        self.delivery.leave(reader, topic, now)

    def publish(self, topic: str, event: t.Any, exclude: str | None, now: float) -> None:
        self._queue((rs.topic_key(topic), event, join_target(None, exclude) or "", "", False))

    def command(self, uid: t.Any, client_id: str | None, kind: str, topic: str) -> None:
        self._queue((rs.user_key(uid), topic, client_id or "", kind, False))

    #: A grant's lifetime after its last join or refresh: a client that is gone for good
    #: leaves no set behind (``drop_grants`` cannot: it may live on in another process).
    grants_ttl: float | None = GRANTS_TTL

    def grant(self, uid: t.Any, client_id: str, topic: str) -> None:
        key = rs.grants_key(self.prefix, rs.user_key(uid), client_id)
        with self._calling():
            self.client.pipeline(transaction=False).sadd(key, topic).pexpire(
                key, self._grants_ttl_ms()).execute()

    def refresh_grants(self, held: t.Sequence[tuple[t.Any, str]]) -> None:
        ttl_ms = self._grants_ttl_ms()
        for start in range(0, len(held), REFRESH_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for uid, client_id in held[start:start + REFRESH_CHUNK]:
                pipe.pexpire(rs.grants_key(self.prefix, rs.user_key(uid), client_id), ttl_ms)
            try:
                pipe.execute()
            except self._redis_mod.RedisError as exc:
                # Housekeeping, not a request: no 503s for it (``_calling`` would mark the
                # backplane unhealthy until a publish or a resubscription succeeds).
                raise BackplaneError(f"Redis: {exc}") from exc

    def _grants_ttl_ms(self) -> int:
        return int((self.grants_ttl or GRANTS_TTL) * 1000)

    def revoke(self, uid: t.Any, client_id: str, topic: str) -> None:
        with self._calling():
            self.client.srem(rs.grants_key(self.prefix, rs.user_key(uid), client_id), topic)

    def granted(self, uid: t.Any, client_id: str) -> set[str]:
        with self._calling():
            found = self.client.smembers(rs.grants_key(self.prefix, rs.user_key(uid),
                                                       client_id))
        return {topic.decode() for topic in found}

    def drop_grants(self, uid: t.Any, client_id: str) -> None:
        """Grants expire instead: the client may go on in another process."""

    def topic_attach(self, topic: str, uid: t.Any, transport: Transport, client_id: str,
                     conn_id: int) -> None:
        self.topic_presence.attach((topic, uid), transport, client_id, conn_id)
        # An Ajax client's topic membership is held by every process that holds the client
        # (its polls may reach any of them, and each forgets it on its own): one member
        # per process, none replacing another's. A WebSocket is on one process at a time.
        self._report_topics(self._membership(
            self.topic_prefix, "ATTACH", rs.topic_user_key(topic, uid), transport, self.node,
            client_id, _ms(), "1" if transport == "ajax" else "0"))

    def topic_detach(self, topic: str, uid: t.Any, transport: Transport, client_id: str,
                     conn_id: int, deadline: float) -> None:
        if self.topic_presence.detach((topic, uid), transport, client_id, conn_id, deadline):
            until = _ms() + int(max(0.0, deadline - time.monotonic()) * 1000)
            self._report_topics(self._membership(
                self.topic_prefix, "DETACH", rs.topic_user_key(topic, uid), transport, self.node,
                client_id, until, _ms()))

    def topic_remove(self, topic: str, uid: t.Any, transport: Transport,
                     client_id: str) -> None:
        self.topic_presence.remove((topic, uid), transport, client_id)
        self._report_topics(self._membership(
            self.topic_prefix, "REMOVE", rs.topic_user_key(topic, uid), transport, client_id,
            _ms()))

    def members(self, topic: str) -> frozenset[t.Any]:
        self._running()
        return frozenset(self._topic_members.get(topic, ()))

    def save_cursor(self, uid: t.Any, client_id: str,
                    positions: t.Mapping[str, tuple[str, int]]) -> None:
        with self._calling():
            self.client.set(rs.cursor_key(self.prefix, rs.user_key(uid), client_id),
                            json.dumps({k: list(v) for k, v in positions.items()}),
                            ex=self._ttl)

    def load_cursor(self, uid: t.Any, client_id: str) -> dict[str, tuple[str, int]] | None:
        with self._calling():
            raw = self.client.get(rs.cursor_key(self.prefix, rs.user_key(uid), client_id))
        if raw is None:
            return None
        return {name: (pos[0], int(pos[1])) for name, pos in json.loads(raw).items()}

    def _report_topics(self, changes: list[Change]) -> None:
        if not changes:
            return
        track_members(self._topic_members, changes)  # receivers read the state after
        if self._listener is not None:
            self._listener.topic_presence_changed(changes)

    def _reload_topic_members(self) -> None:
        members: dict[str, set[t.Any]] = {}
        for key in self.client.smembers(f"{self.topic_prefix}:online"):
            topic, uid = rs.topic_uid_of(key.decode())
            members.setdefault(topic, set()).add(uid)
        self._topic_members = members

    def _on_topic_presence(self, data: bytes) -> None:
        ukey, ws, ajax = msgpack.unpackb(data, raw=False)
        topic, uid = rs.topic_uid_of(ukey)
        track_members(self._topic_members, [
            Change("user-online" if ws or ajax else "user-offline", (topic, uid))])

    # --- presence --------------------------------------------------------------------------

    @property
    def connected_uids(self) -> ConnectedUids:
        self._running()
        if self._snapshot is None:
            ws, ajax = frozenset(self._online["ws"]), frozenset(self._online["ajax"])
            self._snapshot = ConnectedUids(ws, ajax, ws | ajax)
        return self._snapshot

    def clients_of(self, uid: t.Any) -> dict[str, list[str]]:
        with self._calling():
            return self._clients_of(uid)

    def _clients_of(self, uid: t.Any) -> dict[str, list[str]]:
        now = _ms()
        found: dict[str, list[str]] = {"ws": [], "ajax": []}
        for member, score in self.client.zrange(
                f"{self.prefix}:{{{rs.user_key(uid)}}}:members", 0, -1, withscores=True):
            if score and score <= now:
                continue
            transport, _node, client_id = member.decode().split("|", 2)
            found.setdefault(transport, []).append(client_id)
        return found

    def is_member(self, uid: t.Any, transport: Transport, client_id: str) -> bool:
        return self.presence.is_member(uid, transport, client_id)

    def _reload_online(self) -> None:
        for transport in ("ws", "ajax"):
            keys = self.client.smembers(f"{self.prefix}:online:{transport}")
            self._online[transport] = {rs.uid_of(k.decode()) for k in keys}
        self._snapshot = None

    def _on_presence(self, data: bytes) -> None:
        ukey, ws, ajax = msgpack.unpackb(data, raw=False)
        self._set_online(rs.uid_of(ukey), ws, ajax)

    def _run(self, name: str, *args: t.Any) -> t.Any:
        return self._run_in(self.prefix, name, *args)

    def _run_in(self, prefix: str, name: str, *args: t.Any) -> t.Any:
        with self._calling():
            return self._scripts[name](keys=rs.route_keys(prefix), args=[prefix, *args])

    # The state a presence signal's receiver reads is the state after the change, on every
    # backplane (docs/concepts.md, "Presence"): the online sets copied here are updated from
    # each script's answer before its change is reported (the other processes get the same
    # delta through the channel), and a user's transitions are reported around the client's
    # own: user-online before client-joined, client-left before user-offline.

    def attach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int) -> None:
        joined = [c for c in self.presence.attach(uid, transport, client_id, conn_id)
                  if not c.kind.startswith("user-")]
        online: list[Change] = []
        try:
            online = self._membership(self.prefix, "ATTACH", rs.user_key(uid), transport,
                                      self.node, client_id, _ms(), "0")
        finally:
            self._report(online + joined)

    def detach(self, uid: t.Any, transport: Transport, client_id: str, conn_id: int,
               deadline: float) -> None:
        if self.presence.detach(uid, transport, client_id, conn_id, deadline):
            until = _ms() + int(max(0.0, deadline - time.monotonic()) * 1000)
            # With no grace the member is gone at once: the user's leaving, if it is one,
            # is told after the client's, by the expiry that follows.
            self._offline_due += self._membership(self.prefix, "DETACH", rs.user_key(uid),
                                                  transport, self.node, client_id, until,
                                                  _ms())

    def remove(self, uid: t.Any, transport: Transport, client_id: str) -> None:
        left = [c for c in self.presence.remove(uid, transport, client_id)
                if not c.kind.startswith("user-")]
        offline: list[Change] = []
        try:
            offline = self._membership(self.prefix, "REMOVE", rs.user_key(uid), transport,
                                       client_id, _ms())
        finally:
            self._report(left + offline)

    def _membership(self, prefix: str, script: str, ukey: str, *args: t.Any) -> list[Change]:
        """One change of a member in Redis (ATTACH, DETACH, REMOVE of user or topic
        presence), made in order with the others; returns the user's (or user-in-topic's)
        transition this call saw, for the caller to report.

        A change that cannot reach Redis now is kept and made once Redis answers again (the
        housekeeping loop's probe), and so are the ones after it meanwhile: a member that
        left while Redis was away must not stay online for good, nor one that came back be
        dropped by an older change. Those report their transitions when made. The raised
        :class:`BackplaneError` tells the caller it is late."""
        change = (prefix, script, ukey, args)
        if self._unsent:
            self._unsent.append(change)
            return []
        try:
            return self._make_change(change)
        except BackplaneError:
            self._unsent.append(change)
            raise

    def _make_change(self, change: tuple[str, str, str, tuple[t.Any, ...]]) -> list[Change]:
        """Run one membership script; keep the online sets copied here in step with its
        answer; return the transition it saw (empty: none)."""
        prefix, script, ukey, args = change
        was, on, ws, ajax, _ = self._run_in(prefix, script, ukey, *args)
        key: t.Hashable
        if prefix == self.topic_prefix:
            key = rs.topic_uid_of(ukey)
        else:
            key = rs.uid_of(ukey)
            self._set_online(key, ws, ajax)
        if was == on:
            return []
        return [Change("user-online" if on else "user-offline", key)]

    def _send_unsent(self) -> None:
        """Make the membership changes that waited for Redis, in order (the housekeeping
        loop calls it once Redis answers), reporting what they saw; stops at the first that
        still cannot."""
        while self._unsent:
            prefix = self._unsent[0][0]
            changes = self._make_change(self._unsent[0])
            self._unsent.pop(0)
            if prefix == self.topic_prefix:
                self._report_topics(changes)
            else:
                self._report(changes)

    def _set_online(self, uid: t.Any, ws: int, ajax: int) -> None:
        for transport, present in (("ws", ws), ("ajax", ajax)):
            if present:
                self._online[transport].add(uid)
            else:
                self._online[transport].discard(uid)
        self._snapshot = None

    def expire(self, now: float) -> None:
        # Presence deadlines only: the hub's sweep expires the logs every few seconds (a
        # scan of every log per ended grace window made connect storms quadratic).
        left = [c for c in self.presence.expire(now) if not c.kind.startswith("user-")]
        self.topic_presence.expire(now)  # the cluster-wide transitions come from Redis
        offline, self._offline_due = self._offline_due, []
        try:
            offline += self._expire_users()
            if left:  # a receiver of client-left reads the cluster's state after it
                self._refresh_online({c.uid for c in left})
            self._expire_topics()
        finally:
            self._report(left + offline)

    def _expire_cluster(self) -> None:
        self._report(self._expire_users())
        self._expire_topics()

    def _expire_users(self) -> list[Change]:
        """End the grace windows due cluster-wide; the users who went offline."""
        offline = []
        for ukey, was, on, ws, ajax in self._run("EXPIRE", _ms(), 100):
            uid = rs.uid_of(ukey.decode())
            self._set_online(uid, ws, ajax)
            if was and not on:
                offline.append(Change("user-offline", uid))
        return offline

    def _expire_topics(self) -> None:
        rows = self._run_in(self.topic_prefix, "EXPIRE", _ms(), 100)
        self._report_topics([Change("user-offline", rs.topic_uid_of(row[0].decode()))
                             for row in rows if row[1] and not row[2]])

    def _refresh_online(self, uids: set[t.Any]) -> None:
        """Read these users' online state from Redis into the copy here (another process
        may have seen their transition; its delta may not have arrived yet)."""
        with self._calling():
            pipe = self.client.pipeline(transaction=False)
            for uid in uids:
                ukey = rs.user_key(uid)
                pipe.sismember(f"{self.prefix}:online:ws", ukey)
                pipe.sismember(f"{self.prefix}:online:ajax", ukey)
            found = pipe.execute()
        for i, uid in enumerate(uids):
            self._set_online(uid, int(found[2 * i]), int(found[2 * i + 1]))

    def next_deadline(self) -> float | None:
        due = [d for d in (self.presence.next_deadline(), self.topic_presence.next_deadline())
               if d is not None]
        return min(due) if due else None

    def _housekeeping(self) -> None:
        """Heartbeat, cluster-wide grace windows, and the TTL of logs being read here. Its
        calls are also the probe of Redis's health: once they go through again after Redis
        was away, the worker takes new clients again, whether it has pushes of its own to
        make or not."""
        last_beat = 0.0
        while not self._closed:
            gevent.sleep(EXPIRE_EVERY)
            was_reachable = self._reachable
            try:
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT:
                    last_beat = now
                    for prefix in (self.prefix, self.topic_prefix):
                        self._run_in(prefix, "HEARTBEAT", self.node, _ms(),
                                     int(DEAD_AFTER * 1000), self._dead_grace_ms)
                    for log_key, log in list(self.delivery.logs.items()):
                        if log.idle_since is None:
                            meta, stream, _ = self._keys(log_key)
                            self.client.expire(meta, self._ttl)
                            self.client.expire(stream, self._ttl)
                self._send_unsent()
                self._expire_cluster()
            except (self._redis_mod.RedisError, BackplaneError) as exc:
                self._set_healthy(False)
                if was_reachable:  # once per outage, not every quarter second
                    logger.warning("Redis backplane: Redis does not answer (%s)", exc)
                continue
            except Exception:
                logger.exception("Redis backplane: housekeeping failed")
                continue
            if not was_reachable:
                logger.warning("Redis backplane: Redis answers again")
            self._set_healthy(True)

    def _report(self, changes: list[Change]) -> None:
        if changes and self._listener is not None:
            self._listener.presence_changed(changes)


def from_url(url: str, **kwargs: t.Any) -> RedisBackplane:
    """A backplane for a Redis URL (the forms are in
    :mod:`flask_sente.backplanes.redis_connect`; ``?prefix=`` picks the key prefix)."""
    return RedisBackplane(url, **kwargs)
