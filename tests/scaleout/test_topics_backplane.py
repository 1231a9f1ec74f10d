"""Topics through a real Redis between two apps ("workers") in one process: a client that
rejoins on the other worker is replayed from the Redis stream, and a server-side join or
leave made on one worker reaches the client's connection on the other."""
from __future__ import annotations

import json
import typing as t
import urllib.parse

import gevent
import websocket

from .test_backplane import TIMEOUT, recv, wait_for, worker


def _ws(base: str, uid: str, positions: t.Any = None) -> websocket.WebSocket:
    query = f"client-id={uid}-tab&u={uid}&protocol=2"
    if positions is not None:
        query += "&pos=" + urllib.parse.quote(json.dumps(positions))
    return websocket.create_connection(base.replace("http", "ws") + "/chsk?" + query,
                                       timeout=TIMEOUT)


def _call(ws: websocket.WebSocket, event: t.Any, pushed: list[t.Any]) -> t.Any:
    ws.send(json.dumps([event, "cb"]))
    while True:
        message = recv(ws)
        if message[1] == "cb":
            return message[0][1]
        pushed.append(message[0])


def _topic_numbers(batches: list[t.Any], topic: str) -> list[int]:
    return [e[1][1][1] for b in batches for e in b
            if e[0] == "chsk/topic" and e[1][0] == topic]


def test_a_rejoin_on_another_worker_is_replayed_from_redis(redis_server):
    with worker(redis_server.url) as (a, sa, _), worker(redis_server.url) as (b, sb, _):
        @sa.on_join("room/*")
        @sb.on_join("room/*")
        def allow(msg: t.Any) -> bool:
            return True

        ws = _ws(a, "rex")
        positions = recv(ws)[0][1]["positions"]
        pushed: list[t.Any] = []
        joined = _call(ws, ["chsk/join", {"topic": "room/9"}], pushed)
        assert joined["ok"] and joined["recovered"] is None
        ws.close()
        for n in range(10):
            sa.publish("room/9", ("t/n", n))                 # while it is away
        gevent.sleep(0.3)
        ws = _ws(b, "rex", positions)
        try:
            assert recv(ws)[0][1]["recovered"] is True
            pushed = []
            again = _call(ws, ["chsk/join", {"topic": "room/9",
                                             "position": joined["position"]}], pushed)
            assert again["ok"] and again["recovered"] is True
            with gevent.Timeout(TIMEOUT):
                while len(_topic_numbers(pushed, "room/9")) < 10:
                    pushed.append(recv(ws)[0])
            assert _topic_numbers(pushed, "room/9") == list(range(10))
        finally:
            ws.close()


def test_server_side_join_and_leave_reach_a_client_on_another_worker(redis_server):
    with worker(redis_server.url) as (a, sa, _), worker(redis_server.url) as (b, sb, _):
        ws = _ws(a, "sue")
        recv(ws)
        try:
            sb.join("news", "sue")                           # made on the other worker
            got: list[t.Any] = []
            with gevent.Timeout(TIMEOUT):
                while not any(e[0] == "chsk/joined" for e in got):
                    got += recv(ws)[0]
            joined = next(e[1] for e in got if e[0] == "chsk/joined")
            assert joined["topic"] == "news" and len(joined["position"]) == 2
            with gevent.Timeout(TIMEOUT):
                while sb.members("news") != {"sue"}:
                    gevent.sleep(0.02)
            sb.publish("news", ("t/n", 1))
            with gevent.Timeout(TIMEOUT):
                while _topic_numbers([got], "news") != [1]:
                    got += recv(ws)[0]
            sb.leave("news", "sue")
            with gevent.Timeout(TIMEOUT):
                while not any(e[0] == "chsk/left" for e in got):
                    got += recv(ws)[0]
            assert next(e[1] for e in got if e[0] == "chsk/left") == {
                "topic": "news", "reason": "removed"}
            with gevent.Timeout(TIMEOUT):
                while sa.members("news") or sb.members("news"):
                    gevent.sleep(0.02)
        finally:
            ws.close()


def test_an_ajax_poll_naming_a_topic_without_its_grant_is_told_it_left(redis_server):
    """A poll that reaches a worker which never saw the client's join, naming a topic whose
    grant is gone from Redis (expired after a day, or revoked), gets ``chsk/left`` with
    reason "not-granted" instead of silently following nothing; a granted one is adopted."""
    import redis
    import requests

    with worker(redis_server.url) as (a, sa, _), worker(redis_server.url) as (b, sb, _):
        @sa.on_join("room/*")
        def allow(msg: t.Any) -> bool:
            return True

        query = {"client-id": "ivo-tab", "u": "ivo", "protocol": "2"}
        with requests.Session() as http:
            hs = http.get(a + "/chsk", params={**query, "handshake": "1"}, timeout=TIMEOUT)
            positions = hs.json()[0][1]["positions"]
            joins = {}
            for topic in ("room/kept", "room/gone"):
                reply = http.post(a + "/chsk", params=query, timeout=TIMEOUT,
                                  data=json.dumps([["chsk/join", {"topic": topic}], "ajax"]),
                                  headers={"Content-Type": "application/json"}).json()
                assert reply[0][1]["ok"], reply
                joins[topic] = reply[0][1]["position"]
            store = redis.Redis.from_url(redis_server.url)
            grants = [k for k in store.scan_iter("*grants*ivo-tab")]
            assert len(grants) == 1
            store.srem(grants[0], "room/gone")        # as if it had expired
            store.close()
            named = {**positions, **{f"t:{k}": v for k, v in joins.items()}}
            poll = http.get(b + "/chsk", timeout=TIMEOUT,
                            params={**query, "pos": json.dumps(named)}).json()
        events = poll[0]
        assert ["chsk/left", {"topic": "room/gone", "reason": "not-granted"}] in events
        assert not any(e[0] == "chsk/left" and e[1]["topic"] == "room/kept" for e in events)
        wait_for(lambda: "ivo" in sb.members("room/kept"))
