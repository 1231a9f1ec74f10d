"""Topics under real ``gunicorn -k flask_sente.worker.SenteWorker -w 3`` with Redis: joins
allowed and refused on any worker, publishes from every worker reaching members only, in
order, on both transports (Ajax polls on a new TCP connection each, so a poll often lands on
a worker that did not see the join), members equal on every worker, topic presence once in
the cluster, and leave stopping delivery."""
from __future__ import annotations

import json
import typing as t

import gevent
import pytest
import requests
from cutproxy import CutProxy, cutting

from flask_sente.client import Client

from .test_gunicorn_cluster import (  # noqa: F401
    TIMEOUT,
    AjaxClient,
    WsClient,
    _increasing,
    call,
    cluster,
)


def _join_ws(client: WsClient, topic: str) -> dict[str, t.Any]:
    client.ws.send(json.dumps([["chsk/join", {"topic": topic}], "j1"]))
    while True:
        payload = json.loads(client.ws.recv())
        if payload[0] == ["chsk/reply", payload[0][1]] and payload[1] == "j1":
            return t.cast("dict[str, t.Any]", payload[0][1])
        if isinstance(payload[0], list) and isinstance(payload[0][0], list):
            *events, mark = payload[0]
            client.events += events


def _post(client: AjaxClient, event: t.Any) -> t.Any:
    r = requests.post(client.base, data=json.dumps([event, "cb"]), timeout=TIMEOUT,
                      headers={"Content-Type": "application/json", "Connection": "close"})
    r.raise_for_status()
    return r.json()[0][1]


