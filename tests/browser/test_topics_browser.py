"""Topics in real Chromium (docs/protocol.md §11), over both transports: joins allowed and
refused with the server's reason, a topic's events reaching its members only (with
``meta.topic``), leave, and the automatic rejoin after a cut — with the replay of what was
missed, or ``recovered: false`` when the topic's history is gone.

The server is tests/browser/topics_server.py; cuts go through tests/cutproxy.py, which runs
on gevent in this process (see test_replay_browser.py).
"""
from __future__ import annotations

import contextlib
import types
import typing as t

import pytest
import requests
from cutproxy import CutProxy
from playwright.sync_api import Page

from .conftest import Pages, Server, script_servers

TRANSPORTS = ["ws", "ajax"]

# Every pushed event the page gets, with its topic: [eventId, data, meta.topic]; and the
# topic notices.
RECORD = """() => {
  window.got = [];
  window.notices = [];
  chsk.on("*", (data, event, meta) => got.push([event[0], data, meta.topic]));
  for (const id of ["chsk/left", "chsk/rejoined"]) chsk.on(id, (d) => notices.push([id, d]));
}"""
# A join's outcome as plain data: ["ok", {data, recovered}] or ["error", name, reason].
JOIN = """(topic) => chsk.join(topic, {from: "page"}).then(
  (r) => ["ok", r], (e) => ["error", e.name, e.reason === undefined ? null : e.reason])"""


@pytest.fixture
def make_topics_server(tmp_path: t.Any) -> t.Iterator[t.Callable[..., Server]]:
    with script_servers(tmp_path, "topics_server.py") as make:
        yield lambda history_size=1000: make("--history-size", str(history_size))


def open_page(pages: Pages, server: t.Any, uid: str, transport: str) -> Page:
    page = pages.open(server, uid, type=transport, retryMs=50)
    page.wait_for_function("() => chsk.state.open")
    page.evaluate(RECORD)
    return page


def join(page: Page, topic: str) -> list[t.Any]:
    return t.cast("list[t.Any]", page.evaluate(JOIN, topic))


def topic_events(page: Page, event_id: str = "t/said") -> list[t.Any]:
    return [g for g in page.evaluate("() => got") if g[0] == event_id]


def barrier(server: Server, page: Page, uid: str, n: int) -> None:
    """Push the user's n-th ``t/barrier`` and wait for it: what the server published before
    it has reached this page by then (one connection delivers in order)."""
    server.post("/test/push", uid=uid, event="t/barrier", data=n)
    page.wait_for_function(
        f"() => got.some((g) => g[0] === 't/barrier' && g[1] === {n})")


@contextlib.contextmanager
def behind_a_proxy(make_server: t.Callable[..., Server], pages: Pages, transport: str,
                   **server_options: t.Any) -> t.Iterator[tuple[Server, CutProxy, Page]]:
    """A server, a cutting proxy in front of it, and ann's page connected through it."""
    server = make_server(**server_options)
    with CutProxy(server.port) as proxy:
        via = types.SimpleNamespace(url=f"http://127.0.0.1:{proxy.port}")
        yield server, proxy, open_page(pages, via, "ann", transport)


