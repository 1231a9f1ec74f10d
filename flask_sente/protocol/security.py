"""Pure security checks: origin allow-list, CSRF token comparison, WebSocket tickets.

The server decides *which* values to compare (from the request and session); this module
only decides whether they pass, so the rules can be tested as truth tables.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import typing as t
from urllib.parse import urlsplit


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, default ports dropped."""
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(
    allowed: t.Literal["*"] | t.Collection[str] | None,
    origin: str | None,
    own_origin: str,
) -> bool:
    """Whether a request with this ``Origin`` header may connect.

    :param allowed: None for same-origin only (the default), ``"*"`` for any origin, or a
        collection of origins such as ``"https://example.com"``.
    :param origin: the request's Origin header. Browsers send it on every WebSocket
        handshake and cross-origin request; a request without it is not from a foreign page
        (or not from a browser at all) and passes.
    :param own_origin: the origin the app is served from (``request.host_url``).
    """
    if origin is None or allowed == "*":
        return True
    try:
        candidate = normalize_origin(origin)
    except ValueError:
        return False
    if allowed is None:
        return candidate == normalize_origin(own_origin)
    return any(candidate == normalize_origin(o) for o in allowed)


def csrf_token_valid(expected: str | None, supplied: str | None) -> bool:
    """Constant-time comparison; a missing expected or supplied token fails (fail closed)."""
    if not expected or not supplied:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), supplied.encode("utf-8"))


#: Seconds a WebSocket ticket stays valid: enough for the upgrade that follows its fetch.
WS_TICKET_TTL = 30.0


class WsTickets:
    """Short-lived, single-use tickets that stand for the CSRF token in a WebSocket URL.

    Browsers cannot set headers on a WebSocket upgrade, so the token used to travel in the
    URL, and from there into every access log. Instead the client fetches a ticket with an
    ordinary request carrying the ``X-CSRF-Token`` header, and puts the ticket in the URL.

    A ticket is ``expiry.nonce.signature``: an HMAC over the client id, expiry and nonce,
    keyed with the app's secret key (so any worker of the app accepts it) or, without one, a
    random key of this process. It is valid for :data:`WS_TICKET_TTL` seconds, for the
    client id it was issued to, and once per process (a ticket read from a log is worthless
    there; a replay to another worker needs the victim's cookies within the TTL).
    """

    def __init__(self, clock: t.Callable[[], float], ttl: float = WS_TICKET_TTL) -> None:
        """``clock``: wall-clock seconds (``time.time``; expiries are compared across
        workers, so not a monotonic clock)."""
        self.ttl = ttl
        self._clock = clock
        self._own_key = secrets.token_bytes(32)
        #: nonce -> expiry of tickets already used (pruned as they expire)
        self._used: dict[str, float] = {}

    def _key(self, secret: t.Any) -> bytes:
        if not secret:
            return self._own_key
        raw = secret if isinstance(secret, bytes) else str(secret).encode("utf-8")
        return hashlib.sha256(b"flask_sente.ws-ticket\0" + raw).digest()

    def _sign(self, secret: t.Any, client_id: str, expiry: str, nonce: str) -> str:
        mac = hmac.new(self._key(secret), f"{client_id}\0{expiry}\0{nonce}".encode(),
                       hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode("ascii")

    def issue(self, client_id: str, secret: t.Any) -> str:
        expiry = str(int(self._clock() + self.ttl))
        nonce = secrets.token_urlsafe(12)
        return f"{expiry}.{nonce}.{self._sign(secret, client_id, expiry, nonce)}"

    def redeem(self, ticket: str | None, client_id: str, secret: t.Any) -> bool:
        """True once for a valid ticket of this client id; False for anything else."""
        if not ticket or len(ticket) > 200 or ticket.count(".") != 2:
            return False
        expiry, nonce, signature = ticket.split(".")
        if not hmac.compare_digest(signature.encode("ascii", "replace"),
                                   self._sign(secret, client_id, expiry, nonce).encode("ascii")):
            return False
        now = self._clock()
        try:
            if int(expiry) < now:
                return False
        except ValueError:
            return False
        if nonce in self._used:
            return False
        if len(self._used) > 1000:
            self._used = {n: e for n, e in self._used.items() if e >= now}
        self._used[nonce] = float(expiry)
        return True
