"""Option defaults, in one place, and their validation.

Every option can be given to ``Sente(app, **options)`` or set as ``SENTE_<NAME>`` (upper
case) in ``app.config``; keyword arguments win. The README has one table row per option with
its default and the reason for it; keep the two in step. Durations are seconds (floats).
"""
from __future__ import annotations

import dataclasses
import difflib
import typing as t

from .exceptions import ConfigError

#: The route of the channel socket: GET+Upgrade, GET and POST all go here.
URL = "/chsk"
#: Long-poll hold time. Below Heroku's 30 s router limit; must stay under the clients' 60 s
#: Ajax timeout so a parked poll is always answered before the client gives up on it.
LP_TIMEOUT = 20.0
#: Batching windows: a WebSocket connection is written at most once per window, a push
#: to one that was not leaves at once; Ajax polls are woken at most once per window (see
#: Hub.logs_appended).
SEND_BUFFER_WS = 0.010
SEND_BUFFER_AJAX = 0.100
#: Server keep-alive: ping a WebSocket idle this long (below the 55-60 s idle cut of most
#: proxies and PaaS routers), then close it if nothing arrives within the ping timeout.
WS_KEEPALIVE = 25.0
WS_PING_TIMEOUT = 10.0
#: How long a closed client may take to come back before its user counts as gone; long
#: enough to cover a page reload (WS) and the gap between two polls (Ajax).
RECONNECT_GRACE_WS = 2.5
RECONNECT_GRACE_AJAX = 5.0
#: Largest message accepted from a client, checked before the payload is buffered.
MAX_MESSAGE_SIZE = 1 << 20
#: Bounded queues: inbound events waiting for a handler, outbound messages per connection.
RECEIVE_QUEUE_SIZE = 1000
SEND_QUEUE_SIZE = 1000
#: Bytes queued at most for one WebSocket: a client that does not read is closed (1013)
#: before it can hold much memory, however big the pushes are.
SEND_QUEUE_BYTES = 4 << 20
#: Longest one write to a WebSocket may wait for the peer to read before the socket is
#: aborted: a 1 MiB message still gets through at ~50 KiB/s.
WRITE_TIMEOUT = 20.0
#: History kept per log (each user's, the broadcast log) for clients that reconnect:
#: entries and seconds. Memory: about users x history_size x (event size + ~100 B).
HISTORY_SIZE = 100
HISTORY_TTL = 120.0
#: Handlers run in a greenlet pool of this size; a full pool makes readers wait.
HANDLER_POOL_SIZE = 1000
#: Events of one client in the handler pool at once; its next event waits on its own
#: connection. 20 clients x 32 stay well inside the pool, so a few flooders cannot starve
#: everybody else (issue 14).
CLIENT_EVENTS_IN_FLIGHT = 32
#: The same handler error (handler, exception type, raising line) is logged with its
#: traceback at most once per this many seconds, with a count of the ones not logged.
ERROR_LOG_INTERVAL = 60.0
#: Topics one client may be in at once; a topic name's length; users in one topic. A join
#: past a limit is refused with a reason, never half done.
MAX_TOPICS_PER_CLIENT = 64
MAX_TOPIC_LENGTH = 200
MAX_TOPIC_MEMBERS = 10_000
#: A reply not given within this window is answered with a timeout on the handler's behalf.
REPLY_TIMEOUT = 20.0
#: The uid shared by every client whose ``user_id`` hook returns None.
ANONYMOUS_UID = "sente/nil-uid"
#: The Ajax clients' own request timeout (the JS and Python clients use it too).
CLIENT_AJAX_TIMEOUT = 60.0
#: ``SENTE_*`` keys that are no option of ``Sente`` but are not mistakes either: the
#: gunicorn worker's header timeout, which ``app.config.from_prefixed_env()`` also copies
#: in from its environment variable ``FLASK_SENTE_HEADER_TIMEOUT``.
NOT_OPTIONS = frozenset({"SENTE_HEADER_TIMEOUT"})