def cut_off_while(proxy: CutProxy, page: Page, publish: t.Callable[[], t.Any]) -> None:
    """Cut the page off, run ``publish`` while it is away, bring it back."""
    proxy.cut(down_for=120)
    page.wait_for_function("() => !chsk.state.open")
    publish()
    proxy.cut(down_for=0)
    page.evaluate("() => window.dispatchEvent(new Event('online'))")  # skip the backoff
    page.wait_for_function("() => chsk.state.open", timeout=20_000)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_join_is_allowed_or_refused_with_the_servers_reason(make_topics_server, pages: Pages,
                                                            transport: str):
    server = make_topics_server()
    page = open_page(pages, server, "ann", transport)
    assert join(page, "room/1") == ["ok", {"data": {"hello": "ann", "members": []},
                                           "recovered": None}]
    assert page.evaluate("() => chsk.topics()") == ["room/1"]
    assert join(page, "room/secret") == ["error", "JoinRefusedError", "members only"]
    assert join(page, "room/closed") == ["error", "JoinRefusedError", "forbidden"]
    assert join(page, "lobby/x") == ["error", "JoinRefusedError", "forbidden"]  # no handler
    assert page.evaluate("() => chsk.topics()") == ["room/1"]
    # A bad name never leaves the page.
    assert page.evaluate("""() => { try { chsk.join(""); return "sent"; }
                                    catch (e) { return e.name; } }""") == "TypeError"
    second = open_page(pages, server, "bob", transport)
    assert join(second, "room/1") == ["ok", {"data": {"hello": "bob", "members": ["ann"]},
                                             "recovered": None}]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_topic_events_reach_members_only_and_stop_after_leave(make_topics_server,
                                                              pages: Pages, transport: str):
    server = make_topics_server()
    ann = open_page(pages, server, "ann", transport)
    bob = open_page(pages, server, "bob", transport)
    cat = open_page(pages, server, "cat", transport)          # never joins
    for page in (ann, bob):
        assert join(page, "room/1")[0] == "ok"
    ann.evaluate("""() => { window.viaTopic = [];
                            chsk.onTopic("room/1", (id, data) => viaTopic.push([id, data])); }""")
    server.post("/test/publish", topic="room/1", event="t/said", data="one")
    for page in (ann, bob):
        page.wait_for_function("() => got.some((g) => g[0] === 't/said')")
        assert topic_events(page) == [["t/said", "one", "room/1"]]
    # onTopic gets every event of the topic (its presence diffs too), as (eventId, data).
    assert ann.evaluate("() => viaTopic.filter(([id]) => id === 't/said')") == [["t/said", "one"]]
    assert ann.evaluate("() => viaTopic.every(([id]) => ['t/said', 'chsk/members'].includes(id))")
    barrier(server, cat, "cat", 1)
    assert topic_events(cat) == []
    # Presence in the topic: bob's join was pushed to ann as a chsk/members diff.
    ann.evaluate("""() => { window.members = [];
                            chsk.on("chsk/members", (d, e, m) => members.push([d, m.topic])); }""")

    assert bob.evaluate("() => chsk.leave('room/1').then(() => chsk.topics())") == []
    ann.wait_for_function("() => members.some(([d]) => (d.left || []).includes('bob'))")
    assert ann.evaluate("() => members.at(-1)") == [{"joined": [], "left": ["bob"]}, "room/1"]
    server.post("/test/publish", topic="room/1", event="t/said", data="two")
    ann.wait_for_function("() => got.filter((g) => g[0] === 't/said').length === 2")
    barrier(server, bob, "bob", 1)
    assert topic_events(bob) == [["t/said", "one", "room/1"]]
    # User pushes say they are no topic's.
    assert [g for g in bob.evaluate("() => got") if g[0] == "t/barrier"] == [
        ["t/barrier", 1, None]]


