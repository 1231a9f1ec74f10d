"""The in-process test client: real packer, hub, router, replies and pushes, no sockets."""
import pytest
from flask import Flask

from flask_sente import Rejected, ReplyError, ReplyTimeout, Sente


@pytest.fixture
def app_and_sente():
    app = Flask(__name__)
    app.secret_key = "t"
    sente = Sente(app, reply_timeout=0.2)

    @sente.on("todo/add")
    def add(msg):
        sente.send(msg.uid, ("todo/added", msg.data))
        msg.reply({"ok": True, "by": msg.uid})

    @sente.on("todo/slow")
    def slow(msg):
        pass

    @sente.on("todo/boom")
    def boom(msg):
        raise ValueError("nope")

    @sente.authorize
    def authorize(uid, client_id):
        return uid != "mallory"

    yield app, sente
    sente.close(app)


def test_call_reply_and_push_through_the_real_paths(app_and_sente):
    app, sente = app_and_sente
    with sente.test_client(app, session={"uid": "alice"}) as client:
        assert client.handshake["uid"] == "alice"
        assert client.call(("todo/add", {"text": "milk"})) == {"ok": True, "by": "alice"}
        assert client.received(wait=0.2) == [("todo/added", {"text": "milk"})]
        assert "alice" in sente.connected_uids.ws


def test_timeouts_errors_and_refusals(app_and_sente):
    app, sente = app_and_sente
    with sente.test_client(app, uid="bob") as client:
        with pytest.raises(ReplyTimeout):
            client.call(("todo/slow", None))
        with pytest.raises(ReplyError):
            client.call(("todo/boom", None))
    with pytest.raises(Rejected) as info:
        sente.test_client(app, uid="mallory")
    assert info.value.status == 401


def test_two_clients_of_one_user_both_get_pushes(app_and_sente):
    app, sente = app_and_sente
    with sente.test_client(app, uid="c") as tab1, sente.test_client(app, uid="c") as tab2:
        tab1.send(("todo/add", 1))
        assert tab2.received(wait=0.2) == [("todo/added", 1)]
        assert tab1.received(wait=0.2) == [("todo/added", 1)]


def test_the_test_client_joins_topics_and_sees_their_events():
    from flask_sente import JoinRefused

    app = Flask(__name__)
    app.secret_key = "t"
    sente = Sente(app, csrf=False)

    @sente.on_join("room/*")
    def allow(msg):
        return {"welcome": msg.topic}

    with sente.test_client(app, uid="ann") as client:
        assert client.join("room/1") == {"welcome": "room/1"}
        with pytest.raises(JoinRefused):
            client.join("elsewhere")
        sente.publish("room/1", ("chat/said", "hi"), flush=True)
        assert client.received(wait=0.2) == [("chsk/topic", ["room/1", ["chat/said", "hi"]])]
        client.leave("room/1")
        sente.publish("room/1", ("chat/said", "gone"), flush=True)
        assert client.received(wait=0.1) == []
    sente.close(app)


def test_the_test_client_answers_the_servers_calls(app_and_sente):
    """A handler that asks the client while the test waits for its reply is answered
    (the server's value, its error, "no handler"); position marks stay out of received()."""
    app, sente = app_and_sente

    @sente.on("todo/ask")
    def ask(msg):
        sente.send(msg.uid, ("todo/asking", msg.data))
        outcomes = []
        for event_id in ("app/confirm", "app/fail", "app/nobody"):
            try:
                outcomes.append(sente.call(msg.uid, (event_id, msg.data),
                                           client_id=msg.client_id, timeout=2))
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        msg.reply(outcomes)

    def fail(data):
        raise ValueError("no")

    with sente.test_client(app, uid="dan") as client:
        client.answer("app/confirm", lambda data: {"yes": data})
        client.answer("app/fail", fail)
        assert client.call(("todo/ask", 7), timeout=5) == [
            {"yes": 7}, "ClientCallError", "NoAnswerHandler"]
        assert client.received(wait=0.1) == [("todo/asking", 7)]
