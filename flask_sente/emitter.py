"""Push from anywhere: a write-only client of the Redis backplane.

For Celery tasks, cron jobs and scripts that are not the web app: they reach the same users
and topics as ``sente.send`` and ``sente.publish`` would, through the same Lua scripts and
keys, with the same event and topic-name validation; ``join`` and ``leave`` append the same
commands as ``sente.join`` and ``sente.leave``, which every web worker applies to the
clients it holds. It needs redis-py only — no Flask, no gevent — and it *raises*
:class:`~flask_sente.exceptions.BackplaneError` when Redis cannot be reached, so a task can
retry instead of losing the push.

A call that raised may still have run in Redis (only its answer was lost: a timeout). Made
again as the emitter's next call — the task retrying it — it is not appended twice: the
retry carries the same writer counter, which Redis appends at most once. A retry made after
other calls of the same emitter is a new push (its first try, if it did run, is delivered
too).

::

    from flask_sente.emitter import Emitter

    emitter = Emitter("redis://localhost:6379/0")
    emitter.send("alice", ("report/ready", {"id": 7}))
    emitter.publish("room/lobby", ("room/message", {"text": "hi"}))  # the room's members
    with emitter.batch():                  # one round trip for all of these
        for uid in uids:
            emitter.send(uid, ("news/item", item))
"""
from __future__ import annotations

import contextlib
import secrets
import time
import typing as t

from .backplanes import redis_scripts as rs
from .backplanes.common import new_epoch
from .backplanes.redis_connect import connect, import_redis, parse_url
from .config import HISTORY_SIZE, HISTORY_TTL, MAX_TOPIC_LENGTH
from .core.logs import join_target
from .core.presence import ConnectedUids, Uid
from .exceptions import BackplaneError, CallTimeout, ClientGone, LocalProtocolError
from .protocol import calls, wire
from .protocol import events as ev

#: What a call adds to the round trip of its append, before it (``join``'s grants): it is
#: given the pipeline (or client) the append goes through.
Before = t.Callable[[t.Any], None]


#: Seconds between two looks at the presence of a client an Emitter call waits on (as the
#: server's ``flask_sente.hub.calls.WATCH_EVERY``).
WATCH_EVERY = 0.25


