"""The blueprint: one route, three request kinds, plus ``sente.js``.

* ``GET <url>`` with WebSocket upgrade headers -> WebSocket (the server's handler offers the
  upgrade; we accept it only after every check passed, so a refused client reads a plain
  400/401/403, never a 101 and then a close);
* ``GET <url>`` -> Ajax handshake or long-poll;
* ``POST <url>`` -> one Ajax event, answered with its reply or an ack;
* ``GET <url>/sente.js`` -> the browser client.

This module translates Flask's request into hub calls; the security pipeline runs here
because it needs the session: client-id -> protocol/packer -> CSRF -> origin -> authorize.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import typing as t

from flask import Blueprint, Request, Response, current_app, request, send_file, session

from .exceptions import RemoteProtocolError
from .connections import RequestInfo
from .protocol import PROTOCOL_VERSION
from .protocol.security import csrf_token_valid, origin_allowed
from .transports.base import STOP_CALLBACKS_ENVIRON_KEY, UPGRADE_ENVIRON_KEY

if t.TYPE_CHECKING:  # pragma: no cover
    from .ext import AppState

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
CSRF_SESSION_KEY = "_sente_csrf"
_CONTENT_TYPES = {False: "application/json; charset=utf-8", True: "application/msgpack"}


def make_blueprint(url: str) -> Blueprint:
    bp = Blueprint("sente", __name__)
    bp.add_url_rule(url, "chsk", _chsk, methods=["GET", "POST"])
    bp.add_url_rule(url.rstrip("/") + "/sente.js", "script", _script)
    return bp


def script_version() -> str:
    """A short content hash of sente.js, used to bust caches in the script tag's URL."""
    with open(os.path.join(STATIC_DIR, "sente.js"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def _script() -> Response:
    resp = send_file(os.path.join(STATIC_DIR, "sente.js"), mimetype="text/javascript",
                     max_age=0 if "v" not in request.args else 365 * 24 * 3600,
                     conditional=True, etag=True)
    if "v" in request.args:
        resp.cache_control.immutable = True
    resp.cache_control.public = True
    return resp


def _text(status: int, body: str) -> Response:
    return Response(body + "\n", status=status, mimetype="text/plain")


def _state() -> AppState:
    return t.cast("AppState", current_app.extensions["sente"])


def _chsk() -> Response:
    state = _state()
    opts = state.options
    stop_callbacks = request.environ.get(STOP_CALLBACKS_ENVIRON_KEY)
    if stop_callbacks is not None:
        stop_callbacks.add(state.shutdown)
    client_id = request.args.get("client-id") or (
        request.form.get("client-id") if request.method == "POST" and request.mimetype ==
        "application/x-www-form-urlencoded" else None)
    if not client_id:
        return _text(400, "Missing client-id: every request to the channel socket must carry "
                          "a client-id query parameter")
    if len(client_id) > 128:
        return _text(400, "client-id is too long (128 characters at most)")
    version = request.args.get("protocol")
    if version is not None and version != str(PROTOCOL_VERSION):
        return _text(400, f"Unsupported protocol version {version!r}: this server speaks "
                          f"version {PROTOCOL_VERSION}; update the client")
    packer_name = request.args.get("packer")
    if packer_name is not None and packer_name != state.packer.name:
        return _text(400, f"Packer mismatch: the client uses {packer_name!r}, this server "
                          f"uses {state.packer.name!r}")
    upgrade = request.environ.get(UPGRADE_ENVIRON_KEY)
    rejection = _check_csrf(state, client_id, upgrade is not None) or _check_origin(state)
    if rejection is not None:
        return rejection
    uid = state.sente._call_user_id(state, client_id)
    rejection = _check_authorized(state, uid, client_id)
    if rejection is not None:
        return rejection
    if request.method == "GET" and upgrade is None and "new-ws-ticket" in request.args:
        # Every check passed with the token in a header: a ticket for the WebSocket URL.
        resp = _text(200, state.ws_tickets.issue(client_id, current_app.secret_key))
        resp.headers["Cache-Control"] = "no-store"
        return resp

    if request.method == "POST":
        return _post(state, uid, client_id)
    info = _snapshot()
    if upgrade is not None:
        handshake_data = state.sente._call_handshake_data(state, uid, client_id)
        ws = upgrade.accept(max_message_size=opts.max_message_size)
        serve = functools.partial(state.hub.serve_websocket, ws, uid, client_id, info,
                                  handshake_data)
        defer = getattr(upgrade, "serve_after_response", None)
        if defer is not None:
            defer(serve)  # once this view has returned and Flask has released the request
        else:
            serve()
        # Discarded by the handler (the 101 went out already); a content type given up
        # front spares werkzeug a header lookup that raises when it misses.
        return Response(status=200, content_type="text/plain")
    if request.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
        return _text(400, "This server cannot upgrade to WebSocket; run the app with "
                          "flask_sente.run() or gunicorn -k flask_sente.worker.SenteWorker "
                          "(clients fall back to Ajax)")
    handshake = "handshake" in request.args or "handshake?" in request.args
    body = state.hub.ajax_get(
        uid, client_id, info, handshake=handshake,
        handshake_data=lambda: state.sente._call_handshake_data(state, uid, client_id))
    return _packed(state, body)


def _post(state: AppState, uid: t.Any, client_id: str) -> Response:
    limit = state.options.max_message_size
    if request.content_length is not None and request.content_length > limit:
        return _text(413, f"Message too big: {request.content_length} bytes, the limit is "
                          f"{limit} bytes")
    if request.mimetype == "application/x-www-form-urlencoded":
        body: str | bytes = request.form.get("ppstr", "")
    else:
        body = request.stream.read(limit + 1)
        if not state.packer.binary:
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError:
                body = b"\xff"  # fails unpacking below with a clear message
    if len(body) > limit:
        return _text(413, f"Message too big: the limit is {limit} bytes")
    try:
        answer = state.hub.ajax_post(uid, client_id, _snapshot(), body)
    except RemoteProtocolError as exc:
        return _text(exc.status, f"Bad package: {exc}")
    return _packed(state, answer)


def _packed(state: AppState, body: str | bytes) -> Response:
    resp = Response(body, mimetype=None, content_type=_CONTENT_TYPES[state.packer.binary])
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _supplied_csrf_token() -> str | None:
    environ = request.environ  # a missing header costs werkzeug an exception; not the environ
    return (request.args.get("csrf-token") or environ.get("HTTP_X_CSRF_TOKEN")
            or environ.get("HTTP_X_XSRF_TOKEN") or (
                request.form.get("csrf-token") if request.method == "POST" and
                request.mimetype == "application/x-www-form-urlencoded" else None))


def _check_csrf(state: AppState, client_id: str, upgrade: bool) -> Response | None:
    csrf = state.options.csrf
    if csrf is False:
        return None
    if upgrade and "ws-ticket" in request.args:
        # A browser's WebSocket: a single-use ticket fetched with the token in a header
        # stands for the token, which so never appears in a URL (docs/protocol.md §5).
        if state.ws_tickets.redeem(request.args.get("ws-ticket"), client_id,
                                   current_app.secret_key):
            return None
        return _text(403, "Bad CSRF token: invalid, expired or used ws-ticket")
    supplied = _supplied_csrf_token()
    if csrf is True and "csrf" in current_app.extensions:  # Flask-WTF's CSRFProtect
        from flask_wtf.csrf import ValidationError, validate_csrf  # optional dependency
        try:
            validate_csrf(supplied)
            return None
        except ValidationError:
            return _text(403, "Bad CSRF token")
    expected = csrf() if callable(csrf) else session.get(CSRF_SESSION_KEY)
    if csrf_token_valid(expected, supplied):
        return None
    return _text(403, "Bad CSRF token")


def _check_origin(state: AppState) -> Response | None:
    origin = request.environ.get("HTTP_ORIGIN")
    # The own origin from scheme and Host as sent (punycode, like browsers' Origin), not
    # host_url: that one decodes IDNs and is the dearest part of a handshake.
    if origin is None or origin_allowed(state.options.allowed_origins, origin,
                                        f"{request.scheme}://{request.host}"):
        return None
    return _text(403, f"Unauthorized origin {origin!r}: allow it with the allowed_origins "
                      f"option (SENTE_ALLOWED_ORIGINS)")


def _check_authorized(state: AppState, uid: t.Any, client_id: str) -> Response | None:
    hook = state.sente._hook(state, "authorize")
    if hook is None:
        return None
    verdict = hook(uid, client_id)
    if verdict is True or (verdict and not isinstance(verdict, (Response, tuple, str))):
        return None
    if verdict is None or verdict is False:
        return _text(401, "Unauthorized request")
    return current_app.make_response(verdict)


def _snapshot() -> RequestInfo:
    return _LazyRequestInfo(request.environ, type(request._get_current_object()),
                            session._get_current_object())


class _LazyRequestInfo(RequestInfo):
    """A :class:`RequestInfo` filled in on first use from the WSGI environ and the session
    object of its request, which it keeps until then.

    Most connections never read ``msg.request``, and building the snapshot (the URL above
    all) cost about as much as the rest of a WebSocket handshake's bookkeeping.
    """

    def __init__(self, environ: dict[str, t.Any], request_class: type[Request],
                 session_obj: t.Any) -> None:  # not the dataclass __init__: fields come later
        object.__setattr__(self, "_source", (environ, request_class, session_obj))

    def _values(self) -> dict[str, t.Any]:
        values: dict[str, t.Any] | None = self.__dict__.get("_loaded")
        if values is None:
            environ, request_class, session_obj = self.__dict__["_source"]
            req = request_class(environ, shallow=True)  # reads no body, caches nothing
            values = {
                "method": req.method,
                "path": req.path,
                "url": req.url,
                "remote_addr": req.remote_addr,
                "headers": dict(req.headers),
                "cookies": dict(req.cookies),
                "args": req.args.to_dict(),
                "session": dict(session_obj),
            }
            object.__setattr__(self, "_loaded", values)
            object.__setattr__(self, "_source", None)
        return values

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RequestInfo):
            return all(getattr(self, n) == getattr(other, n) for n in _INFO_FIELDS)
        return NotImplemented

    __hash__ = RequestInfo.__hash__

    def __repr__(self) -> str:
        return "RequestInfo(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in _INFO_FIELDS) + ")"

    def __reduce__(self) -> t.Any:
        return (RequestInfo, tuple(getattr(self, n) for n in _INFO_FIELDS))


_INFO_FIELDS = tuple(f.name for f in dataclasses.fields(RequestInfo))
for _name in _INFO_FIELDS:
    setattr(_LazyRequestInfo, _name,
            property(lambda self, _n=_name: self._values()[_n]))  # type: ignore[misc]
del _name
