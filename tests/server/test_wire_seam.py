"""The envelope is chosen per connection (``protocol.wire.Wire``), and the hub builds every
message through its connection's wire: swapping the wire of one protocol version changes
what that version's clients read on a real socket, and nothing else.

This is the seam a second dialect (Sente's own wire) plugs into. The check is at the wire,
with plain clients: a hub service that built a message with the module functions instead
of its connection's wire would send an unmarked frame here. Shown to fail by building the
WebSocket handshake with ``wire.handshake`` (the test of the marked handshake fails) and the
push batches with ``[events, None]`` in ``core/packing.py`` (the batch checks fail).
"""
from __future__ import annotations

import json
import typing as t
import uuid

import pytest

from flask_sente.protocol import wire

from .conftest import Harness, running


class MarkedWire(wire.Wire):
    """The default envelope with a mark on every message it builds, so a test can tell
    which wire built a frame."""

    __slots__ = ()
    dialect = "test-marked"

    def handshake(self, uid: t.Any, handshake_data: t.Any = None, *,
                  positions: wire.Positions | None = None,
                  recovered: bool | None = None) -> list[t.Any]:
        message = super().handshake(uid, handshake_data, positions=positions,
                                    recovered=recovered)
        message[0][1]["dialect"] = self.dialect
        return message

    def push(self, events: list[t.Any]) -> list[t.Any]:
        return [[*events, ["t/marked", len(events)]], None]

    def reply(self, value: t.Any, cb_id: str | None) -> list[t.Any]:
        return super().reply({"marked": value}, cb_id)


@pytest.fixture
def marked_v2(monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Harness]:
    """A server whose protocol-2 clients speak :class:`MarkedWire` (protocol 1 unchanged)."""
    monkeypatch.setitem(wire._WIRES, 2, MarkedWire(2))
    with running() as h:
        yield h


def test_a_websocket_speaks_the_wire_of_its_version(marked_v2: Harness) -> None:
    h = marked_v2
    ws = h.ws("c2", uid="ana", handshake=False, protocol="2")
    old = h.ws("c1", uid="ana", handshake=False)  # protocol 1: the default wire
    try:
        hello = h.recv(ws)
        assert hello[0][0] == "chsk/handshake" and hello[0][1]["dialect"] == "test-marked"
        plain = h.recv(old)
        assert plain[0][0] == "chsk/handshake" and "dialect" not in plain[0][1]

        h.send(ws, ["t/echo", 7], "k1")
        assert h.recv_until(ws, lambda m: m[1] == "k1") == [["chsk/reply", {"marked": 7}], "k1"]
        h.send(old, ["t/echo", 7], "k1")
        assert h.recv_until(old, lambda m: m[1] == "k1") == [["chsk/reply", 7], "k1"]

        h.sente.send("ana", ("t/news", 1))
        batch = h.recv_until(ws, lambda m: m[1] is None and isinstance(m[0][0], list))
        ids = [event[0] for event in batch[0]]
        assert ids == ["t/news", "chsk/pos", "t/marked"], batch
        batch = h.recv_until(old, lambda m: m[1] is None and isinstance(m[0][0], list))
        assert batch == [[["t/news", 1]], None]
    finally:
        ws.close()
        old.close()


def test_an_ajax_client_speaks_the_wire_of_its_version(marked_v2: Harness) -> None:
    h = marked_v2
    client_id = uuid.uuid4().hex
    hello = json.loads(h.get(client_id, uid="bo", handshake=True, protocol="2").content)
    assert hello[0][1]["dialect"] == "test-marked"
    positions = json.dumps(hello[0][1]["positions"], separators=(",", ":"))
    h.sente.send("bo", ("t/news", 2))
    answer = json.loads(h.get(client_id, uid="bo", protocol="2", pos=positions).content)
    assert [event[0] for event in answer[0]] == ["t/news", "chsk/pos", "t/marked"], answer
