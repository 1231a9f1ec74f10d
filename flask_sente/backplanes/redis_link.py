"""One process's link to Redis, shared by the parts of the Redis backplane.

The outbox (:mod:`~flask_sente.backplanes.redis_outbox`), the mirror of the logs
(:mod:`~flask_sente.backplanes.redis_mirror`) and the presence
(:mod:`~flask_sente.backplanes.redis_presence`) all call the same Redis with the same
scripts, key names and node id, and all of them learn whether it answers: a failed call
makes the worker refuse new clients (503) until Redis answers again. This module owns that
link and that health, so that each part gets it in its constructor instead of reaching
into the others.
"""
from __future__ import annotations

import contextlib
import time
import typing as t

import gevent.monkey

from ..core.delivery import BROADCAST, TOPIC, USER
from ..exceptions import BackplaneError, ConfigError
from . import redis_scripts as rs
from .redis_connect import connect, import_redis, parse_url

#: redis-py timeouts: without them a dead Redis stalls a publish for seconds.
SOCKET_TIMEOUT = 2.0
#: Connections to Redis per process at most (the subscription holds one).
MAX_CONNECTIONS = 64
#: The scripts of :mod:`~flask_sente.backplanes.redis_scripts` a backplane runs.
SCRIPTS = ("APPEND", "TOUCH", "ATTACH", "DETACH", "REMOVE", "EXPIRE", "HEARTBEAT")

#: An argument of a script (redis-py sends each as a string).
ScriptArg = str | int | bytes


def now_ms() -> int:
    """Wall-clock milliseconds: what the presence scripts compare grace windows with
    (every node's clock, unlike ``time.monotonic()``)."""
    return int(time.time() * 1000)


class RedisLink:
    """The client, the scripts, the key names, this node's id, and whether Redis answers.

    :param on_health: told each change of :attr:`healthy` (the listener's
        ``backplane_state``).
    """

    def __init__(self, url: str, *, node: str, history_size: int, history_ttl: float,
                 on_health: t.Callable[[bool], None]) -> None:
        redis = import_redis("the Redis backplane")
        if not gevent.monkey.is_module_patched("socket"):
            raise ConfigError("the Redis backplane needs gevent's monkey-patching (redis-py "
                              "uses the socket module): call gevent.monkey.patch_all() first, "
                              "or run under gunicorn -k flask_sente.worker.SenteWorker")
        #: What redis-py raises (its exceptions' base class).
        self.errors: type[Exception] = redis.RedisError
        self.url = url
        target = parse_url(url)
        self.prefix = target.prefix
        #: Topic presence: the same scripts and keys under this prefix.
        self.topic_prefix = rs.topic_presence_prefix(self.prefix)
        self.node = node
        self.history_size = history_size
        #: Seconds a log (and a cursor) lives after its last use, as Redis counts them.
        self.ttl = max(1, int(history_ttl))
        # A burst of handshakes makes one Redis call each, at once: a bounded pool makes
        # them wait their turn for a connection instead of failing past redis-py's limit.
        self.client: t.Any = connect(target, socket_timeout=SOCKET_TIMEOUT,
                                     max_connections=MAX_CONNECTIONS)
        self.scripts: dict[str, t.Any] = {
            name: self.client.register_script(getattr(rs, name)) for name in SCRIPTS}
        #: Set when the backplane closes: the parts' loops end.
        self.closed = False
        #: False while Redis cannot be reached (new handshakes and polls get 503): the last
        #: call to Redis failed, or the subscription is down. Probed, not only inferred:
        #: the housekeeping loop's calls mark it reachable again.
        self.healthy = True
        #: Whether the last call to Redis went through.
        self.reachable = True
        self._listening = True
        self._on_health = on_health

    def close(self) -> None:
        """Close every connection the client holds (its loops have ended). A client given
        its pool (``connect`` does, and Sentinel's ``master_for``) does not close the pool
        in ``close()``: its sockets would wait for the garbage collector."""
        self.closed = True
        try:
            self.client.close()
            pool = getattr(self.client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()
        except Exception:  # pragma: no cover - closing a dead connection
            pass

    # --- health ----------------------------------------------------------------------------

    def set_reachable(self, reachable: bool) -> None:
        """A call to Redis failed (False) or went through (True)."""
        self.reachable = reachable
        self._update_health()

    def set_listening(self, listening: bool) -> None:
        """The subscription was lost (False), or is up and caught up again (True)."""
        self._listening = listening
        self._update_health()

    def _update_health(self) -> None:
        healthy = self.reachable and self._listening
        if healthy != self.healthy:
            self.healthy = healthy
            self._on_health(healthy)

    @contextlib.contextmanager
    def calling(self) -> t.Iterator[None]:
        """A call made for a request: Redis's errors become BackplaneError (the hub answers
        503 or closes the socket with 1013), and mark the backplane unhealthy."""
        try:
            yield
        except self.errors as exc:
            self.set_reachable(False)
            raise BackplaneError(f"Redis: {exc}") from exc

    # --- scripts and keys ------------------------------------------------------------------

    def run_in(self, prefix: str, name: str, *args: ScriptArg) -> t.Any:
        """Run a presence script under ``prefix`` (users' or topics' presence), as a
        request's call (:meth:`calling`)."""
        with self.calling():
            return self.scripts[name](keys=rs.route_keys(prefix), args=[prefix, *args])

    def keys(self, log_key: t.Hashable) -> tuple[str, str, str]:
        """(meta, stream, channel) of a log of :class:`~flask_sente.core.delivery.Delivery`."""
        if log_key == BROADCAST:
            return rs.log_keys(self.prefix, rs.BROADCAST_KEY)
        kind, name = t.cast("tuple[str, t.Any]", log_key)
        return rs.log_keys(self.prefix, rs.topic_key(name) if kind == TOPIC
                           else rs.user_key(name))

    @staticmethod
    def log_key_of(ukey: str) -> t.Hashable:
        """The :class:`~flask_sente.core.delivery.Delivery` key of a log's Redis key."""
        if ukey == rs.BROADCAST_KEY:
            return BROADCAST
        if ukey.startswith("t:"):
            return (TOPIC, ukey[2:])
        return (USER, rs.uid_of(ukey))
