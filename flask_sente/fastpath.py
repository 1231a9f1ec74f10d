"""Requests on the channel URL answered with less of Flask than a route would take.

Two kinds, both in a WSGI middleware in front of ``app.wsgi_app`` (installed by
``init_app``):

**Ajax requests of an already admitted client.** Every Ajax request goes through Flask: a
request context, the session opened, routing, the app's request hooks, then admission
(CSRF, origin, user id, ``authorize``). For a client that passed all of that, a later poll
or posted event is what a frame is to a WebSocket: the hub needs its client id and its
body, nothing more. Yet Flask's part was about half of the server's time per Ajax round
trip (``python -m bench.profile W4``).

So a process that admits an Ajax request of a client it holds gives the client a key
(:data:`~flask_sente.protocol.wire.FAST_KEY_HEADER`), bound to the credentials it was
admitted with: the Cookie and Authorization headers and the app's own query parameters
(``ajax.AjaxRequest.credentials``). A later request that carries the key, with those byte
for byte unchanged, from no other origin, is answered here: no request context, no request
hooks, no admission checks, whose answer cannot have changed while the credentials did
not. Like a WebSocket, the client keeps the uid it was admitted with until it reconnects
(``kick()`` ends it at once). The answer is the Ajax pipeline's (``ajax``: the request
parsed once, the hub's answer and its headers), the same as in Flask, rendered as WSGI.

Everything else goes on to Flask, which answers it in full — refusals are only ever made
there: a handshake, a missing, wrong or stale key, other cookies (a login, a logout, a new
session), a cross-origin request (the app's CORS hooks must run), a form-encoded,
oversized, empty or chunked post (its headers read as Werkzeug reads them), a protocol or
packer the checks would refuse, bad positions. A client of another process (a shared
backplane, no sticky sessions) has no key here and goes through Flask too.
``ajax_fast_path=False`` sends every Ajax request through Flask.

**WebSocket upgrades.** An upgrade cannot reuse an earlier admission, so it gets all of
Flask — request context, session, ``before_request``/``after_request``/teardown hooks,
error handlers, admission — except the one answer known in advance: which rule the URL
routes to. Flask's ``wsgi_app`` is run here with a request context whose
``match_request`` (Flask's hook for exactly this) sets that rule instead of asking the URL
map, and the response of an accepted upgrade is started without building its headers (the
101 went out already; the server discards it). Routing and those headers were ~8 % of a
connect storm's server time (``python -m bench.profile W5``). Taken only where it is the
same as the full path:
the middleware wraps Flask's own ``wsgi_app`` directly (nothing the app put in between is
skipped), the app class does not override ``wsgi_app`` or ``request_context``, no
``SERVER_NAME``, host or subdomain matching, the channel URL is the path of one rule only,
and the server hid the upgrade from routing (a GET whose ``Connection`` header has no
``upgrade`` token, as ``SenteHandler`` leaves it). The app's own URL matching (an
overridden ``create_url_adapter``'s adapter) is not consulted for these requests.
"""
from __future__ import annotations

import http
import sys
import typing as t

from flask import Flask
from flask.ctx import RequestContext
from werkzeug.wsgi import ClosingIterator

from . import ajax
from .exceptions import RemoteProtocolError
from .protocol import requested_version, wire
from .protocol.security import origin_allowed
from .transports.base import UPGRADE_ENVIRON_KEY
from .views import LazyRequestInfo, handshake_data_in

if t.TYPE_CHECKING:  # pragma: no cover
    from werkzeug.routing import Rule

    from .state import AppState

WsgiApp = t.Callable[[dict[str, t.Any], t.Callable[..., t.Any]], t.Iterable[bytes]]

#: Query parameters that only Flask's path answers (a handshake makes the key anew).
_THROUGH_FLASK = frozenset({"handshake", "handshake?", "new-ws-ticket"})
#: WSGI status lines.
_STATUS_LINES = {int(status): f"{status.value} {status.phrase}" for status in http.HTTPStatus}
#: Kept for its agreement test with Werkzeug's ``request.args``.
_first_values = ajax.query_args


