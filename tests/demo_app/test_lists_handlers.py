"""The demo's named lists (topics ``list/<name>``), driven through the in-process test client:
the join handler's data and refusals, changes published to the list's viewers only, and
the membership checks of the list's calls. The same in Chromium:
tests/browser/test_demo_lists_browser.py."""
import pytest

from demo.app import create_app, sente
from demo.store import BAD_LIST_NAME, LIST_NAME, MAIN, StoreError, memory_lists, own_list
from flask_sente import JoinRefused

WAIT = 0.15  # well over the 10 ms WebSocket batching window


@pytest.fixture
def app():
    app = create_app(TESTING=True, SECRET_KEY="test")  # no key file in the checkout
    yield app
    sente.close(app)


def in_topic(received, topic):
    """The events of ``topic`` among what a test client received."""
    return [list(e[1][1]) for e in received if e[0] == "chsk/topic" and e[1][0] == topic]


def test_joining_a_list_gives_its_todos_and_viewers(app):
    with sente.test_client(app, session={"uid": "ada"}) as ada, \
            sente.test_client(app, session={"uid": "bob"}) as bob:
        assert ada.join("list/groceries") == {"todos": [], "viewers": ["ada"]}
        assert ada.call(("todo/add", {"list": "groceries", "text": "apples"}))["ok"]
        joined = bob.join("list/groceries")
        assert joined["viewers"] == ["ada", "bob"]
        assert [t["text"] for t in joined["todos"]] == ["apples"]
        # Topic presence: ada is told bob came.
        assert ["chsk/members", {"joined": ["bob"], "left": []}] in in_topic(
            ada.received(wait=WAIT), "list/groceries")


@pytest.mark.parametrize("topic", ["list/", "list/Not OK", "list/" + "x" * 25])
def test_a_bad_list_name_is_refused_with_the_reason(app, topic):
    with sente.test_client(app, session={"uid": "ada"}) as ada:
        with pytest.raises(JoinRefused) as refused:
            ada.join(topic)
        assert refused.value.reason == BAD_LIST_NAME


def test_a_lists_changes_reach_its_viewers_only(app):
    with sente.test_client(app, session={"uid": "ada"}) as ada, \
            sente.test_client(app, session={"uid": "bob"}) as bob, \
            sente.test_client(app, session={"uid": "cat"}) as cat:
        ada.join("list/work")
        bob.join("list/work")
        reply = ada.call(("todo/add", {"list": "work", "text": "ship it"}))
        assert reply["ok"]
        todo = reply["todo"]
        assert ["todo/added", todo] in in_topic(bob.received(wait=WAIT), "list/work")
        assert [e for e in cat.received(wait=WAIT) if e[0] in ("chsk/topic", "todo/added")] == []
        # The shared list is apart: its list is empty, its changes are broadcasts.
        assert ada.call(("todo/list", None))["todos"] == []
        bob.leave("list/work")
        ada.call(("todo/toggle", {"list": "work", "id": todo["id"]}))
        assert in_topic(bob.received(wait=WAIT), "list/work") == []


def test_a_list_is_read_and_changed_by_its_viewers_only(app):
    with sente.test_client(app, session={"uid": "ada"}) as ada, \
            sente.test_client(app, session={"uid": "cat"}) as cat:
        ada.join("list/work")
        ada.call(("todo/add", {"list": "work", "text": "ship it"}))
        assert cat.call(("todo/list", {"list": "work"})) == {
            "ok": False, "error": "open the list work first"}
        assert cat.call(("todo/add", {"list": "work", "text": "x"}))["ok"] is False
        assert cat.call(("todo/add", {"list": 7, "text": "x"}))["ok"] is False
        listed = ada.call(("todo/list", {"list": "work"}))
        assert listed["ok"] and listed["viewers"] == ["ada"]
        assert [t["text"] for t in listed["todos"]] == ["ship it"]


def test_list_names_and_the_registry():
    lists = memory_lists()
    assert lists.get(MAIN) is lists.get(MAIN)
    assert lists.named("a-1") is lists.get("a-1")
    assert lists.named("a-1") is not lists.get(MAIN)
    for bad in ["", "A", "-a", "a b", "x" * 25, "@ada"]:
        assert not LIST_NAME.fullmatch(bad)
        with pytest.raises(StoreError, match="lowercase"):
            lists.named(bad)
    # A user's own list, "@<uid>": any uid, never a named list.
    assert lists.get(own_list("Ada Lovelace")) is lists.get("@Ada Lovelace")
    assert lists.get("@ada") is not lists.get("@bob")
    with pytest.raises(StoreError, match="lowercase"):
        lists.get("@")
