"""A reply never overtakes the pushes its handler made before replying (issue 25 #2),
checked at the wire on both backplanes.

Over a WebSocket the reply frame comes after the batch holding the handler's pushes to that
connection. Over Ajax the pushes travel through the client's polls, the reply through the
POST: the reply carries the positions they got (``X-Sente-After``), which the first poll's
mark then reaches.

Broken on purpose once (the hub's ``_before_ws_reply`` doing nothing, the router recording
nothing): the WebSocket tests saw the reply first in every run, the Ajax ones no header.

The header names only pushes the replying client gets: a push to another tab, a publish
that excludes the sender and a control record (Redis appends the topic commands of a join
or leave to the user's log) move the client's position on the server without any batch
telling it, so a client holding the reply for them would wait out its timeout. Before
that was fixed, the tests below saw ``t:room/x`` and ``u`` named for the aside (both
backplanes), ``u`` at the other tab's push for the mixed one, and ``u`` on the join's
and leave's replies (Redis).
"""
from __future__ import annotations

import contextlib
import json
import typing as t
import urllib.parse

import pytest
import requests
import websocket
from flask import Flask, request

from flask_sente import Sente
from flask_sente.testing import serve

from .conftest import RedisServer, running

TIMEOUT = 5


@contextlib.contextmanager
def app_on(backplane: str | None) -> t.Iterator[str]:
    app = Flask(__name__)
    app.secret_key = "order"
    options: dict[str, t.Any] = {} if backplane is None else {"backplane": backplane}
    sente = Sente(app, csrf=False, user_id=lambda client_id: request.args.get("u"),
                  **options)

    @sente.on("chat/say")
    def say(msg: t.Any) -> None:   # the README quickstart's handler
        sente.broadcast(("chat/said", {"who": msg.uid, "text": msg.data}))
        msg.reply({"ok": True})

    @sente.on("todo/add")
    def add(msg: t.Any) -> None:
        sente.send(msg.uid, ("todo/added", msg.data))
        sente.publish("room/x", ("todo/noted", msg.data))
        msg.reply({"ok": True, "id": msg.data})

    @sente.on("chat/aside")
    def aside(msg: t.Any) -> None:  # pushes that all skip the sender's own tab
        sente.publish("room/x", ("chat/said", msg.data), exclude_client_id=msg.client_id)
        sente.send(msg.uid, ("todo/other-tab", msg.data), client_id="another-tab")
        msg.reply({"ok": True})

    @sente.on("chat/mixed")
    def mixed(msg: t.Any) -> None:  # one push for the sender, then one it skips
        sente.send(msg.uid, ("todo/mine", msg.data))
        sente.send(msg.uid, ("todo/other-tab", msg.data), client_id="another-tab")
        msg.reply({"ok": True})

    @sente.on_join("room/*")
    def let_in(msg: t.Any) -> bool:
        return True

    with serve(app) as base:
        yield base


@pytest.fixture(params=["memory", "redis"])
def base(request: pytest.FixtureRequest) -> t.Iterator[str]:
    if request.param == "memory":
        with app_on(None) as url:
            yield url
    else:
        server = RedisServer()
        with running(server), app_on(server.url) as url:
            yield url


def test_a_websocket_reply_follows_its_handlers_pushes(base: str) -> None:
    ws = websocket.create_connection(base.replace("http", "ws")
                                     + "/chsk?client-id=w1&u=wes&protocol=2", timeout=TIMEOUT)
    try:
        json.loads(ws.recv())
        ws.send(json.dumps([["chsk/join", {"topic": "room/x"}], "j"]))
        assert json.loads(ws.recv())[0][0] == "chsk/reply"
        for n in range(30):
            ws.send(json.dumps([["chat/say", f"hi {n}"], f"s{n}"]))
            ws.send(json.dumps([["todo/add", n], f"a{n}"]))
            seen: list[str] = []
            while len([k for k in seen if k.startswith("reply")]) < 2:
                payload, cb_id = json.loads(ws.recv())
                if isinstance(payload[0], list):
                    seen += [e[0] if e[0] != "chsk/topic" else e[1][1][0] for e in payload]
                elif payload[0] == "chsk/reply":
                    seen.append(f"reply {cb_id}")
            said = seen.index("chat/said")
            added, noted = seen.index("todo/added"), seen.index("todo/noted")
            assert said < seen.index(f"reply s{n}"), seen
            assert added < seen.index(f"reply a{n}") and noted < seen.index(f"reply a{n}"), seen
    finally:
        ws.close()


