"""One presence model on every backplane (issue 25 #4): the order of the presence signals
and the state a receiver reads at each — ``connected_uids``, ``clients_of``, ``members`` —
are the ones of the table in docs/concepts.md ("Presence"), in memory and with Redis.

Before, with Redis, ``client_connected`` fired while ``connected_uids`` did not have the new
user yet (the online sets reached the process through the channel, later), and
``client_disconnected`` fired while it still had a user who had just left (the user's
transition was reported after, by the cluster's expiry): the demo's "who is online" panel,
rebuilt at those signals, missed users and kept departed ones. In memory the user's leaving
was told before the client's.
"""
from __future__ import annotations

import contextlib
import json
import typing as t

import gevent
import pytest
import requests
import websocket
from flask import Flask, request

from flask_sente import Sente, signals
from flask_sente.testing import serve

from .conftest import RedisServer, running

TIMEOUT = 5
GRACE = dict(reconnect_grace_ws=0.3, reconnect_grace_ajax=0.6, lp_timeout=0.2,
             topic_presence=True)


@contextlib.contextmanager
def worker(backplane: str | None, log: list[t.Any], name: str) -> t.Iterator[tuple[str, Sente]]:
    app = Flask(__name__)
    app.secret_key = "presence"
    options: dict[str, t.Any] = dict(GRACE)
    if backplane is not None:
        options["backplane"] = backplane
    sente = Sente(app, csrf=False, user_id=lambda client_id: request.args.get("u"), **options)

    @sente.on_join("room/*")
    def let_in(msg: t.Any) -> bool:
        return True

    def seen(signal_name: str) -> t.Callable[..., None]:
        def receiver(sender: t.Any, **kw: t.Any) -> None:
            uids = sente.connected_uids
            uid = kw.get("uid")
            log.append({"signal": signal_name, "worker": name, **{
                k: v for k, v in kw.items() if k != "uid"}, "uid": uid,
                "any": uid in uids.any, "ws": uid in uids.ws, "ajax": uid in uids.ajax,
                "clients": sente.clients_of(uid),
                "members": sorted(sente.members(kw["topic"])) if "topic" in kw else None})
        return receiver

    receivers = {n: seen(n) for n in ("user_connected", "client_connected",
                                      "client_disconnected", "user_disconnected",
                                      "topic_joined", "topic_left")}
    for n, r in receivers.items():
        getattr(signals, n).connect(r, app)
    try:
        with serve(app) as base:
            yield base, sente
    finally:
        for n, r in receivers.items():
            getattr(signals, n).disconnect(r, app)


@contextlib.contextmanager
def two_workers(kind: str, log: list[t.Any]) -> t.Iterator[tuple[str, str]]:
    if kind == "memory":
        with worker(None, log, "a") as (a, _):
            yield a, a
        return
    server = RedisServer()
    with running(server), worker(server.url, log, "a") as (a, _), \
            worker(server.url, log, "b") as (b, _):
        yield a, b


def _wait(pred: t.Callable[[], bool], what: str) -> None:
    with gevent.Timeout(TIMEOUT, AssertionError(what)):
        while not pred():
            gevent.sleep(0.02)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_signals_come_in_one_order_and_see_the_state_after_the_change(kind: str) -> None:
    log: list[dict[str, t.Any]] = []
    with two_workers(kind, log) as (a, b):
        ws = websocket.create_connection(a.replace("http", "ws")
                                         + "/chsk?client-id=w1&u=pam&protocol=2",
                                         timeout=TIMEOUT)
        json.loads(ws.recv())
        try:
            ws.send(json.dumps([["chsk/join", {"topic": "room/p"}], "j"]))
            while (reply := json.loads(ws.recv()))[0][0] != "chsk/reply":
                pass
            assert reply[0][1]["ok"]
        except BaseException:
            ws.close()
            raise
        _wait(lambda: any(e["signal"] == "topic_joined" for e in log), "no topic_joined")
        http = requests.Session()
        http.get(b + "/chsk?client-id=a1&u=pam&protocol=2&handshake=1", timeout=TIMEOUT)
        http.get(b + "/chsk?client-id=a1&u=pam&protocol=2", timeout=TIMEOUT)   # a poll
        _wait(lambda: len([e for e in log if e["signal"] == "client_connected"]) == 2,
              f"clients did not connect: {log}")
        ws.close()
        _wait(lambda: any(e["signal"] == "client_disconnected" for e in log),
              f"the WebSocket did not leave: {log}")
        _wait(lambda: any(e["signal"] == "user_disconnected" for e in log),
              f"the user did not leave: {log}")
        _wait(lambda: any(e["signal"] == "topic_left" for e in log), f"no topic_left: {log}")
        http.close()

    def one(signal: str, **match: t.Any) -> dict[str, t.Any]:
        found = [e for e in log if e["signal"] == signal
                 and all(e.get(k) == v for k, v in match.items())]
        assert len(found) == 1, (signal, match, log)
        return found[0]

    user_on = one("user_connected")
    ws_on = one("client_connected", client_id="w1")
    ajax_on = one("client_connected", client_id="a1")
    ws_off = one("client_disconnected", client_id="w1")
    ajax_off = one("client_disconnected", client_id="a1")
    user_off = one("user_disconnected")
    joined, left = one("topic_joined"), one("topic_left")
    # The state after each change, whichever worker tells it.
    for e in (user_on, ws_on):
        assert e["any"] and e["ws"] and "w1" in e["clients"]["ws"], e
    assert ajax_on["ajax"] and ajax_on["clients"]["ajax"] == ["a1"], ajax_on
    assert ws_off["any"] and not ws_off["ws"] and ws_off["clients"] == {
        "ws": [], "ajax": ["a1"]}, ws_off
    for e in (ajax_off, user_off):
        assert not e["any"] and e["clients"] == {"ws": [], "ajax": []}, e
    assert joined["members"] == ["pam"] and left["members"] == [], (joined, left)
    # The order: a user's transitions around its client's own, on the worker telling both.
    order = [id(e) for e in log]
    assert order.index(id(user_on)) < order.index(id(ws_on))
    if user_off["worker"] == ajax_off["worker"]:
        assert order.index(id(ajax_off)) < order.index(id(user_off))
    if kind == "memory":
        assert [e["signal"] for e in log if not e["signal"].startswith("topic")] == [
            "user_connected", "client_connected", "client_connected",
            "client_disconnected", "client_disconnected", "user_disconnected"], log
