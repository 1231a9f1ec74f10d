"""The Ajax fast path (``flask_sente/fastpath.py``): an admitted long-polling client's
requests that carry its key, with unchanged credentials, are answered in front of Flask;
everything else goes through Flask and every check, and gets Flask's answer.

Whether Flask ran is seen through a ``before_request`` hook that counts the requests
it sees (the fast path skips it, as it skips every request hook).
"""
from __future__ import annotations

import json
import typing as t

import pytest
import requests
from flask import request, session

from flask_sente import Sente
from flask_sente.testing import serve

from .conftest import TIMEOUT, build_app

KEY = "X-Sente-Key"


class App:
    def __init__(self, base: str, sente: Sente, through_flask: list[str]) -> None:
        self.url = base + "/chsk"
        self.sente = sente
        self.through_flask = through_flask
        self.http = requests.Session()
        self.seen: list[t.Any] = []

    def get(self, client_id: str, key: str | None = None, **params: str) -> requests.Response:
        return self.http.get(self.url, params={"client-id": client_id, **params},
                             headers={KEY: key} if key else {}, timeout=TIMEOUT)

    def post(self, client_id: str, data: str, key: str | None = None,
             headers: dict[str, str] | None = None, **params: str) -> requests.Response:
        return self.http.post(self.url, params={"client-id": client_id, **params}, data=data,
                              headers={"Content-Type": "application/json",
                                       **({KEY: key} if key else {}), **(headers or {})},
                              timeout=TIMEOUT)

    def admitted(self, client_id: str, **params: str) -> str:
        """Handshake and one poll through Flask; returns the key the poll gave."""
        hs = self.get(client_id, handshake="1", **params)
        assert hs.status_code == 200 and hs.json()[0][0] == "chsk/handshake"
        self.sente.send(hs.json()[0][1]["uid"], ("t/first", 1))
        first = self.get(client_id, **params)
        assert first.json()[0] == [["t/first", 1]]
        assert first.headers[KEY] == hs.headers[KEY]
        return first.headers[KEY]

    def flask_saw(self, action: t.Callable[[], t.Any]) -> tuple[t.Any, int]:
        before = len(self.through_flask)
        result = action()
        return result, len(self.through_flask) - before


@pytest.fixture
def app() -> t.Iterator[App]:
    flask_app, sente = build_app(
        user_id=lambda client_id: session.get("uid") or request.args.get("u"))
    through_flask: list[str] = []

    @flask_app.before_request
    def count() -> None:
        through_flask.append(request.method)

    @flask_app.route("/login/<uid>")
    def login(uid: str) -> str:
        session["uid"] = uid
        return "ok"

    with serve(flask_app) as base:
        h = App(base, sente, through_flask)

        @sente.on("t/echo")
        def echo(msg: t.Any) -> None:
            h.seen.append(msg)
            msg.reply({"data": msg.data, "uid": msg.uid,
                       "session": dict(msg.request.session), "path": msg.request.path})

        try:
            yield h
        finally:
            h.http.close()


def test_a_keyed_post_and_poll_skip_flask_and_keep_the_uid(app: App) -> None:
    app.http.get(app.url.replace("/chsk", "/login/ana"), timeout=TIMEOUT)
    key = app.admitted("c1")
    answer, flask_runs = app.flask_saw(
        lambda: app.post("c1", json.dumps([["t/echo", "hi"], "cb"]), key))
    assert flask_runs == 0
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.json() == [["chsk/reply", {"data": "hi", "uid": "ana",
                                             "session": {"uid": "ana"}, "path": "/chsk"}], None]
    app.sente.send("ana", ("t/pushed", 2))
    poll, flask_runs = app.flask_saw(lambda: app.get("c1", key))
    assert flask_runs == 0
    assert poll.json()[0] == [["t/pushed", 2]]


def test_without_the_right_key_flask_answers_in_full(app: App) -> None:
    key = app.admitted("c1", u="bo")
    for wrong in (None, key[:-1] + ("A" if key[-1] != "A" else "B"), "é"):
        answer, flask_runs = app.flask_saw(
            lambda wrong=wrong: app.post("c1", json.dumps([["t/echo", 1], "cb"]), wrong, u="bo"))
        assert flask_runs == 1, wrong
        assert answer.json()[0][0] == "chsk/reply"
    # Another client's key does not stand for this one.
    other = app.admitted("c2", u="cy")
    _, flask_runs = app.flask_saw(
        lambda: app.post("c1", json.dumps([["t/echo", 1], "cb"]), other, u="bo"))
    assert flask_runs == 1


def test_changed_credentials_go_through_flask_and_its_user_id(app: App) -> None:
    """A login changes the session cookie: the next request is admitted anew, with the
    new uid, and gets a key for the new credentials."""
    key = app.admitted("c1")  # anonymous
    app.http.get(app.url.replace("/chsk", "/login/dee"), timeout=TIMEOUT)
    answer, flask_runs = app.flask_saw(
        lambda: app.post("c1", json.dumps([["t/echo", 0], "cb"]), key))
    assert flask_runs == 1
    assert answer.json()[0][1]["uid"] == "dee"
    # The app's own query parameters count as credentials too (a user_id may read them).
    key = app.admitted("c3", u="eve")
    answer, flask_runs = app.flask_saw(
        lambda: app.post("c3", json.dumps([["t/echo", 0], "cb"]), key, u="fay"))
    assert flask_runs == 1


