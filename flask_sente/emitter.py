"""Push from anywhere: a write-only client of the Redis backplane.

For Celery tasks, cron jobs and scripts that are not the web app: they reach the same users
as ``sente.send`` would, through the same Lua scripts, with the same event validation. It
needs redis-py only — no Flask, no gevent — and it *raises*
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
    with emitter.batch():                  # one round trip for all of these
        for uid in uids:
            emitter.send(uid, ("news/item", item))
"""
from __future__ import annotations

import contextlib
import secrets
import typing as t

from .backplanes import redis_scripts as rs
from .backplanes.common import new_epoch
from .backplanes.redis_connect import connect, import_redis, parse_url
from .config import HISTORY_SIZE, HISTORY_TTL
from .core.presence import ConnectedUids, Uid
from .exceptions import BackplaneError, LocalProtocolError
from .protocol import events as ev


class Emitter:
    """Sends, broadcasts and kicks through Redis; reads who is connected.

    :param redis_url: the same URL as the app's ``backplane`` option (``redis://``,
        ``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://``; ``?prefix=``
        included, if the app uses one); the forms are listed in the scale-out guide
        (docs/scaleout.md, "Which Redis: the URL").
    :param prefix: replaces the URL's ``?prefix=``.
    :param history_size: keep in step with the app's option (entries kept per log).
    :param history_ttl: likewise (seconds).
    """

    def __init__(self, redis_url: str, *, prefix: str | None = None,
                 history_size: int = HISTORY_SIZE, history_ttl: float = HISTORY_TTL,
                 socket_timeout: float = 2.0) -> None:
        redis_py = import_redis("the Emitter")
        self._errors = redis_py.RedisError
        target = parse_url(redis_url, prefix=prefix)
        self.prefix = target.prefix
        self.client: t.Any = connect(target, socket_timeout=socket_timeout)
        self._append: t.Any = self.client.register_script(rs.APPEND)
        self._size = history_size
        self._ttl = max(1, int(history_ttl))
        self._pipe: t.Any = None
        #: Writer id and counter: Redis skips an entry a writer already appended.
        self._writer = "emitter-" + secrets.token_urlsafe(9)
        self._counter = 0
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

    def _run(self, ukey: str, payload: t.Any, target: str, control: str, *,
             create: bool) -> None:
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
            self._append(keys=keys, args=args, client=self._pipe or self.client)
        except self._errors as exc:
            self._unconfirmed = (call, counter)
            raise BackplaneError(f"Redis: {exc}") from exc
