"""The upgrade the WSGI app decides about, and what access logs may not show.

:class:`WebSocketUpgrade` is the object ``Accepting`` (``transports.websocket``) offers to
the app in ``environ[UPGRADE_ENVIRON_KEY]``: nothing has been written to the client yet, so
the app can still refuse with an ordinary response. The redaction helpers keep the CSRF
token and the WebSocket ticket out of every access log (the handler's and gunicorn's).
This module does not import gevent-websocket.
"""
from __future__ import annotations

import re
import typing as t

from ..exceptions import LocalProtocolError
from .frames import DEFAULT_MAX_MESSAGE_SIZE, ServerWebSocket


class Accepting(t.Protocol):
    """What offers an upgrade and can complete it (``transports.websocket.Accepting``)."""

    def _accept_websocket(self, key: str, max_message_size: int | None) -> ServerWebSocket:
        ...

#: Query parameters whose values never reach a log: the CSRF token (old clients and Sente's
#: own still send it in the URL) and the WebSocket ticket standing for it.
_SECRET_PARAM = re.compile(r"(?i)((?:^|[?&;\s])(?:csrf-token|csrf_token|ws-ticket)=)[^&;\s#]*")


def has_secrets(text: str) -> bool:
    """Whether ``text`` carries a secret parameter value (what :func:`redact_secrets` hides)."""
    return _SECRET_PARAM.search(text) is not None


def redact_secrets(text: str) -> str:
    """``text`` (a request line, URI or query string) with secret parameter values
    replaced by ``[redacted]``."""
    return _SECRET_PARAM.sub(r"\1[redacted]", text)


def redacted_environ(environ: dict[str, t.Any]) -> dict[str, t.Any]:
    """A copy of ``environ`` for an access log: secrets redacted from the URI keys."""
    copy = dict(environ)
    for key in ("RAW_URI", "REQUEST_URI", "QUERY_STRING"):
        value = copy.get(key)
        if isinstance(value, str) and _SECRET_PARAM.search(value):
            copy[key] = redact_secrets(value)
    return copy


class WebSocketUpgrade:
    """Offered in ``environ[UPGRADE_ENVIRON_KEY]`` for a well-formed upgrade request.

    Nothing has been written to the client yet: the app either calls :meth:`accept` (the 101
    goes out then) or returns an ordinary response, which the client reads as such.
    """

    __slots__ = ("_handler", "_key", "_state", "websocket", "_after")

    def __init__(self, handler: Accepting, key: str) -> None:
        self._handler: Accepting | None = handler
        self._key = key
        self._state = "offered"
        self.websocket: ServerWebSocket | None = None
        self._after: t.Callable[[], t.Any] | None = None

    def accept(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> ServerWebSocket:
        """Send the 101 response and return the socket. Call at most once, before the app
        has started any other response.

        ``max_message_size`` bounds one incoming message (all its fragments), checked from
        each frame header before the payload is read; 0 or None means no limit.
        """
        if self._state != "offered" or self._handler is None:
            raise LocalProtocolError(f"cannot accept a WebSocket upgrade that is {self._state}")
        self._state = "accepted"
        self.websocket = self._handler._accept_websocket(self._key, max_message_size)
        return self.websocket

    def serve_after_response(self, fn: t.Callable[[], t.Any]) -> None:
        """After :meth:`accept`: run ``fn()`` on this request's greenlet once the WSGI app
        has returned, then close the socket as if the app had served it itself.

        By then the framework has released the request (Flask has popped its contexts and
        run its teardown functions), so a connection that lasts for hours holds neither the
        framework's request objects nor its call frames: less memory per connection.
        """
        if self.websocket is None:
            raise LocalProtocolError("serve_after_response() needs an accepted upgrade")
        self._after = fn

    def _end(self, state: str) -> None:
        if self._state == "offered":
            self._state = state
        self._handler = None
