"""Recipe docs/recipes/app-factory.md: one module-level ``Sente()``, ``init_app`` in
``create_app()``, handlers in a blueprint module; two apps of the factory in one process
keep their clients, pushes and options apart."""
from __future__ import annotations

import requests
from chatapp import create_app
from chatapp.extensions import sente

from flask_sente.client import Client
from flask_sente.testing import serve

from .conftest import TIMEOUT, page_token


def _said(client: Client) -> dict:
    event = client.receive(timeout=TIMEOUT)
    assert event is not None and event[0] == "rooms/said", event
    return event[1]


def test_two_apps_from_the_factory_work_independently():
    red = create_app({"ROOM_NAME": "red", "SECRET_KEY": "red key"})
    blue = create_app({"ROOM_NAME": "blue", "SECRET_KEY": "blue key",
                       "SENTE_URL": "/realtime"})
    assert red.extensions["sente"].sente is sente is blue.extensions["sente"].sente
    with serve(red) as red_url, serve(blue) as blue_url, \
            requests.Session() as red_http, requests.Session() as blue_http:
        clients = {
            "red": Client(red_url + "/chsk", cookies=red_http.cookies,
                          csrf_token=page_token(red_url, red_http)),
            "blue": Client(blue_url + "/realtime", cookies=blue_http.cookies,
                           csrf_token=page_token(blue_url, blue_http)),
        }
        try:
            for client in clients.values():
                client.connect()
                assert client.wait_open(TIMEOUT)

            # A handler's broadcast reaches its own app's clients, with its app's config.
            clients["red"].send(("rooms/say", "hi from red"))
            said = _said(clients["red"])
            assert said == {"room": "red", "who": clients["red"].state.uid,
                            "text": "hi from red"}

            # A view of the blue app pushes to blue's clients. Had red's broadcast reached
            # blue, it would have come first: the broadcast log is ordered.
            assert blue_http.post(blue_url + "/announce", data={"text": "blue news"},
                                  timeout=TIMEOUT).json() == {"ok": True}
            assert _said(clients["blue"]) == {"room": "blue", "who": "admin",
                                              "text": "blue news"}

            # Each app knows its own users only.
            with red.app_context():
                assert sente.connected_uids.any == {clients["red"].state.uid}
            with blue.app_context():
                assert sente.connected_uids.any == {clients["blue"].state.uid}
        finally:
            for client in clients.values():
                client.close()


def test_a_session_of_one_app_is_not_valid_in_the_other():
    red = create_app({"SECRET_KEY": "red key"})
    blue = create_app({"SECRET_KEY": "blue key"})
    with serve(red) as red_url, serve(blue) as blue_url, requests.Session() as http:
        token = page_token(red_url, http)
        answer = http.get(blue_url + "/chsk", params={"client-id": "c", "handshake": "1"},
                          headers={"X-CSRF-Token": token}, timeout=TIMEOUT)
        assert answer.status_code == 403
