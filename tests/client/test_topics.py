"""Topics with the Python client on real sockets, both transports: join allowed and refused,
publish reaching members only (tagged with its topic), exclude, leave, server-side join and
leave, members and topic presence once per user, limits, and rejoin with replay after a cut."""
from __future__ import annotations

import contextlib
import threading
import typing as t

import gevent
import pytest
from cutproxy import CutProxy, cutting
from flask import Flask, request

from flask_sente import JoinRefused, Sente, signals
from flask_sente.client import Client
from flask_sente.testing import serve

from .conftest import TIMEOUT, wait_until


class TopicServer:
    """An app whose users are named by the ``user`` query parameter, with join rules:
    ``room/*`` anyone (join data: the members so far), ``vip`` nobody but ``ann``,
    ``full/*`` refused with a reason of the handler's own; nothing else matches."""

    def __init__(self, **options: t.Any) -> None:
        options.setdefault("csrf", False)
        self.app = Flask(__name__)
        self.app.secret_key = "test"
        self.sente = sente = Sente(self.app, **options)
        self.joins: list[tuple[str, t.Any, bool]] = []
        self.presence: list[tuple[str, str, t.Any]] = []
        self.base = ""

        @sente.user_id
        def user_id(client_id: str) -> t.Any:
            return request.args.get("user")

        @sente.on_join("room/*")
        def room(msg: t.Any) -> t.Any:
            self.joins.append((msg.topic, msg.uid, msg.rejoin))
            return {"members": sorted(sente.members(msg.topic))}

        @sente.on_join("vip")
        def vip(msg: t.Any) -> bool:
            return bool(msg.uid == "ann")

        @sente.on_join("full/*")
        def full(msg: t.Any) -> None:
            raise JoinRefused("no seats left")

        @sente.on("t/say")
        def say(msg: t.Any) -> None:
            sente.publish(msg.data["topic"], ("chat/said", msg.data["text"]),
                          exclude_client_id=msg.client_id)
            msg.reply(True)

        def joined(sender: t.Any, topic: str, uid: t.Any) -> None:
            self.presence.append(("joined", topic, uid))

        def left(sender: t.Any, topic: str, uid: t.Any) -> None:
            self.presence.append(("left", topic, uid))

        self._receivers = (joined, left)  # blinker keeps weak references
        signals.topic_joined.connect(joined, self.app)
        signals.topic_left.connect(left, self.app)

    def url(self, user: str, port: int | None = None) -> str:
        base = self.base if port is None else self.base.rsplit(":", 1)[0] + f":{port}"
        return f"{base}/chsk?user={user}"


@pytest.fixture
def topic_server() -> t.Iterator[t.Callable[..., TopicServer]]:
    stack = contextlib.ExitStack()

    def make(**options: t.Any) -> TopicServer:
        server = TopicServer(**options)
        server.base = stack.enter_context(serve(server.app))
        return server

    with stack:
        yield make


def _client(make_client: t.Callable[..., Client], server: TopicServer, user: str,
            transport: str, **options: t.Any) -> Client:
    chsk = make_client(server.url(user), type=transport, **options)
    assert chsk.wait_open(TIMEOUT)
    return chsk


def _topic_events(chsk: Client, topic: str) -> list[tuple[str, t.Any]]:
    got: list[tuple[str, t.Any]] = []
    chsk.on_topic(topic, lambda event_id, data: got.append((event_id, data)))
    return got


def test_join_publish_reaches_members_only_with_its_topic(topic_server, make_client,
                                                          transport):
    server = topic_server()
    ann = _client(make_client, server, "ann", transport)
    bob = _client(make_client, server, "bob", transport)
    ann_got = _topic_events(ann, "room/1")
    bob_plain: list[t.Any] = []
    bob.on("chat/said", bob_plain.append)
    assert ann.join("room/1", {"hello": 1}, timeout=TIMEOUT) == {"members": []}
    assert ann.topics == ["room/1"]
    assert server.sente.members("room/1") == {"ann"}
    server.sente.publish("room/1", ("chat/said", "hi"))
    wait_until(lambda: ann_got == [("chat/said", "hi")], message="ann gets the publish")
    gevent.sleep(0.2)
    assert bob_plain == []                              # not a member: nothing


def test_a_refused_join_raises_with_the_servers_reason(topic_server, make_client, transport):
    server = topic_server()
    bob = _client(make_client, server, "bob", transport)
    with pytest.raises(JoinRefused) as refused:
        bob.join("vip", timeout=TIMEOUT)
    assert refused.value.reason == "forbidden"
    with pytest.raises(JoinRefused) as refused:
        bob.join("full/1", timeout=TIMEOUT)
    assert refused.value.reason == "no seats left"
    with pytest.raises(JoinRefused) as refused:
        bob.join("nobody-handles-this", timeout=TIMEOUT)
    assert refused.value.reason == "forbidden"
    assert bob.topics == [] and server.sente.members("vip") == frozenset()
    ann = _client(make_client, server, "ann", transport)
    assert ann.join("vip", timeout=TIMEOUT) is None   # True: allowed, no data


