"""The interfaces the rest of flask_sente uses to talk to a transport.

:class:`WebSocket` is everything the hub needs from a server-side WebSocket. The only
implementation today is :mod:`flask_sente.transports.websocket` (built on gevent-websocket,
the one module that imports it); replacing the backend means writing one new module with
this shape and an ``UPGRADE_ENVIRON_KEY`` entry in the WSGI environ.
"""
from __future__ import annotations

import typing as t

#: WSGI environ key under which the server puts a :class:`WebSocketUpgrade` when the request
#: is a well-formed WebSocket upgrade. The app decides: call ``accept()`` to upgrade, or
#: return any normal HTTP response (401, 403, ...) to refuse.
UPGRADE_ENVIRON_KEY = "flask_sente.websocket_upgrade"

#: WSGI environ key under which the server offers a set of callables it calls, each on a
#: greenlet of its own, when it starts stopping (it has stopped accepting). Each gets one
#: argument, the seconds its app has to let handlers in flight finish and reply; it then
#: closes the app's connections (parked long-polls are told to reconnect, WebSockets get
#: 1001) and returns. The app adds its hub's drain, so a stop never kills a handler
#: mid-call without need, nor a parked poll with a 500.
STOP_CALLBACKS_ENVIRON_KEY = "flask_sente.stop_callbacks"

#: Results of the optional fast path ``send_nowait(message)`` a WebSocket may offer (the hub
#: uses it when present; without it every message goes through ``send`` on a writer
#: greenlet). ``send_nowait`` never waits, so it may run in the event loop itself:
#: SENT - the whole frame went to the kernel;
#: PARTIAL - part of it did and the socket holds the rest: a greenlet must call ``flush()``;
#: BUSY - nothing was written (another write is in progress): use ``send`` instead.
SENT, PARTIAL, BUSY = 0, 1, 2


@t.runtime_checkable
class WebSocket(t.Protocol):
    """A server-side WebSocket, safe to use from several greenlets.

    Writes are serialized; ``receive`` is meant for one reader greenlet at a time.
    """

    @property
    def closed(self) -> bool:
        """True once a close frame was sent or received, or the socket failed."""

    @property
    def close_code(self) -> int | None:
        """The close code received from (or sent to) the peer; 1006 if it just vanished."""

    @property
    def close_reason(self) -> str:
        """The close reason text that came with ``close_code``."""

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next whole message: ``str`` for text frames, ``bytes`` for binary.

        Returns None if ``timeout`` seconds pass first (no data is lost: a partly read frame
        is kept for the next call). Raises :class:`~flask_sente.exceptions.ConnectionClosed`
        (with ``code`` and ``reason``) once the socket is closed, including when the peer
        broke the protocol (1002), sent invalid UTF-8 (1007) or too big a message (1009) —
        the socket answers those with the matching close frame itself.
        """

    def send(self, message: str | bytes) -> None:
        """Send one message (text frame for ``str``, binary for ``bytes``).

        Raises :class:`~flask_sente.exceptions.ConnectionClosed` if the socket is closed.
        """

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame with this code and reason and shut the socket. Idempotent."""


@t.runtime_checkable
class WebSocketUpgrade(t.Protocol):
    """Offered in ``environ[UPGRADE_ENVIRON_KEY]`` for a valid upgrade request."""

    def accept(self, *, max_message_size: int = 1 << 20) -> WebSocket:
        """Send the 101 response and return the socket. Call at most once."""

    # Optional: ``serve_after_response(fn)`` - run ``fn()`` on the request's greenlet once
    # the WSGI app has returned (its framework has released the request), then close the
    # socket. Without it, the app serves the socket inside its view.
