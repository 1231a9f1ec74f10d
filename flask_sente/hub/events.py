"""Events the hub itself hands to the app's handlers: ``chsk/uidport-*``, ``chsk/bad-event``,
``chsk/bad-package``.

Each runs in a greenlet of its own (a receiver may block), and only when somebody would
get it (the router's ``wants``): a system event nobody handles costs nothing.
"""
from __future__ import annotations

import logging
import typing as t

from ..core.presence import Uid
from ..exceptions import RemoteProtocolError
from ..messages import EventMsg, RequestInfo
from ..protocol import events as ev
from .loop import HubLoop

if t.TYPE_CHECKING:  # pragma: no cover
    from ..router import Dispatch

logger = logging.getLogger("flask_sente")


class SystemEvents:
    def __init__(self, loop: HubLoop, dispatch: Dispatch,
                 wants: t.Callable[[str], bool] | None) -> None:
        self._loop = loop
        self._dispatch = dispatch
        self._wants = wants

    def emit(self, event_id: str, data: t.Any, uid: Uid | None = None,
             client_id: str | None = None, transport: str | None = None,
             request: RequestInfo | None = None) -> None:
        if self._loop.closed or (self._wants is not None and not self._wants(event_id)):
            return
        msg = EventMsg((event_id, data), data if uid is None else uid, client_id, transport,
                       request)
        self._loop.spawn(self._dispatch, msg)

    def bad_package(self, exc: RemoteProtocolError, uid: Uid, client_id: str | None,
                    transport: str, request: RequestInfo | None) -> None:
        logger.info("bad package from uid=%r client_id=%r: %s", uid, client_id, exc)
        self.emit(ev.BAD_PACKAGE, {"reason": str(exc)}, uid, client_id, transport, request)

    def bad_event(self, raw: t.Any, reason: str, uid: Uid, client_id: str | None,
                  transport: str, request: RequestInfo | None) -> None:
        logger.info("bad event from uid=%r client_id=%r (%s): %.200r", uid, client_id, reason,
                    raw)
        self.emit(ev.BAD_EVENT, {"event": raw, "reason": reason}, uid, client_id, transport,
                  request)
