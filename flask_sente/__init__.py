"""flask_sente: realtime web comms for Flask on gevent, a port of Clojure's Sente.

One route (``/chsk`` by default) carries a *channel socket*: a WebSocket when it works, Ajax
long-polling when it does not, chosen by the client and invisible to the app.

=============  ===========================  ===========================
direction      WebSocket                    Ajax
=============  ===========================  ===========================
push           one frame per batch          parked GET answered early
send           a frame                      a POST
send + reply   cb_id echoed in the reply    the reply is the POST's body
=============  ===========================  ===========================

Glossary: *uid* a user id (from the ``user_id`` hook; all tabs and devices of a user share
it); *client_id* one client instance (a tab); *event* ``(event_id, data)`` with a
namespaced id such as ``"todo/add"`` (``chsk/`` is reserved); *handshake* the first message
a client gets; *grace window* how long a closed client may take to come back before its user
counts as gone.
"""
from __future__ import annotations

import importlib
import typing as t

# Names are imported on first use, so that ``flask_sente.protocol`` and
# ``flask_sente.client`` load without Flask or gevent (a plain Python program using the
# client pulls in neither).
_EXPORTS = {
    "ANONYMOUS_UID": ".config",
    "ConfigError": ".exceptions", "ConfigWarning": ".exceptions",
    "ConnectionClosed": ".exceptions",
    "CallError": ".exceptions", "CallTimeout": ".exceptions", "ClientGone": ".exceptions",
    "NoAnswerHandler": ".exceptions", "ClientCallError": ".exceptions",
    "CallsUnsupported": ".exceptions",
    "JoinRefused": ".exceptions",
    "LocalProtocolError": ".exceptions", "NotInitializedError": ".exceptions",
    "PackError": ".exceptions", "ProtocolError": ".exceptions", "Rejected": ".exceptions",
    "RemoteProtocolError": ".exceptions", "ReplyError": ".exceptions",
    "ReplyTimeout": ".exceptions", "SenteError": ".exceptions",
    "Sente": ".ext",
    "ConnectedUids": ".core.presence", "EventMsg": ".messages", "RequestInfo": ".messages",
    "JoinMsg": ".messages",
    "JsonPacker": ".protocol.packers", "MsgpackPacker": ".protocol.packers",
    "Packer": ".protocol.packers",
}

if t.TYPE_CHECKING:  # pragma: no cover
    from .config import ANONYMOUS_UID as ANONYMOUS_UID
    from .core.presence import ConnectedUids as ConnectedUids
    from .exceptions import CallError as CallError
    from .exceptions import CallsUnsupported as CallsUnsupported
    from .exceptions import CallTimeout as CallTimeout
    from .exceptions import ClientCallError as ClientCallError
    from .exceptions import ClientGone as ClientGone
    from .exceptions import ConfigError as ConfigError
    from .exceptions import ConfigWarning as ConfigWarning
    from .exceptions import ConnectionClosed as ConnectionClosed
    from .exceptions import JoinRefused as JoinRefused
    from .exceptions import LocalProtocolError as LocalProtocolError
    from .exceptions import NoAnswerHandler as NoAnswerHandler
    from .exceptions import NotInitializedError as NotInitializedError
    from .exceptions import PackError as PackError
    from .exceptions import ProtocolError as ProtocolError
    from .exceptions import Rejected as Rejected
    from .exceptions import RemoteProtocolError as RemoteProtocolError
    from .exceptions import ReplyError as ReplyError
    from .exceptions import ReplyTimeout as ReplyTimeout
    from .exceptions import SenteError as SenteError
    from .ext import Sente as Sente
    from .messages import EventMsg as EventMsg
    from .messages import JoinMsg as JoinMsg
    from .messages import RequestInfo as RequestInfo
    from .protocol.packers import JsonPacker as JsonPacker
    from .protocol.packers import MsgpackPacker as MsgpackPacker
    from .protocol.packers import Packer as Packer


def __getattr__(name: str) -> t.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flask_sente' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def run(app, host: str = "127.0.0.1", port: int = 5000, **kwargs):  # type: ignore[no-untyped-def]
    """Serve ``app`` with the embedded gevent server (WebSocket + Ajax); blocks until stopped.

    See :func:`flask_sente.server.run`.
    """
    from .server import run as _run

    return _run(app, host=host, port=port, **kwargs)


__all__ = [
    "ANONYMOUS_UID", "CallError", "CallTimeout", "CallsUnsupported", "ClientCallError",
    "ClientGone", "ConfigError", "ConfigWarning", "ConnectedUids", "ConnectionClosed",
    "EventMsg", "NoAnswerHandler",
    "JoinMsg", "JoinRefused", "JsonPacker", "LocalProtocolError", "MsgpackPacker",
    "NotInitializedError", "PackError",
    "Packer", "ProtocolError", "Rejected", "RemoteProtocolError", "ReplyError", "ReplyTimeout",
    "RequestInfo", "Sente", "SenteError", "run",
]
