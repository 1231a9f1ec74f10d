"""Sente's own wire (issue 31): the recorded traces of a real Sente v1.21.0 server talking
to the real Sente JVM client (../shared/reference/sente-wire-traces/, transcribed below)
replayed against a flask_sente app on ``sente_url``, frame for frame.

The app here is the traces' server: ``?uid=`` names the user, the handshake data is
``{:hello "from-sente-server"}``, ``test/echo`` replies ``[:test/echo-reply data]``,
``test/push-me`` and the ``/push`` route push ``test/pushed``, a catch-all replies
``:unhandled`` to events that ask for a reply. Every client frame of a scenario is sent
as recorded, and every server frame must be the recorded text exactly (the EDN writer
prints as Clojure does); over Ajax the bodies too. Then what the traces do not show but the
issue asks: the same exchanges over both transports, the keep-alives both ways, an empty
long-poll, a kick, a push reaching a sente.js-protocol client and a Sente client of the
same user, protocol-2 extras never sent, calls refused, bad input refused.

Broken on purpose once: with ``SenteWire.push`` keeping ``chsk/`` events, the topic test
got ``[:chsk/joined …]`` on the Sente socket; with ``reply`` wrapped as flask_sente's
``["chsk/reply", v]`` every echo step failed on its first frame.
"""
from __future__ import annotations

import json
import socket
import time
import typing as t
import urllib.parse

import gevent
import pytest
import requests
import websocket
from flask import Flask, request

from flask_sente import CallsUnsupported, Sente
from flask_sente.protocol.edn import Keyword
from flask_sente.testing import serve

TIMEOUT = 5.0

# --- the scenarios, as recorded (c: the client sends it, s: the server must send it) -----

WS_BASIC = [
    ("s", '[[:chsk/handshake ["alice" nil {:hello "from-sente-server"}]] nil]'),
    ("c", '[[:test/echo {:n 1, :s "héllo", :kw :a/b, :v [1 2.5 nil true]}] "a6f680"]'),
    ("s", '[[:test/echo-reply {:n 1, :s "héllo", :kw :a/b, :v [1 2.5 nil true]}] "a6f680"]'),
    ("c", "[[:test/fire-and-forget {:n 2}] nil]"),
    ("c", "[[:test/push-me nil] nil]"),
    ("s", '[[[:test/pushed {:to "alice", :n 1}]] nil]'),
    ("c", '[[:test/unknown "x"] "3ea663"]'),
    ("s", '[:unhandled "3ea663"]'),
    ("push", "alice"),
    ("s", '[[[:test/pushed {:to "alice", :via "/push"}]] nil]'),
]
WS_CLIENT_PING = [
    ("s", '[[:chsk/handshake ["alice" nil {:hello "from-sente-server"}]] nil]'),
    ("c", '[[:chsk/ws-ping] "b1295e"]'),
    ("s", '["pong" "b1295e"]'),
    ("c", '[[:chsk/ws-ping] "1f33fd"]'),
    ("s", '["pong" "1f33fd"]'),
]
WS_SERVER_PING = [  # ws_keepalive is short here: the ping comes within a second
    ("s", '[[:chsk/handshake ["alice" nil {:hello "from-sente-server"}]] nil]'),
    ("s", "[:chsk/ws-ping nil]"),
    ("c", "[[:chsk/ws-pong] nil]"),
    ("c", '[[:test/echo {:i 0}] "840d5c"]'),  # still open, well past the ping timeout
    ("s", '[[:test/echo-reply {:i 0}] "840d5c"]'),
]
WS_RECONNECT = [  # the first connection dies without a close frame; the client comes back
    ("s", '[[:chsk/handshake ["alice" nil {:hello "from-sente-server"}]] nil]'),
    ("c", '[[:test/echo {:i 0}] "840d5c"]'),
    ("s", '[[:test/echo-reply {:i 0}] "840d5c"]'),
    ("drop", ""),
    ("s", '[[:chsk/handshake ["alice" nil {:hello "from-sente-server"}]] nil]'),
    ("c", '[[:test/echo {:i 9}] "d50060"]'),
    ("s", '[[:test/echo-reply {:i 9}] "d50060"]'),
    ("c", '[[:test/echo {:i 10}] "fea71c"]'),
    ("s", '[[:test/echo-reply {:i 10}] "fea71c"]'),
]
# The Ajax trace: (method, query or form body, expected status, expected body).
AJAX = [
    ("GET", "uid=bob&udt=1796654653502&client-id=ajax-1&handshake%3F=1", 200,
     '[[:chsk/handshake ["bob" nil {:hello "from-sente-server"}]] nil]'),
    ("POST", "udt=1796654654531&client-id=ajax-1&uid=bob&ppstr=%5B%5B%3Atest%2Fecho+%7B%3An+1"
             "%7D%5D+%3Aajax%5D", 200, "[[:test/echo-reply {:n 1}] nil]"),
    ("POST", "udt=1796654654547&client-id=ajax-1&uid=bob&ppstr=%5B%5B%3Atest%2Ffire-and-forget"
             "+%7B%3An+2%7D%5D+nil%5D", 200, "[:chsk/dummy-cb-200 nil]"),
    ("POLL", "uid=bob&udt=1796654653531&client-id=ajax-1", 200,
     '[[[:test/pushed {:to "bob", :via "/push"}]] nil]'),
]


