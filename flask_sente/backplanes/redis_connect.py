"""Where a Redis URL becomes a redis-py client: one place for the backplane and the emitter.

Both must reach the same Redis the same way (same key prefix, same timeouts, same topology),
so the URL is parsed and the client built here only. No gevent here: the
:class:`~flask_sente.emitter.Emitter` runs in plain processes.

URL forms (``?prefix=`` picks the key prefix of the deployment, default ``sente``):

- ``redis://[[user:]password@]host[:port][/db]``, ``rediss://…`` (TLS),
  ``unix://[[user:]password@]/path/to/socket[?db=N]`` — one Redis; other query
  parameters go to redis-py's ``from_url``.
- ``redis+sentinel://[[user:]password@]host:port[,host:port…]/service_name[/db]`` — the
  master of ``service_name`` as the listed Sentinels name it (port 26379 when omitted),
  found again after a failover (redis-py's ``Sentinel.master_for``). The password is the
  master's; ``?sentinel_password=`` gives the Sentinels' own, if they have one.
- ``redis+cluster://[[user:]password@]host:port[,host:port…]`` — a Redis Cluster (port
  6379 when omitted). Every key of one deployment lives in one hash slot: the prefix is
  made a hash tag (``sente`` → ``{sente}``), so the scripts stay Cluster-safe. That runs
  on a Cluster and follows a failover of that slot's master, but one deployment's load is
  not spread over several masters.
"""
from __future__ import annotations

import contextlib
import dataclasses
import typing as t
import urllib.parse

from ..exceptions import ConfigError

SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
DEFAULT_PREFIX = "sente"
SENTINEL_PORT = 26379
CLUSTER_PORT = 6379
#: Query parameters the Sentinel and Cluster forms accept (the single form passes the
#: rest on to redis-py, which knows them).
_TOPOLOGY_QUERY = {SENTINEL_SCHEME: {"prefix", "sentinel_password"},
                   CLUSTER_SCHEME: {"prefix"}}


@dataclasses.dataclass(frozen=True)
class RedisTarget:
    """What a backplane URL names: a topology, where to find it and the key prefix."""

    scheme: str
    prefix: str
    #: The URL without ``prefix`` (single Redis only: redis-py parses the rest).
    url: str = ""
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @property
    def kind(self) -> t.Literal["single", "sentinel", "cluster"]:
        if self.scheme == SENTINEL_SCHEME:
            return "sentinel"
        if self.scheme == CLUSTER_SCHEME:
            return "cluster"
        return "single"


def untyped(obj: object) -> t.Any:
    """``obj`` seen by the type checker as ``Any``: the boundary with redis-py.

    redis-py's type hints change between releases (8.2 typed ``Sentinel``, which turned a
    ``type: ignore`` here into an "unused ignore" error and broke the lint of a fresh
    clone). What this module calls on redis-py goes through this one function instead, so
    its checks do not depend on how complete the installed version's hints are.
    """
    return obj


def _bad(url: str, why: str) -> ConfigError:
    scheme, _, rest = url.partition("://")
    auth, at, _ = rest.split("/", 1)[0].rpartition("@")
    # never echo a password into a log
    shown = f"{scheme}://***@{rest[len(auth) + 1:]}" if at and auth else url
    return ConfigError(f"bad Redis URL {shown!r}: {why}. Forms: redis://host:port/db, "
                       "rediss://…, unix:///path, redis+sentinel://host:port[,host:port]/"
                       "service[/db], redis+cluster://host:port[,host:port] "
                       "(each with an optional ?prefix=)")


