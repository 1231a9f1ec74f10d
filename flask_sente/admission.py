"""Admission: every check a channel-socket request passes, as one pipeline.

``client-id`` -> protocol -> packer -> CSRF -> origin -> user id -> ``authorize``, in that
order, before any WebSocket upgrade — so a refused client reads a plain 400/401/403. The
views run it for every request; ``sente.test_client()`` runs the same function in a test
request context. It needs Flask's ``request`` and ``session`` (the CSRF token and the user
id live in the session), so it belongs to the extension layer.
"""
from __future__ import annotations

import dataclasses
import typing as t

from flask import Response, current_app, request, session

from .config import ANONYMOUS_UID
from .exceptions import RemoteProtocolError
from .protocol import PROTOCOL_VERSION, requested_version, wire
from .protocol.security import csrf_token_valid, origin_allowed
from .transports.base import UPGRADE_ENVIRON_KEY

if t.TYPE_CHECKING:  # pragma: no cover
    from .state import AppState

#: Session key of the CSRF token flask_sente makes when Flask-WTF is not in use.
CSRF_SESSION_KEY = "_sente_csrf"
#: Longest client id accepted.
MAX_CLIENT_ID = 128
#: Checks a caller may leave out (the in-process test client is not a browser).
SKIPPABLE = frozenset({"csrf", "origin"})


@dataclasses.dataclass(frozen=True)
class Admitted:
    """A request that passed every check."""

    uid: t.Any
    client_id: str
    #: The protocol version the client speaks (1 when it does not say).
    version: int = 1
    #: Where the client says it stands (protocol 2 ``pos``), or None.
    positions: dict[str, tuple[str, int]] | None = None


def text_response(status: int, body: str) -> Response:
    return Response(body + "\n", status=status, mimetype="text/plain")


class Refusal(Response):
    """A request refused by one of the checks; ``reason`` names which (metrics count
    refusals by it: one of a few fixed names, never anything the client sent)."""

    reason = "unauthorized"


def refuse(reason: str, status: int, body: str) -> Refusal:
    refusal = Refusal(body + "\n", status=status, mimetype="text/plain")
    refusal.reason = reason
    return refusal


def admit(state: AppState, *, skip: frozenset[str] = frozenset(),
          dialect: bool = False) -> Admitted | Response:
    """Run the pipeline on the current request; a refusal is the response to send.

    :param skip: names from :data:`SKIPPABLE` to leave out.
    :param dialect: the request came to a dialect's channel (``sente_url``): its clients
        speak one wire of their own, so the ``protocol``, ``pos`` and ``packer`` parameters
        of flask_sente's clients are not read (the app's own parameters may use the names).
    """
    # The request object itself: each use of the ``request`` proxy is a context lookup.
    req = request._get_current_object()  # type: ignore[attr-defined]
    args = req.args
    client_id = query_arg(args, "client-id") or (
        req.form.get("client-id") if req.method == "POST" and req.mimetype ==
        "application/x-www-form-urlencoded" else None)
    if not client_id:
        return refuse("client-id", 400, "Missing client-id: every request to the channel socket "
                      "must carry a client-id query parameter")
    if len(client_id) > MAX_CLIENT_ID:
        return refuse("client-id", 400, f"client-id is too long ({MAX_CLIENT_ID} characters at "
                      "most)")
    if client_id[0] == "!":  # marks an excluded client in a shared log's entries
        return refuse("client-id", 400, "client-id must not start with '!'")
    if dialect:
        return _admit_rest(state, req, client_id, skip, 1, None)
    version_text = query_arg(args, "protocol")
    version = requested_version(version_text)
    if version is None:
        return refuse("protocol", 400, f"Unsupported protocol version {version_text!r}: this "
                      f"server speaks versions 1 to {PROTOCOL_VERSION}; update "
                      "the client")
    positions = None
    pos_text = query_arg(args, "pos")
    if pos_text is not None and version >= 2:
        try:
            positions = wire.decode_positions(pos_text)
        except RemoteProtocolError as exc:
            return refuse("positions", 400, f"Bad positions: {exc}")
    packer_name = query_arg(args, "packer")
    if packer_name is not None and packer_name != state.packer.name:
        return refuse("packer", 400, f"Packer mismatch: the client uses {packer_name!r}, this "
                      f"server uses {state.packer.name!r}")
    return _admit_rest(state, req, client_id, skip, version, positions)