def test_exclude_leave_and_events_without_topic_handler(topic_server, make_client,
                                                        transport):
    server = topic_server()
    ann = _client(make_client, server, "ann", transport)
    bob = _client(make_client, server, "bob", transport)
    ann_got = _topic_events(ann, "room/x")
    bob_said: list[t.Any] = []
    bob.on("chat/said", bob_said.append)                # no on_topic: plain handlers
    ann.join("room/x", timeout=TIMEOUT)
    bob.join("room/x", timeout=TIMEOUT)
    assert bob.call(("t/say", {"topic": "room/x", "text": "from bob"}), timeout=TIMEOUT)
    wait_until(lambda: ann_got == [("chat/said", "from bob")])
    gevent.sleep(0.2)
    assert bob_said == []                               # excluded: the sender's own tab
    ann.leave("room/x", timeout=TIMEOUT)
    assert ann.topics == []
    server.sente.publish("room/x", ("chat/said", "after"))
    wait_until(lambda: bob_said == ["after"])
    gevent.sleep(0.2)
    assert ann_got == [("chat/said", "from bob")]       # left: nothing more


def test_members_and_presence_fire_once_per_user(topic_server, make_client):
    server = topic_server(topic_presence=True, reconnect_grace_ws=0.2, lp_timeout=1,
                          reconnect_grace_ajax=0.2)
    tab1 = _client(make_client, server, "ann", "ws")
    tab2 = _client(make_client, server, "ann", "ajax")
    bob = _client(make_client, server, "bob", "ws")
    diffs: list[t.Any] = []
    bob.on_topic("room/p", lambda event_id, data: diffs.append((event_id, data)))
    bob.join("room/p", timeout=TIMEOUT)
    tab1.join("room/p", timeout=TIMEOUT)
    tab2.join("room/p", timeout=TIMEOUT)
    assert server.sente.members("room/p") == {"ann", "bob"}
    wait_until(lambda: ("chsk/members", {"joined": ["ann"], "left": []}) in diffs)
    tab1.leave("room/p", timeout=TIMEOUT)
    gevent.sleep(0.3)
    assert server.sente.members("room/p") == {"ann", "bob"}   # ann's other tab is in
    tab2.close()                                              # gone, after the grace
    wait_until(lambda: server.sente.members("room/p") == {"bob"}, message="ann left")
    wait_until(lambda: ("chsk/members", {"joined": [], "left": ["ann"]}) in diffs)
    assert server.presence == [("joined", "room/p", "bob"), ("joined", "room/p", "ann"),
                               ("left", "room/p", "ann")]


def test_server_side_join_and_leave(topic_server, make_client, transport):
    server = topic_server()
    ann = make_client(server.url("ann"), type=transport, receive_system_events=True)
    assert ann.wait_open(TIMEOUT)
    got = _topic_events(ann, "news")                   # no on_join handler for "news"
    server.sente.join("news", "ann")
    wait_until(lambda: ann.topics == ["news"], message="the server's join")
    server.sente.publish("news", ("news/item", 1))
    wait_until(lambda: got == [("news/item", 1)])
    server.sente.leave("news", "ann")
    wait_until(lambda: ann.topics == [], message="the server's leave")
    left = []
    deadline = gevent.Timeout(TIMEOUT)
    with deadline:
        while not left:
            event = ann.receive(timeout=TIMEOUT)
            if event and event[0] == "chsk/left":
                left.append(event[1])
    assert left == [{"topic": "news", "reason": "removed"}]
    server.sente.publish("news", ("news/item", 2))
    gevent.sleep(0.2)
    assert got == [("news/item", 1)]


def test_limits_refuse_with_reasons(topic_server, make_client):
    server = topic_server(max_topics_per_client=2, max_topic_members=1,
                          max_topic_length=10)
    ann = _client(make_client, server, "ann", "ws")
    bob = _client(make_client, server, "bob", "ws")
    ann.join("room/a", timeout=TIMEOUT)
    ann.join("room/b", timeout=TIMEOUT)
    with pytest.raises(JoinRefused) as refused:
        ann.join("room/c", timeout=TIMEOUT)
    assert refused.value.reason == "too-many-topics"
    with pytest.raises(JoinRefused) as refused:
        bob.join("room/a", timeout=TIMEOUT)
    assert refused.value.reason == "full"
    with pytest.raises(JoinRefused) as refused:
        bob.join("room/" + "x" * 20, timeout=TIMEOUT)
    assert refused.value.reason == "bad-request"
    with pytest.raises(ValueError):
        server.sente.publish("", ("x/y", 1))


