"""The Flask extension: ``Sente(app)`` / ``Sente().init_app(app)``.

Follows the Flask extension contract: no ``self.app``; per-app state (options, packer,
hub, router) lives in ``app.extensions["sente"]``; ``SENTE_*`` config keys are filled with
their defaults by ``init_app``; one ``Sente`` object may serve several apps (handlers are
shared, connections are per app).
"""
from __future__ import annotations

import os
import secrets
import sys
import typing as t
import warnings
import weakref

from flask import Flask, Response, current_app, has_app_context, session
from markupsafe import Markup, escape

from . import admin
from .admission import CSRF_SESSION_KEY
from .config import Options
from .core.presence import ConnectedUids
from .exceptions import ConfigWarning, NotInitializedError
from .fastpath import ChannelFastPath
from .hub import JoinHandlers
from .messages import EventMsg
from .protocol import events as ev
from .protocol.packers import get_packer
from .router import DEFAULT, Handler
from .state import AppState
from .views import make_blueprint, metrics_view, script_version

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


class Sente:
    """Realtime channel socket for a Flask app.

    ::

        sente = Sente(app)                  # or Sente(); sente.init_app(app)

        @sente.on("todo/add")
        def add(msg):
            msg.reply({"ok": True})

        sente.send(uid, ("todo/added", item))

    :param app: the app to initialise now (optional: see :meth:`init_app`).
    :param options: any option from the README's table; overrides ``SENTE_*`` config keys.
    """

    def __init__(self, app: Flask | None = None, **options: t.Any) -> None:
        unknown = set(options) - set(Options.names())
        if unknown:
            Options.resolve({}, options)  # raises ConfigError naming the unknown options
        self._overrides = options
        self._handlers: dict[str, Handler] = {}
        #: Who may join which topics (``on_join``); each app's hub answers the joins.
        self._join_handlers = JoinHandlers()
        self._hooks: dict[str, t.Callable[..., t.Any]] = {}
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the channel-socket route and set up this app's hub.

        A ``SENTE_*`` config key that is no option (``SENTE_LP_TIMOUT``) gets a
        :class:`~flask_sente.exceptions.ConfigWarning` naming the closest option, pointing
        at the line that called ``Sente(app)`` or ``init_app``.
        """
        if "sente" in app.extensions:
            raise RuntimeError(
                "Sente is already initialised for this app; create one Sente object per app "
                "or call init_app once"
            )
        for message in Options.unknown_config_keys(app.config):
            warnings.warn(message, ConfigWarning, stacklevel=_caller_outside_package())
        for name in Options.names():
            default = getattr(Options, name, None)
            if name not in ("user_id", "handshake_data", "authorize", "admin_auth"):
                app.config.setdefault("SENTE_" + name.upper(), default)
        options = Options.resolve(app.config, self._overrides)
        app.extensions["sente"] = AppState.build(
            self, options, get_packer(options.packer), self._handlers, self._hooks,
            signal_sender=app, context=app.app_context, join_handlers=self._join_handlers,
            own_handlers={admin.OVERVIEW: admin.answer_overview} if options.admin else None)
        app.register_blueprint(make_blueprint(options.url, options.sente_url))
        if options.admin:
            app.register_blueprint(admin.make_blueprint(options.admin_path))
        # See fastpath: keyed Ajax requests skip Flask, upgrades skip routing.
        app.wsgi_app = ChannelFastPath(app.wsgi_app, app, options.url)  # type: ignore[method-assign]
        app.jinja_env.globals["sente_csrf_token"] = self.csrf_token
        app.jinja_env.globals["sente_script"] = self.script_tag
        self._apps.add(app)

    # --- handlers and hooks --------------------------------------------------------------

    def on(self, event_id: str) -> t.Callable[[F], F]:
        """Register a handler for ``event_id``; ``"*"`` catches ids with no handler.

        Handlers get an :class:`~flask_sente.messages.EventMsg` and run in the app context, in a
        greenlet of their own (a bounded pool).
        """
        if event_id != DEFAULT and ("/" not in event_id or event_id.startswith("/")):
            raise ValueError(f"event ids are namespaced like 'todo/add', got {event_id!r}")
        if event_id in ev.TOPIC_REQUESTS:
            raise ValueError(f"{event_id!r} is answered by flask_sente itself: use "
                             "@sente.on_join(pattern) to decide who may join a topic")

        def register(fn: F) -> F:
            self._handlers[event_id] = fn
            return fn

        return register

    def on_join(self, pattern: str) -> t.Callable[[F], F]:
        """Register who may join the topics matching ``pattern``: an exact name, or a
        prefix ending in ``*`` (``"room/*"``); an exact name wins, then the longest prefix.
        A topic no pattern matches cannot be joined by clients.

        The handler gets a :class:`~flask_sente.messages.JoinMsg` and runs like an event
        handler (app context, the handler pool). It returns ``True`` to let the client in,
        any other true value to let it in and send that value back as the join's data,
        ``False`` or ``None`` to refuse (reason ``"forbidden"``), or raises
        :class:`~flask_sente.exceptions.JoinRefused` to refuse with a reason of its own.
        """
        def register(fn: F) -> F:
            self._join_handlers.add(pattern, fn)
            return fn

        return register

    def user_id(self, fn: F) -> F:
        """Decorator: ``fn(client_id) -> uid`` computes the user id of a connecting client.

        Runs in the request context (``session``, ``request`` and Flask-Login's
        ``current_user`` work). Default: ``session.get("uid")``. None means anonymous.
        """
        self._hooks["user_id"] = fn
        return fn

    def handshake_data(self, fn: F) -> F:
        """Decorator: ``fn(uid, client_id) -> data`` sent to the client in every handshake."""
        self._hooks["handshake_data"] = fn
        return fn

    def authorize(self, fn: F) -> F:
        """Decorator: ``fn(uid, client_id)`` returns True to admit, False/None for a 401, or a
        Flask response (e.g. ``("Forbidden", 403)``) to refuse with it. Runs before the
        WebSocket upgrade."""
        self._hooks["authorize"] = fn
        return fn

    def admin_auth(self, fn: F) -> F:
        """Decorator: ``fn(uid) -> bool`` says whether ``uid`` may use the admin dashboard
        (``admin=True``). Called for the page and each action in the request context, and
        for the overview the page asks for over the channel in the app context: decide
        from the uid. Without it, the ``admin_uids`` option decides."""
        self._hooks["admin_auth"] = fn
        return fn

    # --- server API ----------------------------------------------------------------------

    def send(self, uid: t.Any, event: t.Any, *, client_id: str | None = None,
             flush: bool = False) -> None:
        """Push ``event`` to every client (tab, device) of user ``uid``, over both transports.

        :param client_id: reach only that client of the user.
        :param flush: skip the batching window (order with earlier pushes is kept).
        :raises LocalProtocolError: for an invalid or reserved event, or ``uid`` None.
        """
        self._state().hub.send(uid, event, client_id=client_id, flush=flush)

    def broadcast(self, event: t.Any, *, flush: bool = False) -> None:
        """Push ``event`` to every connected user."""
        self._state().hub.broadcast(event, flush=flush)

    def publish(self, topic: str, event: t.Any, *, exclude_client_id: str | None = None,
                flush: bool = False) -> None:
        """Push ``event`` to every member of ``topic``, on every process, in one order per
        topic. Clients receive it tagged with the topic (see the clients' ``on_topic``).

        :param exclude_client_id: one client that does not get it (e.g. the sender's tab).
        :raises LocalProtocolError: for an invalid event or topic name.
        """
        self._state().hub.publish(topic, event, exclude_client_id=exclude_client_id,
                                  flush=flush)

    def join(self, topic: str, uid: t.Any, *, client_id: str | None = None) -> None:
        """Put every client of ``uid`` now connected (or the one ``client_id``) in
        ``topic`` without asking a join handler; each gets ``chsk/joined`` and rejoins by
        itself after a reconnect. Clients that connect later are not joined."""
        self._state().hub.join(topic, uid, client_id)

    def leave(self, topic: str, uid: t.Any, *, client_id: str | None = None) -> None:
        """Take every client of ``uid`` (or the one ``client_id``) out of ``topic``; each
        gets ``chsk/left`` with reason ``"removed"`` and does not rejoin by itself."""
        self._state().hub.leave(topic, uid, client_id)

    def members(self, topic: str) -> frozenset[t.Any]:
        """The users in ``topic`` now (on every process, with the Redis backplane)."""
        return self._state().hub.members(topic)

    @property
    def connected_uids(self) -> ConnectedUids:
        """Connected users, as frozensets ``.ws``, ``.ajax`` and ``.any``."""
        return self._state().hub.connected_uids

    def clients_of(self, uid: t.Any) -> dict[str, list[str]]:
        """The client ids of ``uid`` by transport: ``{"ws": [...], "ajax": [...]}``."""
        return self._state().hub.clients_of(uid)

    def call(self, uid: t.Any, event: t.Any, *, client_id: str,
             timeout: float | None = None) -> t.Any:
        """Ask one client of ``uid`` (the tab ``client_id``) and wait for its answer: the
        value its answer handler returned (sente.js ``chsk.answer``, the Python client's
        ``@client.answer``). Usable from handlers, views, greenlets and other threads.

        The request is a push to that client, so it travels in order with the pushes made
        before it and survives a cut connection that comes back within its grace window.

        :param timeout: seconds to wait (default: the ``reply_timeout`` option, 20 s).
        :raises CallTimeout: no answer in time.
        :raises ClientGone: at once when the client is not connected, closes its
            connection itself, is kicked, or its grace window ends without it returning.
        :raises NoAnswerHandler: the client has no handler for ``event``'s id.
        :raises ClientCallError: the client's handler raised (its message).
        :raises CallsUnsupported: the client speaks protocol 1 or 2.
        :raises BackplaneError: the shared backplane cannot be reached.
        """
        state = self._state()
        return state.hub.call(uid, event, client_id=client_id,
                              timeout=state.options.reply_timeout if timeout is None
                              else timeout)

    def call_all(self, uid: t.Any, event: t.Any, *,
                 timeout: float | None = None) -> dict[str, t.Any]:
        """Ask every client (tab, device) of ``uid`` at once; returns ``{client_id: value
        or the CallError it ended with}`` once all are settled, at most ``timeout`` seconds
        later (default ``reply_timeout``). No client connected: ``{}``."""
        state = self._state()
        return state.hub.call_all(uid, event, timeout=state.options.reply_timeout
                                  if timeout is None else timeout)

    def kick(self, uid: t.Any, reason: str = "kicked") -> None:
        """Close every connection of ``uid``; its clients do not reconnect on their own."""
        self._state().hub.kick(uid, reason)

    def receive(self, timeout: float | None = None) -> EventMsg | None:
        """The next event that no handler took, or None after ``timeout`` seconds."""
        return self._state().router.receive(timeout)

    def test_client(self, app: Flask | None = None, **kwargs: t.Any) -> t.Any:
        """An in-process client for testing handlers; see
        :class:`flask_sente.testing.SenteTestClient` for the keyword arguments."""
        from .testing import SenteTestClient

        return SenteTestClient(self._app(app), **kwargs)

    def close(self, app: Flask | None = None) -> None:
        """Close every connection of the app (WebSocket 1001) and stop its greenlets."""
        self._state(app).restart()

    def metrics_view(self) -> Response:
        """The Prometheus scrape of the current app, to mount where you like:
        ``app.add_url_rule("/metrics", view_func=sente.metrics_view)`` (a 404 saying so
        while the ``metrics`` option is off)."""
        return metrics_view()

    def csrf_token(self) -> str:
        """The CSRF token clients must send; stored in the Flask session on first use.

        With Flask-WTF's CSRFProtect active, its token is used instead.
        """
        if "csrf" in current_app.extensions and self._state().options.csrf is True:
            from flask_wtf.csrf import generate_csrf
            return t.cast(str, generate_csrf())
        token = session.get(CSRF_SESSION_KEY)
        if token is None:
            token = session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
        return t.cast(str, token)

    def script_tag(self) -> Markup:
        """``<meta>`` with the CSRF token plus the ``<script>`` loading sente.js.

        In a template: ``{{ sente_script() }}``; the page then calls ``Sente.connect()``.
        """
        state = self._state()
        src = state.options.url.rstrip("/") + "/sente.js?v=" + script_version()
        token = "" if state.options.csrf is False else self.csrf_token()
        return Markup(
            f'<meta name="sente-csrf-token" content="{escape(token)}">'
            f'<meta name="sente-url" content="{escape(state.options.url)}">'
            f'<script src="{escape(src)}"></script>'
        )

    def _state(self, app: Flask | None = None) -> AppState:
        app = self._app(app)
        state = app.extensions.get("sente")
        if state is None or state.sente is not self:
            raise NotInitializedError(
                "this Sente object is not initialised for the current app; call "
                "sente.init_app(app) first"
            )
        return t.cast(AppState, state)

    def _app(self, app: Flask | None = None) -> Flask:
        if app is None:
            if has_app_context():
                app = t.cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
            elif len(self._apps) == 1:
                app = next(iter(self._apps))
            else:
                raise NotInitializedError(
                    "no app to use: call this inside an app context (with app.app_context()) "
                    "or initialise this Sente object for exactly one app"
                )
        return app


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller_outside_package() -> int:
    """The ``stacklevel`` (for a ``warnings.warn`` in the calling function) of the nearest
    frame outside flask_sente: the user's ``Sente(app)`` or ``init_app`` line."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level