def _hosts(url: str, netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    found = []
    for item in netloc.split(","):
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
            if rest and not rest.startswith(":"):
                raise _bad(url, f"cannot read the address {item!r}")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
            if ":" in host:
                raise _bad(url, f"cannot read the address {item!r} (an IPv6 address goes "
                                "in brackets: [::1]:26379)")
        if not host:
            raise _bad(url, f"an address without a host ({item!r})")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise _bad(url, f"the port of {item!r} is not a number") from None
        if not 0 < port < 65536:
            raise _bad(url, f"the port of {item!r} is out of range")
        found.append((host, port))
    return tuple(found)


def parse_url(url: str, *, prefix: str | None = None) -> RedisTarget:
    """Read a backplane URL (forms in the module docstring); ``prefix``, when given,
    replaces the URL's ``?prefix=``.

    :raises ConfigError: for anything that cannot name a Redis, saying what is wrong.
    """
    if not isinstance(url, str) or "://" not in url:
        raise _bad(str(url), "not a URL")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [IPv6
        raise _bad(url, str(exc)) from None
    scheme = parts.scheme.lower()
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    in_url = query.pop("prefix", [DEFAULT_PREFIX])[-1]
    prefix = in_url if prefix is None else prefix
    if not prefix:
        raise _bad(url, "?prefix= is empty")
    if scheme in SINGLE_SCHEMES:
        clean = urllib.parse.urlunsplit(parts._replace(
            query=urllib.parse.urlencode(query, doseq=True)))
        return RedisTarget(scheme, prefix, url=clean)
    if scheme not in _TOPOLOGY_QUERY:
        raise _bad(url, f"unknown scheme {parts.scheme!r}")
    unknown = set(query) - _TOPOLOGY_QUERY[scheme]
    if unknown:
        raise _bad(url, f"unknown parameter(s) {', '.join(sorted(unknown))}")
    auth, _, netloc = parts.netloc.rpartition("@")
    username, password = _credentials(auth)
    if not netloc:
        raise _bad(url, "no host given")
    path = [p for p in parts.path.split("/") if p]
    if scheme == CLUSTER_SCHEME:
        if path:
            raise _bad(url, "a Cluster has no database number or service name in the path")
        return RedisTarget(scheme, _hash_tag(prefix), hosts=_hosts(url, netloc, CLUSTER_PORT),
                           username=username, password=password)
    service, db = _service_and_db(url, path)
    sentinel_password = query.get("sentinel_password", [None])[-1] or None
    return RedisTarget(scheme, prefix, hosts=_hosts(url, netloc, SENTINEL_PORT),
                       service=service, db=db, username=username,
                       password=password, sentinel_password=sentinel_password)


def _credentials(auth: str) -> tuple[str | None, str | None]:
    """``(username, password)`` of a URL's ``user:password`` part (a lone word is the
    password, as redis-py reads it)."""
    if not auth:
        return None, None
    user_text, colon, pass_text = auth.partition(":")
    username = urllib.parse.unquote(user_text) if colon and user_text else None
    password = urllib.parse.unquote(pass_text if colon else user_text) or None
    return username, password


def _service_and_db(url: str, path: list[str]) -> tuple[str, int]:
    """A Sentinel URL's ``/service_name[/db]``."""
    if not path or len(path) > 2:
        raise _bad(url, "the path must be /service_name or /service_name/db")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise _bad(url, f"the database {path[1]!r} is not a number")
        db = int(path[1])
    return urllib.parse.unquote(path[0]), db


def _hash_tag(prefix: str) -> str:
    """The prefix as a Cluster hash tag: every key ``{p}:…`` then hashes on ``p`` alone."""
    if prefix.startswith("{") and "}" in prefix and prefix.index("}") > 1:
        return prefix
    if "{" in prefix or "}" in prefix:
        raise ConfigError(f"the Cluster prefix {prefix!r} must be a plain name or one hash "
                          "tag like {sente}")
    return "{" + prefix + "}"


#: How to get redis-py, said where it is missing. flask_sente is not on the package index,
#: so ``pip install 'flask_sente[redis]'`` would fail: the extra works from a checkout only.
INSTALL_REDIS = ("pip install redis (or pip install '.[redis]' in a flask_sente checkout, "
                 "to get the versions it is tested with)")


def import_redis(needed_by: str) -> t.Any:
    """redis-py, or a :class:`ConfigError` saying how to install it (``needed_by`` names
    what needs it), instead of a bare ``ModuleNotFoundError`` from deep inside."""
    try:
        import redis
    except ImportError:
        raise ConfigError(f"{needed_by} needs redis-py, which is not installed: "
                          f"{INSTALL_REDIS}") from None
    return redis


def connect(target: RedisTarget, *, socket_timeout: float,
            max_connections: int | None = None) -> t.Any:
    """A redis-py client for ``target`` with explicit timeouts (with redis-py's defaults a
    dead Redis stalls a call for seconds).

    ``max_connections`` bounds the connections per Redis server; callers then wait their
    turn for one (up to twice the timeout) instead of failing. Not on a Cluster: redis-py's
    Cluster client has no waiting pool (it would raise at the limit), so its pools stay
    unbounded, as by default.
    The client is typed Any: redis-py's own types are loose (bytes | str everywhere).
    """
    import redis as redis_typed

    redis = untyped(redis_typed)
    timeouts: dict[str, t.Any] = {"socket_timeout": socket_timeout,
                                  "socket_connect_timeout": socket_timeout}
    if target.kind == "single":
        if max_connections is None:
            return redis.Redis.from_url(target.url, **timeouts)
        pool = redis.BlockingConnectionPool.from_url(
            target.url, max_connections=max_connections, timeout=2 * socket_timeout,
            **timeouts)
        return redis.Redis(connection_pool=pool)
    auth = {"username": target.username, "password": target.password}
    if target.kind == "sentinel":
        return _sentinel_master(target, auth, timeouts, max_connections)
    from redis.cluster import ClusterNode

    return _cluster_client_class()(
        startup_nodes=[untyped(ClusterNode)(host, port) for host, port in target.hosts],
        **auth, **timeouts)


def _sentinel_master(target: RedisTarget, auth: dict[str, t.Any], timeouts: dict[str, t.Any],
                     max_connections: int | None) -> t.Any:
    """The master of ``target.service``. Its connections ask the Sentinels where the master
    is whenever they (re)connect, and drop on a demoted master's errors, so every
    connection — the subscription's too — follows a failover."""
    from redis.connection import BlockingConnectionPool
    from redis.sentinel import Sentinel, SentinelConnectionPool

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        """redis-py's Sentinel pool, waiting for a free connection at the limit (its
        own raises) like the pool of a single Redis."""

    sentinel = untyped(Sentinel)(
        list(target.hosts), sentinel_kwargs={
        **timeouts, "password": target.sentinel_password}, **timeouts)
    extra: dict[str, t.Any] = {}
    if max_connections is not None:
        extra = {"connection_pool_class": BlockingSentinelPool,
                 "max_connections": max_connections, "timeout": 2 * timeouts["socket_timeout"]}
    return sentinel.master_for(target.service, db=target.db, **auth, **timeouts, **extra)


def _cluster_client_class() -> type[t.Any]:
    """redis-py's RedisCluster, adapted to the backplane's use of it:

    - pipelines may run scripts (redis-py blocks EVALSHA in Cluster pipelines because a
      script's keys could span slots; ours all hash to one) and load them first, as a
      plain Redis pipeline does — a node that lacks them (a new master after a failover)
      would otherwise fail every batch;
    - redis-py's own Cluster errors (a slot not covered during a failover, …) are not
      RedisErrors: they are raised as ConnectionErrors, which the backplane and the
      emitter already treat as "Redis is away for now".
    """
    from redis.cluster import ClusterPipeline, RedisCluster
    from redis.exceptions import ConnectionError, RedisClusterException

    class ClusterUnavailable(ConnectionError):
        """The Cluster cannot serve the call now (redis-py's RedisClusterException)."""

    @contextlib.contextmanager
    def as_redis_error() -> t.Iterator[None]:
        try:
            yield
        except RedisClusterException as exc:
            raise ClusterUnavailable(f"Redis Cluster: {exc}") from exc

    class ScriptLoadingPipeline(ClusterPipeline):
        owner: t.Any = None

        def evalsha(self, sha: str, numkeys: int, *keys_and_args: t.Any) -> t.Any:
            return untyped(self).execute_command("EVALSHA", sha, numkeys, *keys_and_args)

        def execute(self, raise_on_error: bool = True) -> t.Any:
            with as_redis_error():
                scripts = self.owner.registered_scripts if self.owner is not None else []
                if scripts and len(self):
                    exists = self.owner.script_exists(*[s.sha for s in scripts])
                    for script, exist in zip(scripts, exists, strict=True):
                        if not exist:
                            self.owner.script_load(script.script)
                return untyped(super()).execute(raise_on_error)

    class SenteCluster(RedisCluster):
        def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
            with as_redis_error():
                super().__init__(*args, **kwargs)
            self.registered_scripts: list[t.Any] = []

        def execute_command(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
            with as_redis_error():
                return untyped(super()).execute_command(*args, **kwargs)

        def register_script(self, script: t.Any) -> t.Any:
            registered = untyped(super()).register_script(script)
            self.registered_scripts.append(registered)
            return registered

        def pipeline(self, transaction: t.Any = None, shard_hint: t.Any = None) -> t.Any:
            pipe = untyped(super()).pipeline(transaction, shard_hint)
            # redis-py builds the pipeline from a dozen of its own fields: take it as it
            # is and only give it the methods above.
            pipe.__class__ = ScriptLoadingPipeline
            pipe.owner = self
            return pipe

    return SenteCluster