@pytest.mark.parametrize("transport", ["ws", "ajax"])
class PollGate:
    """WSGI middleware holding Ajax polls (GETs that are no handshake) while ``held`` is
    clear, then letting them through: what is pushed meanwhile answers one poll."""

    def __init__(self, app: t.Any) -> None:
        self.app = app
        self.open = threading.Event()
        self.open.set()
        self.waiting = 0

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        query = environ.get("QUERY_STRING", "")
        if environ["REQUEST_METHOD"] == "GET" and "handshake=" not in query:
            if not self.open.is_set():
                self.waiting += 1
                self.open.wait(TIMEOUT)
        return self.app(environ, start_response)


def test_a_topic_the_server_joins_is_rejoined_from_the_batchs_mark(topic_server, make_client):
    """The server joins the client and publishes at once, and both reach it in one poll's
    batch: the notice (with the topic's position before the publish), the publish, and the
    mark with the newer position. The next poll, and a reconnect's rejoin, go on from the
    mark, so nothing is replayed. Before the fix the client took the notice's position:
    its next poll named it and the server sent the item again (``got`` held it twice).
    (A room, so the rejoin has a join handler: over Ajax the server refuses the rejoin of
    a topic it joined the client to when no handler matches, as "forbidden" — a server
    matter, left alone here.)"""
    server = topic_server()
    gate = PollGate(server.app.wsgi_app)
    server.app.wsgi_app = gate  # type: ignore[method-assign]
    try:
        ann = make_client(server.url("ann"), type="ajax", receive_system_events=True)
        assert ann.wait_open(TIMEOUT)
        got = _topic_events(ann, "room/news")
        rejoined: list[t.Any] = []
        synced: list[t.Any] = []
        ann.on("chsk/rejoined", rejoined.append)
        ann.on("t/sync", synced.append)
        gate.open.clear()
        server.sente.send("ann", ("t/sync", 1), flush=True)  # ends the parked poll
        wait_until(lambda: gate.waiting, message="the next poll, held")
        server.sente.join("room/news", "ann")
        wait_until(lambda: server.sente.members("room/news") == {"ann"}, message="the join")
        server.sente.publish("room/news", ("news/item", 1))
        gate.open.set()  # one poll brings the notice, the publish and their mark
        wait_until(lambda: got, message="the publish")
        ann.break_connection()
        wait_until(lambda: rejoined, message="the rejoin")
        assert rejoined == [{"topic": "room/news", "recovered": True}]
        server.sente.send("ann", ("t/sync", 2), flush=True)  # what a rejoin replays is in
        wait_until(lambda: 2 in synced, message="the sync push")
        assert got == [("news/item", 1)]
    finally:
        gate.open.set()


def test_rejoin_replays_what_was_published_during_cuts(topic_server, make_client,
                                                       transport):
    server = topic_server(lp_timeout=1)
    with CutProxy(int(server.base.rsplit(":", 1)[1])) as proxy:
        ann = make_client(server.url("ann", proxy.port), type=transport, connect=False,
                          receive_system_events=True)
        got = _topic_events(ann, "room/r")
        ann.connect()
        assert ann.wait_open(TIMEOUT)
        ann.join("room/r", timeout=TIMEOUT)

        def publish() -> None:
            for n in range(200):
                server.sente.publish("room/r", ("t/n", n))
                gevent.sleep(1 / 100)

        with cutting(proxy, publish):
            wait_until(lambda: len(got) >= 200, timeout=30,
                       message=f"every publish (got {len(got)})")
        assert proxy.cuts >= 2
        assert [data for _, data in got] == list(range(200))
        assert server.joins[0] == ("room/r", "ann", False)
        assert all(rejoin for _, _, rejoin in server.joins[1:])


def test_a_rejoin_after_the_history_is_gone_says_not_recovered(topic_server, make_client):
    server = topic_server(history_size=3)
    ann = make_client(server.url("ann"), type="ws", receive_system_events=True)
    assert ann.wait_open(TIMEOUT)
    ann.join("room/h", timeout=TIMEOUT)
    rejoined: list[t.Any] = []
    ann.on("chsk/rejoined", rejoined.append)
    ann.disconnect()
    for n in range(10):                                  # more than the history holds
        server.sente.publish("room/h", ("t/n", n))
    ann.connect()
    wait_until(lambda: rejoined, message="the rejoin")
    assert rejoined == [{"topic": "room/h", "recovered": False}]
