"""Topics through a real Redis between two apps ("workers") in one process: a client that
rejoins on the other worker is replayed from the Redis stream, and a server-side join or
leave made on one worker reaches the client's connection on the other."""
from __future__ import annotations

import json
import time
import typing as t
import urllib.parse

import gevent
import gevent.monkey
import requests
import websocket

from .test_backplane import TIMEOUT, recv, worker

_start_thread = gevent.monkey.get_original("_thread", "start_new_thread")


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


def test_an_ajax_client_held_past_its_grants_lifetime_still_moves_with_its_topic(redis_server):
    """A grant lasts ``grants_ttl`` after the last join (a day; 2 s here). The worker that
    holds a client reading the topic renews it, so when the client's poll reaches a worker
    that never saw the join, long after, the topic comes along."""
    opts = dict(lp_timeout=0.5, ws_keepalive=2)
    with worker(redis_server.url, **opts) as (a, sa, _), \
            worker(redis_server.url, **opts) as (b, sb, _):
        for sente in (sa, sb):
            next(iter(sente._apps)).extensions["sente"].hub.backplane.grants_ttl = 2.0

            @sente.on_join("room/*")
            def allow(msg: t.Any) -> bool:
                return True

        http = requests.Session()
        try:
            query = "client-id=g1&u=gus&protocol=2"
            positions = http.get(f"{a}/chsk?{query}&handshake=1",
                                 timeout=TIMEOUT).json()[0][1]["positions"]
            joined = http.post(f"{a}/chsk?{query}", data=json.dumps([["chsk/join",
                                                                      {"topic": "room/5"}], "cb"]),
                               headers={"Content-Type": "application/json"},
                               timeout=TIMEOUT).json()[0][1]
            assert joined["ok"] is True
            positions["t:room/5"] = joined["position"]

            def poll(base: str) -> t.Any:
                q = urllib.parse.quote(json.dumps(positions))
                return http.get(f"{base}/chsk?{query}&pos={q}", timeout=TIMEOUT).json()[0]

            deadline = time.monotonic() + 5.0  # 2.5 lifetimes, polling worker a all along
            while time.monotonic() < deadline:
                poll(a)
            sb.publish("room/5", ("t/n", 1))
            got: list[t.Any] = []
            with gevent.Timeout(TIMEOUT):
                while not _topic_numbers([got], "room/5"):
                    payload = poll(b)                  # b never saw the join: only the grant
                    if isinstance(payload[0], list):
                        got += payload
            assert _topic_numbers([got], "room/5") == [1]
        finally:
            http.close()


def test_a_thread_s_publishes_keep_their_order_through_a_worker_not_yet_started(
        redis_server):
    """An OS thread (a worker thread of the app, a thread-pool task) publishes 30 events
    through a worker that has not used Redis yet — no client, no push so far: they reach a
    member on the other worker in the thread's order. The first call starts the backplane
    and waits for its subscription; each call used to be handed to the hub's loop as a
    greenlet of its own, started at once, so the later ones went into the outbox meanwhile,
    ahead of it: the member got 1, 2, ..., 29, 0 (before the thread's calls ran one after
    another, ``HubLoop.call_from_thread``'s lane; shown to fail again without it)."""
    with worker(redis_server.url) as (a, sa, _), worker(redis_server.url) as (b, sb, _):
        @sa.on_join("room/*")
        def allow(msg: t.Any) -> bool:
            return True

        ws = _ws(a, "tess")
        try:
            recv(ws)
            pushed: list[t.Any] = []
            assert _call(ws, ["chsk/join", {"topic": "room/t"}], pushed)["ok"]
            done: list[bool] = []
            _start_thread(lambda: ([sb.publish("room/t", ("t/n", n)) for n in range(30)],
                                   done.append(True)), ())
            with gevent.Timeout(TIMEOUT):
                while not done:
                    gevent.sleep(0.01)
            with gevent.Timeout(TIMEOUT, AssertionError(f"got {pushed}")):
                while len(_topic_numbers(pushed, "room/t")) < 30:
                    pushed.append(recv(ws)[0])
            assert _topic_numbers(pushed, "room/t") == list(range(30))
        finally:
            ws.close()
