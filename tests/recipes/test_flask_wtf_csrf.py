"""Recipe docs/recipes/flask-wtf-csrf.md: with Flask-WTF's CSRFProtect, the page's token
opens WebSocket and Ajax channel sockets; a missing, wrong or foreign token is refused
(403 from flask_sente on handshakes, Flask-WTF's own 400 on Ajax posts)."""
from __future__ import annotations

import json
import re

import pytest
import requests
from wtf_csrf_app import create_app

from flask_sente import Rejected
from flask_sente.client import Client
from flask_sente.testing import serve

from .conftest import TIMEOUT, meta_token


@pytest.fixture
def base_url():
    with serve(create_app()) as base:
        yield base


def _page_token(base: str, http: requests.Session) -> str:
    page = http.get(base + "/", timeout=TIMEOUT).text
    form = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert http.post(base + "/rename", data={"csrf_token": form}, timeout=TIMEOUT).ok
    return meta_token(page)


@pytest.mark.parametrize("kind", ["ws", "ajax"])
def test_the_pages_token_opens_the_channel_socket(base_url, kind):
    with requests.Session() as http:
        token = _page_token(base_url, http)
        with Client(base_url + "/chsk", type=kind, cookies=http.cookies,
                    csrf_token=token) as client:
            assert client.wait_open(TIMEOUT)
            reply = client.call(("notes/add", "milk"), timeout=TIMEOUT)
            assert reply == {"saved": "milk", "by": client.state.uid}


@pytest.mark.parametrize("kind", ["ws", "ajax"])
@pytest.mark.parametrize("token", [None, "not-a-token", "another session's"])
def test_a_missing_wrong_or_foreign_token_is_refused_with_403(base_url, kind, token):
    with requests.Session() as http, requests.Session() as other:
        _page_token(base_url, http)
        if token == "another session's":
            token = _page_token(base_url, other)
        with Client(base_url + "/chsk", type=kind, cookies=http.cookies,
                    csrf_token=token) as client:
            with pytest.raises(Rejected) as refused:
                client.wait_open(TIMEOUT)
            assert refused.value.status == 403
            assert "Bad CSRF token" in refused.value.body


def test_ajax_posts_without_the_token_get_flask_wtfs_400(base_url):
    with requests.Session() as http:
        token = _page_token(base_url, http)
        url = base_url + "/chsk?client-id=c1"
        body = json.dumps([["notes/add", "x"], "cb1"])
        headers = {"Content-Type": "application/json"}
        for bad in ({}, {"X-CSRF-Token": "not-a-token"}):
            answer = http.post(url, data=body, headers={**headers, **bad}, timeout=TIMEOUT)
            assert answer.status_code == 400 and "CSRF token" in answer.text
        answer = http.post(url, data=body, headers={**headers, "X-CSRF-Token": token},
                           timeout=TIMEOUT)
        assert answer.status_code == 200
