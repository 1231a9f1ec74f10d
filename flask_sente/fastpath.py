"""Ajax requests of an already admitted client, answered in front of Flask.

Every Ajax request goes through Flask: a request context, the session opened, routing, the
app's request hooks, then admission (CSRF, origin, user id, ``authorize``). For a client
that passed all of that, a later poll or posted event is what a frame is to a WebSocket:
the hub needs its client id and its body, nothing more. Yet Flask's part was about half of
the server's time per Ajax round trip (``python -m bench.profile W4``).

So a process that admits an Ajax request of a client it holds gives the client a key
(:data:`~flask_sente.protocol.wire.FAST_KEY_HEADER`), bound to the credentials it was
admitted with: the Cookie and Authorization headers and the app's own query parameters
(``views.credentials_of``). A later request that carries the key, with those byte for byte
unchanged, from no other origin, is answered here by a WSGI
middleware in front of Flask: no request context, no request hooks, no admission checks,
whose answer cannot have changed while the credentials did not. Like a WebSocket, the
client keeps the uid it was admitted with until it reconnects (``kick()`` ends it at once).

Everything else goes on to Flask, which answers it in full — refusals are only ever made
there: a handshake, a missing, wrong or stale key, other cookies (a login, a logout, a new
session), a cross-origin request (the app's CORS hooks must run), a form-encoded or
oversized post, a protocol or packer the checks would refuse, bad positions. A client of
another process (a shared backplane, no sticky sessions) has no key here and goes through
Flask too. ``ajax_fast_path=False`` sends every request through Flask.
"""
from __future__ import annotations

import http
import typing as t
import urllib.parse

from .exceptions import BackplaneError, RemoteProtocolError
from .protocol import requested_version, wire
from .protocol.security import origin_allowed
from .views import (
    CONTENT_TYPES,
    UNAVAILABLE,
    LazyRequestInfo,
    as_packed,
    credentials_of,
    handshake_data_in,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from .state import AppState

WsgiApp = t.Callable[[dict[str, t.Any], t.Callable[..., t.Any]], t.Iterable[bytes]]
#: ``(status line, body, content type, extra headers)`` of an answer made here.
Answer = tuple[str, bytes, str, list[tuple[str, str]]]

#: Query parameters that only Flask's path answers (a handshake makes the key anew).
_THROUGH_FLASK = frozenset({"handshake", "handshake?", "new-ws-ticket"})
_TEXT = "text/plain; charset=utf-8"


class AjaxFastPath:
    """WSGI middleware in front of ``app.wsgi_app`` (installed by ``init_app``)."""

    def __init__(self, wsgi_app: WsgiApp, app: Flask, path: str) -> None:
        self.wsgi_app = wsgi_app
        self._app = app
        self._path = path

    def __call__(self, environ: dict[str, t.Any],
                 start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
        key = environ.get("HTTP_X_SENTE_KEY")
        if key is not None and environ.get("PATH_INFO") == self._path:
            answer = self._answer(environ, key)
            if answer is not None:
                status, body, content_type, extra = answer
                start_response(status, [("Content-Type", content_type),
                                        ("Content-Length", str(len(body))),
                                        ("Cache-Control", "no-store"), *extra])
                return [body]
        return self.wsgi_app(environ, start_response)

    def _answer(self, environ: dict[str, t.Any], key: str) -> Answer | None:
        """The answer to a keyed request, or None: Flask answers it."""
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "POST") or "HTTP_UPGRADE" in environ:
            return None
        args = _first_values(environ.get("QUERY_STRING", ""))
        client_id = args.get("client-id")
        if not client_id or not _THROUGH_FLASK.isdisjoint(args):
            return None
        state: AppState | None = self._app.extensions.get("sente")
        if state is None or not state.options.ajax_fast_path or not _same_origin(state, environ):
            return None
        client = state.hub.keyed_client(client_id, key, credentials_of(environ, args))
        if client is None:
            return None
        version = requested_version(args.get("protocol"))
        if version is None or args.get("packer") not in (None, state.packer.name):
            return None
        positions = None
        if version >= 2 and "pos" in args:
            try:
                positions = wire.decode_positions(args["pos"])
            except RemoteProtocolError:
                return None
        app = self._app
        info = LazyRequestInfo(environ, app.request_class, lambda: _open_session(app, environ))
        if method == "POST":
            return _post(state, client.uid, client_id, info, environ)
        if not state.hub.healthy:
            return None
        uid = client.uid
        try:
            body = state.hub.ajax_get(
                uid, client_id, info, handshake=False, version=version, positions=positions,
                handshake_data=lambda: handshake_data_in(app, state, uid, client_id))
        except BackplaneError:
            state.metrics.rejected("backplane")
            answer = _text(503, UNAVAILABLE)
            return answer[:3] + ([("Retry-After", "2")],)
        return _packed(state, body)


def _post(state: AppState, uid: t.Any, client_id: str, info: LazyRequestInfo,
          environ: dict[str, t.Any]) -> Answer | None:
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return None
    limit = state.options.max_message_size
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None  # chunked or missing: Flask reads it within the limit
    if not 0 < length <= limit:
        return None
    raw = environ["wsgi.input"].read(length)
    if len(raw) < length:
        return _text(400, "Bad package: the body ended before its Content-Length")
    try:
        answer = state.hub.ajax_post(uid, client_id, info, as_packed(state, raw))
    except RemoteProtocolError as exc:
        return _text(exc.status, f"Bad package: {exc}")
    return _packed(state, answer)


def _packed(state: AppState, body: str | bytes) -> Answer:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return "200 OK", data, CONTENT_TYPES[state.packer.binary], []


def _text(status: int, message: str) -> Answer:
    return (f"{status} {http.HTTPStatus(status).phrase}", (message + "\n").encode("utf-8"),
            _TEXT, [])


def _first_values(query: str) -> dict[str, str]:
    """The query's parameters, the first value of each (as ``request.args.get`` reads).

    Our clients' queries are plain ASCII names and values, decoded here without
    ``parse_qsl``'s per-pair work; one with escapes gets the full decoding."""
    if "%" in query or "+" in query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    else:
        pairs = [(name, value) for name, _, value in
                 (part.partition("=") for part in query.split("&") if part)]
    args: dict[str, str] = {}
    for name, value in pairs:
        args.setdefault(name, value)
    return args


def _same_origin(state: AppState, environ: dict[str, t.Any]) -> bool:
    """No Origin header (not a foreign page), or exactly the app's own one and allowed.
    A cross-origin request goes through Flask: the app's CORS headers come from its hooks."""
    origin = environ.get("HTTP_ORIGIN")
    if origin is None:
        return True
    own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
    return origin == own and origin_allowed(state.options.allowed_origins, origin, own)


def _open_session(app: Flask, environ: dict[str, t.Any]) -> t.Any:
    """The session of a request answered here, opened only if a handler reads
    ``msg.request.session``."""
    return app.session_interface.open_session(app, app.request_class(environ, shallow=True))
