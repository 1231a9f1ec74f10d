"""Sente's own wire (v1.21), for unmodified Clojure/ClojureScript Sente clients.

A second :class:`~flask_sente.protocol.wire.Wire`: the same messages the hub's services
build for flask_sente's clients, in the shapes a real Sente client reads (the recorded
traces in docs/protocol.md's "Sente dialect" section are the ground truth), packed with the
:class:`~flask_sente.protocol.edn.EdnPacker` the wire carries. Every message is ``[clj
cb-id]``:

=======================  ==================================  =================================
message                  flask_sente's wire                  Sente's (this module)
=======================  ==================================  =================================
handshake                ``[["chsk/handshake", {…}], null]`` ``[[:chsk/handshake [uid nil d]] nil]``
push batch               ``[[[id, data], …], null]``         ``[[[:ns/id data] …] nil]``
reply                    ``[["chsk/reply", v], cb]``         ``[v cb]`` (Ajax: ``[v nil]``)
reply failure            ``[["chsk/timeout"], cb]``          ``[:chsk/timeout cb]`` (bare)
server ping              ``[["chsk/ws-ping"], null]``        ``[:chsk/ws-ping nil]``
answer to a client ping  ``[["chsk/reply", "pong"], cb]``    ``["pong" cb]``
empty long-poll          ``[["chsk/timeout"], null]``        ``[:chsk/timeout nil]``
Ajax event, no reply     ``[["chsk/ack"], null]``            ``[:chsk/dummy-cb-200 nil]``
=======================  ==================================  =================================

Event ids are keywords on this wire and ``"ns/name"`` strings everywhere else in
flask_sente: :meth:`SenteWire.decode_client` turns ``:test/echo`` into ``"test/echo"``, and
pushes go out with keyword ids. Sente has no positions, no topics, no calls and no
bad-event notices: a push batch carries the app's events only (the ``chsk/`` ones —
position marks, topic events, ``chsk/joined`` — are left out), and a client has nothing to
say about the rest. Sente's Ajax client has no close message either: a close is answered
as an empty poll (the client polls again and, forgotten by the server, gets a new
handshake: a kicked Sente client comes back, as it would from Sente's own server).
"""
from __future__ import annotations

import typing as t

from ..exceptions import RemoteProtocolError
from . import events as ev
from .edn import EdnPacker, KeysOption, Keyword
from .wire import ClientMessage, Constant, Positions, Wire, decode_client

#: The dialect's name (``Hub.wire(dialect=...)``).
SENTE_DIALECT = "sente"
#: Sente's answer to an Ajax POST that asked for no reply.
DUMMY_CB_200 = "chsk/dummy-cb-200"


def _kw(name: str) -> Keyword:
    return Keyword(name)


def _event(event: list[t.Any]) -> list[t.Any]:
    """A wire event (``[id, data]`` or ``[id]``) with its id as a keyword."""
    return [_kw(event[0]), *event[1:]]


class SenteWire(Wire):
    """Sente's envelope (see the module docstring), with its EDN packer.

    :param keys: how map keys read and write (:class:`~flask_sente.protocol.edn.EdnPacker`):
        ``"strings"`` (``data["text"]`` in Python, ``(:text data)`` in Clojure) or
        ``"keywords"``.
    """

    __slots__ = ("_packer", "_constants")
    dialect: t.ClassVar[str] = SENTE_DIALECT

    def __init__(self, keys: KeysOption = "strings") -> None:
        super().__init__(1)
        self._packer = EdnPacker(keys=keys)
        self._constants: dict[str, list[t.Any]] = {
            "ping": [_kw(ev.WS_PING), None],
            "lp-timeout": [_kw(ev.TIMEOUT), None],
            "ack": [_kw(DUMMY_CB_200), None],
        }

    def __repr__(self) -> str:
        return f"<Wire {self.dialect}>"

    @property
    def packer(self) -> EdnPacker:
        return self._packer

    @property
    def calls(self) -> bool:
        return False

    @property
    def marks(self) -> bool:
        return False

    def handshake(self, uid: t.Any, handshake_data: t.Any = None, *,
                  positions: Positions | None = None,
                  recovered: bool | None = None) -> list[t.Any]:
        return [[_kw(ev.HANDSHAKE), [uid, None, handshake_data]], None]

    def push(self, events: list[t.Any]) -> list[t.Any]:
        return [[_event(e) for e in events if not ev.is_reserved(e[0])], None]

    def reply(self, value: t.Any, cb_id: str | None) -> list[t.Any]:
        return [value, cb_id]

    def failure(self, kind: str, cb_id: str | None, info: t.Any = None) -> list[t.Any]:
        super().failure(kind, cb_id, info)  # the same kinds are failures
        return [_kw(kind), cb_id]

    def close(self, code: int, reason: str) -> list[t.Any]:
        return self._constants["lp-timeout"]

    def bad_event_notice(self, reason: str, raw: t.Any) -> list[t.Any] | None:
        return None

    def constant(self, name: Constant) -> list[t.Any]:
        return self._constants[name]

    def decode_client(self, value: t.Any) -> ClientMessage:
        """``[[:ns/id data] cb]`` (cb: a string, ``:ajax`` or nil) as flask_sente's
        message: the id a plain ``"ns/id"`` string, ``:ajax`` the Ajax callback."""
        if not isinstance(value, list) or len(value) != 2:
            raise RemoteProtocolError("expected Sente's envelope [event cb-id]")
        event, cb_id = value
        if isinstance(cb_id, Keyword):
            if cb_id != "ajax":
                raise RemoteProtocolError(f"a callback id is a string or :ajax, not :{cb_id}")
            cb_id = "ajax"
        if isinstance(event, list) and event and isinstance(event[0], Keyword):
            event = [str.__str__(event[0]), *event[1:]]
        return decode_client([event, cb_id])