def _admit_rest(state: AppState, req: t.Any, client_id: str, skip: frozenset[str],
                version: int, positions: dict[str, tuple[str, int]] | None
                ) -> Admitted | Response:
    """CSRF, origin, the uid and ``authorize``: the checks every channel makes."""
    upgrade = UPGRADE_ENVIRON_KEY in req.environ
    refusal = ((None if "csrf" in skip else check_csrf(state, client_id, upgrade))
               or (None if "origin" in skip else check_origin(state)))
    if refusal is not None:
        return refusal
    uid = user_id(state, client_id)
    refusal = check_authorized(state, uid, client_id)
    if refusal is not None:
        return refusal
    return Admitted(uid, client_id, version, positions)


def query_arg(args: t.Mapping[str, str], name: str) -> str | None:
    """``args.get(name)`` without its cost for a missing name: Werkzeug's ``MultiDict``
    builds a ``BadRequestKeyError`` (an HTTP exception) to catch it, which was ~4 % of a
    connect storm's server time."""
    return args[name] if name in args else None


def user_id(state: AppState, client_id: str) -> t.Any:
    """The uid of the connecting client: the ``user_id`` hook, else ``session["uid"]``;
    None becomes :data:`~flask_sente.config.ANONYMOUS_UID`."""
    hook = state.hook("user_id")
    uid = hook(client_id) if hook is not None else session.get("uid")
    return ANONYMOUS_UID if uid is None else uid


def handshake_data(state: AppState, uid: t.Any, client_id: str) -> t.Any:
    """What the ``handshake_data`` hook gives this client (None without one)."""
    hook = state.hook("handshake_data")
    return hook(uid, client_id) if hook is not None else None


def supplied_csrf_token() -> str | None:
    environ = request.environ  # a missing header costs werkzeug an exception; not the environ
    return (query_arg(request.args, "csrf-token") or environ.get("HTTP_X_CSRF_TOKEN")
            or environ.get("HTTP_X_XSRF_TOKEN") or (
                request.form.get("csrf-token") if request.method == "POST" and
                request.mimetype == "application/x-www-form-urlencoded" else None))


def check_csrf(state: AppState, client_id: str, upgrade: bool) -> Response | None:
    csrf = state.options.csrf
    if csrf is False:
        return None
    if upgrade and "ws-ticket" in request.args:
        # A browser's WebSocket: a single-use ticket fetched with the token in a header
        # stands for the token, which so never appears in a URL (docs/protocol.md §5).
        if state.ws_tickets.redeem(request.args.get("ws-ticket"), client_id,
                                   current_app.secret_key):
            return None
        return refuse("csrf", 403, "Bad CSRF token: invalid, expired or used ws-ticket")
    supplied = supplied_csrf_token()
    if csrf is True and "csrf" in current_app.extensions:  # Flask-WTF's CSRFProtect
        from flask_wtf.csrf import ValidationError, validate_csrf  # optional dependency
        try:
            validate_csrf(supplied)
            return None
        except ValidationError:
            return refuse("csrf", 403, "Bad CSRF token")
    expected = csrf() if callable(csrf) else session.get(CSRF_SESSION_KEY)
    if csrf_token_valid(expected, supplied):
        return None
    return refuse("csrf", 403, "Bad CSRF token")


def check_origin(state: AppState) -> Response | None:
    origin = request.environ.get("HTTP_ORIGIN")
    # The own origin from scheme and Host as sent (punycode, like browsers' Origin), not
    # host_url: that one decodes IDNs and is the dearest part of a handshake.
    if origin is None or origin_allowed(state.options.allowed_origins, origin,
                                        f"{request.scheme}://{request.host}"):
        return None
    return refuse("origin", 403, f"Unauthorized origin {origin!r}: allow it with the "
                  f"allowed_origins option (SENTE_ALLOWED_ORIGINS)")


def check_authorized(state: AppState, uid: t.Any, client_id: str) -> Response | None:
    hook = state.hook("authorize")
    if hook is None:
        return None
    verdict = hook(uid, client_id)
    if verdict is True or (verdict and not isinstance(verdict, (Response, tuple, str))):
        return None
    if verdict is None or verdict is False:
        return refuse("unauthorized", 401, "Unauthorized request")
    return current_app.make_response(verdict)