def test_an_ajax_reply_names_the_positions_of_its_handlers_pushes(base: str) -> None:
    http = requests.Session()
    query = "/chsk?client-id=a1&u=ada&protocol=2"
    try:
        hello = http.get(base + query + "&handshake=1", timeout=TIMEOUT).json()[0][1]
        positions = hello["positions"]
        join = http.post(base + query, data=json.dumps(
            [["chsk/join", {"topic": "room/x"}], "ajax"]), timeout=TIMEOUT,
            headers={"Content-Type": "application/json"}).json()[0][1]
        positions["t:room/x"] = join["position"]
        for n in range(10):
            for event in (["chat/say", f"hi {n}"], ["todo/add", n]):
                r = http.post(base + query, data=json.dumps([event, "ajax"]), timeout=TIMEOUT,
                              headers={"Content-Type": "application/json"})
                assert r.json()[0][0] == "chsk/reply"
                after = json.loads(r.headers["X-Sente-After"])
                wanted = {"*"} if event[0] == "chat/say" else {"u", "t:room/x"}
                assert set(after) == wanted, after
                # The polls bring the client there, with the handler's pushes.
                got: list[str] = []
                while any(positions[name][0] == epoch and positions[name][1] < seq
                          or positions[name][0] != epoch for name, (epoch, seq)
                          in after.items()):
                    q = urllib.parse.quote(json.dumps(positions))
                    payload = http.get(f"{base}{query}&pos={q}", timeout=TIMEOUT).json()[0]
                    assert isinstance(payload[0], list), payload
                    *events, mark = payload
                    got += [e[0] if e[0] != "chsk/topic" else e[1][1][0] for e in events]
                    positions.update(mark[1])
                assert ("chat/said" in got) if event[0] == "chat/say" else (
                    "todo/added" in got and "todo/noted" in got), got
    finally:
        http.close()


def _post(http: requests.Session, url: str, event: list[t.Any]) -> requests.Response:
    r = http.post(url, data=json.dumps([event, "ajax"]), timeout=TIMEOUT,
                  headers={"Content-Type": "application/json"})
    assert r.json()[0][0] == "chsk/reply", r.text
    return r


def test_an_ajax_reply_names_only_the_pushes_its_client_gets(base: str) -> None:
    http = requests.Session()
    query = "/chsk?client-id=a2&u=ada&protocol=2"
    try:
        hello = http.get(base + query + "&handshake=1", timeout=TIMEOUT).json()[0][1]
        joined = _post(http, base + query, ["chsk/join", {"topic": "room/x"}])
        assert wire_after(joined) is None  # the join pushed nothing this client gets
        assert wire_after(_post(http, base + query, ["chat/aside", 1])) is None
        mixed = wire_after(_post(http, base + query, ["chat/mixed", 2]))
        assert mixed is not None and set(mixed) == {"u"}, mixed
        # The client's first push since its handshake: the other tab's came after it.
        assert mixed["u"] == [hello["positions"]["u"][0], hello["positions"]["u"][1] + 2], (
            hello, mixed)
        assert wire_after(_post(http, base + query, ["chsk/leave", {"topic": "room/x"}])) is None
    finally:
        http.close()


def wire_after(response: requests.Response) -> dict[str, t.Any] | None:
    header = response.headers.get("X-Sente-After")
    return None if header is None else t.cast("dict[str, t.Any]", json.loads(header))