class ChannelFastPath:
    """WSGI middleware in front of ``app.wsgi_app`` (installed by ``init_app``)."""

    def __init__(self, wsgi_app: WsgiApp, app: Flask, path: str) -> None:
        self.wsgi_app = wsgi_app
        self._app = app
        self._path = path
        #: The upgrade path stands in for Flask's own ``wsgi_app``, nothing else.
        self._wraps_flask = (getattr(wsgi_app, "__self__", None) is app
                             and getattr(wsgi_app, "__func__", None) is Flask.wsgi_app
                             and type(app).request_context is Flask.request_context)
        #: The channel URL's rule once known (False: the upgrade path does not apply).
        self._rule: Rule | t.Literal[False] | None = None

    def __call__(self, environ: dict[str, t.Any],
                 start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
        state: AppState | None = self._app.extensions.get("sente")
        scope = state.hub.request_scope if state is not None else None
        if scope is None:
            return self._serve(environ, start_response)
        with scope():  # the response leaves once the request's pushes are in the shared log
            return self._serve(environ, start_response)

    def _serve(self, environ: dict[str, t.Any],
               start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
        if environ.get("PATH_INFO") == self._path:
            key = environ.get("HTTP_X_SENTE_KEY")
            if key is not None:
                answer = self._answer(environ, key)
                if answer is not None:
                    status, headers, body = answer
                    headers.append(("Content-Length", str(len(body))))
                    start_response(_STATUS_LINES[status], headers)
                    return [body]
            elif UPGRADE_ENVIRON_KEY in environ and self._wraps_flask:
                rule = self._rule if self._rule is not None else self._find_rule()
                if rule and _routes_plainly(environ):
                    return self._upgrade(environ, start_response, rule)
        return self.wsgi_app(environ, start_response)

    def _find_rule(self) -> Rule | t.Literal[False]:
        """The rule the channel URL routes to, when routing could give no other answer."""
        app = self._app
        url_map = app.url_map
        rules = [rule for rule in url_map.iter_rules() if rule.rule == self._path]
        plain = (len(rules) == 1 and not rules[0].arguments and not rules[0].websocket
                 and rules[0].endpoint == "sente.chsk" and rules[0].methods is not None
                 and "GET" in rules[0].methods)
        simple_app = (not url_map.host_matching and not app.subdomain_matching
                      and not app.config.get("SERVER_NAME"))
        self._rule = rules[0] if plain and simple_app else False
        return self._rule

    def _upgrade(self, environ: dict[str, t.Any], start_response: t.Callable[..., t.Any],
                 rule: Rule) -> t.Iterable[bytes]:
        """``Flask.wsgi_app`` for an upgrade of the channel URL, its routing known.

        The same steps in the same order — push, ``full_dispatch_request`` (hooks, the view,
        error handlers, ``after_request``), ``handle_exception``, teardown on pop, the
        response closed by the server after that — so the app sees what a routed request
        would give it. Only the URL map is not asked (nor an app's own
        ``create_url_adapter`` matching). An accepted upgrade's response is started
        without its headers being built: the 101 went out, and the server discards it."""
        app = self._app
        ctx = _RoutedContext(app, environ, rule=rule)
        error: BaseException | None = None
        try:
            try:
                ctx.push()
                response = app.full_dispatch_request()
            except Exception as exc:
                error = exc
                response = app.handle_exception(exc)
            except BaseException:
                error = sys.exc_info()[1]
                raise
            upgrade = environ.get(UPGRADE_ENVIRON_KEY)
            if upgrade is not None and upgrade.websocket is not None:
                start_response(response.status, [])
                return ClosingIterator((), response.close)
            return response(environ, start_response)
        finally:
            if error is not None and app.should_ignore_error(error):
                error = None
            ctx.pop(error)

    def _answer(self, environ: dict[str, t.Any], key: str) -> ajax.Answer | None:
        """The answer to a keyed request, or None: Flask answers it."""
        request = ajax.parse(environ)
        client_id = request.client_id
        if (request.method not in ("GET", "POST") or request.upgrade is not None
                or not client_id or not _THROUGH_FLASK.isdisjoint(request.args)):
            return None
        state: AppState | None = self._app.extensions.get("sente")
        if state is None or not state.options.ajax_fast_path or not _same_origin(state, environ):
            return None
        client = state.hub.keyed_client(client_id, key, request.credentials)
        if client is None:
            return None
        protocol = _protocol(state, request)
        if protocol is None:
            return None
        app = self._app
        info = LazyRequestInfo(environ, app.request_class, lambda: _open_session(app, environ))
        uid = client.uid
        if request.method == "POST":
            return _post(state, request, uid, client_id, info, environ)
        if not state.hub.healthy:
            return None
        return ajax.answer_get(
            state, request, uid, client_id, info, version=protocol[0], positions=protocol[1],
            handshake_data=lambda: handshake_data_in(app, state, uid, client_id),
            with_key=False)


def _protocol(state: AppState, request: ajax.AjaxRequest,
              ) -> tuple[int, wire.Positions | None] | None:
    """The version and positions of a request admission would let in; None when it would
    refuse it (Flask answers)."""
    args = request.args
    version = requested_version(args.get("protocol"))
    if version is None or args.get("packer") not in (None, state.packer.name):
        return None
    if version >= 2 and "pos" in args:
        try:
            return version, wire.decode_positions(args["pos"])
        except RemoteProtocolError:
            return None
    return version, None


def _post(state: AppState, request: ajax.AjaxRequest, uid: t.Any, client_id: str,
          info: LazyRequestInfo, environ: dict[str, t.Any]) -> ajax.Answer | None:
    """A posted event's answer, or None for a form (Flask parses it) or a body without a
    plain length within the limit (Flask reads it and refuses what it must)."""
    limit = state.options.max_message_size
    length = request.content_length
    if request.form_encoded or length is None or not 0 < length <= limit:
        return None
    body = ajax.read_body(request, environ["wsgi.input"].read, limit=limit,
                          binary=state.packer.binary)
    if isinstance(body, tuple):  # refused
        return body
    return ajax.answer_post(state, request, uid, client_id, info, body, with_key=False)


def _same_origin(state: AppState, environ: dict[str, t.Any]) -> bool:
    """No Origin header (not a foreign page), or exactly the app's own one and allowed.
    A cross-origin request goes through Flask: the app's CORS headers come from its hooks."""
    origin = environ.get("HTTP_ORIGIN")
    if origin is None:
        return True
    own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
    return origin == own and origin_allowed(state.options.allowed_origins, origin, own)


def _routes_plainly(environ: dict[str, t.Any]) -> bool:
    """Whether routing would treat the upgrade as a plain GET: the server hid the
    ``Upgrade`` token from ``Connection`` (``SenteHandler.hide_upgrade_from_routing``;
    Werkzeug would otherwise refuse it for a rule without ``websocket=True``), and no
    debugger or test client keeps the context."""
    if environ.get("REQUEST_METHOD") != "GET" or "werkzeug.debug.preserve_context" in environ:
        return False
    return not any(token.strip() == "upgrade"
                   for token in environ.get("HTTP_CONNECTION", "").lower().split(","))


class _RoutedContext(RequestContext):
    """A request context whose routing is known: ``push`` sets the rule instead of asking
    the URL map (``match_request`` is the documented hook for it)."""

    def __init__(self, app: Flask, environ: dict[str, t.Any], request: t.Any = None,
                 session: t.Any = None, *, rule: Rule | None = None) -> None:
        super().__init__(app, environ, request, session)
        self._rule = rule

    def match_request(self) -> None:
        if self._rule is None:  # a copy (``copy_current_request_context``): route it
            super().match_request()
        else:
            self.request.url_rule, self.request.view_args = self._rule, {}


def _open_session(app: Flask, environ: dict[str, t.Any]) -> t.Any:
    """The session of a request answered here, opened only if a handler reads
    ``msg.request.session``."""
    return app.session_interface.open_session(app, app.request_class(environ, shallow=True))
