"""The Python client of a flask_sente channel socket: WebSocket with Ajax long-poll fallback.

Why it exists: services, scripts, workers and tests talk to a flask_sente server the way
``sente.js`` does in a browser — one logical connection that reconnects on its own, pushes
from the server, requests with replies — without a browser and without new dependencies.
It speaks ``docs/protocol.md`` exactly and reuses :mod:`flask_sente.protocol` for every
wire decision.

::

    from flask_sente.client import Client

    with Client("http://127.0.0.1:5000/chsk") as chsk:        # type="auto" by default
        reply = chsk.call(("todo/add", {"text": "milk"}), timeout=5)
        chsk.send(("todo/log", "hi"))
        event = chsk.receive(timeout=5)                        # ("todo/added", {...}) or None

Design, in short:

* **Standard library only** for I/O: :mod:`http.client` for Ajax,
  :mod:`flask_sente.client.websocket` (a socket around the shared RFC 6455 codec of
  :mod:`flask_sente.protocol.frames`) for WebSocket. Threads everywhere, so it works in a
  plain program and, unchanged, in a gevent-patched one (where threads are greenlets).
* **Threads**: a *connector* connects, runs the current connection's read loop (WebSocket
  frames or Ajax polls) and reconnects with backoff; a *dispatcher* runs ``on()`` handlers
  one at a time, in order, never on the socket reader; while a connection is open, one
  helper runs beside it: the keep-alive watchdog (WebSocket) or the upgrade prober (Ajax in
  auto mode). ``close()`` joins all of them.
* **Nothing happens on construction**: :meth:`Client.connect` (or ``with``) starts the
  threads, so handlers registered right after construction see the first state change and
  handshake.
* **No offline buffering**: ``call()``/``send()`` on a client that is connecting or
  reconnecting wait for the open (within their timeout); on a stopped client they raise at
  once. Calls in flight fail at once with :class:`~flask_sente.exceptions.ConnectionClosed`
  when their connection drops (Sente lets them wait for their timeout).
* **Auto mode** starts with WebSocket, falls back to Ajax when a WebSocket cannot open but
  Ajax can, and retries WebSocket every ``upgrade_retry`` seconds while on Ajax, moving back
  up when it works (Sente never moves back up). A 401/403 is a rejection, never a reason to
  fall back; a server that is down is retried, not fallen back from. A WebSocket that
  opened before does not change the rule (a proxy may start refusing upgrades mid-session),
  as in sente.js (``tests/vectors/auto_mode.json``).
* **Protocol version**: a handshake that names another protocol version stops the client
  (``last_close.reason == "protocol-mismatch"``) with an error saying so, instead of
  reconnecting in a loop.

The package, one job per module: :mod:`.core` (the :class:`Client`, a facade over the
objects below, which each get what they share — the lock, the endpoint, the dispatcher, the
calls in flight — in their constructors), :mod:`.status` (its state, link and lock),
:mod:`.connection` (the connector thread and what messages mean), :mod:`.calls` (calls,
sends and the hold on replies), :mod:`.topics` (join, leave, rejoins) and
:mod:`.topicbook` (their sans-I/O rule), :mod:`.dispatch` (handlers and ``receive()``),
:mod:`.state` (the sans-I/O state machine, twin of sente.js's), :mod:`.positions` (where
the client stands in the server's logs), :mod:`.links` and :mod:`.ajax` (one open
connection each, WebSocket or Ajax, owning its read loop), :mod:`.endpoint` (requests and
opening connections), :mod:`.pending` (the calls waiting for a reply),
:mod:`.websocket` (the client socket). sente.js has the same helpers: ``Connection``,
``Calls``, ``Topics``.
"""
from __future__ import annotations

from .answers import CallInfo as CallInfo
from .connection import JOIN_TIMEOUT as JOIN_TIMEOUT
from .core import AJAX_TIMEOUT as AJAX_TIMEOUT
from .core import DEFAULT_CALL_TIMEOUT as DEFAULT_CALL_TIMEOUT
from .core import HANDSHAKE as HANDSHAKE
from .core import STATE as STATE
from .core import Client as Client
from .core import default_backoff as default_backoff
from .links import CLOSE_WAIT as CLOSE_WAIT
from .state import AUTH_STATUSES as AUTH_STATUSES
from .state import STABLE_AFTER as STABLE_AFTER
from .state import STOP_STATUSES as STOP_STATUSES
from .state import TRANSPORT_TYPES as TRANSPORT_TYPES
from .state import ClientState as ClientState
from .state import CloseInfo as CloseInfo

__all__ = ["CallInfo", "Client", "ClientState", "CloseInfo", "default_backoff"]
