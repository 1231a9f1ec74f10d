"""Sharing a todo (``todo/share``): the server asks the other user's pages with server ->
client calls and replies to the sharer with the outcome. The pages that answer are real
Python clients (``flask_sente.client``, ``client.answer``) on a real server in this
process, signed in as the browser does; the checks that need no answering page use the
in-process test client. The same in Chromium: tests/browser/test_demo_share_browser.py.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import typing as t

import pytest

from demo.app import create_app, sente
from demo.cli import sign_in
from flask_sente import JoinRefused
from flask_sente.client import Client
from flask_sente.testing import serve

WAIT = 10.0     # upper bound of any wait here (never reached when things work)
OFFER = "todo/share-offer"


@pytest.fixture
def app():
    # A short offer window: the timeout test waits it out.
    app = create_app(TESTING=True, SECRET_KEY="test", DEMO_SHARE_TIMEOUT=1)
    yield app
    sente.close(app)


@pytest.fixture
def page(app: t.Any) -> t.Iterator[t.Callable[..., Client]]:
    """``page(name, transport)``: a client signed in as ``name`` on a served copy of the
    app, open; all closed (and the server stopped) after the test."""
    with serve(app) as base, contextlib.ExitStack() as stack:
        def make(name: str, transport: str = "ws") -> Client:
            jar, token = sign_in(base, name)
            chsk = stack.enter_context(Client(base + "/chsk", type=transport, cookies=jar,
                                              csrf_token=token))
            assert chsk.wait_open(timeout=WAIT)
            return chsk
        yield make


def share(chsk: Client, to: str, text: str = "buy milk") -> dict[str, t.Any]:
    """Add ``text`` to the shared list and share it with ``to``; the share's reply."""
    todo = chsk.call(("todo/add", {"text": text}), timeout=WAIT)["todo"]
    return t.cast("dict[str, t.Any]", chsk.call(("todo/share", {"id": todo["id"], "to": to}),
                                                timeout=WAIT))


