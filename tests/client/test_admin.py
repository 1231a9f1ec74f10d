"""The admin dashboard's server side (issue 29) on a real server, in one process: the
overview a dashboard asks for over the channel (real Python clients on both transports),
the actions at the wire (raw HTTP: statuses, CSRF, origin, audit), and who is refused.

The same across ``gunicorn -w 3`` + Redis, and the page itself in Chromium, are in
tests/browser/test_admin_browser.py.

Broken on purpose once: with the kicks of ``WebSockets`` and ``LongPolls`` ignoring
``client_id``, the close-one-client test saw both of alice's clients go.
"""
from __future__ import annotations

import logging
import typing as t

import pytest
import requests
from flask import request

from flask_sente.client import Client
from flask_sente.exceptions import ReplyError

from .conftest import TIMEOUT, Server, wait_until

OVERVIEW = "sente.admin/overview"


def admin_server(make_server: t.Callable[..., Server], **options: t.Any) -> Server:
    """Users say who they are with ``?u=``; "root" is the admin; ``/login?u=`` puts a uid
    in the session (for the HTTP routes) and ``/token`` gives the session's CSRF token."""
    options.setdefault("admin", True)
    options.setdefault("admin_uids", {"root"})
    server = make_server(**options)
    server.sente.user_id(lambda client_id: request.args.get("u") or _session_uid())

    @server.app.route("/login")
    def login() -> str:
        from flask import session

        session["uid"] = request.args["u"]
        return "ok"

    return server


def _session_uid() -> t.Any:
    from flask import session

    return session.get("uid")


def connect(server: Server, make_client: t.Callable[..., Client], uid: str, transport: str,
            **options: t.Any) -> Client:
    chsk = make_client(server.url, type=transport, params={"u": uid}, **options)
    assert chsk.wait_open(TIMEOUT)
    wait_until(lambda: chsk.client_id in _client_ids(server, uid), message=f"{uid} present")
    return chsk


def _client_ids(server: Server, uid: str) -> set[str]:
    with server.app.app_context():
        return {cid for ids in server.sente.clients_of(uid).values() for cid in ids}


def _members(server: Server, topic: str) -> frozenset[t.Any]:
    with server.app.app_context():
        return server.sente.members(topic)


def logged_in(server: Server, uid: str) -> tuple[requests.Session, str]:
    """An HTTP session logged in as ``uid``, and its CSRF token."""
    http = requests.Session()
    assert http.get(server.base + "/login", params={"u": uid}, timeout=TIMEOUT).ok
    token = http.get(server.base + "/token", timeout=TIMEOUT).text
    return http, token


def act(server: Server, http: requests.Session, token: str | None, body: t.Any,
        **headers: str) -> requests.Response:
    if token is not None:
        headers["X-CSRF-Token"] = token
    return http.post(server.base + "/chsk/admin/act", json=body, headers=headers,
                     timeout=TIMEOUT)


def test_the_overview_shows_every_user_client_transport_and_topic(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client]) -> None:
    server = admin_server(make_server)
    alice_ws = connect(server, make_client, "alice", "ws")
    alice_ajax = connect(server, make_client, "alice", "ajax")
    bob = connect(server, make_client, "bob", "ajax")
    with server.app.app_context():
        server.sente.join("room:1", "alice")
        server.sente.join("room:2", "bob")
        server.sente.publish("room:1", ("t/hi", 1))
    root = connect(server, make_client, "root", "ws")
    wait_until(lambda: "room:1" in alice_ws.topics and "room:2" in bob.topics, message="joined")

    view = root.call((OVERVIEW, {"users": {"limit": 10}}), timeout=TIMEOUT)

    assert view["totals"] == {"users": 3, "clients": 4, "ws": 2, "ajax": 2, "topics": 2}
    (process,) = view["processes"]
    assert (process["ws"], process["ajax"], process["backplane"], view["missing"]) == (
        2, 2, "memory", 0)
    rows = {row["uid"]: row for row in view["users"]["rows"]}
    assert list(rows) == ["alice", "bob", "root"]
    assert {(c["client_id"], c["transport"]) for c in rows["alice"]["clients"]} == {
        (alice_ws.client_id, "ws"), (alice_ajax.client_id, "ajax")}
    assert rows["alice"]["topics"] == ["room:1"] and rows["bob"]["topics"] == ["room:2"]
    assert rows["alice"]["key"] == repr("alice")
    assert all(c["since"] <= view["now"] and c["pid"] == process["pid"]
               for c in rows["alice"]["clients"])
    assert view["topics"]["rows"] == [{"topic": "room:1", "members": 1, "publishes": 1},
                                      {"topic": "room:2", "members": 1, "publishes": 0}]
    assert process["events_in"] >= 1 and process["events_out"] >= 1  # root's ask; the publish


