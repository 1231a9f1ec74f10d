"""The one exception tree of flask_sente.

Everything the library raises derives from :class:`SenteError`, so ``except SenteError``
catches all of it. The split follows h11: :class:`LocalProtocolError` means *you* (the
caller) did something the protocol forbids; :class:`RemoteProtocolError` means the *peer*
sent something malformed, and carries the HTTP status and WebSocket close code the server
answers it with.
"""
from __future__ import annotations


class SenteError(Exception):
    """Root of every error raised by flask_sente."""


class ConfigError(SenteError, ValueError):
    """An option has a value that cannot work (say which option and why)."""


class ConfigWarning(SenteError, UserWarning):
    """A setting that is most likely a mistake but does not stop the app: a ``SENTE_*``
    key of ``app.config`` that is no option (a typo), which would otherwise be ignored
    without a word. A warning, not an error, because config also arrives from places the
    app does not fully control (``from_prefixed_env()``); ``-W error`` (or pytest's
    ``filterwarnings = error``) makes it one in a test run."""


class NotInitializedError(SenteError, RuntimeError):
    """The extension was used with an app it was never initialised for."""


class ProtocolError(SenteError):
    """Something broke the wire protocol."""


class LocalProtocolError(ProtocolError, ValueError):
    """The caller asked for something the protocol forbids (e.g. an invalid event id)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed.

    :param status: the HTTP status an Ajax request gets for it.
    :param close_code: the WebSocket close code a socket gets for it.
    """

    def __init__(self, message: str, *, status: int = 400, close_code: int = 1007) -> None:
        super().__init__(message)
        self.status = status
        self.close_code = close_code


class PackError(LocalProtocolError):
    """A value could not be packed (e.g. a type the packer does not support)."""


class ConnectionClosed(SenteError):
    """The connection is (or was, while waiting) closed.

    :param code: the WebSocket close code, when there is one.
    :param reason: a short, human-readable reason.
    """

    def __init__(self, reason: str = "closed", code: int | None = None) -> None:
        super().__init__(reason if code is None else f"{reason} (code {code})")
        self.reason = reason
        self.code = code


class ReplyTimeout(SenteError, TimeoutError):
    """No reply arrived in time (the server's reply window or the caller's timeout)."""


class ReplyError(SenteError):
    """The server answered a call with an error instead of a reply (e.g. the handler raised)."""

    def __init__(self, message: str, data: object = None) -> None:
        super().__init__(message)
        self.data = data


class JoinRefused(SenteError):
    """A topic join was refused: raised by a join handler to refuse with ``reason``, and by
    the Python client's ``join`` when the server refused (``reason`` is the server's)."""

    def __init__(self, reason: str = "forbidden") -> None:
        super().__init__(f"join refused: {reason}")
        self.reason = reason


class Rejected(ConnectionClosed):
    """The server refused the connection with an HTTP status (CSRF, origin, auth, ...)."""

    def __init__(self, status: int, body: str = "") -> None:
        super().__init__(f"rejected with HTTP {status}: {body}".strip(": "), None)
        self.status = status
        self.body = body


class CallError(SenteError):
    """A server -> client call (``sente.call``) did not get the client's value. The
    subclasses say why; ``client_id`` names the client that was asked."""

    def __init__(self, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.client_id = client_id


class CallTimeout(CallError, TimeoutError):
    """The client did not answer within the call's timeout (it is connected, or was within
    its grace window, but its answer did not arrive: its handler is slow, or the request
    was lost with the history it was in — the client was then told ``recovered: false``)."""


class ClientGone(CallError):
    """The client is not connected, closed its connection, was kicked, or its grace
    window ended without it coming back: raised at once, never after waiting out the
    timeout for a client known to be gone."""


class NoAnswerHandler(CallError):
    """The client has no answer handler for the call's event id."""


class ClientCallError(CallError):
    """The client's answer handler raised (or its promise rejected); the message is the
    client's."""


class CallsUnsupported(CallError):
    """The client speaks protocol 1 or 2, which have no server -> client calls (an older
    flask_sente client): it cannot answer."""


class BackplaneError(SenteError):
    """The shared backplane (Redis) could not be reached or refused the operation.

    The :class:`~flask_sente.emitter.Emitter` raises it so that a task can retry.
    """
