"""Rejections: every refusal has its own status before any upgrade; the server keeps serving."""
import json

import pytest
import websocket

from .conftest import build_app, running, ws_connect


def _ws_status(h, query, headers=None):
    """Status of a refused upgrade (websocket-client raises with it)."""
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        ws_connect(f"{h.ws_url}?{query}", timeout=5, header=headers or [])
    return info.value.status_code


def test_missing_client_id_is_400_on_every_request_kind(server):
    assert server.session.get(server.url, timeout=5).status_code == 400
    assert server.session.post(server.url, data="[]", timeout=5).status_code == 400
    assert _ws_status(server, "u=x") == 400


def test_csrf_is_checked_on_all_three_request_kinds():
    app, sente = build_app(csrf=True)
    token = {}

    @app.route("/page")
    def page():
        token["value"] = sente.csrf_token()
        return "ok"

    import requests

    from flask_sente.testing import serve
    with serve(app) as base:
        s = requests.Session()
        s.get(base + "/page", timeout=5)
        good = token["value"]
        url = base + "/chsk"
        assert s.get(url, params={"client-id": "c", "handshake": 1}, timeout=5).status_code == 403
        r = s.get(url, params={"client-id": "c", "handshake": 1}, timeout=5,
                  headers={"X-CSRF-Token": "wrong"})
        assert (r.status_code, r.text.strip()) == (403, "Bad CSRF token")
        r = s.get(url, params={"client-id": "c", "handshake": 1}, timeout=5,
                  headers={"X-CSRF-Token": good})
        assert r.status_code == 200
        body = json.dumps([["t/x", 1], None])
        assert s.post(url, params={"client-id": "c"}, data=body, timeout=5).status_code == 403
        assert s.post(url, params={"client-id": "c"}, data=body, timeout=5,
                      headers={"X-CSRF-Token": good}).status_code == 200
        cookie = "; ".join(f"{k}={v}" for k, v in s.cookies.items())
        ws_url = url.replace("http", "ws")
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            ws_connect(f"{ws_url}?client-id=c&csrf-token=nope", timeout=5,
                                        cookie=cookie)
        assert info.value.status_code == 403
        ws = ws_connect(f"{ws_url}?client-id=c&csrf-token={good}",
                                         timeout=5, cookie=cookie)
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
        finally:
            ws.close()


def test_csrf_token_callable():
    with running(csrf=lambda: "fixed") as h:
        assert h.get("c", handshake=True).status_code == 403
        assert h.get("c", handshake=True, **{"csrf-token": "fixed"}).status_code == 200