@dataclasses.dataclass
class Options:
    """Validated options of one ``Sente`` instance for one app."""

    url: str = URL
    packer: t.Any = "json"
    csrf: t.Any = True
    allowed_origins: t.Any = None
    user_id: t.Callable[..., t.Any] | None = None
    handshake_data: t.Callable[..., t.Any] | None = None
    authorize: t.Callable[..., t.Any] | None = None
    lp_timeout: float = LP_TIMEOUT
    send_buffer_ws: float = SEND_BUFFER_WS
    send_buffer_ajax: float = SEND_BUFFER_AJAX
    ws_keepalive: float | None = WS_KEEPALIVE
    ws_ping_timeout: float | None = WS_PING_TIMEOUT
    reconnect_grace_ws: float = RECONNECT_GRACE_WS
    reconnect_grace_ajax: float = RECONNECT_GRACE_AJAX
    max_message_size: int = MAX_MESSAGE_SIZE
    receive_queue_size: int = RECEIVE_QUEUE_SIZE
    send_queue_size: int = SEND_QUEUE_SIZE
    send_queue_bytes: int = SEND_QUEUE_BYTES
    write_timeout: float = WRITE_TIMEOUT
    history_size: int = HISTORY_SIZE
    history_ttl: float = HISTORY_TTL
    backplane: t.Any = None
    handler_pool_size: int = HANDLER_POOL_SIZE
    reply_timeout: float = REPLY_TIMEOUT
    client_events_in_flight: int = CLIENT_EVENTS_IN_FLIGHT
    error_log_interval: float = ERROR_LOG_INTERVAL
    topic_presence: bool = False
    max_topics_per_client: int = MAX_TOPICS_PER_CLIENT
    max_topic_length: int = MAX_TOPIC_LENGTH
    max_topic_members: int = MAX_TOPIC_MEMBERS
    metrics: t.Any = False
    ajax_fast_path: bool = True
    sente_url: str | None = None
    sente_keys: str = "strings"
    admin: bool = False
    admin_url: str | None = None
    admin_uids: t.Any = ()
    admin_auth: t.Callable[..., t.Any] | None = None

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def resolve(cls, config: t.Mapping[str, t.Any], overrides: t.Mapping[str, t.Any]) -> Options:
        """Build options from ``SENTE_*`` config keys, then keyword overrides, then validate."""
        unknown = set(overrides) - set(cls.names())
        if unknown:
            named = [name + _did_you_mean(name, cls.names()) for name in sorted(unknown)]
            raise ConfigError(
                f"unknown Sente option(s): {', '.join(named)}; "
                f"known: {', '.join(cls.names())}"
            )
        values = {}
        for name in cls.names():
            key = "SENTE_" + name.upper()
            if name in overrides:
                values[name] = overrides[name]
            elif key in config:
                values[name] = config[key]
        options = cls(**values)
        options.validate()
        return options

    @classmethod
    def unknown_config_keys(cls, config: t.Mapping[str, t.Any]) -> list[str]:
        """``SENTE_*`` keys of ``config`` that are no option, each with a word on the
        closest one: ``resolve`` ignores them, so a typo would pass without a word."""
        names = cls.names()
        keys = {"SENTE_" + name.upper() for name in names}
        # Names are compared without the prefix every key shares, which would make any
        # two keys look alike.
        return [f"app.config[{key!r}] is not a Sente option and is ignored"
                + _did_you_mean(key[len("SENTE_"):].lower(), names,
                                lambda name: "SENTE_" + name.upper())
                for key in sorted(k for k in config if isinstance(k, str))
                if key.startswith("SENTE_") and key not in keys and key not in NOT_OPTIONS]

    def validate(self) -> None:
        """Refuse a value no option can take, with the option's name and what it takes."""
        if not isinstance(self.url, str) or not self.url.startswith("/"):
            raise ConfigError(f"url must be a path starting with '/', got {self.url!r}")
        if not 0 < self.lp_timeout < CLIENT_AJAX_TIMEOUT:
            raise ConfigError(
                f"lp_timeout must be > 0 and < {CLIENT_AJAX_TIMEOUT:g} s (the clients' Ajax "
                f"timeout), got {self.lp_timeout!r}"
            )
        self._validate_numbers()
        self._validate_choices()

    def _validate_numbers(self) -> None:
        for name in ("send_buffer_ws", "send_buffer_ajax", "reconnect_grace_ws",
                     "reconnect_grace_ajax", "reply_timeout", "write_timeout",
                     "history_ttl", "error_log_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("ws_keepalive", "ws_ping_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"{name} must be a positive number or None, got {value!r}")
        for name in ("max_message_size", "receive_queue_size", "send_queue_size",
                     "send_queue_bytes", "handler_pool_size", "history_size",
                     "client_events_in_flight", "max_topics_per_client", "max_topic_length",
                     "max_topic_members"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    def _validate_choices(self) -> None:
        if not (self.csrf is True or self.csrf is False or callable(self.csrf)):
            raise ConfigError("csrf must be True, False or a callable returning the token")
        origins = self.allowed_origins
        if not (origins is None or origins == "*" or (
                isinstance(origins, (list, tuple, set, frozenset))
                and all(isinstance(o, str) for o in origins))):
            raise ConfigError(
                "allowed_origins must be None (same origin), '*' (any) or a list of "
                f"origins such as 'https://example.com', got {origins!r}"
            )
        bp = self.backplane
        if isinstance(bp, str):
            from .backplanes.redis_connect import parse_url

            parse_url(bp)  # a clear ConfigError now rather than a redis-py error later
        elif not (bp is None or hasattr(bp, "open_reader")):
            raise ConfigError("backplane must be None (one process), a Redis URL (redis://, "
                              "rediss://, unix://, redis+sentinel://, redis+cluster://) or "
                              f"a Backplane object, got {bp!r}")
        if self.sente_url is not None and (
                not isinstance(self.sente_url, str) or not self.sente_url.startswith("/")
                or self.sente_url.rstrip("/") == self.url.rstrip("/")):
            raise ConfigError("sente_url must be None (no channel for Sente's own clients) or "
                              "a path starting with '/', other than url, got "
                              f"{self.sente_url!r}")
        if self.sente_keys not in ("strings", "keywords"):
            raise ConfigError("sente_keys must be 'strings' (EDN keyword map keys read as str) "
                              f"or 'keywords', got {self.sente_keys!r}")
        self._validate_admin()
        if not isinstance(self.ajax_fast_path, bool):
            raise ConfigError(f"ajax_fast_path must be True or False, got {self.ajax_fast_path!r}")
        if not (isinstance(self.metrics, bool) or hasattr(self.metrics, "register")):
            raise ConfigError("metrics must be True, False or a prometheus_client "
                              f"CollectorRegistry, got {self.metrics!r}")
        for name in ("user_id", "handshake_data", "authorize", "admin_auth"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(f"{name} must be a callable or None, got {value!r}")

    def _validate_admin(self) -> None:
        if not isinstance(self.admin, bool):
            raise ConfigError(f"admin must be True or False, got {self.admin!r}")
        url = self.admin_url
        if url is not None and (not isinstance(url, str) or not url.startswith("/")
                                or url.rstrip("/") in (self.url.rstrip("/"),
                                                       (self.sente_url or "").rstrip("/"))):
            raise ConfigError("admin_url must be None (<url>/admin) or a path starting with "
                              f"'/', other than the channel's, got {url!r}")
        if isinstance(self.admin_uids, (str, bytes)) or not hasattr(self.admin_uids,
                                                                     "__contains__"):
            raise ConfigError("admin_uids must be a collection of uids (a list or a set), "
                              f"got {self.admin_uids!r}")

    @property
    def admin_path(self) -> str:
        """Where the dashboard is served (``admin_url``, else ``<url>/admin``)."""
        return (self.admin_url or self.url.rstrip("/") + "/admin").rstrip("/") or "/"


def _did_you_mean(name: str, known: t.Sequence[str], spell: t.Callable[[str], str] = str) -> str:
    """`` (did you mean x?)`` with the closest of ``known`` (written by ``spell``), or ''."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {spell(close[0])}?)" if close else ""