def test_search_and_pagination_pick_the_page_before_asking(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client]) -> None:
    server = admin_server(make_server)
    for n in range(12):
        connect(server, make_client, f"user-{n:02d}", "ajax")
    root = connect(server, make_client, "root", "ws")

    page = root.call((OVERVIEW, {"users": {"search": "USER-", "offset": 5, "limit": 4}}),
                     timeout=TIMEOUT)["users"]
    assert page["total"] == 12 and page["offset"] == 5
    assert [row["uid"] for row in page["rows"]] == ["user-05", "user-06", "user-07", "user-08"]
    assert all(len(row["clients"]) == 1 for row in page["rows"])
    capped = root.call((OVERVIEW, {"users": {"limit": 10_000}}), timeout=TIMEOUT)["users"]
    assert len(capped["rows"]) == 13  # the 100-row cap is above 13


@pytest.mark.parametrize("query, message", [
    ("everything", "the query must be an object"),
    ({"users": {"limit": -1}}, "users.limit must be an integer >= 0"),
    ({"topics": {"search": 7}}, "topics.search must be a string"),
])
def test_a_malformed_query_gets_an_error_reply(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client],
        query: t.Any, message: str) -> None:
    server = admin_server(make_server)
    root = connect(server, make_client, "root", "ajax")
    reply = root.call((OVERVIEW, query), timeout=TIMEOUT)
    assert reply["error"] == "bad-query" and message in reply["message"]


def test_a_non_admin_channel_is_refused_the_overview(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client]) -> None:
    server = admin_server(make_server)
    mallory = connect(server, make_client, "mallory", "ws")
    assert mallory.call((OVERVIEW, {}), timeout=TIMEOUT) == {"error": "forbidden"}
    root = connect(server, make_client, "root", "ws")
    (recent,) = [r for r in root.call((OVERVIEW, {}), timeout=TIMEOUT)["recent"]
                 if r["reason"] == "unauthorized"]
    assert recent["kind"] == "refusal" and recent["count"] == 1


def test_the_admin_auth_hook_decides_over_admin_uids(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client]) -> None:
    server = admin_server(make_server, admin_uids={"root"})
    asked: list[t.Any] = []

    @server.sente.admin_auth
    def only_ops(uid: t.Any) -> bool:
        asked.append(uid)
        return str(uid).startswith("ops-")

    assert connect(server, make_client, "root", "ws").call(
        (OVERVIEW, {}), timeout=TIMEOUT) == {"error": "forbidden"}
    assert "totals" in connect(server, make_client, "ops-1", "ws").call(
        (OVERVIEW, {}), timeout=TIMEOUT)
    http, token = logged_in(server, "ops-1")
    assert http.get(server.base + "/chsk/admin/admin.js", timeout=TIMEOUT).ok
    assert asked == ["root", "ops-1", "ops-1"]