def wait_until(predicate: t.Callable[[], t.Any]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def own_todos(chsk: Client, uid: str) -> list[tuple[str, str]]:
    reply = chsk.call(("todo/list", {"list": "@" + uid}), timeout=WAIT)
    assert reply["ok"], reply
    return [(todo["text"], todo["author"]) for todo in reply["todos"]]


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_the_first_page_to_accept_wins_and_the_todo_lands_on_their_list(page, transport):
    ada = page("ada", transport)
    bob, bob2 = page("bob", transport), page("bob", transport)
    bob.join("list/@bob", timeout=WAIT)
    pushed = []
    bob.on_topic("list/@bob", lambda event_id, data: pushed.append((event_id, data["text"])))
    offers: list[t.Any] = []
    bob.answer(OFFER, lambda offer: offers.append(offer) or "accept")
    # bob's other page never decides: it drops the offer when the server says so.
    closed = threading.Event()
    bob2.on("todo/share-closed", lambda data: closed.set())
    bob2.answer(OFFER, lambda offer: None if closed.wait(WAIT) else "timed out")

    assert share(ada, "bob") == {"ok": True, "outcome": "accepted", "to": "bob"}
    assert offers[0]["from"] == "ada" and offers[0]["text"] == "buy milk"
    assert offers[0]["expires_in"] == 1
    assert own_todos(bob, "bob") == [("buy milk", "ada")]
    wait_until(lambda: ("todo/added", "buy milk") in pushed)    # pushed to bob's own list
    assert closed.wait(WAIT)


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_a_decline_is_the_outcome_and_nothing_is_added(page, transport):
    ada, bob = page("ada", transport), page("bob", transport)
    bob.join("list/@bob", timeout=WAIT)
    bob.answer(OFFER, lambda offer: "decline")
    assert share(ada, "bob")["outcome"] == "declined"
    assert own_todos(bob, "bob") == []


def test_offline_at_once_for_a_user_with_no_page(page):
    ada = page("ada")
    started = time.monotonic()
    assert share(ada, "zed")["outcome"] == "offline"
    assert time.monotonic() - started < 0.5          # not the 1 s offer window


def test_offline_at_once_when_the_only_page_closes_while_asked(app, page):
    app.config["DEMO_SHARE_TIMEOUT"] = 5
    ada, bob = page("ada"), page("bob")
    offered, release = threading.Event(), threading.Event()
    bob.answer(OFFER, lambda offer: offered.set() or release.wait(WAIT))
    closer = threading.Thread(target=lambda: offered.wait(WAIT) and bob.close())
    closer.start()
    try:
        started = time.monotonic()
        assert share(ada, "bob")["outcome"] == "offline"
        assert time.monotonic() - started < 2.0       # ClientGone at once, not the 5 s
    finally:
        release.set()
        closer.join(WAIT)


def test_timeout_when_no_page_decides_in_time(page):
    ada, bob = page("ada"), page("bob")
    release = threading.Event()
    bob.answer(OFFER, lambda offer: release.wait(WAIT) and "accept")
    try:
        started = time.monotonic()
        assert share(ada, "bob")["outcome"] == "timeout"
        assert 1.0 <= time.monotonic() - started < 3.0
    finally:
        release.set()   # its late accept is dropped: the offer is over
    bob.join("list/@bob", timeout=WAIT)
    assert own_todos(bob, "bob") == []   # nothing was added by the late accept


def test_a_page_that_lets_the_offer_expire_is_a_timeout_too(page):
    ada, bob = page("ada"), page("bob")
    bob.answer(OFFER, lambda offer: None)   # what sente.js pages answer on expiry
    assert share(ada, "bob")["outcome"] == "timeout"


def test_clients_that_cannot_take_offers_are_unavailable_and_logged_plainly(app, page,
                                                                            caplog):
    ada, bob = page("ada"), page("bob")   # bob: the terminal client, no answer handler
    caplog.set_level(logging.INFO)
    assert share(ada, "bob")["outcome"] == "unavailable"

    def broken(offer: t.Any) -> t.Any:
        raise RuntimeError("the page broke")

    bob.answer(OFFER, broken)
    assert share(ada, "bob", "again")["outcome"] == "unavailable"
    # A client of protocol 2 (an older flask_sente client) cannot be asked.
    with sente.test_client(app, session={"uid": "cat"}, query_string={"protocol": "2"}):
        assert share(ada, "cat", "third")["outcome"] == "unavailable"
    messages = [r.getMessage() for r in caplog.records if r.name == "demo.app"]
    assert any("NoAnswerHandler" in m for m in messages)
    assert any("ClientCallError: the page broke" in m for m in messages)
    assert any("CallsUnsupported" in m for m in messages)
    assert [r for r in caplog.records if r.exc_info] == []     # no tracebacks


@pytest.fixture
def tc(app):
    """``tc(name)``: an in-process test client (no socket) signed in as ``name``."""
    with contextlib.ExitStack() as stack:
        yield lambda name: stack.enter_context(sente.test_client(app, session={"uid": name}))


def test_bad_shares_are_refused_with_the_reason(tc):
    ada = tc("ada")
    todo = ada.call(("todo/add", {"text": "milk"}))["todo"]
    for data, error in [({"id": todo["id"]}, "share with whom?"),
                        ({"id": todo["id"], "to": "  "}, "share with whom?"),
                        ({"id": todo["id"], "to": " ada "}, "that is you"),
                        ({"id": 99, "to": "bob"}, "no todo with id 99"),
                        ({"id": todo["id"], "to": "bob", "list": "work"},
                         "open the list work first")]:
        reply = ada.call(("todo/share", data))
        assert reply["ok"] is False and error in reply["error"], (data, reply)


def test_a_todo_of_a_named_list_is_shared_by_its_viewers(tc):
    ada = tc("ada")
    ada.join("list/work")
    todo = ada.call(("todo/add", {"list": "work", "text": "ship it"}))["todo"]
    reply = ada.call(("todo/share", {"list": "work", "id": todo["id"], "to": "bob"}))
    assert reply == {"ok": True, "outcome": "offline", "to": "bob"}


def test_a_users_own_list_is_theirs_only(tc):
    ada, bob = tc("ada"), tc("bob")
    assert ada.join("list/@ada") == {"todos": [], "viewers": ["ada"]}
    assert ada.call(("todo/add", {"list": "@ada", "text": "mine"}))["ok"]
    with pytest.raises(JoinRefused) as refused:
        bob.join("list/@ada")
    assert refused.value.reason == "a user's own list is theirs only"
    for event in [("todo/list", {"list": "@ada"}), ("todo/add", {"list": "@ada", "text": "x"})]:
        assert bob.call(event) == {"ok": False, "error": "a user's own list is theirs only"}
    with pytest.raises(JoinRefused):
        bob.join("list/@")