def test_topics_across_three_workers(cluster):  # noqa: F811
    """Joins, publishes from every worker, members and leave across three workers, read at
    the wire of raw clients: ann (WebSocket) and bob (Ajax) are members and get every
    publish once, in order; carl (WebSocket, refused ``vip``) and dee (Ajax) are not, and
    get none of them; after bob's leave, nothing more of the topic reaches him. Each "got
    none" is read up to a marker pushed to the user after the publishes (the push's reply
    comes once it is in Redis, after the publishes), not after a sleep; an error while
    reading fails the test instead of counting as "received nothing".

    Shown to fail three ways, each on the workers (the clients drop what such a server
    would send, so only a raw reader can tell): a refused join reading the topic anyway
    (``_join_request`` joining the reader before answering "forbidden"): carl got vip's
    publishes; a poll adopting the topics it names without a grant (``adopt_topics``
    skipping its grant check): dee got room/1's; a leave answered without taking the
    client out (``_leave_request`` without ``_leave_here`` and its ``leave`` command): bob
    got the publishes made after his leave. (The old version slept 1 s for bob and read
    carl with ``except Exception`` counting any error as "received nothing".)"""
    host, r = cluster
    ann = WsClient(host, "ann")
    bob = AjaxClient(host, "bob")
    carl = WsClient(host, "carl")
    dee = AjaxClient(host, "dee")
    bob.polling()
    try:
        with gevent.Timeout(90):
            joined = _join_ws(ann, "room/1")
            assert joined["ok"] and joined["topic"] == "room/1"
            reply = _post(bob, ["chsk/join", {"topic": "room/1"}])
            assert reply["ok"]
            bob.positions["t:room/1"] = reply["position"]
            assert _join_ws(carl, "vip") == {"ok": False, "topic": "vip",
                                             "reason": "forbidden"}
            # dee never joins, but names the topic in its polls at its current position,
            # as a client that guessed it would: a poll adds only granted topics.
            dee.positions["t:room/1"] = joined["position"]
            dee.polling()

            # Publish from fresh connections until every worker has published (the kernel
            # hands them out unevenly under load), at least 60 times.
            pids: set[int] = set()
            count = 0
            while count < 60 or (len(pids) < 3 and count < 600):
                pids.add(call(host, ["t/publish", {"topic": "room/1", "n": count}]))
                count += 1
            assert len(pids) == 3, f"{count} publishes came from {len(pids)} workers"
            expected = [["chsk/topic", ["room/1", ["t/p", n]]] for n in range(count)]
            for n in range(5):                            # carl was refused this one
                call(host, ["t/publish", {"topic": "vip", "n": n}])
            for uid in ("carl", "dee"):
                call(host, ["t/push", {"to": uid, "n": "marker"}])
            ann.read_until(lambda: len(ann.events) >= count)
            assert ann.events == expected
            assert _increasing(ann.seqs["t:room/1"])       # the topic's seqs, per mark
            bob.wait(lambda: len(bob.events) >= count)
            assert bob.events == expected
            assert bob.handshakes == 0
            carl.read_until(lambda: ["t/n", "marker"] in carl.events)
            assert carl.events == [["t/n", "marker"]]       # nothing of the topic
            dee.wait(lambda: dee.got_marker("marker"))
            assert dee.events == [["t/n", "marker"]]

            def views() -> dict[int, list[str]]:
                seen: dict[int, list[str]] = {}
                while len(seen) < 3:
                    answer = call(host, ["t/members", "room/1"])
                    seen[answer["pid"]] = answer["members"]
                return seen

            assert list(views().values()) == [["ann", "bob"]] * 3

            assert _post(bob, ["chsk/leave", {"topic": "room/1"}]) == {"ok": True,
                                                                        "topic": "room/1"}
            del bob.positions["t:room/1"]
            for n in range(count, count + 10):
                call(host, ["t/publish", {"topic": "room/1", "n": n}])
            call(host, ["t/push", {"to": "bob", "n": "after the leave"}])
            ann.read_until(lambda: len(ann.events) >= count + 10)
            bob.wait(lambda: bob.got_marker("after the leave"))
            assert bob.events == [*expected, ["t/n", "after the leave"]]  # left: nothing
            assert bob.violations == [] and dee.violations == []
            deadline = gevent.Timeout(10, AssertionError("members not updated"))
            with deadline:
                while list(views().values()) != [["ann"]] * 3:
                    gevent.sleep(0.1)
    finally:
        bob.stopping = dee.stopping = True  # both end their poll in the same wait
        bob.stop()
        dee.stop()
        for ws in (ann, carl):
            ws.ws.close()
    def events() -> list[tuple[str, ...]]:
        return sorted(tuple(json.loads(e)[:3]) for e in r.lrange("test:topics", 0, -1))

    with gevent.Timeout(10, AssertionError(f"ann never left: {events()}")):
        while ("left", "room/1", "ann") not in events():   # her socket closed: after grace
            gevent.sleep(0.1)
    # A marker user joins and goes: its topic_left comes after its grace, so a repeated
    # transition of ann's or bob's would be logged before it.
    mark = WsClient(host, "mark")
    assert _join_ws(mark, "room/1")["ok"]
    mark.ws.close()
    with gevent.Timeout(20, AssertionError(f"the marker never left: {events()}")):
        while ("left", "room/1", "mark") not in events():
            gevent.sleep(0.1)
    assert events() == [("joined", "room/1", "ann"), ("joined", "room/1", "bob"),
                        ("joined", "room/1", "mark"), ("left", "room/1", "ann"),
                        ("left", "room/1", "bob"), ("left", "room/1", "mark")]


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_the_python_client_rejoins_and_is_replayed_through_cuts(cluster, transport):  # noqa: F811
    """The Python client behind a proxy that cuts its connections: every reconnect may land
    on another worker, rejoins the topic with its position there, and every publish (made
    from all three workers) arrives once, in order."""
    host, _ = cluster
    port = int(host.rsplit(":", 1)[1])
    with CutProxy(port) as proxy:
        client = Client(f"http://127.0.0.1:{proxy.port}/chsk?u=pat", type=transport,
                        backoff=lambda attempt: 0.05, connect_timeout=5)
        got: list[int] = []
        lost: list[t.Any] = []
        client.on_topic("room/c", lambda event_id, data: got.append(data))
        client.on("chsk/rejoined", lambda info: lost.append(info) if info["recovered"] is False
                  else None)
        try:
            client.connect()
            assert client.wait_open(TIMEOUT)
            client.join("room/c", timeout=TIMEOUT)

            def publish() -> None:
                for n in range(120):
                    call(host, ["t/publish", {"topic": "room/c", "n": n}])
                    gevent.sleep(0.01)

            with cutting(proxy, publish, every=0.4), gevent.Timeout(
                    60, AssertionError(f"publishes missing: {len(got)}; not recovered: {lost}")):
                while len(got) < 120 and not lost:
                    gevent.sleep(0.05)
            assert lost == []
            assert proxy.cuts >= 2
            assert got == list(range(120))
        finally:
            client.close()