class Emitter:
    """Sends, broadcasts, publishes to topics, joins and leaves, and kicks through Redis;
    reads who is connected and who is in a topic.

    :param redis_url: the same URL as the app's ``backplane`` option (``redis://``,
        ``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://``; ``?prefix=``
        included, if the app uses one); the forms are listed in the scale-out guide
        (docs/scaleout.md, "Which Redis: the URL").
    :param prefix: replaces the URL's ``?prefix=``.
    :param history_size: keep in step with the app's option (entries kept per log).
    :param history_ttl: likewise (seconds).
    :param max_topic_length: likewise (the longest topic name ``publish``, ``join`` and
        ``leave`` take).
    """

    def __init__(self, redis_url: str, *, prefix: str | None = None,
                 history_size: int = HISTORY_SIZE, history_ttl: float = HISTORY_TTL,
                 max_topic_length: int = MAX_TOPIC_LENGTH,
                 socket_timeout: float = 2.0) -> None:
        redis_py = import_redis("the Emitter")
        self._errors = redis_py.RedisError
        target = parse_url(redis_url, prefix=prefix)
        self.prefix = target.prefix
        self.client: t.Any = connect(target, socket_timeout=socket_timeout)
        self._append: t.Any = self.client.register_script(rs.APPEND)
        self._size = history_size
        self._ttl = max(1, int(history_ttl))
        self._max_topic_length = max_topic_length
        self._pipe: t.Any = None
        #: Writer id and counter: Redis skips an entry a writer already appended.
        self._writer = "emitter-" + secrets.token_urlsafe(9)
        self._counter = 0
        #: Calls made so far (their ids: ``<n>@<writer id>``; answers come back on this
        #: emitter's own channel, named by the writer id).
        self._calls = 0
        #: The last call that raised, and the counter it was sent with: made again at once
        #: (the caller retrying it), it is sent with the same counter, so that Redis appends
        #: it once even if the first try did run there (its answer was what got lost).
        self._unconfirmed: tuple[tuple[t.Any, ...], int] | None = None

    def send(self, uid: Uid, event: t.Any, *, client_id: str | None = None) -> None:
        """Push ``event`` to every client of ``uid`` on every worker (or one client).

        A user no client has connected as recently has no log: the push reaches nobody.
        :raises LocalProtocolError: for an invalid or reserved event or ``uid`` None.
        :raises BackplaneError: when Redis cannot be reached (outside ``batch()``).
        """
        if uid is None:
            raise LocalProtocolError("cannot send to uid None")
        self._run(rs.user_key(uid), ev.to_wire(ev.validate_outgoing(event)), client_id or "",
                  "", create=False)

    def broadcast(self, event: t.Any) -> None:
        """Push ``event`` to every connected client."""
        self._run(rs.BROADCAST_KEY, ev.to_wire(ev.validate_outgoing(event)), "", "",
                  create=True)

    def kick(self, uid: Uid, reason: str = "kicked") -> None:
        """Close every connection of ``uid`` (4001) after the pushes made before it."""
        self._run(rs.user_key(uid), reason, "", "kick", create=False)

    def publish(self, topic: str, event: t.Any, *,
                exclude_client_id: str | None = None) -> None:
        """Push ``event`` to every member of ``topic``, on every worker, tagged with the
        topic (the clients' ``on_topic``), in the topic's one order.

        Appended to the topic's log as ``sente.publish`` appends it. A topic nobody has
        joined (or read within ``history_ttl``) has no log: the event reaches nobody, and
        no log is made for it — as with the server's publish.

        :param exclude_client_id: one client that does not get it (e.g. the tab whose
            action the task is finishing).
        :raises LocalProtocolError: for an invalid topic name or an invalid or reserved
            event.
        :raises BackplaneError: when Redis cannot be reached (outside ``batch()``).
        """
        self._check(topic)
        wire_event = wire.topic_event(topic, ev.to_wire(ev.validate_outgoing(event)))
        self._run(rs.topic_key(topic), wire_event, join_target(None, exclude_client_id) or "",
                  "", create=False)

    def join(self, topic: str, uid: Uid, *, client_id: str | None = None) -> None:
        """Put every client of ``uid`` connected now, cluster-wide (or the one
        ``client_id``), in ``topic``, without asking a join handler: each gets
        ``chsk/joined`` from its worker and from then on the topic's events, and rejoins
        by itself after a reconnect. Clients that connect later are not joined.

        As ``sente.join``: a grant per client (what lets its rejoin in, on any worker),
        then a join command in the user's log, which every worker applies to the clients
        of ``uid`` it holds. It takes effect when a worker applies it, not when this
        returns (``members`` shows it then). Inside ``batch()`` the user's clients are read
        at the call, the writes go with the batch.

        :raises LocalProtocolError: for an invalid topic name.
        :raises BackplaneError: when Redis cannot be reached.
        """
        self._command("join", topic, uid, client_id)

    def leave(self, topic: str, uid: Uid, *, client_id: str | None = None) -> None:
        """Take every client of ``uid`` (or the one ``client_id``) out of ``topic``, on
        every worker: each gets ``chsk/left`` with reason ``"removed"`` and does not rejoin
        by itself (its grant is revoked, as ``sente.leave`` does).

        :raises LocalProtocolError: for an invalid topic name.
        :raises BackplaneError: when Redis cannot be reached.
        """
        self._command("remove", topic, uid, client_id)

    def members(self, topic: str) -> frozenset[Uid]:
        """The users in ``topic`` now, cluster-wide (those within a grace window
        included), from the set the web workers keep their copy of (``P:tp:online``).

        Read at the call, also inside ``batch()``.
        """
        found: set[Uid] = set()
        try:
            for key in self.client.sscan_iter(
                    f"{rs.topic_presence_prefix(self.prefix)}:online",
                    match=rs.topic_members_match(topic), count=1000):
                name, uid = rs.topic_uid_of(key.decode())
                if name == topic:  # the pattern is exact; a wrong key is never a member
                    found.add(uid)
        except self._errors as exc:
            raise BackplaneError(f"Redis: {exc}") from exc
        return frozenset(found)

    def call(self, uid: Uid, event: t.Any, *, client_id: str, timeout: float = 20.0) -> t.Any:
        """Ask one client of ``uid`` (the tab ``client_id``) and wait for its answer, from a
        process that is not the app (a Celery task, a script): the same request and
        outcomes as the server's ``sente.call`` — the client's value, or
        :class:`~flask_sente.exceptions.CallTimeout`, ``ClientGone`` (at once when the
        client is not connected, closes its connection, or does not come back within its
        grace window), ``NoAnswerHandler``, ``ClientCallError``, ``CallsUnsupported``.
        The answer comes back through Redis (this emitter subscribes to its own channel for
        the call's duration). Not inside ``batch()``.

        :raises BackplaneError: when Redis cannot be reached.
        """
        if uid is None:
            raise LocalProtocolError("cannot call uid None")
        if not isinstance(client_id, str) or not client_id:
            raise LocalProtocolError("call() needs the client_id of the client to ask")
        if not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
            raise LocalProtocolError("a call's timeout is a positive number of seconds")
        if self._pipe is not None:
            raise LocalProtocolError("call() waits for its answer: not inside batch()")
        pair = ev.validate_outgoing(event)
        self._calls += 1
        call = calls.call_id(self._calls, self._writer)
        deadline = time.monotonic() + timeout
        try:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(f"{self.prefix}:call:{self._writer}", f"{self.prefix}:closed")
                if not self._present(uid, client_id):
                    raise ClientGone(f"client {client_id!r} of uid {uid!r} is not connected",
                                     client_id)
                self._run(rs.user_key(uid), calls.request(call, pair, timeout), client_id, "",
                          create=False)
                return self._await(pubsub, call, uid, client_id, deadline, pair[0])
            finally:
                pubsub.close()
        except self._errors as exc:
            raise BackplaneError(f"Redis: {exc}") from exc

    def _present(self, uid: Uid, client_id: str) -> bool:
        """Whether ``client_id`` is among ``uid``'s members in Redis (grace windows
        included), as the server's presence reads them."""
        rows = self.client.zrange(rs.members_key(self.prefix, rs.user_key(uid)), 0, -1,
                                  withscores=True)
        clients = rs.live_clients(rows, int(time.time() * 1000))
        return any(client_id in ids for ids in clients.values())

    def _await(self, pubsub: t.Any, call: str, uid: Uid, client_id: str, deadline: float,
               event_id: str) -> t.Any:
        """Read this emitter's call channel until the call's outcome; look at presence
        every ``WATCH_EVERY`` s meanwhile (a client that left for good fails the call)."""
        uid_key = repr(uid)
        next_look = time.monotonic() + WATCH_EVERY
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise CallTimeout(f"client {client_id!r} did not answer {event_id!r} in time",
                                  client_id)
            message = pubsub.get_message(timeout=max(0.0, min(deadline, next_look) - now))
            if message is not None and message.get("type") == "message":
                data = rs.unpack_event(message["data"])
                if message["channel"].decode().endswith(":closed"):
                    if data[0] == uid_key and data[1] == client_id:
                        raise ClientGone(f"client {client_id!r} closed its connection",
                                         client_id)
                elif (isinstance(data, dict) and data.get("id") == call
                      and calls.from_asked(data, uid, client_id)):
                    value, error = calls.result(data, client_id)
                    if error is not None:
                        raise error
                    return value
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + WATCH_EVERY
                if not self._present(uid, client_id):
                    raise ClientGone(f"client {client_id!r} left (its grace window ended)",
                                     client_id)

    @property
    def connected_uids(self) -> ConnectedUids:
        """Connected users, cluster-wide, by transport."""
        try:
            ws = {rs.uid_of(k.decode()) for k in self.client.smembers(
                f"{self.prefix}:online:ws")}
            ajax = {rs.uid_of(k.decode()) for k in self.client.smembers(
                f"{self.prefix}:online:ajax")}
        except self._errors as exc:
            raise BackplaneError(f"Redis: {exc}") from exc
        return ConnectedUids(frozenset(ws), frozenset(ajax), frozenset(ws | ajax))

    @contextlib.contextmanager
    def batch(self) -> t.Iterator[Emitter]:
        """Everything sent inside goes to Redis in one round trip at the end (in order);
        raises BackplaneError there if Redis cannot be reached (none of it was sent, or
        part: retrying may repeat the first ones)."""
        if self._pipe is not None:
            yield self
            return
        self._pipe = self.client.pipeline(transaction=False)
        try:
            yield self
            pipe, self._pipe = self._pipe, None
            try:
                pipe.execute()
            except self._errors as exc:
                raise BackplaneError(f"Redis: {exc}") from exc
        finally:
            self._pipe = None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, topic: object) -> None:
        error = wire.topic_error(topic, self._max_topic_length)
        if error is not None:
            raise LocalProtocolError(error)

    def _command(self, kind: str, topic: str, uid: Uid, client_id: str | None) -> None:
        """A server-side join or leave: the grants of the user's clients (made or revoked)
        and the command, in one round trip; the clients are read first (those in a grace
        window too: they may come back, and rejoin with the grant)."""
        self._check(topic)
        ukey = rs.user_key(uid)
        if client_id is not None:
            client_ids = [client_id]
        else:
            try:
                rows = self.client.zrange(rs.members_key(self.prefix, ukey), 0, -1,
                                          withscores=True)
            except self._errors as exc:
                raise BackplaneError(f"Redis: {exc}") from exc
            clients = rs.live_clients(rows, int(time.time() * 1000))
            client_ids = sorted({cid for ids in clients.values() for cid in ids})
        ttl_ms = rs.GRANTS_TTL * 1000

        def grants(pipe: t.Any) -> None:
            for cid in client_ids:
                key = rs.grants_key(self.prefix, ukey, cid)
                if kind == "join":
                    pipe.sadd(key, topic)
                    pipe.pexpire(key, ttl_ms)
                else:
                    pipe.srem(key, topic)

        self._run(ukey, topic, client_id or "", kind, create=False, before=grants)

    def _run(self, ukey: str, payload: t.Any, target: str, control: str, *,
             create: bool, before: Before | None = None) -> None:
        """One append (after ``before``'s writes, in the same round trip), with the writer
        counter; a call that raised is remembered, so that its retry reuses the counter."""
        packed = rs.pack_event(payload)
        call = (ukey, packed, target, control)
        unconfirmed, self._unconfirmed = self._unconfirmed, None
        if unconfirmed is not None and unconfirmed[0] == call and self._pipe is None:
            counter = unconfirmed[1]  # a retry of the call that just raised
        else:
            self._counter += 1
            counter = self._counter
        keys, args = rs.append_call(self.prefix, ukey, packed, target=target, size=self._size,
                                    ttl=self._ttl, epoch=new_epoch(), create=create,
                                    control=control, writer=self._writer, counter=counter)
        try:
            if before is None:
                self._append(keys=keys, args=args, client=self._pipe or self.client)
            elif self._pipe is not None:
                before(self._pipe)
                self._append(keys=keys, args=args, client=self._pipe)
            else:
                pipe = self.client.pipeline(transaction=False)
                before(pipe)
                self._append(keys=keys, args=args, client=pipe)
                pipe.execute()
        except self._errors as exc:
            self._unconfirmed = (call, counter)
            raise BackplaneError(f"Redis: {exc}") from exc