def test_origin_defaults_to_same_origin(server):
    host = server.base.split("//")[1]
    assert _ws_status(server, "client-id=c", ["Origin: http://evil.example"]) == 403
    r = server.session.get(server.url, params={"client-id": "c", "handshake": 1}, timeout=5,
                           headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "Unauthorized origin" in r.text
    ws = ws_connect(f"{server.ws_url}?client-id=c", timeout=5,
                                     origin=f"http://{host}")
    ws.close()


def test_origin_allow_list():
    with running(allowed_origins=["https://ok.example"]) as h:
        assert h.session.get(h.url, params={"client-id": "c", "handshake": 1}, timeout=5,
                             headers={"Origin": "https://ok.example"}).status_code == 200
        assert _ws_status(h, "client-id=c", ["Origin: https://no.example"]) == 403


def test_authorize_hook_runs_before_upgrade():
    def authorize(uid, client_id):
        if uid == "banned":
            return ("Go away", 403)
        return uid is not None and uid != "anon-denied"

    with running(authorize=authorize) as h:
        assert _ws_status(h, "client-id=c&u=banned") == 403
        assert _ws_status(h, "client-id=c&u=anon-denied") == 401
        assert h.post("c", ["t/x"], uid="anon-denied").status_code == 401
        r = h.get("c", uid="banned", handshake=True)
        assert (r.status_code, r.text) == (403, "Go away")
        ws = h.ws("c", uid="fine")
        ws.close()


def test_protocol_and_packer_mismatch_are_clear_400s(server):
    r = server.get("c", handshake=True, protocol="99")
    assert r.status_code == 400 and "Unsupported protocol version" in r.text
    r = server.get("c", handshake=True, packer="msgpack")
    assert r.status_code == 400 and "Packer mismatch" in r.text
    assert _ws_status(server, "client-id=c&protocol=4") == 400
    r = server.get("c", handshake=True, protocol="2", pos="[1]")
    assert r.status_code == 400 and "Bad positions" in r.text


@pytest.mark.parametrize("body, status", [
    ("{nope", 400),                          # malformed JSON
    (json.dumps({"a": 1}), 400),             # not an envelope
    (json.dumps([["t/x"], 5]), 400),         # bad cb_id
    (json.dumps([[1, 2], None]), 400),       # not an event
    (json.dumps([["chsk/ws-ping"], None]), 400),  # reserved id
])
def test_bad_posts_are_400_and_server_keeps_serving(server, body, status, caplog):
    r = server.post("c", None, body=body)
    assert r.status_code == status and r.text.startswith("Bad package")
    assert server.post("c", ["t/echo", 1], "ajax").json() == [["chsk/reply", 1], None]
    assert "Traceback" not in caplog.text


def test_oversized_post_is_413():
    with running(max_message_size=100) as h:
        r = h.post("c", ["t/echo", "x" * 200], "ajax")
        assert r.status_code == 413 and "Message too big" in r.text
        assert h.post("c", ["t/echo", 1], "ajax").status_code == 200


def test_a_post_whose_sender_stops_mid_body_is_400_without_a_traceback(caplog):
    """A client cut while sending its event (the chaos drill's proxy did it): the body ends
    before its Content-Length. Answered 400 like a short body, nothing logged as an error,
    and the server keeps serving. Shown to fail (500 and Flask's "Exception on /chsk"
    traceback) by letting ``read_body``'s OSError through."""
    import logging
    import socket
    from urllib.parse import urlsplit

    caplog.set_level(logging.WARNING)
    with running() as h:
        where = urlsplit(h.base)
        with socket.create_connection((where.hostname, where.port), timeout=5) as sock:
            sock.sendall(b"POST /chsk?client-id=c&u=ana HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 64\r\n\r\n"
                         b'[["t/echo",1],')
            sock.shutdown(socket.SHUT_WR)  # the rest never comes
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"the body ended before its Content-Length" in answer
        assert h.post("c", ["t/echo", 1], "ajax").json() == [["chsk/reply", 1], None]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


def test_the_x_xsrf_token_header_is_accepted_like_x_csrf_token():
    """``X-XSRF-Token`` (the header Angular and axios send) carries the CSRF token as
    ``X-CSRF-Token`` does (``admission.supplied_csrf_token``), on all three request kinds;
    a wrong one is refused like a wrong ``X-CSRF-Token``.

    Shown to fail by dropping ``HTTP_X_XSRF_TOKEN`` from ``supplied_csrf_token``: the
    handshake with the right token in that header got 403."""
    app, sente = build_app(csrf=True)
    token = {}

    @app.route("/page")
    def page():
        token["value"] = sente.csrf_token()
        return "ok"

    @sente.on("t/echo")
    def echo(msg):
        msg.reply(msg.data)

    import requests

    from flask_sente.testing import serve
    with serve(app) as base, requests.Session() as s:
        s.get(base + "/page", timeout=5)
        good = token["value"]
        url = base + "/chsk"
        r = s.get(url, params={"client-id": "c", "handshake": 1}, timeout=5,
                  headers={"X-XSRF-Token": "wrong"})
        assert (r.status_code, r.text.strip()) == (403, "Bad CSRF token")
        r = s.get(url, params={"client-id": "c", "handshake": 1}, timeout=5,
                  headers={"X-XSRF-Token": good})
        assert r.status_code == 200 and r.json()[0][0] == "chsk/handshake"
        body = json.dumps([["t/echo", 7], "ajax"])
        r = s.post(url, params={"client-id": "c"}, data=body, timeout=5,
                   headers={"X-XSRF-Token": "wrong", "Content-Type": "application/json"})
        assert r.status_code == 403
        r = s.post(url, params={"client-id": "c"}, data=body, timeout=5,
                   headers={"X-XSRF-Token": good, "Content-Type": "application/json"})
        assert r.json() == [["chsk/reply", 7], None]
        cookie = "; ".join(f"{k}={v}" for k, v in s.cookies.items())
        ws_url = url.replace("http", "ws") + "?client-id=c"
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            ws_connect(ws_url, cookie=cookie, header=["X-XSRF-Token: wrong"])
        assert info.value.status_code == 403
        ws = ws_connect(ws_url, cookie=cookie, header=[f"X-XSRF-Token: {good}"])
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
        finally:
            ws.close()