# Raw frames (WebSocket) and response bodies (Ajax) as they reach the page, before
# sente.js reads them: what the server sends, not what the client keeps.
WIRE = """() => {
  window.wire = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => wire.push(String(e.data)));
    }
  };
  const nativeFetch = window.fetch;
  window.fetch = async (...args) => {
    const response = await nativeFetch(...args);
    response.clone().text().then((text) => wire.push(text), () => {});
    return response;
  };
}"""


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_leave_right_after_a_join_is_not_overtaken_by_it(make_topics_server, pages: Pages,
                                                           transport: str):
    """The app joins a room whose join handler takes half a second and leaves it at once,
    without waiting: the leave goes out after the join's reply, so the server ends with the
    client out of the room and sends it nothing of it. Broken on purpose by sending the
    leave at once (as before): the server did the leave first, then the join put the page
    back in — ``members`` said ["ann"] and the publish reached the page's wire — over both
    transports."""
    server = make_topics_server()
    page = pages.open(server, "ann", start=False)
    page.evaluate(WIRE)
    page.evaluate("(o) => start(o)", {"type": transport})
    page.wait_for_function("() => chsk.state.open")
    page.evaluate(RECORD)
    outcomes = page.evaluate("""async () => {
      const joined = chsk.join("room/slow").then((r) => "joined", (e) => e.name);
      const left = chsk.leave("room/slow").then(() => "left", (e) => e.name);
      return [await joined, await left];
    }""")
    assert outcomes == ["joined", "left"]
    assert page.evaluate("() => chsk.topics()") == []
    members = requests.get(server.url + "/test/members", params={"topic": "room/slow"},
                           timeout=5).json()
    assert members == []
    server.post("/test/publish", topic="room/slow", event="t/said", data="after the leave")
    barrier(server, page, "ann", 1)
    assert not [frame for frame in page.evaluate("() => wire") if "after the leave" in frame]
    assert topic_events(page) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_server_joins_and_removes_a_client(make_topics_server, pages: Pages,
                                               transport: str):
    with behind_a_proxy(make_topics_server, pages, transport) as (server, proxy, page):
        server.post("/test/join", topic="news", uid="ann")   # no join handler needed
        page.wait_for_function("() => chsk.topics().includes('news')")
        server.post("/test/publish", topic="news", event="t/said", data="extra")
        page.wait_for_function("() => got.some((g) => g[0] === 't/said')")
        assert topic_events(page) == [["t/said", "extra", "news"]]
        # It is rejoined after a reconnect like a topic the page joined itself.
        cut_off_while(proxy, page, lambda: server.post(
            "/test/publish", topic="news", event="t/said", data="while away"))
        page.wait_for_function("() => got.filter((g) => g[0] === 't/said').length === 2",
                               timeout=20_000)
        page.wait_for_function("() => notices.length === 1")
        assert page.evaluate("() => notices") == [
            ["chsk/rejoined", {"topic": "news", "recovered": True}]]
        server.post("/test/leave", topic="news", uid="ann")
        page.wait_for_function("() => notices.length === 2")
        assert page.evaluate("() => [notices[1], chsk.topics()]") == [
            ["chsk/left", {"topic": "news", "reason": "removed"}], []]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rejoin_after_a_cut_replays_what_was_missed(make_topics_server, pages: Pages,
                                                    transport: str):
    with behind_a_proxy(make_topics_server, pages, transport) as (server, proxy, page):
        assert join(page, "room/r")[0] == "ok"
        for n in range(3):
            server.post("/test/publish", topic="room/r", event="t/said", data=n)
        page.wait_for_function("() => got.filter((g) => g[0] === 't/said').length === 3")
        cut_off_while(proxy, page, lambda: [
            server.post("/test/publish", topic="room/r", event="t/said", data=n)
            for n in range(3, 8)])
        page.wait_for_function(
            "() => notices.some(([id, d]) => id === 'chsk/rejoined' && d.topic === 'room/r')",
            timeout=20_000)
        page.wait_for_function("() => got.filter((g) => g[0] === 't/said').length >= 8")
        server.post("/test/publish", topic="room/r", event="t/said", data=8)
        page.wait_for_function("() => got.filter((g) => g[0] === 't/said').length >= 9")
        assert [g[1] for g in topic_events(page)] == list(range(9))   # once each, in order
        assert page.evaluate("() => notices") == [
            ["chsk/rejoined", {"topic": "room/r", "recovered": True}]]
        assert page.evaluate("() => chsk.topics()") == ["room/r"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rejoin_says_not_recovered_when_the_topics_history_is_gone(make_topics_server,
                                                                   pages: Pages,
                                                                   transport: str):
    with behind_a_proxy(make_topics_server, pages, transport, history_size=4) as (
            server, proxy, page):
        assert join(page, "room/r")[0] == "ok"
        server.post("/test/publish", topic="room/r", event="t/said", data=0)
        page.wait_for_function("() => got.some((g) => g[0] === 't/said')")
        cut_off_while(proxy, page, lambda: [
            server.post("/test/publish", topic="room/r", event="t/said", data=n)
            for n in range(1, 20)])                  # more than the history keeps
        page.wait_for_function(
            "() => notices.some(([id, d]) => id === 'chsk/rejoined' && d.topic === 'room/r')",
            timeout=20_000)
        # Once: over Ajax the poll waited for the rejoin, so it names the new position (one
        # naming the old one would be answered with another handshake, another rejoin).
        assert page.evaluate("() => notices") == [
            ["chsk/rejoined", {"topic": "room/r", "recovered": False}]]
        server.post("/test/publish", topic="room/r", event="t/said", data=20)
        page.wait_for_function("() => got.some((g) => g[0] === 't/said' && g[1] === 20)")
        numbers = [g[1] for g in topic_events(page)]
        assert numbers[0] == 0 and numbers[-1] == 20 and len(numbers) < 21, numbers