def make_app(**options: t.Any) -> tuple[Flask, Sente]:
    app = Flask(__name__)
    app.secret_key = "sente-dialect"
    options.setdefault("csrf", False)
    sente = Sente(app, sente_url="/chsk-sente",
                  user_id=lambda client_id: request.values.get("uid") or request.args.get("u"),
                  handshake_data=lambda uid, client_id: {"hello": "from-sente-server"},
                  **options)

    @sente.on("test/echo")
    def echo(msg: t.Any) -> None:
        msg.reply([Keyword("test/echo-reply"), msg.data])

    @sente.on("test/push-me")
    def push_me(msg: t.Any) -> None:
        sente.send(msg.uid, ("test/pushed", {"to": msg.uid, "n": 1}))

    @sente.on("test/fire-and-forget")
    def fire(msg: t.Any) -> None:
        pass

    @sente.on("*")
    def unhandled(msg: t.Any) -> None:
        if msg.expects_reply:
            msg.reply(Keyword("unhandled"))

    @app.route("/push")
    def push() -> str:
        uid = request.args["uid"]
        sente.send(uid, ("test/pushed", {"to": uid, "via": "/push"}))
        return "ok"

    return app, sente


def present(sente: Sente, uid: str, transport: str) -> None:
    """Wait (bounded) until ``uid`` counts as connected on ``transport`` (or "any")."""
    deadline = time.monotonic() + TIMEOUT
    while uid not in getattr(sente.connected_uids, transport):
        assert time.monotonic() < deadline, f"{uid} never connected"
        gevent.sleep(0.02)


def ws_url(base: str, query: str = "uid=alice&client-id=jvm-client-1") -> str:
    return base.replace("http", "ws") + "/chsk-sente?" + query


def replay_ws(base: str, steps: list[tuple[str, str]]) -> None:
    ws = websocket.create_connection(ws_url(base), timeout=TIMEOUT)
    try:
        for i, (kind, frame) in enumerate(steps):
            if kind == "c":
                ws.send(frame)
            elif kind == "s":
                assert ws.recv() == frame, f"step {i}"
            elif kind == "push":
                assert requests.get(f"{base}/push?uid={frame}", timeout=TIMEOUT).ok
            elif kind == "drop":  # the network dies: no close frame
                ws.sock.shutdown(socket.SHUT_RDWR)
                ws.shutdown()
                ws = websocket.create_connection(ws_url(base), timeout=TIMEOUT)
    finally:
        ws.close()


