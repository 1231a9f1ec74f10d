"""Topics at the wire, on one process: who gets a topic's events, read from the raw frames
and poll answers of plain clients (websocket-client and requests speaking
docs/protocol.md). The Python client and sente.js drop the events of topics they do not
follow, so their own tests cannot see a server that sends them anyway.

Each reading ends at a marker pushed to the user after the publishes (one order per
client, docs/protocol.md §11), so "nothing came" is checked up to a point every earlier
event has passed, not after a sleep."""
from __future__ import annotations

import json
import typing as t

import gevent

from .conftest import TIMEOUT, Harness, running


class WsWire:
    """A protocol-2 WebSocket client by hand: every event pushed to it, in order."""

    def __init__(self, h: Harness, uid: str) -> None:
        self.h = h
        self.uid = uid
        self.ws = h.ws(f"{uid}-tab", uid=uid, handshake=False, protocol="2")
        hello = h.recv(self.ws)[0]
        assert hello[0] == "chsk/handshake", hello
        self.events: list[t.Any] = []

    def _take(self, message: t.Any) -> None:
        if isinstance(message[0][0], list):
            self.events += [e for e in message[0] if e[0] != "chsk/pos"]

    def call(self, event: t.Any) -> t.Any:
        self.h.send(self.ws, event, "cb")
        with gevent.Timeout(TIMEOUT, AssertionError(f"no reply to {event}")):
            while True:
                message = self.h.recv(self.ws)
                if message[1] == "cb":
                    return message[0][1]
                self._take(message)

    def pump(self) -> None:
        self._take(self.h.recv(self.ws))

    def close(self) -> None:
        self.ws.close()


class AjaxWire:
    """A protocol-2 Ajax client by hand: polls with its positions, keeps what it gets."""

    def __init__(self, h: Harness, uid: str) -> None:
        self.h = h
        self.uid = uid
        self.client_id = f"{uid}-tab"
        hello = h.get(self.client_id, uid=uid, handshake=True, protocol="2").json()[0]
        self.positions = hello[1]["positions"]
        self.events: list[t.Any] = []

    def call(self, event: t.Any) -> t.Any:
        reply = self.h.post(self.client_id, event, "ajax", uid=self.uid, protocol="2").json()
        return reply[0][1]

    def join(self, topic: str) -> t.Any:
        reply = self.call(["chsk/join", {"topic": topic}])
        if reply["ok"]:
            self.positions[f"t:{topic}"] = reply["position"]
        return reply

    def leave(self, topic: str) -> t.Any:
        self.positions.pop(f"t:{topic}", None)   # as clients do (protocol §11)
        return self.call(["chsk/leave", {"topic": topic}])

    def pump(self) -> None:
        """One poll."""
        payload = self.h.get(self.client_id, uid=self.uid, protocol="2",
                             pos=json.dumps(self.positions)).json()[0]
        assert payload[0] != "chsk/handshake", payload
        if isinstance(payload[0], list):
            *events, mark = payload
            self.events += events
            for name, position in mark[1].items():
                self.positions[name] = position

def read_until(wire: WsWire | AjaxWire, done: t.Callable[[], bool]) -> None:
    with gevent.Timeout(TIMEOUT, AssertionError(f"{wire.uid} got only {wire.events}")):
        while not done():
            wire.pump()


def has(wire: WsWire | AjaxWire, event_id: str) -> t.Callable[[], bool]:
    return lambda: any(e[0] == event_id for e in wire.events)


def topic_events(wire: WsWire | AjaxWire, topic: str) -> list[t.Any]:
    return [e[1][1][1] for e in wire.events if e[0] == "chsk/topic" and e[1][0] == topic]


def _rules(h: Harness) -> None:
    h.sente.on_join("room/*")(lambda msg: True)
    h.sente.on_join("vip")(lambda msg: False)


