"""Recipe docs/recipes/flask-login.md: a logged-in user is the uid, anonymous connections
get a 401, and logging out kicks the user's WebSocket and Ajax clients (close 4001).

Real sockets throughout: the login is an HTTP session, and the clients carry its cookie.
"""
from __future__ import annotations

import pytest
import requests
from flask_login_app import create_app

from flask_sente import Rejected
from flask_sente.client import Client
from flask_sente.testing import serve

from .conftest import TIMEOUT, meta_token, wait_until


def _login(base: str, session: requests.Session, name: str, password: str) -> str:
    """Log in through the form; return the page's CSRF token (its sente_script meta tag)."""
    page = session.post(base + "/login", data={"username": name, "password": password},
                        timeout=TIMEOUT)
    assert page.status_code == 200 and page.url == base + "/", page.text
    return meta_token(page.text)


@pytest.fixture
def base_url():
    with serve(create_app()) as base:
        yield base


def test_logout_kicks_the_users_websocket_and_ajax_clients(base_url):
    with requests.Session() as http:
        token = _login(base_url, http, "ada", "lovelace")
        clients = [Client(base_url + "/chsk", type=kind, cookies=http.cookies, csrf_token=token)
                   for kind in ("ws", "ajax")]
        try:
            for client in clients:
                client.connect()
                assert client.wait_open(TIMEOUT)
                assert client.state.uid == "ada"
                assert client.call(("chat/whoami", None), timeout=TIMEOUT) == "ada"
            assert [c.state.type for c in clients] == ["ws", "ajax"]

            assert http.post(base_url + "/logout", timeout=TIMEOUT).url == base_url + "/login"

            for client in clients:
                wait_until(lambda c=client: not c.state.active, "the kick")
                assert client.state.last_close.reason == "kicked"
                assert client.state.last_close.code == 4001
        finally:
            for client in clients:
                client.close()


def test_a_logged_out_session_is_refused_with_401(base_url):
    with requests.Session() as http:
        token = _login(base_url, http, "bob", "builder")
        http.post(base_url + "/logout", timeout=TIMEOUT)   # the session keeps its CSRF token
        with Client(base_url + "/chsk", type="ws", cookies=http.cookies,
                    csrf_token=token) as client:
            with pytest.raises(Rejected) as refused:
                client.wait_open(TIMEOUT)
            assert refused.value.status == 401


def test_a_wrong_password_does_not_log_in(base_url):
    with requests.Session() as http:
        answer = http.post(base_url + "/login", data={"username": "ada", "password": "x"},
                           timeout=TIMEOUT)
        assert answer.status_code == 401
        assert http.get(base_url + "/", timeout=TIMEOUT).url == base_url + "/login"
