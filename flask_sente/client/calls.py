"""The client's calls: made on the open link (waited for), their replies handed back to
the callers, and held until what the server's handler pushed before replying has reached
the app (docs/protocol.md §6, "Replies after their pushes").

:class:`Calls` is what the :class:`~flask_sente.client.Client` and its topics call
through; sente.js has the same helper (its ``Calls``). The table of the calls waiting for a
reply is :class:`~.pending.PendingCalls`.
"""
from __future__ import annotations

import logging
import time
import typing as t

from ..protocol import events as ev
from ..protocol import wire
from ..protocol.packers import Packer
from .dispatch import Dispatcher
from .pending import PendingCalls
from .positions import Position, Positions
from .status import ClientStatus

__all__ = ["Calls", "DEFAULT_CALL_TIMEOUT"]

logger = logging.getLogger("flask_sente.client")

#: A call's default timeout (``Client.call``, ``join``, ``leave`` and each rejoin): above the
#: server's ``reply_timeout`` (20 s) by enough for the trip and the wait for a connection,
#: so a slow handler is reported by the server (``chsk/timeout``), not by the client's
#: timer. sente.js: ``DEFAULTS.callTimeoutMs``; both are checked against
#: ``tests/vectors/defaults.json``.
DEFAULT_CALL_TIMEOUT = 30.0


class Calls:
    """Calls and sends of one client, and the hold on their replies.

    :param status: the client's state; its link is what calls go out on, waited for.
    :param packer: the client's packer.
    :param positions: where the client stands in the server's logs (what a reply waits for).
    :param pending: the calls waiting for a WebSocket reply.
    :param dispatch: the handlers a reply waits for.
    """

    def __init__(self, status: ClientStatus, *, packer: Packer, positions: Positions,
                 pending: PendingCalls, dispatch: Dispatcher) -> None:
        self._status = status
        self._changed = status.changed
        self._packer = packer
        self._positions = positions
        self._pending = pending
        self._dispatch = dispatch

    def call(self, pair: ev.Event, deadline: float, timeout: float) -> t.Any:
        """Send ``pair`` (validated) once the client is open, before ``deadline``, and
        return the reply's value (see :meth:`flask_sente.client.Client.call`)."""
        return self._status.wait_for_link(deadline).call(pair, deadline, timeout)

    def send(self, pair: ev.Event, deadline: float, link_deadline: float | None = None
             ) -> None:
        """Send ``pair`` (validated) asking for no reply, once the client is open: waiting
        for an open link until ``link_deadline`` (default ``deadline``), the send itself
        (an Ajax POST and its ack) bounded by ``deadline``."""
        packed = self._packer.pack(wire.client_event(pair, None))
        link = self._status.wait_for_link(deadline if link_deadline is None else link_deadline)
        link.send(packed, deadline)

    def resolve(self, message: wire.ServerMessage) -> None:
        """A reply from a WebSocket reader: to its call, with the dispatcher's ticket (what
        came before the reply on the socket is queued by now)."""
        with self._changed:
            ticket = self._dispatch.queued
        if message.cb_id is None:
            logger.debug("ignoring a reply without cb_id")
        elif not self._pending.resolve(message, ticket):
            logger.debug("reply for an unknown or expired call %r", message.cb_id)

    def settle(self, after: t.Mapping[str, Position] | None, ticket: int | None,
               deadline: float) -> None:
        """A call's reply is in: hold it until what its handler pushed before replying has
        reached the app (docs/protocol.md §6, "Replies after their pushes"), so code after
        ``call()`` never reads state older than the reply.

        ``after`` (an Ajax reply's ``X-Sente-After``): first wait until the polls have
        brought the positions there (:meth:`Positions.reached`; a handshake that moved them
        to another epoch ends the wait). Then wait until the handlers of the events queued
        before then (``ticket``, over WebSocket: what the reader had queued when the reply
        arrived) have run — not on the dispatcher thread itself, where a handler calling the
        server would wait for itself. Both waits end at ``deadline`` (the call's timeout)
        or when the client stops: the reply is then delivered anyway.
        """
        status = self._status
        if after is not None:
            with self._changed:
                while not self._positions.reached(after):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or status.closed or not status.active:
                        logger.debug("delivering a reply before its handler's pushes "
                                     "arrived (waiting for %s)", after)
                        return
                    self._changed.wait(remaining)
                ticket = self._dispatch.queued
        if ticket is not None:
            self._dispatch.wait_done(ticket, deadline)