@pytest.mark.parametrize("steps", [WS_BASIC, WS_CLIENT_PING, WS_RECONNECT],
                         ids=["basic", "client-ping", "reconnect"])
def test_recorded_websocket_scenarios(steps: list[tuple[str, str]]) -> None:
    app, _ = make_app()
    with serve(app) as base:
        replay_ws(base, steps)


def test_recorded_server_ping() -> None:
    """The recorded ping and pong, then a second past the ping timeout with every ping
    answered: the socket stays open (a missing pong would have closed it with 4002)."""
    app, _ = make_app(ws_keepalive=0.3, ws_ping_timeout=0.5)
    with serve(app) as base:
        ws = websocket.create_connection(ws_url(base), timeout=TIMEOUT)
        try:
            for kind, frame in WS_SERVER_PING[:3]:
                if kind == "c":
                    ws.send(frame)
                else:
                    assert ws.recv() == frame
            pings = 0
            until = time.monotonic() + 1.0
            ws.settimeout(0.1)
            while time.monotonic() < until:
                try:
                    frame = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                assert frame == "[:chsk/ws-ping nil]"
                pings += 1
                ws.send("[[:chsk/ws-pong] nil]")
            ws.settimeout(TIMEOUT)
            assert pings >= 1
            ws.send(WS_SERVER_PING[3][1])
            frame = ws.recv()
            while frame == "[:chsk/ws-ping nil]":
                frame = ws.recv()
            assert frame == WS_SERVER_PING[4][1]
        finally:
            ws.close()


