"""The chat app's tests, over real sockets, with flask_sente's pytest fixtures."""
import pytest
from chat import sente

from flask_sente import Rejected


def test_a_message_reaches_every_user(sente_client_factory):
    ada = sente_client_factory(session={"uid": "ada"})                # a WebSocket, open
    bob = sente_client_factory(session={"uid": "bob"}, type="ajax")   # long-polling
    assert ada.call(("chat/say", "hi"), timeout=5) == {"ok": True}
    for client in (ada, bob):
        assert client.receive(timeout=5) == ("chat/said", {"who": "ada", "text": "hi"})


def test_anonymous_visitors_are_refused(sente_client_factory):
    with pytest.raises(Rejected) as refused:
        sente_client_factory()                                        # no uid in the session
    assert refused.value.status == 401


def test_the_app_pushes_to_a_user(sente_server, sente_client_factory):
    ada = sente_client_factory(session={"uid": "ada"})
    with sente_server.app.app_context():                              # which app to push in
        sente.send("ada", ("chat/said", {"who": "server", "text": "welcome"}))
    assert ada.receive(timeout=5) == ("chat/said", {"who": "server", "text": "welcome"})
