"""The write-only emitter: from a plain process (no Flask, no gevent) to clients of a
worker, through a real Redis; it raises when Redis is unreachable. Its topics — publish,
join, leave, members — against gunicorn's three workers with flask_sente's Python client."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import typing as t

import gevent
import pytest
import redis
import websocket

from flask_sente import JoinRefused
from flask_sente.backplanes import redis_scripts as rs
from flask_sente.client import Client
from flask_sente.emitter import Emitter
from flask_sente.exceptions import BackplaneError, LocalProtocolError

from .test_backplane import TIMEOUT, numbers, recv, wait_for, worker
from .test_gunicorn_cluster import cluster  # noqa: F401 (a fixture)

EMITTER_SCRIPT = textwrap.dedent("""
    import sys
    from flask_sente.emitter import Emitter
    e = Emitter(sys.argv[1])
    with e.batch():
        for i in range(3):
            e.send("eve", ("t/n", i))
    e.send("eve", ("t/n", 3))
    e.broadcast(("t/n", 4))
    assert "eve" in e.connected_uids.ws, e.connected_uids
    e.kick("eve", "bye")
    bad = [m for m in ("gevent", "flask") if m in sys.modules]
    sys.exit(f"imported {bad}" if bad else 0)
""")


def test_an_emitter_process_reaches_clients_of_a_worker(redis_server):
    with worker(redis_server.url) as (a, sa, _):
        ws = websocket.create_connection(
            a.replace("http", "ws") + "/chsk?client-id=c&u=eve&protocol=2", timeout=TIMEOUT)
        try:
            recv(ws)
            wait_for(lambda: "eve" in sa.connected_uids.ws)
            subprocess.run([sys.executable, "-c", EMITTER_SCRIPT, redis_server.url],
                           check=True, timeout=30)
            got = []
            code = None
            while code is None:
                opcode, data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big")
                else:
                    got.append(json.loads(data))
            assert numbers(got) == [0, 1, 2, 3, 4]       # then the kick, after them
            assert code == 4001
        finally:
            ws.close()


def test_the_emitter_raises_when_redis_is_unreachable(redis_server):
    url = redis_server.url
    redis_server.stop()
    emitter = Emitter(url, socket_timeout=0.5)
    try:
        with pytest.raises(BackplaneError):
            emitter.send("x", ("t/n", 1))
        with pytest.raises(BackplaneError):
            with emitter.batch():
                emitter.broadcast(("t/n", 1))
        with pytest.raises(BackplaneError):
            _ = emitter.connected_uids
        with pytest.raises(BackplaneError):
            emitter.publish("room/1", ("t/n", 1))
        with pytest.raises(BackplaneError):
            emitter.join("room/1", "x")                   # reading the user's clients
        with pytest.raises(BackplaneError):
            emitter.join("room/1", "x", client_id="c")    # the grant and the command
        with pytest.raises(BackplaneError):
            emitter.leave("room/1", "x", client_id="c")
        with pytest.raises(BackplaneError):
            emitter.members("room/1")
    finally:
        emitter.close()


def test_the_emitter_checks_topics_and_events_and_makes_no_topic_log(redis_server):
    """``publish``, ``join`` and ``leave`` refuse what the server's refuse, before any
    write; a publish to a topic nobody joined makes no log (``create`` off, as the
    server's own publish, checked beside it), in a batch too."""
    admin = redis.Redis.from_url(redis_server.url)
    try:
        with Emitter(redis_server.url, max_topic_length=10) as emitter:
            for topic in ("", "x" * 11, "a\nb", None, 7):
                with pytest.raises(LocalProtocolError):
                    emitter.publish(topic, ("t/n", 1))  # type: ignore[arg-type]
                with pytest.raises(LocalProtocolError):
                    emitter.join(topic, "u")  # type: ignore[arg-type]
                with pytest.raises(LocalProtocolError):
                    emitter.leave(topic, "u", client_id="c")  # type: ignore[arg-type]
            for event in (("chsk/joined", {}), "t/n", ("nons", 1), ("t/n", 1, 2)):
                with pytest.raises(LocalProtocolError):
                    emitter.publish("room", event)
            assert admin.dbsize() == 0
            emitter.publish("room", ("t/n", 1), exclude_client_id="c")
            with emitter.batch():
                emitter.publish("room", ("t/n", 2))
            assert emitter.members("room") == frozenset()
        with worker(redis_server.url) as (_, sa, _):
            sa.publish("room2", ("t/n", 1))
            state = next(iter(sa._apps)).extensions["sente"]
            state.hub.backplane.settled()
        for topic in ("room", "room2"):
            assert admin.exists(*rs.log_keys("sente", rs.topic_key(topic))) == 0, topic
    finally:
        admin.close()


def test_emitter_joins_and_leaves_in_one_batch_take_effect_in_order(redis_server):
    """Five joins and leaves of one user, alternating, in one round trip: the worker
    applies the commands in the log's order, so the client gets ten ``chsk/joined`` /
    ``chsk/left`` alternating and is out of the topic at the end.

    Before the worker applied a user's commands one after another, a leave applied while
    the join before it still waited for Redis (the topic log's TOUCH) found the client not
    in the topic yet and was lost: the client got five ``chsk/joined`` and stayed in (shown
    to fail again without ``TopicService.command``'s lane, in two runs of three)."""
    with worker(redis_server.url) as (a, sa, _), Emitter(redis_server.url) as emitter:
        ws = websocket.create_connection(
            a.replace("http", "ws") + "/chsk?client-id=fay-tab&u=fay&protocol=2",
            timeout=TIMEOUT)
        try:
            recv(ws)
            wait_for(lambda: "fay" in emitter.connected_uids.ws)
            with emitter.batch():
                for _ in range(5):
                    emitter.join("flip", "fay")
                    emitter.leave("flip", "fay")
            got: list[str] = []
            try:
                while len(got) < 10:
                    got += [e[0] for e in recv(ws)[0]
                            if e[0] in ("chsk/joined", "chsk/left")]
            except websocket.WebSocketTimeoutException:
                raise AssertionError(f"only {got}") from None
            assert got == ["chsk/joined", "chsk/left"] * 5
            wait_for(lambda: sa.members("flip") == emitter.members("flip") == frozenset())
        finally:
            ws.close()


def test_emitter_members_reads_as_the_server_does(redis_server):
    """``members`` equals the server's ``members`` for topics whose names hold glob and
    JSON characters (the read is a pattern over every topic's members), and a topic whose
    name starts another's does not take its members."""
    topics = {"r": {"ua"}, "r2": {"ub"}, "r*": {"ua", "ub"}, "r?": {"ub"},
              "r[1]": {"uc"}, "r\\": {"uc"}, 'r"q': {"ua"}, "é/ü": {"uc"}}
    with worker(redis_server.url) as (a, sa, _), Emitter(redis_server.url) as emitter:
        sockets = [websocket.create_connection(
            a.replace("http", "ws") + f"/chsk?client-id={uid}-tab&u={uid}&protocol=2",
            timeout=TIMEOUT) for uid in ("ua", "ub", "uc")]
        try:
            for ws in sockets:
                recv(ws)
            wait_for(lambda: sa.connected_uids.ws == {"ua", "ub", "uc"})
            for topic, uids in topics.items():
                for uid in uids:
                    sa.join(topic, uid)
            wait_for(lambda: all(sa.members(topic) == uids for topic, uids in topics.items()),
                     what="the server's members")
            for topic in topics:
                assert emitter.members(topic) == sa.members(topic), topic
            assert emitter.members("r[") == emitter.members("nobody") == frozenset()
        finally:
            for ws in sockets:
                ws.close()


# --- topics ------------------------------------------------------------------------------

PUBLISHER_SCRIPT = textwrap.dedent("""
    import sys
    from flask_sente.emitter import Emitter
    url, topic, ann, bob = sys.argv[1:5]
    with Emitter(url) as e:
        for n in range(10):
            e.publish(topic, ("t/p", n))
        with e.batch():                                  # one round trip, in order
            for n in range(10, 20):
                e.publish(topic, ("t/p", n), exclude_client_id=bob if n % 2 else None)
        for n in range(20, 25):
            e.publish(topic, ("t/p", n), exclude_client_id=ann)
        e.publish(topic, ("t/end", None))
    bad = [m for m in ("gevent", "flask") if m in sys.modules]
    sys.exit(f"imported {bad}" if bad else 0)
""")


def _topic_client(host: str, uid: str, transport: str, topic: str | None = None,
                  ) -> tuple[Client, list[t.Any]]:
    """A flask_sente client of ``uid`` (client id ``<uid>-<transport>``), recording what
    reaches it of ``topic``, and its ``chsk/joined`` and ``chsk/left`` as
    ``("joined", topic)`` / ``("left", topic, reason)``."""
    client = Client(f"http://{host}/chsk", type=transport, params={"u": uid},
                    client_id=f"{uid}-{transport}", connect_timeout=5)
    got: list[t.Any] = []
    if topic is not None:
        client.on_topic(topic, lambda event_id, data: got.append((event_id, data)))
    client.on("chsk/joined", lambda data: got.append(("joined", data["topic"])))
    client.on("chsk/left", lambda data: got.append(("left", data["topic"], data["reason"])))
    client.connect()
    assert client.wait_open(TIMEOUT * 2)
    return client, got


def test_an_emitter_process_publishes_to_a_topic_s_members_on_every_worker(
        cluster, redis_server):  # noqa: F811
    """A plain process (no Flask, no gevent) publishes to ``room/emit``: ann (WebSocket) and
    bob (Ajax), joined through gunicorn's three workers, get every publish once and in
    order, each but the ones that excluded its client; the publishes made in a ``batch()``
    keep their place. Shown to fail by dropping ``exclude_client_id`` (the target field
    left "" for every publish): bob got 11, 13, ..., ann got 20-24."""
    host, _ = cluster
    ann, ann_got = _topic_client(host, "ann", "ws", "room/emit")
    bob, bob_got = _topic_client(host, "bob", "ajax", "room/emit")
    try:
        ann.join("room/emit", timeout=TIMEOUT)
        bob.join("room/emit", timeout=TIMEOUT)
        with Emitter(redis_server.url) as emitter:
            wait_for(lambda: emitter.members("room/emit") == {"ann", "bob"}, TIMEOUT)
        subprocess.run([sys.executable, "-c", PUBLISHER_SCRIPT, redis_server.url, "room/emit",
                        ann.client_id, bob.client_id], check=True, timeout=30)
        wait_for(lambda: ("t/end", None) in ann_got and ("t/end", None) in bob_got, TIMEOUT,
                 "the end marker")
        end = [("t/end", None)]
        assert ann_got == [("t/p", n) for n in range(20)] + end      # 20-24 excluded ann
        assert bob_got == [("t/p", n) for n in range(25)             # odd 11-19 excluded bob
                           if not (10 < n < 20 and n % 2)] + end
    finally:
        ann.close()
        bob.close()


def test_emitter_join_and_leave_reach_the_user_s_clients_on_every_worker(
        cluster, redis_server):  # noqa: F811
    """``join`` puts both of sue's clients (a WebSocket and an Ajax one, on any of three
    workers) in ``news``, a topic with no join handler that clients cannot join by
    themselves: each gets ``chsk/joined``, then the topic's publishes, and ``members``
    shows sue. The grant comes along: the WebSocket, cut, rejoins by itself. ``leave``
    with a client id takes out that client only, then without one the other: each gets
    ``chsk/left`` ``removed``, the grant is gone (its own join is refused), and ``members``
    is empty.

    Shown to fail by making no grants in ``join`` (the rejoin after the cut was refused:
    ``chsk/left`` ``forbidden``) and by appending ``leave`` as the client's own "leave"
    command (no ``chsk/left`` came)."""
    host, admin = cluster
    ws, ws_got = _topic_client(host, "sue", "ws", "news")
    ajax, ajax_got = _topic_client(host, "sue", "ajax", "news")
    rejoined: list[t.Any] = []
    ws.on("chsk/rejoined", rejoined.append)
    try:
        with Emitter(redis_server.url) as emitter:
            wait_for(lambda: "sue" in emitter.connected_uids.ws
                     and "sue" in emitter.connected_uids.ajax, TIMEOUT)
            emitter.join("news", "sue")
            wait_for(lambda: ("joined", "news") in ws_got and ("joined", "news") in ajax_got,
                     TIMEOUT, "chsk/joined")
            wait_for(lambda: emitter.members("news") == {"sue"}, TIMEOUT)
            assert ws.topics == ajax.topics == ["news"]
            emitter.publish("news", ("t/p", 1))
            wait_for(lambda: ("t/p", 1) in ws_got and ("t/p", 1) in ajax_got, TIMEOUT)

            ws.break_connection()                        # back on any worker, by the grant
            wait_for(lambda: rejoined or [e for e in ws_got if e[0] == "left"], TIMEOUT,
                     "the rejoin")
            assert [e for e in ws_got if e[0] == "left"] == []
            assert rejoined[0]["topic"] == "news" and rejoined[0]["recovered"] is True
            emitter.publish("news", ("t/p", 2))
            wait_for(lambda: ("t/p", 2) in ws_got and ("t/p", 2) in ajax_got, TIMEOUT)

            emitter.leave("news", "sue", client_id=ajax.client_id)
            wait_for(lambda: ("left", "news", "removed") in ajax_got, TIMEOUT)
            emitter.publish("news", ("t/p", 3))
            wait_for(lambda: ("t/p", 3) in ws_got, TIMEOUT)
            assert emitter.members("news") == {"sue"}     # her other client is in
            emitter.leave("news", "sue")
            wait_for(lambda: ("left", "news", "removed") in ws_got, TIMEOUT)
            wait_for(lambda: emitter.members("news") == frozenset(), TIMEOUT)
            assert ws.topics == ajax.topics == []
            grants = rs.grants_key(emitter.prefix, rs.user_key("sue"), ws.client_id)
            assert admin.smembers(grants) == set()         # revoked
            with pytest.raises(JoinRefused) as refused:
                ws.join("news", timeout=TIMEOUT)
            assert refused.value.reason == "forbidden"
        assert ("t/p", 3) not in ajax_got
        assert [e for e in ws_got if e[0] == "t/p"] == [("t/p", 1), ("t/p", 2), ("t/p", 3)]
        assert [e for e in ajax_got if e[0] == "t/p"] == [("t/p", 1), ("t/p", 2)]
    finally:
        ws.close()
        ajax.close()


CALLER_SCRIPT = textwrap.dedent("""
    import json, sys
    from flask_sente.emitter import Emitter
    from flask_sente.exceptions import CallError
    e = Emitter(sys.argv[1])
    out = []
    for client_id, event in [(sys.argv[2], ("t/triple", 4)), (sys.argv[3], ("t/triple", 5)),
                             (sys.argv[2], ("t/nobody", 1)), (sys.argv[3], ("t/fail", 1)),
                             ("not-a-client", ("t/triple", 1))]:
        uid = client_id.split("-")[0]
        try:
            out.append(e.call(uid, event, client_id=client_id, timeout=10))
        except CallError as exc:
            out.append([type(exc).__name__, exc.client_id])
    print(json.dumps(out))
    bad = [m for m in ("gevent", "flask") if m in sys.modules]
    sys.exit(f"imported {bad}" if bad else 0)
""")


def _answering(host: str, uid: str, transport: str) -> Client:
    client, _ = _topic_client(host, uid, transport)
    client.answer("t/triple", lambda n: 3 * n)

    def fail(data: t.Any) -> t.Any:
        raise RuntimeError("not today")

    client.answer("t/fail", fail)
    return client


def test_an_emitter_process_calls_clients_on_the_workers(cluster, redis_server):  # noqa: F811
    """``Emitter.call`` from a plain process: the answer of a WebSocket client and of an
    Ajax client (held by any of three workers) comes back through Redis to the emitter's
    own channel; no handler, a failing handler and an unknown client are their errors.
    Shown to fail by publishing routed outcomes on the asker's node channel misspelled
    (every call timed out)."""
    host, _ = cluster
    ann, bob = _answering(host, "ann", "ws"), _answering(host, "bob", "ajax")
    try:
        with Emitter(redis_server.url) as emitter:
            wait_for(lambda: {"ann", "bob"} <= emitter.connected_uids.any, TIMEOUT)
        result = subprocess.run(
            [sys.executable, "-c", CALLER_SCRIPT, redis_server.url, ann.client_id,
             bob.client_id], check=True, timeout=60, capture_output=True, text=True)
        assert json.loads(result.stdout) == [
            12, 15, ["NoAnswerHandler", ann.client_id], ["ClientCallError", bob.client_id],
            ["ClientGone", "not-a-client"]]
    finally:
        ann.close()
        bob.close()


def test_an_emitter_call_fails_at_once_when_the_client_leaves(
        cluster, redis_server):  # noqa: F811
    """The client's own close, announced by its worker through Redis, reaches the
    emitter waiting in another process: ClientGone within a moment, not the timeout."""
    host, _ = cluster
    ann, _ = _topic_client(host, "ann", "ws")
    answering, release = threading.Event(), threading.Event()
    ann.answer("t/wait", lambda data: (answering.set(), release.wait(TIMEOUT)))
    outcome: list[BaseException] = []

    def ask() -> None:
        with Emitter(redis_server.url) as emitter:
            try:
                emitter.call("ann", ("t/wait", None), client_id=ann.client_id, timeout=20)
            except BaseException as exc:
                outcome.append(exc)

    asker = gevent.spawn(ask)
    try:
        assert answering.wait(TIMEOUT)
        left = time.monotonic()
        ann.disconnect()
        asker.join(TIMEOUT)
        took = time.monotonic() - left
    finally:
        asker.kill()
        release.set()
        ann.close()
    assert len(outcome) == 1 and type(outcome[0]).__name__ == "ClientGone", outcome
    assert took < 2.0, took