def test_recorded_ajax_scenario() -> None:
    app, _ = make_app(lp_timeout=1)
    with serve(app) as base:
        http = requests.Session()
        try:
            for method, query, status, body in AJAX:
                if method == "GET":
                    r = http.get(f"{base}/chsk-sente?{query}", timeout=TIMEOUT)
                elif method == "POST":
                    r = http.post(f"{base}/chsk-sente", data=query, timeout=TIMEOUT,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
                else:  # a long-poll, answered by a push made while it is parked
                    poll = gevent.spawn(http.get, f"{base}/chsk-sente?{query}", timeout=TIMEOUT)
                    gevent.sleep(0.2)
                    assert http.get(f"{base}/push?uid=bob", timeout=TIMEOUT).ok
                    r = poll.get(timeout=TIMEOUT)
                assert (r.status_code, r.text) == (status, body), (method, query)
                assert r.headers["Content-Type"] == "application/edn; charset=utf-8"
            # Not in the trace: a poll with nothing to say ends as Sente's does.
            r = http.get(f"{base}/chsk-sente?uid=bob&udt=9&client-id=ajax-1", timeout=TIMEOUT)
            assert r.text == "[:chsk/timeout nil]"
        finally:
            http.close()


# --- the exchanges of the traces over both transports ---------------------------------


class SenteClient:
    """A Sente client of the recorded shapes over one transport: ``call`` sends an event
    asking for a reply (a 6-hex callback id, or ``:ajax``), ``send`` one without, and
    ``pushed`` reads the next push batch (WebSocket frame, or long-poll answer)."""

    def __init__(self, base: str, transport: str, uid: str, client_id: str) -> None:
        self.base, self.transport = base, transport
        self.query = f"uid={uid}&client-id={client_id}"
        self.http = requests.Session()
        self.n = 0
        if transport == "ws":
            self.ws = websocket.create_connection(ws_url(base, self.query), timeout=TIMEOUT)
            self.handshake = self.ws.recv()
        else:
            self.handshake = self.http.get(
                f"{base}/chsk-sente?{self.query}&udt=1&handshake%3F=1", timeout=TIMEOUT).text

    def _post(self, ppstr: str) -> str:
        body = f"{self.query}&udt=2&ppstr={urllib.parse.quote_plus(ppstr)}"
        r = self.http.post(f"{self.base}/chsk-sente", data=body, timeout=TIMEOUT,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200, r.text
        return r.text

    def call(self, event: str) -> str:
        """The reply envelope, its callback id shown as ``CB`` (WebSocket)."""
        if self.transport == "ajax":
            return self._post(f"[{event} :ajax]")
        self.n += 1
        cb = f"{self.n:06x}"
        self.ws.send(f'[{event} "{cb}"]')
        return t.cast(str, self.ws.recv()).replace(f'"{cb}"', "CB")

    def send(self, event: str) -> str | None:
        if self.transport == "ajax":
            return self._post(f"[{event} nil]")
        self.ws.send(f"[{event} nil]")
        return None

    def pushed(self) -> str:
        if self.transport == "ws":
            return t.cast(str, self.ws.recv())
        return self.http.get(f"{self.base}/chsk-sente?{self.query}&udt=3",
                             timeout=TIMEOUT).text

    def close(self) -> None:
        if self.transport == "ws":
            self.ws.close()
        self.http.close()


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_the_recorded_exchanges_over_both_transports(transport: str) -> None:
    app, _ = make_app(lp_timeout=2)
    with serve(app) as base:
        client = SenteClient(base, transport, "alice", "c1")
        try:
            assert client.handshake == (
                '[[:chsk/handshake ["alice" nil {:hello "from-sente-server"}]] nil]')
            reply_cb = "CB" if transport == "ws" else "nil"
            assert client.call('[:test/echo {:n 1, :s "héllo", :kw :a/b}]') == (
                f'[[:test/echo-reply {{:n 1, :s "héllo", :kw :a/b}}] {reply_cb}]')
            assert client.send("[:test/fire-and-forget {:n 2}]") in (
                None, "[:chsk/dummy-cb-200 nil]")
            assert client.call('[:test/unknown "x"]') == f"[:unhandled {reply_cb}]"
            client.send("[:test/push-me nil]")
            assert client.pushed() == '[[[:test/pushed {:to "alice", :n 1}]] nil]'
        finally:
            client.close()


def test_a_push_reaches_a_sente_client_and_a_flask_sente_client_of_one_user() -> None:
    app, sente = make_app()
    with serve(app) as base:
        sente_tab = SenteClient(base, "ws", "amy", "clj-tab")
        js_tab = websocket.create_connection(
            base.replace("http", "ws") + "/chsk?client-id=js-tab&u=amy&protocol=3",
            timeout=TIMEOUT)
        try:
            js_tab.recv()  # its handshake, JSON
            with app.app_context():
                sente.send("amy", ("todo/added", {"text": "milk"}))
            assert sente_tab.pushed() == '[[[:todo/added {:text "milk"}]] nil]'
            batch = json.loads(js_tab.recv())
            assert batch[0][0] == ["todo/added", {"text": "milk"}]
        finally:
            sente_tab.close()
            js_tab.close()


def test_no_protocol_2_extras_and_no_calls_for_sente_clients() -> None:
    """Topics, position marks and calls are flask_sente's: the server's joining a Sente
    client to a topic sends it nothing, a call is refused at once as unsupported."""
    app, sente = make_app()
    with serve(app) as base:
        client = SenteClient(base, "ws", "bo", "clj")
        try:
            with app.app_context():
                present(sente, "bo", "ws")
                sente.join("news", "bo")
                sente.publish("news", ("news/item", 1))
                sente.send("bo", ("t/after", 1))
                with pytest.raises(CallsUnsupported, match="Sente"):
                    sente.call("bo", ("app/ask", None), client_id="clj", timeout=TIMEOUT)
            frames = []
            while not frames or "t/after" not in frames[-1]:
                frames.append(client.pushed())
            assert all("chsk/" not in frame and "news/item" not in frame for frame in frames)
        finally:
            client.close()


def test_a_kicked_sente_client_is_closed_and_may_come_back() -> None:
    app, sente = make_app()
    with serve(app) as base:
        ws = websocket.create_connection(ws_url(base, "uid=kim&client-id=k1"), timeout=TIMEOUT)
        try:
            ws.recv()
            with app.app_context():
                present(sente, "kim", "ws")
                sente.kick("kim")
            opcode, data = ws.recv_data(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert int.from_bytes(data[:2], "big") == 4001
        finally:
            ws.close()


@pytest.mark.parametrize("frame, reason", [
    ("[[:test/echo {:n 1] nil]", "malformed EDN"),
    ('{"not": "json here"}', "malformed EDN"),
    ("[[:test/echo 1] :nope]", "callback id"),
    ("[[:chsk/anything 1] nil]", None),
])
def test_bad_input_from_a_sente_client(frame: str, reason: str | None) -> None:
    """Malformed EDN closes with 1007 (and the app hears chsk/bad-package); a reserved id
    is a bad event the socket survives (Sente's wire has no notice for it)."""
    app, _ = make_app()
    with serve(app) as base:
        ws = websocket.create_connection(ws_url(base), timeout=TIMEOUT)
        try:
            ws.recv()
            ws.send(frame)
            if reason is None:
                ws.send('[[:test/echo {:i 1}] "000001"]')
                assert ws.recv() == '[[:test/echo-reply {:i 1}] "000001"]'
                return
            opcode, data = ws.recv_data(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert int.from_bytes(data[:2], "big") == 1007
        finally:
            ws.close()
        r = requests.post(f"{base}/chsk-sente", data={"client-id": "a", "uid": "z",
                                                      "ppstr": "[[:x/y 1"}, timeout=TIMEOUT)
        assert r.status_code == 400 and r.text.startswith("Bad package")


def test_csrf_on_the_sente_channel() -> None:
    """With CSRF on, a Sente client sends its token as the ``csrf-token`` parameter (the
    WebSocket URL, the Ajax GETs) or form field (the POSTs): accepted; a wrong one is a
    403 before any upgrade."""
    app, _ = make_app(csrf=lambda: "T0K3N")
    with serve(app) as base:
        ws = websocket.create_connection(ws_url(base, "uid=al&client-id=c&csrf-token=T0K3N"),
                                         timeout=TIMEOUT)
        try:
            assert ws.recv().startswith("[[:chsk/handshake")
        finally:
            ws.close()
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(ws_url(base, "uid=al&client-id=c&csrf-token=nope"),
                                        timeout=TIMEOUT)
        assert refused.value.status_code == 403
        r = requests.get(f"{base}/chsk-sente?uid=al&client-id=a&csrf-token=T0K3N&handshake%3F=1",
                         timeout=TIMEOUT)
        assert r.status_code == 200 and r.text.startswith("[[:chsk/handshake")
        r = requests.post(f"{base}/chsk-sente", timeout=TIMEOUT, data={
            "client-id": "a", "uid": "al", "csrf-token": "T0K3N",
            "ppstr": "[[:test/echo {:n 1}] :ajax]"})
        assert (r.status_code, r.text) == (200, "[[:test/echo-reply {:n 1}] nil]")
        r = requests.post(f"{base}/chsk-sente", timeout=TIMEOUT, data={
            "client-id": "a", "uid": "al", "csrf-token": "bad",
            "ppstr": "[[:test/echo {:n 1}] :ajax]"})
        assert r.status_code == 403


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_pushes_made_together_arrive_batched(transport: str) -> None:
    """Sente batches a user's pushes: ``[[ev1 ev2 ev3] nil]`` in one frame (one poll)."""
    app, sente = make_app(lp_timeout=2)
    with serve(app) as base:
        client = SenteClient(base, transport, "bea", "b1")
        try:
            if transport == "ajax":  # present (a poll made) before the pushes are made
                first = gevent.spawn(client.pushed)
                gevent.sleep(0.2)
            with app.app_context():
                present(sente, "bea", "any")
                for n in range(3):
                    sente.send("bea", ("t/n", n))
            got = first.get(timeout=TIMEOUT) if transport == "ajax" else client.pushed()
            assert got == "[[[:t/n 0] [:t/n 1] [:t/n 2]] nil]"
        finally:
            client.close()