def test_kick_close_one_client_leave_a_topic_and_push(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client],
        caplog: pytest.LogCaptureFixture) -> None:
    server = admin_server(make_server)
    alice_ws = connect(server, make_client, "alice", "ws")
    alice_ajax = connect(server, make_client, "alice", "ajax")
    bob = connect(server, make_client, "bob", "ws")
    with server.app.app_context():
        server.sente.join("room:1", "bob")
    wait_until(lambda: "room:1" in bob.topics, message="bob joined")
    http, token = logged_in(server, "root")
    caplog.set_level(logging.INFO, logger="flask_sente.admin")

    resp = act(server, http, token, {"action": "push", "uid": repr("bob")})
    assert (resp.status_code, resp.json()) == (200, {"ok": True})
    event = bob.receive(timeout=TIMEOUT)
    assert event is not None and event[0] == "sente.admin/test-push"
    assert event[1]["from"] == "root"

    resp = act(server, http, token, {"action": "leave-topic", "uid": repr("bob"),
                                     "topic": "room:1"})
    assert resp.status_code == 200
    wait_until(lambda: not _members(server, "room:1"), message="bob out of room:1")

    resp = act(server, http, token, {"action": "close-client", "uid": repr("alice"),
                                     "client_id": alice_ajax.client_id})
    assert resp.status_code == 200
    wait_until(lambda: _client_ids(server, "alice") == {alice_ws.client_id},
               message="only alice's Ajax client gone")
    wait_until(lambda: alice_ajax.state.last_close is not None, message="ajax client closed")
    assert alice_ajax.state.last_close.code == 4001
    assert alice_ws.state.open

    resp = act(server, http, token, {"action": "kick", "uid": repr("alice")})
    assert resp.status_code == 200
    wait_until(lambda: not _client_ids(server, "alice"), message="alice gone")
    wait_until(lambda: alice_ws.state.last_close is not None, message="ws client closed")
    assert alice_ws.state.last_close.code == 4001

    audited = [r.getMessage() for r in caplog.records if r.name == "flask_sente.admin"]
    assert audited == ["admin 'root': push 'bob'", "admin 'root': leave-topic 'bob' topic 'room:1'",
                       f"admin 'root': close-client 'alice' client {alice_ajax.client_id}",
                       "admin 'root': kick 'alice'"]


def test_actions_are_refused_with_a_status_that_says_why(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client]) -> None:
    server = admin_server(make_server)
    alice = connect(server, make_client, "alice", "ws")
    root, token = logged_in(server, "root")
    mallory, mallory_token = logged_in(server, "mallory")
    kick = {"action": "kick", "uid": repr("alice")}

    assert act(server, root, None, kick).status_code == 403  # no CSRF token
    assert act(server, root, "not-the-token", kick).status_code == 403
    assert act(server, root, token, kick, Origin="https://evil.example").status_code == 403
    assert act(server, mallory, mallory_token, kick).status_code == 403  # no admin
    for body, status in [
            ("nonsense", 400), ({"action": "explode", "uid": repr("alice")}, 400),
            ({"action": "kick", "uid": 5}, 400),
            ({"action": "close-client", "uid": repr("alice")}, 400),
            ({"action": "leave-topic", "uid": repr("alice"), "topic": ""}, 400),
            ({"action": "kick", "uid": repr("nobody")}, 404),
            ({"action": "close-client", "uid": repr("alice"), "client_id": "other"}, 404)]:
        resp = act(server, root, token, body)
        assert resp.status_code == status, body
        assert "error" in resp.json()
    assert alice.state.open and _client_ids(server, "alice") == {alice.client_id}
    resp = act(server, root, token, kick, Origin=server.base)  # its own origin: fine
    assert resp.status_code == 200


def test_the_page_and_its_files_are_for_admins_only(
        make_server: t.Callable[..., Server]) -> None:
    server = admin_server(make_server)
    mallory, _ = logged_in(server, "mallory")
    anonymous = requests.Session()
    for path in ("/chsk/admin", "/chsk/admin/admin.js", "/chsk/admin/admin.css"):
        for http in (mallory, anonymous):
            resp = http.get(server.base + path, timeout=TIMEOUT)
            assert resp.status_code == 403 and "admin" in resp.text
    root, token = logged_in(server, "root")
    page = root.get(server.base + "/chsk/admin", timeout=TIMEOUT)
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert f'"csrfToken": "{token}"' in page.text
    assert "__SENTE" not in page.text and "__ADMIN" not in page.text


def test_no_dashboard_unless_asked_for(make_server: t.Callable[..., Server],
                                       make_client: t.Callable[..., Client]) -> None:
    server = make_server()
    server.sente.user_id(lambda client_id: request.args.get("u") or None)
    assert requests.get(server.base + "/chsk/admin", timeout=TIMEOUT).status_code == 404
    chsk = connect(server, make_client, "root", "ws")
    with pytest.raises(ReplyError):  # no handler: the catch-all's error
        chsk.call((OVERVIEW, {}), timeout=TIMEOUT)