def test_only_members_get_a_topic_s_events_at_the_wire():
    """ann (WebSocket) and eve (Ajax) join ``room/1``; bob (WebSocket) and dee (Ajax)
    never ask; carl (WebSocket) and fay (Ajax) are refused ``vip``, which ann is then put
    in by the server. 20 publishes to each topic, then a marker pushed to every user: up to
    it, the members got all 20 of their topic, and nobody else one event of it.

    Shown to fail by letting a refused join read the topic anyway (``_join_request`` joining
    the reader before answering "forbidden"): carl's and fay's frames carried vip's
    publishes, while the Python client's topic tests still passed (it drops them)."""
    with running(lp_timeout=0.5) as h:
        _rules(h)
        ann, bob, carl = WsWire(h, "ann"), WsWire(h, "bob"), WsWire(h, "carl")
        eve, dee, fay = AjaxWire(h, "eve"), AjaxWire(h, "dee"), AjaxWire(h, "fay")
        try:
            assert ann.call(["chsk/join", {"topic": "room/1"}])["ok"] is True
            assert eve.join("room/1")["ok"] is True
            refused = {"ok": False, "topic": "vip", "reason": "forbidden"}
            assert carl.call(["chsk/join", {"topic": "vip"}]) == refused
            assert fay.join("vip") == refused
            h.sente.join("vip", "ann")
            read_until(ann, has(ann, "chsk/joined"))
            for n in range(20):
                h.sente.publish("room/1", ("t/n", n))
                h.sente.publish("vip", ("t/n", n))
            for wire in (ann, bob, carl, eve, dee, fay):
                h.sente.send(wire.uid, ("t/end", None), flush=True)
            for wire in (ann, bob, carl, eve, dee, fay):
                read_until(wire, has(wire, "t/end"))
            assert topic_events(ann, "room/1") == list(range(20))
            assert topic_events(ann, "vip") == list(range(20))
            assert topic_events(eve, "room/1") == list(range(20))
            for outsider in (bob, carl, dee, fay, eve):
                assert topic_events(outsider, "vip") == [], outsider.events
            for outsider in (bob, carl, dee, fay):
                assert [e for e in outsider.events if e[0] == "chsk/topic"] == []
        finally:
            for ws in (ann, bob, carl):
                ws.close()


def test_leaving_stops_delivery_at_the_wire():
    """ann (WebSocket) and eve (Ajax) leave ``room/2`` themselves; gus (WebSocket) is taken
    out by the server. Once the leave's reply (or ``chsk/left``) is on the wire, nothing of
    the topic follows: 10 more publishes, then a marker; up to the marker, no event of the
    topic after the leave — while hal, who stays, gets them all.

    Shown to fail by answering a client's leave without taking it out of the topic
    (``_leave_request`` revoking the grant but with its ``_leave_here`` call and its
    ``leave`` command removed): ann's frames went on carrying the topic's publishes, while
    the Python client's leave test still passed (it drops them)."""
    with running(lp_timeout=0.5) as h:
        _rules(h)
        ann, gus, hal = WsWire(h, "ann"), WsWire(h, "gus"), WsWire(h, "hal")
        eve = AjaxWire(h, "eve")
        try:
            for ws in (ann, gus, hal):
                assert ws.call(["chsk/join", {"topic": "room/2"}])["ok"] is True
            assert eve.join("room/2")["ok"] is True
            for n in range(5):
                h.sente.publish("room/2", ("t/n", n), flush=n == 4)
            for wire in (ann, gus, hal, eve):
                read_until(wire, lambda wire=wire: len(topic_events(wire, "room/2")) >= 5)
            assert ann.call(["chsk/leave", {"topic": "room/2"}]) == {"ok": True,
                                                                      "topic": "room/2"}
            assert eve.leave("room/2") == {"ok": True, "topic": "room/2"}
            h.sente.leave("room/2", "gus")
            read_until(gus, has(gus, "chsk/left"))
            for n in range(5, 15):
                h.sente.publish("room/2", ("t/n", n))
            for wire in (ann, gus, hal, eve):
                h.sente.send(wire.uid, ("t/end", None), flush=True)
            for wire in (ann, gus, hal, eve):
                read_until(wire, has(wire, "t/end"))
            for gone in (ann, gus, eve):
                assert topic_events(gone, "room/2") == list(range(5)), gone.events
            assert topic_events(hal, "room/2") == list(range(15))
            h.wait_for(lambda: h.sente.members("room/2") == {"hal"})
        finally:
            for ws in (ann, gus, hal):
                ws.close()
