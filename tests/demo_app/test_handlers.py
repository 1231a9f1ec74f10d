"""The demo's handlers, driven through the in-process test client (no sockets)."""
import pytest

from demo.app import create_app, sente

WAIT = 0.15  # well over the 10 ms WebSocket batching window


@pytest.fixture
def app():
    app = create_app(TESTING=True, SECRET_KEY="test")  # no key file in the checkout
    yield app
    sente.close(app)


def test_add_replies_and_pushes_to_every_user(app):
    with sente.test_client(app, session={"uid": "ada"}) as ada, \
            sente.test_client(app, session={"uid": "bob"}) as bob:
        reply = ada.call(("todo/add", {"text": "milk"}))
        assert reply["ok"] and reply["todo"]["text"] == "milk"
        added = [e for e in bob.received(wait=WAIT) if e[0] == "todo/added"]
        assert added == [("todo/added", {"id": 1, "text": "milk", "done": False,
                                          "author": "ada"})]
        assert ada.call(("todo/list", None))["todos"][0]["text"] == "milk"


def test_toggle_edit_delete_and_errors(app):
    with sente.test_client(app, session={"uid": "ada"}) as ada:
        ada.call(("todo/add", {"text": "a"}))
        assert ada.call(("todo/toggle", {"id": 1}))["todo"]["done"] is True
        assert ada.call(("todo/edit", {"id": 1, "text": "b"}))["todo"]["text"] == "b"
        assert ada.call(("todo/delete", {"id": 1}))["ok"]
        assert ada.call(("todo/delete", {"id": 1})) == {"ok": False, "error": "no todo with id 1"}
        assert ada.call(("todo/add", {"text": " "}))["ok"] is False


def test_presence_lists_users_with_their_tabs(app):
    with sente.test_client(app, session={"uid": "ada"}) as ada, \
            sente.test_client(app, session={"uid": "ada"}), \
            sente.test_client(app, session={"uid": "bob"}):
        users = ada.call(("presence/list", None))["users"]
        assert users == [{"uid": "ada", "ws": 2, "ajax": 0}, {"uid": "bob", "ws": 1, "ajax": 0}]
        changes = [e for e in ada.received(wait=WAIT) if e[0] == "presence/changed"]
        assert changes and changes[-1][1]["users"] == users


def test_direct_message_reaches_all_tabs_of_the_recipient(app):
    with sente.test_client(app, session={"uid": "ada"}) as ada, \
            sente.test_client(app, session={"uid": "bob"}) as bob1, \
            sente.test_client(app, session={"uid": "bob"}) as bob2:
        assert ada.call(("dm/send", {"to": "bob", "text": "hi"})) == {"ok": True}
        for tab in (bob1, bob2):
            assert ("dm/received", {"from": "ada", "text": "hi"}) in tab.received(wait=WAIT)
        assert ada.call(("dm/send", {"to": "zed", "text": "hi"}))["ok"] is False


def test_anonymous_clients_are_refused(app):
    from flask_sente import Rejected

    with pytest.raises(Rejected):
        sente.test_client(app)
