"""Protocol 2 on the server: positions in handshakes and batches, replay after a reconnect,
``recovered`` true or false — never a silent gap. Plain clients speaking docs/protocol.md."""
from __future__ import annotations

import json
import typing as t
import urllib.parse

from .conftest import Harness, running


class Stream:
    """What one client saw: events per log with the seqs their batches' marks gave, and
    the invariant every delivery test checks."""

    def __init__(self) -> None:
        self.events: list[t.Any] = []
        self.positions: dict[str, list[t.Any]] = {}
        self.recovered: list[t.Any] = []

    def handshake(self, info: dict[str, t.Any]) -> None:
        assert info["protocol"] == 2
        self.recovered.append(info["recovered"])
        for name, (epoch, seq) in info["positions"].items():
            old = self.positions.get(name)
            if info["recovered"] is True:
                assert old == [epoch, seq] or old is None or old[0] == epoch
            self.positions[name] = [epoch, seq]

    def batch(self, events: list[t.Any]) -> None:
        *body, mark = events
        assert mark[0] == "chsk/pos", events
        for name, (epoch, seq) in mark[1].items():
            old = self.positions.get(name)
            assert old is None or old[0] != epoch or seq > old[1], (old, seq)  # increasing
            self.positions[name] = [epoch, seq]
        self.events += body

    def take(self, msg: t.Any) -> None:
        payload = msg[0]
        if payload[0] == "chsk/handshake":
            self.handshake(payload[1])
        elif isinstance(payload[0], list):
            self.batch(payload)

    def numbers(self) -> list[int]:
        return [e[1] for e in self.events if e[0] == "t/n"]


def _ws(h: Harness, stream: Stream, client_id: str, uid: str, pos: dict[str, t.Any] | None):
    ws = h.ws(client_id, uid=uid, handshake=False, protocol="2",
              **({"pos": urllib.parse.quote(json.dumps(pos))} if pos is not None else {}))
    stream.take(h.recv(ws))
    return ws


def _read_until(h: Harness, ws: t.Any, stream: Stream, count: int) -> None:
    while len(stream.numbers()) < count:
        stream.take(h.recv(ws))


def test_websocket_reconnect_replays_what_was_missed_in_order():
    with running() as h:
        s = Stream()
        ws = _ws(h, s, "tab", "rex", None)
        assert s.recovered == [None]
        for i in range(5):
            h.sente.send("rex", ("t/n", i))
        h.sente.broadcast(("t/n", 5), flush=True)
        _read_until(h, ws, s, 6)
        ws.close()
        for i in range(6, 11):                       # while it is away
            h.sente.send("rex", ("t/n", i))
        h.sente.broadcast(("t/n", 11), flush=True)
        ws = _ws(h, s, "tab", "rex", s.positions)
        try:
            assert s.recovered[-1] is True
            h.sente.send("rex", ("t/n", 12), flush=True)
            _read_until(h, ws, s, 13)
            assert s.numbers() == list(range(13))    # exactly once, in order
        finally:
            ws.close()


def test_ajax_poll_answer_lost_in_flight_is_sent_again():
    with running(lp_timeout=1) as h:
        s = Stream()
        s.take(h.get("p", uid="amy", handshake=True, protocol="2").json())
        h.sente.send("amy", ("t/n", 0), flush=True)
        lost = h.get("p", uid="amy", protocol="2", pos=json.dumps(s.positions)).json()
        assert lost[0][0] == ["t/n", 0]             # ... but the client never saw it
        h.sente.send("amy", ("t/n", 1), flush=True)
        s.take(h.get("p", uid="amy", protocol="2", pos=json.dumps(s.positions)).json())
        assert s.numbers() == [0, 1]


def test_a_restarted_server_says_not_recovered():
    with running() as h:
        s = Stream()
        ws = _ws(h, s, "tab", "rob", None)
        h.sente.send("rob", ("t/n", 0), flush=True)
        _read_until(h, ws, s, 1)
        ws.close()
        h.sente.close(h.app)                         # as a restart: history and epochs gone
        ws = _ws(h, s, "tab", "rob", s.positions)
        try:
            assert s.recovered[-1] is False
        finally:
            ws.close()
        r = h.get("q", uid="rob", handshake=True, protocol="2", pos=json.dumps(s.positions))
        s.take(r.json())
        assert s.recovered[-1] is True               # positions from the new handshake


def test_overflowing_the_history_says_not_recovered_never_a_gap():
    with running(history_size=5, handshake_data=lambda uid, cid: {"hello": uid}) as h:
        s = Stream()
        ws = _ws(h, s, "tab", "ola", None)
        ws.close()
        before = dict(s.positions)
        for i in range(30):
            h.sente.send("ola", ("t/n", i), flush=True)
        ws = _ws(h, s, "tab", "ola", before)
        try:
            assert s.recovered[-1] is False
            h.sente.send("ola", ("t/n", 99), flush=True)
            _read_until(h, ws, s, 1)
            assert s.numbers() == [99]               # nothing old, nothing half-replayed
        finally:
            ws.close()
        # The same over Ajax: a poll that comes back too late gets a handshake.
        s2 = Stream()
        s2.take(h.get("p", uid="ola", handshake=True, protocol="2").json())
        old = dict(s2.positions)
        for i in range(30):
            h.sente.send("ola", ("t/n", i), flush=True)
        told = h.get("p", uid="ola", protocol="2", pos=json.dumps(old)).json()
        assert told[0][1]["handshake_data"] == {"hello": "ola"}  # a whole handshake
        s2.take(told)
        assert s2.recovered[-1] is False and s2.numbers() == []