def test_cross_origin_requests_and_handshakes_go_through_flask(app: App) -> None:
    key = app.admitted("c1", u="gil")
    body = json.dumps([["t/echo", 0], "cb"])
    answer, flask_runs = app.flask_saw(
        lambda: app.post("c1", body, key, {"Origin": "http://elsewhere.example"}, u="gil"))
    assert (answer.status_code, flask_runs) == (403, 1)  # the origin check refuses it
    own = app.url.rsplit("/chsk", 1)[0]
    _, flask_runs = app.flask_saw(lambda: app.post("c1", body, key, {"Origin": own}, u="gil"))
    assert flask_runs == 0
    hs, flask_runs = app.flask_saw(lambda: app.get("c1", key, handshake="1", u="gil"))
    assert flask_runs == 1 and hs.json()[0][0] == "chsk/handshake"


@pytest.mark.parametrize("body, status, text", [
    ("{not json", 400, "Bad package: malformed JSON"),
    (json.dumps([["chsk/ws-ping"], None]), 400, "Bad package: bad event (reserved-id)"),
    (json.dumps("just a string"), 400, "Bad package"),
])
def test_bad_packages_on_the_fast_path_get_flasks_answer(app: App, body: str, status: int,
                                                         text: str) -> None:
    key = app.admitted("c1", u="hal")
    answer, flask_runs = app.flask_saw(lambda: app.post("c1", body, key, u="hal"))
    assert flask_runs == 0
    assert answer.status_code == status
    assert answer.text.startswith(text)
    through_flask = app.post("c1", body, None, u="hal")
    assert (through_flask.status_code, through_flask.text.split(":")[0]) == (
        status, answer.text.split(":")[0])


def test_an_oversized_post_is_refused_by_flask_with_413(app: App) -> None:
    key = app.admitted("c1", u="ida")
    big = json.dumps([["t/echo", "x" * (1 << 20)], "cb"])
    answer, flask_runs = app.flask_saw(lambda: app.post("c1", big, key, u="ida"))
    assert (answer.status_code, flask_runs) == (413, 1)


def test_a_kicked_client_loses_its_key(app: App) -> None:
    key = app.admitted("c1", u="jo")
    app.sente.kick("jo")
    closed, flask_runs = app.flask_saw(lambda: app.get("c1", key, u="jo"))
    assert flask_runs == 1  # the key stood for the connection the kick ended
    assert closed.json()[0][0] == "chsk/close"
    _, flask_runs = app.flask_saw(
        lambda: app.post("c1", json.dumps([["t/echo", 0], "cb"]), key, u="jo"))
    assert flask_runs == 1


def test_the_option_off_gives_no_key_and_every_request_goes_through_flask() -> None:
    flask_app, sente = build_app(ajax_fast_path=False)
    with serve(flask_app) as base:
        url = base + "/chsk"
        with requests.Session() as http:
            hs = http.get(url, params={"client-id": "c1", "u": "kim", "handshake": "1"},
                          timeout=TIMEOUT)
            assert hs.status_code == 200 and KEY not in hs.headers


@pytest.mark.parametrize("query", [
    "client-id=abc&protocol=2&packer=json&pos=u%3Ae1%3A5", "a=1&a=2&b=&c", "x=%20y&z=+",
    "", "&&a=b=c", "client-id=%C3%A9t%C3%A9",
])
def test_the_fast_paths_query_reading_agrees_with_flasks(query: str) -> None:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from flask_sente.fastpath import _first_values

    args = Request(EnvironBuilder(query_string=query).get_environ()).args
    assert _first_values(query) == {name: args[name] for name in args}


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded",
                                          "Application/X-WWW-Form-Urlencoded; charset=UTF-8"])
def test_a_form_post_goes_through_flask_whatever_the_case_of_its_media_type(
        app: App, content_type: str) -> None:
    """Sente's ``ppstr`` form is Flask's to parse (admission and the app's hooks may read
    its fields), also when the media type is not in lower case, as Werkzeug reads it.
    Shown to fail with the fast path's former test, ``CONTENT_TYPE.startswith(...)``: the
    keyed post of the second case was answered in front of Flask, its form read as a
    package (400 "Bad package: malformed JSON")."""
    key = app.admitted("c1", u="lu")
    form = {"ppstr": json.dumps([["t/echo", "form"], "cb"])}
    answer, flask_runs = app.flask_saw(lambda: app.http.post(
        app.url, params={"client-id": "c1", "u": "lu"}, data=form,
        headers={KEY: key, "Content-Type": content_type}, timeout=TIMEOUT))
    assert (answer.status_code, flask_runs) == (200, 1)
    assert answer.json()[0][1]["data"] == "form"
