"""The blueprint: one route, three request kinds, plus ``sente.js``.

* ``GET <url>`` with WebSocket upgrade headers -> WebSocket (the server's handler offers the
  upgrade; we accept it only after every check passed, so a refused client reads a plain
  400/401/403, never a 101 and then a close);
* ``GET <url>`` -> Ajax handshake or long-poll;
* ``POST <url>`` -> one Ajax event, answered with its reply or an ack;
* ``GET <url>/sente.js`` -> the browser client (``<url>/sente.d.ts``: its TypeScript
  declarations).

This module translates Flask's request into hub calls, after ``admission.admit`` (the
checks, in one pipeline) let the request in. An Ajax request is then parsed and answered by
``ajax`` (the same pipeline the fast path in front of Flask uses); the answer becomes a
Flask ``Response`` here. The WebSocket upgrade and the ``new-ws-ticket`` answer stay here.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import typing as t

from flask import Blueprint, Flask, Request, Response, current_app, request, send_file, session
from flask.globals import request_ctx

from . import ajax
from .admission import admit, handshake_data
from .admission import text_response as _text
from .messages import RequestInfo
from .protocol.sente_wire import SENTE_DIALECT
from .transports.base import STOP_CALLBACKS_ENVIRON_KEY, UPGRADE_ENVIRON_KEY

if t.TYPE_CHECKING:  # pragma: no cover
    from .metrics import PrometheusMetrics
    from .state import AppState

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")


def make_blueprint(url: str, sente_url: str | None = None) -> Blueprint:
    bp = Blueprint("sente", __name__)
    bp.add_url_rule(url, "chsk", _chsk, methods=["GET", "POST"])
    if sente_url is not None:  # unmodified Sente clients: their own wire, EDN
        bp.add_url_rule(sente_url, "chsk_sente", _chsk_sente, methods=["GET", "POST"])
    bp.add_url_rule(url.rstrip("/") + "/sente.js", "script", _script)
    bp.add_url_rule(url.rstrip("/") + "/sente.d.ts", "script_types", _script_types)
    bp.add_url_rule(url.rstrip("/") + "/health", "health", _health)
    return bp


def _health() -> Response:
    """Readiness, for load balancers and probes: 200 while this worker takes new clients;
    503 while it drains (it is stopping: send them elsewhere) or its backplane is down."""
    state = _state()
    draining, backplane_up = state.hub.draining, state.hub.healthy
    ready = backplane_up and not draining
    body = {"status": "ready" if ready else "draining" if draining else "backplane-down",
            "accepting": not draining,
            "draining": draining,
            "backplane": "up" if backplane_up else "down",
            "kind": _backplane_kind(state.options.backplane)}
    resp = Response(json.dumps(body), mimetype="application/json")
    resp.status_code = 200 if ready else 503
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _backplane_kind(backplane: object) -> str:
    """What ``/chsk/health`` says the backplane is: in memory, Redis (a URL), or the app's
    own object."""
    return "memory" if backplane is None else "redis" if isinstance(backplane, str) else "custom"


def metrics_view() -> Response:
    """Prometheus's scrape of the current app (``Sente.metrics_view`` mounts it)."""
    state = _state()
    if not state.metrics.enabled:
        return _text(404, "Metrics are off: start Sente with metrics=True (SENTE_METRICS)")
    body, content_type = t.cast("PrometheusMetrics", state.metrics).exposition(state.hub)
    resp = Response(body, content_type=content_type)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def script_version() -> str:
    """A short content hash of sente.js, used to bust caches in the script tag's URL."""
    with open(os.path.join(STATIC_DIR, "sente.js"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def _script() -> Response:
    return _static("sente.js", "text/javascript")


def _script_types() -> Response:
    return _static("sente.d.ts", "text/plain")


def _static(name: str, mimetype: str) -> Response:
    """A file of the client, revalidated by ETag; immutable for a year when versioned (?v=)."""
    resp = send_file(os.path.join(STATIC_DIR, name), mimetype=mimetype,
                     max_age=0 if "v" not in request.args else 365 * 24 * 3600,
                     conditional=True, etag=True)
    if "v" in request.args:
        resp.cache_control.immutable = True
    resp.cache_control.public = True
    return resp


def _state() -> AppState:
    return t.cast("AppState", current_app.extensions["sente"])


def _chsk_sente() -> Response:
    """The channel of Sente's own clients (``sente_url``): the same app, users, pushes
    and handlers, spoken in Sente's wire (``protocol/sente_wire.py``)."""
    return _chsk(SENTE_DIALECT)


def _chsk(dialect: str | None = None) -> Response:
    state = _state()
    # The request object itself: each use of the ``request`` proxy is a context lookup.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    stop_callbacks = req.environ.get(STOP_CALLBACKS_ENVIRON_KEY)
    if stop_callbacks is not None:
        stop_callbacks.add(state.shutdown)
    if not state.secret_checked:
        state.check_secret(current_app.secret_key)
    admitted = admit(state, dialect=dialect is not None)
    if isinstance(admitted, Response):
        state.metrics.rejected(getattr(admitted, "reason", "unauthorized"))
        return admitted
    uid, client_id = admitted.uid, admitted.client_id
    if req.method == "POST":
        return _post(state, req, uid, client_id, dialect)
    if not state.hub.healthy:  # open WebSockets go on; new handshakes and polls wait
        return _render(ajax.unavailable(state.metrics))
    upgrade = req.environ.get(UPGRADE_ENVIRON_KEY)
    if upgrade is None and "new-ws-ticket" in req.args:
        # Every check passed with the token in a header: a ticket for the WebSocket URL.
        return _render(ajax.text(200, state.ws_tickets.issue(client_id,
                                                              current_app.secret_key)))
    info = request_snapshot()
    if upgrade is not None:
        data = handshake_data(state, uid, client_id)
        ws = upgrade.accept(max_message_size=state.options.max_message_size)
        serve = functools.partial(state.hub.serve_websocket, ws, uid, client_id, info, data,
                                  version=admitted.version, positions=admitted.positions,
                                  dialect=dialect)
        defer = getattr(upgrade, "serve_after_response", None)
        if defer is not None:
            defer(serve)  # once this view has returned and Flask has released the request
        else:
            serve()
        # Discarded by the handler (the 101 went out already); a content type given up
        # front spares werkzeug a header lookup that raises when it misses.
        return Response(status=200, content_type="text/plain")
    if req.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
        return _text(400, "This server cannot upgrade to WebSocket; run the app with "
                          "flask_sente.run() or gunicorn -k flask_sente.worker.SenteWorker "
                          "(clients fall back to Ajax)")
    return _render(ajax.answer_get(
        state, ajax.parse(req.environ, req.args), uid, client_id, info,
        version=admitted.version, positions=admitted.positions,
        handshake_data=lambda: handshake_data(state, uid, client_id),
        with_key=state.options.ajax_fast_path and dialect is None, dialect=dialect))


def _post(state: AppState, req: Request, uid: t.Any, client_id: str,
          dialect: str | None) -> Response:
    parsed = ajax.parse(req.environ, req.args)
    packer = state.packer if dialect is None else (
        state.hub.wire_of(dialect=dialect).packer or state.packer)
    body = ajax.read_body(parsed, req.stream.read, limit=state.options.max_message_size,
                          binary=packer.binary, form=lambda: req.form)
    if isinstance(body, tuple):  # refused
        return _render(body)
    return _render(ajax.answer_post(state, parsed, uid, client_id, request_snapshot(), body,
                                    with_key=state.options.ajax_fast_path and dialect is None,
                                    dialect=dialect))


def _render(answer: ajax.Answer) -> Response:
    """An answer of the Ajax pipeline as Flask's response (which adds Content-Length)."""
    status, headers, body = answer
    return Response(body, status=status, headers=headers)


def handshake_data_in(app: Flask, state: AppState, uid: t.Any, client_id: str) -> t.Any:
    """The ``handshake_data`` hook's answer outside a request (``fastpath``): in the app's
    context, as everywhere else."""
    with app.app_context():
        return handshake_data(state, uid, client_id)


def request_snapshot() -> RequestInfo:
    """A lazy :class:`RequestInfo` of the current request (handlers see it as ``msg.request``)."""
    # The proxies' real objects: the snapshot outlives the request context.
    real_request = request._get_current_object()  # type: ignore[attr-defined]
    held = _session_unmarked()
    return LazyRequestInfo(request.environ, type(real_request), lambda: held)


def _session_unmarked() -> t.Any:
    """The request's session object, taken without marking it accessed.

    Flask (3.1.3 on) marks the session accessed whenever the ``session`` proxy is touched,
    and then adds ``Vary: Cookie`` to the response — through Werkzeug's header-set
    machinery, a fifth of a WebSocket handshake's time (``python -m bench.profile W5``).
    Keeping the object for a handler that may read ``msg.request.session`` later is not
    reading it; whatever does read the session (the default ``user_id``, CSRF, a hook)
    still goes through the proxy and marks it. The responses here are ``no-store`` (or a
    101), so no cache depends on the header either way.
    """
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    held = ctx.__dict__.get("_session")
    if held is not None:
        return held
    return session._get_current_object()  # type: ignore[attr-defined]


class LazyRequestInfo(RequestInfo):
    """A :class:`RequestInfo` filled in on first use from the WSGI environ and the session
    of its request (``load_session()`` gives it), which it keeps until then.

    Most connections never read ``msg.request``, and building the snapshot (the URL above
    all) cost about as much as the rest of a WebSocket handshake's bookkeeping.
    """

    def __init__(self, environ: dict[str, t.Any], request_class: type[Request],
                 load_session: t.Callable[[], t.Any]) -> None:  # fields come later
        object.__setattr__(self, "_source", (environ, request_class, load_session))

    def _values(self) -> dict[str, t.Any]:
        values: dict[str, t.Any] | None = self.__dict__.get("_loaded")
        if values is None:
            environ, request_class, load_session = self.__dict__["_source"]
            req = request_class(environ, shallow=True)  # reads no body, caches nothing
            values = {
                "method": req.method,
                "path": req.path,
                "url": req.url,
                "remote_addr": req.remote_addr,
                "headers": dict(req.headers),
                "cookies": dict(req.cookies),
                "args": req.args.to_dict(),
                "session": dict(load_session() or {}),
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
    setattr(LazyRequestInfo, _name,
            property(lambda self, _n=_name: self._values()[_n]))  # type: ignore[misc]
del _name