def test_targeted_pushes_do_not_leak_to_other_tabs_during_replay():
    with running() as h:
        a, b = Stream(), Stream()
        wa, wb = _ws(h, a, "a", "tia", None), _ws(h, b, "b", "tia", None)
        wa.close()
        wb.close()
        h.sente.send("tia", ("t/n", 0))
        h.sente.send("tia", ("t/n", 1), client_id="b")
        h.sente.send("tia", ("t/n", 2), flush=True)
        wa, wb = _ws(h, a, "a", "tia", a.positions), _ws(h, b, "b", "tia", b.positions)
        try:
            _read_until(h, wa, a, 2)
            _read_until(h, wb, b, 3)
            assert a.numbers() == [0, 2] and b.numbers() == [0, 1, 2]
            assert a.positions == b.positions        # a moved past b's push too
        finally:
            wa.close()
            wb.close()


def test_protocol_1_clients_get_no_marks_and_no_new_handshake_keys():
    with running() as h:
        ws = h.ws("old", uid="v1", handshake=False, protocol="1")
        try:
            info = h.recv(ws)[0][1]
            assert set(info) == {"uid", "handshake_data", "protocol"} and info["protocol"] == 1
            h.sente.send("v1", ("t/n", 0), flush=True)
            assert h.recv(ws) == [[["t/n", 0]], None]
        finally:
            ws.close()


def test_an_ajax_only_server_drops_history_idle_past_history_ttl(monkeypatch):
    """History is dropped by the hub's sweep, which an Ajax client starts as a WebSocket
    does: a user who left comes back past ``history_ttl`` to a log that is gone, and is
    told so."""
    import gevent

    import flask_sente.hub
    monkeypatch.setattr(flask_sente.hub.sweeper, "HOUSEKEEPING_INTERVAL", 0.1)
    with running(history_ttl=0.3, reconnect_grace_ajax=0.1, lp_timeout=0.2,
                 ws_keepalive=0.4) as h:
        s = Stream()
        s.take(h.get("p", uid="ida", handshake=True, protocol="2").json())
        h.sente.send("ida", ("t/n", 0), flush=True)
        s.take(h.get("p", uid="ida", protocol="2", pos=json.dumps(s.positions)).json())
        assert s.numbers() == [0]
        # Gone: the grace (0.1 s), then history_ttl (0.3 s), then a sweep (every 0.1 s
        # with this keep-alive) drops the log; a poll before that would keep it.
        gevent.sleep(1.5)
        back = h.get("p", uid="ida", protocol="2", pos=json.dumps(s.positions)).json()
        s.take(back)
        assert back[0][0] == "chsk/handshake" and s.recovered[-1] is False


def test_a_rejoin_posted_before_the_first_poll_keeps_the_clients_position():
    """sente.js holds an Ajax client's first poll after a handshake until its topics'
    rejoins are answered. A client slow enough that the server forgot it meanwhile (no poll
    within ``reconnect_grace_ajax``) still has its rejoin answered from its own position,
    and the poll that brings it back is replayed what it missed in the topic."""
    import gevent
    with running(reconnect_grace_ajax=0.2, lp_timeout=0.2) as h:
        h.sente.on_join("room/*")(lambda msg: True)
        s = Stream()
        s.take(h.get("p", uid="ava", handshake=True, protocol="2").json())
        joined = h.post("p", ["chsk/join", {"topic": "room/1"}], "cb", uid="ava",
                        protocol="2").json()[0][1]
        topic_pos = joined["position"]
        h.get("p", uid="ava", protocol="2",
              pos=json.dumps({**s.positions, "t:room/1": topic_pos}))   # present
        gevent.sleep(0.6)                                # gone past its grace
        for n in range(3):
            h.sente.publish("room/1", ("t/n", n))        # missed while away
        s.take(h.get("p", uid="ava", handshake=True, protocol="2",
                     pos=json.dumps(s.positions)).json())
        gevent.sleep(0.6)                                # handshook, never polled: forgotten
        assert "p" not in h.sente.clients_of("ava").get("ajax", [])
        again = h.post("p", ["chsk/join", {"topic": "room/1", "position": topic_pos}], "cb",
                       uid="ava", protocol="2").json()[0][1]
        assert again["recovered"] is True and again["position"] == topic_pos
        s.positions["t:room/1"] = again["position"]
        s.take(h.get("p", uid="ava", protocol="2", pos=json.dumps(s.positions)).json())
        assert [e[1][1][1] for e in s.events if e[0] == "chsk/topic"] == [0, 1, 2]
        assert s.positions["t:room/1"] == [topic_pos[0], topic_pos[1] + 3]
