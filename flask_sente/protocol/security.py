"""Pure security checks: origin allow-list and CSRF token comparison.

The server decides *which* values to compare (from the request and session); this module
only decides whether they pass, so the rules can be tested as truth tables.
"""
from __future__ import annotations

import hmac
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
