"""Ajax transport: handshake, long-poll, events with and without replies."""
import json
import typing as t

import gevent
import requests
from flask import session

from flask_sente import ANONYMOUS_UID

from .conftest import Harness, build_app, running, serve


def test_handshake_carries_uid_data_and_protocol_version():
    with running(handshake_data=lambda uid, cid: {"hello": uid}) as h:
        r = h.get("c1", uid="alice", handshake=True)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json() == [["chsk/handshake", {"uid": "alice", "handshake_data":
                                                {"hello": "alice"}, "protocol": 1}], None]


def test_unknown_client_gets_a_handshake_instead_of_a_poll(server):
    assert server.get("never-seen").json()[0][0] == "chsk/handshake"


def test_anonymous_users_share_one_uid(server):
    assert server.get("c1", handshake=True).json()[0][1]["uid"] == ANONYMOUS_UID


def test_post_with_reply_and_without(server):
    r = server.post("c1", ["t/echo", {"x": [1, 2]}], "ajax")
    assert r.json() == [["chsk/reply", {"x": [1, 2]}], None]
    r = server.post("c1", ["t/log", "hi"])
    assert r.json() == [["chsk/ack"], None]
    server.wait_for(lambda: server.events_named("t/log"))


def test_sente_form_encoded_post_is_accepted(server):
    r = server.session.post(server.url, data={"client-id": "c1", "ppstr": json.dumps(
        [["t/echo", 5], "ajax"])}, timeout=5)
    assert r.json() == [["chsk/reply", 5], None]


def test_reply_timeout_is_told_apart_from_any_value():
    with running(reply_timeout=0.2) as h:
        assert h.post("c1", ["t/unknown-like", 1], "ajax").json() == [["chsk/timeout"], None]
        # A handler replying with the very string "chsk/timeout" is still a value.
        assert h.post("c1", ["t/echo", "chsk/timeout"], "ajax").json() == [
            ["chsk/reply", "chsk/timeout"], None]


def test_handler_error_answers_error_and_router_survives(server):
    r = server.post("c1", ["t/boom"], "ajax")
    assert r.json()[0][0] == "chsk/error"
    assert server.post("c1", ["t/echo", 1], "ajax").json() == [["chsk/reply", 1], None]


def test_long_poll_times_out_with_marker():
    with running(lp_timeout=0.3) as h:
        h.get("c1", handshake=True)
        assert h.get("c1").json() == [["chsk/timeout"], None]


def test_parked_poll_is_answered_by_a_push(server):
    server.get("c1", uid="bob", handshake=True)
    poll = gevent.spawn(server.get, "c1", uid="bob")
    gevent.sleep(0.1)
    server.sente.send("bob", ("t/news", 1))
    assert poll.get(timeout=5).json() == [[["t/news", 1]], None]


def test_pushes_between_polls_are_kept_for_the_next_poll(server):
    server.get("c1", uid="bob", handshake=True)
    server.sente.send("bob", ("t/a", 1))
    server.sente.send("bob", ("t/b", 2), flush=True)
    gevent.sleep(0.15)  # past the Ajax batching window: nobody is polling
    assert server.get("c1", uid="bob").json() == [[["t/a", 1], ["t/b", 2]], None]


def test_second_poll_of_same_client_releases_the_first():
    with running(lp_timeout=5) as h:
        h.get("c1", handshake=True)
        first = gevent.spawn(h.get, "c1")
        gevent.sleep(0.1)
        second = gevent.spawn(h.get, "c1")
        assert first.get(timeout=5).json() == [["chsk/timeout"], None]
        gevent.sleep(0.1)
        h.sente.send(ANONYMOUS_UID, ("t/x", 1), flush=True)
        assert second.get(timeout=5).json() == [[["t/x", 1]], None]


def test_msgpack_over_ajax():
    import msgpack

    with running(packer="msgpack") as h:
        r = h.session.get(h.url, params={"client-id": "c1", "handshake": "1"}, timeout=5)
        assert r.headers["Content-Type"] == "application/msgpack"
        assert msgpack.unpackb(r.content)[0][0] == "chsk/handshake"
        r = h.session.post(h.url, params={"client-id": "c1"},
                           data=msgpack.packb([["t/echo", b"\x00bin"], "ajax"]), timeout=5,
                           headers={"Content-Type": "application/msgpack"})
        assert msgpack.unpackb(r.content) == [["chsk/reply", b"\x00bin"], None]


