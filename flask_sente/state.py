"""What ``app.extensions["sente"]`` holds for one app, and how it restarts.

Kept apart from ``ext.py`` so that the views, the admission pipeline and the testing tools
can use an app's state without importing the extension (which imports them).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
import typing as t

from .backplanes import Backplane, LocalBackplane
from .config import Options
from .hub import Hub, JoinHandlers
from .hub.inspect import Tally
from .metrics import NO_METRICS, NoMetrics, from_option
from .protocol.edn import KeysOption
from .protocol.packers import Packer
from .protocol.security import WsTickets
from .protocol.sente_wire import SENTE_DIALECT, SenteWire
from .protocol.wire import Wire
from .router import Handler, Router


@dataclasses.dataclass(eq=False)
class AppState:
    """One app's options, packer, hub and router, plus the handlers and hooks they use."""

    #: The ``Sente`` object that initialised the app.
    sente: t.Any
    options: Options
    packer: Packer
    hub: Hub
    router: Router
    #: Event id -> handler (shared with the ``Sente`` object: later ``@on`` calls count).
    handlers: t.Mapping[str, Handler]
    #: Hooks set with the ``Sente`` decorators (options given per app win over these).
    hooks: t.Mapping[str, t.Callable[..., t.Any]]
    #: Whom signals are sent as (the app).
    signal_sender: t.Any = None
    #: Makes the app context handlers run in.
    context: t.Callable[[], t.ContextManager[t.Any]] | None = None
    #: Where the hub, router and backplane count what they do (``metrics`` option).
    metrics: NoMetrics = NO_METRICS
    #: Who may join which topics (shared with the ``Sente`` object, like ``handlers``).
    join_handlers: JoinHandlers = dataclasses.field(default_factory=JoinHandlers)
    #: Reserved-looking ids the extension answers itself beside the hub's (the admin
    #: dashboard's overview): given by ``ext``, which may import Flask-side modules.
    own_handlers: t.Mapping[str, Handler] = dataclasses.field(default_factory=dict)

    @classmethod
    def build(cls, sente: t.Any, options: Options, packer: Packer,
              handlers: t.Mapping[str, Handler], hooks: t.Mapping[str, t.Callable[..., t.Any]],
              *, signal_sender: t.Any,
              context: t.Callable[[], t.ContextManager[t.Any]],
              join_handlers: JoinHandlers,
              own_handlers: t.Mapping[str, Handler] | None = None) -> AppState:
        metrics = from_option(options.metrics, shared_backplane=options.backplane is not None)
        if options.admin:  # the dashboard's counters, on the metrics' call sites
            metrics = Tally(metrics)
        own = dict(own_handlers or {})
        router, hub = _make(options, packer, handlers, signal_sender, context, metrics,
                            join_handlers, own)
        return cls(sente, options, packer, hub, router, handlers, hooks, signal_sender,
                   context, metrics, join_handlers, own)

    #: Tickets standing for the CSRF token in WebSocket URLs (see ``views``).
    ws_tickets: WsTickets = dataclasses.field(
        default_factory=lambda: WsTickets(clock=time.time))
    #: Whether the app's SECRET_KEY was compared with the other workers' (shared backplanes).
    secret_checked: bool = False

    def check_secret(self, secret_key: t.Any) -> None:
        """Compare a fingerprint of ``SECRET_KEY`` with the one the first worker left in the
        shared backplane: workers with different keys refuse each other's sessions and CSRF
        tokens (403 on most handshakes), which is worth an error in the log."""
        self.secret_checked = True
        if self.hub.backplane.shared and secret_key:
            raw = secret_key if isinstance(secret_key, bytes) else str(secret_key).encode()
            self.hub.backplane.check_secret(hashlib.sha256(b"flask_sente:" + raw).hexdigest()[:16])

    def hook(self, name: str) -> t.Callable[..., t.Any] | None:
        """A hook given as an option for this app, else the one set with the decorator."""
        return t.cast("t.Callable[..., t.Any] | None",
                      getattr(self.options, name) or self.hooks.get(name))

    def shutdown(self, timeout: float = 0.0) -> None:
        """The server is stopping (it no longer accepts): a graceful drain.

        Parked polls (and any poll still arriving) are answered ``chsk/close`` 1001 at once,
        so Ajax clients reconnect (to another worker); handlers in flight get up to
        ``timeout`` seconds to finish, and their replies go out; then every WebSocket is
        closed with 1001 after what was queued for it.
        """
        self.hub.drain()
        if timeout > 0:
            self.router.wait_idle(timeout)
        self.hub.close()

    def restart(self) -> None:
        """Close every connection and greenlet, then start afresh (as a new process would)."""
        self.hub.close()
        self.router.close()
        self.router, self.hub = _make(self.options, self.packer, self.handlers,
                                      self.signal_sender, self.context, self.metrics,
                                      self.join_handlers, self.own_handlers)


def _make(options: Options, packer: Packer, handlers: t.Mapping[str, Handler],
          signal_sender: t.Any,
          context: t.Callable[[], t.ContextManager[t.Any]] | None,
          metrics: NoMetrics, join_handlers: JoinHandlers,
          own_handlers: t.Mapping[str, Handler]) -> tuple[Router, Hub]:
    if metrics.enabled:  # handler latency: the context handlers run in is timed
        context = metrics.timed(context or contextlib.nullcontext)
    kwargs = {} if context is None else {"context": context}
    router = Router(handlers, pool_size=options.handler_pool_size,
                    receive_queue_size=options.receive_queue_size,
                    client_events_in_flight=options.client_events_in_flight,
                    error_log_interval=options.error_log_interval,
                    failed=metrics.handler_failed, **kwargs)
    dialects: dict[str, Wire] = {}
    if options.sente_url is not None:
        dialects[SENTE_DIALECT] = SenteWire(keys=t.cast(KeysOption, options.sente_keys))
    hub = Hub(options, packer, router.dispatch, signal_sender=signal_sender,
              wants=router.wants, backplane=make_backplane(options, metrics), metrics=metrics,
              join_handlers=join_handlers, dialects=dialects)
    router.add_own_handlers(hub.handlers())  # the topic requests, answered by the hub
    router.add_own_handlers(own_handlers)
    return router, hub


def make_backplane(options: Options, metrics: NoMetrics = NO_METRICS) -> Backplane:
    """The backplane the options name: in memory by default, Redis for a URL."""
    chosen = options.backplane
    if chosen is None:
        return LocalBackplane(history_size=options.history_size,
                              history_ttl=options.history_ttl)
    if isinstance(chosen, str):
        from .backplanes.redis import from_url  # needs redis-py: only when asked for

        return from_url(chosen, history_size=options.history_size,
                        history_ttl=options.history_ttl,
                        dead_node_grace=max(options.reconnect_grace_ws,
                                            options.reconnect_grace_ajax),
                        metrics=metrics)
    return t.cast(Backplane, chosen)