def test_server_stop_answers_parked_polls_instead_of_killing_them():
    from flask_sente.server import make_server

    from .conftest import build_app

    app, sente = build_app(lp_timeout=30)
    server = make_server(app, port=0, log=None)
    server.start()
    import requests
    url = f"http://127.0.0.1:{server.server_port}/chsk"
    try:
        requests.get(url, params={"client-id": "c", "handshake": 1}, timeout=5)
        poll = gevent.spawn(requests.get, url, params={"client-id": "c"}, timeout=10)
        gevent.sleep(0.2)
        server.stop(timeout=30)
        response = poll.get(timeout=10)
        assert response.status_code == 200
        # The Ajax equivalent of close 1001: the client reconnects (issue 14).
        assert response.json() == [["chsk/close", {"code": 1001,
                                                   "reason": "server shutting down"}], None]
    finally:
        server.stop(timeout=1)
        sente.close(app)


def test_vary_cookie_only_when_the_session_was_read():
    """Keeping the session for ``msg.request.session`` does not count as reading it: no
    ``Vary: Cookie`` (whose header-set work was a fifth of a WebSocket handshake) unless
    something read the session — here the default ``user_id``, which reads ``uid``. The
    snapshot still holds the session for a handler that reads it later."""
    app, sente = build_app()
    seen: list[t.Any] = []

    @app.route("/login/<name>")
    def login(name: str) -> str:
        session["uid"] = name
        session["colour"] = "green"
        return "ok"

    @sente.on("t/session")
    def read_session(msg: t.Any) -> None:
        seen.append(msg.request.session)
        msg.reply(msg.request.session.get("colour"))

    with serve(app) as base:
        h = Harness(base, app, sente)
        try:
            assert h.session.get(base + "/login/ada", timeout=5).text == "ok"
            r = h.post("c1", ["t/session"], "ajax")
            assert r.json() == [["chsk/reply", "green"], None]
            assert "vary" not in {k.lower() for k in r.headers}, r.headers
        finally:
            h.session.close()
    assert seen and seen[0]["uid"] == "ada"

    # The default user_id reads session["uid"]: then Flask says Vary. (A signed-in user:
    # Flask before 3.1 adds no Vary for an empty session, read or not.)
    app, sente = build_app(user_id=None)
    app.add_url_rule("/login/<name>", view_func=login)
    with serve(app) as base:
        with requests.Session() as http:
            assert http.get(base + "/login/bob", timeout=5).text == "ok"
            r = http.post(base + "/chsk?client-id=c2", data=json.dumps([["t/echo", 1], None]),
                          headers={"Content-Type": "application/json"}, timeout=5)
            assert r.json() == [["chsk/ack"], None]
            assert r.headers.get("Vary") == "Cookie"


def test_sentes_handshake_question_mark_spelling_asks_for_a_handshake():
    """Clojure Sente's clients ask for a handshake with ``handshake?`` (URL-encoded
    ``handshake%3F``): a known client's GET carrying it is answered with a handshake at
    once, not parked as a long-poll — also when it carries the client's fast-path key
    (handshakes always go through Flask).

    Shown to fail by dropping ``"handshake?"`` from ``views.ajax_get``'s test (the GET was
    parked and answered ``chsk/timeout``), and by dropping it from ``fastpath._THROUGH_FLASK``
    (the keyed GET was answered on the fast path as a poll: ``chsk/timeout``)."""
    with running(lp_timeout=0.5) as h:
        hello = h.get("c1", uid="sam", handshake=True)
        assert hello.json()[0][0] == "chsk/handshake"
        key = hello.headers["X-Sente-Key"]
        assert h.get("c1", uid="sam").json() == [["chsk/timeout"], None]  # known: a poll
        for headers in ({}, {"X-Sente-Key": key}):
            r = h.session.get(f"{h.url}?client-id=c1&u=sam&handshake%3F=true",
                              headers=headers, timeout=5)
            assert r.json() == [["chsk/handshake", {"uid": "sam", "handshake_data": None,
                                                    "protocol": 1}], None], headers
