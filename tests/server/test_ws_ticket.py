"""Issue 14 item 8: the CSRF token out of WebSocket URLs and out of access logs.

A browser fetches a short-lived single-use ticket over Ajax (token in the X-CSRF-Token
header) and opens the WebSocket with ``ws-ticket=…``; the access log redacts ``csrf-token``
and ``ws-ticket`` values in any URL (embedded server and gunicorn)."""
from __future__ import annotations

import os
import sys

import pytest
import requests
import websocket
from flask import Flask

from flask_sente import Sente
from flask_sente.server import make_server
from tests.helpers import Proc

from .conftest import ws_connect


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def site():
    app = Flask(__name__)
    app.secret_key = "ticket-test"
    sente = Sente(app)   # csrf=True: the session's token
    app.add_url_rule("/token", "token", lambda: sente.csrf_token())
    log = _Log()
    server = make_server(app, port=0, log=log)
    server.start()
    session = requests.Session()
    base = f"http://127.0.0.1:{server.server_port}"
    token = session.get(base + "/token", timeout=5).text
    try:
        yield base, session, token, log
    finally:
        session.close()
        sente.close(app)
        server.stop(timeout=1)
        sente.close(app)


def _ticket(base: str, session: requests.Session, token: str | None, client_id: str) -> \
        requests.Response:
    headers = {"X-CSRF-Token": token} if token else {}
    return session.get(base + "/chsk", params={"client-id": client_id, "new-ws-ticket": 1},
                       headers=headers, timeout=5)


def _ws(base: str, session: requests.Session, query: str) -> websocket.WebSocket:
    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    return ws_connect(base.replace("http", "ws") + "/chsk?" + query, cookie=cookie)


def test_ws_ticket_admits_once_and_stays_out_of_the_log(site):
    base, session, token, log = site
    got = _ticket(base, session, token, "tab1")
    assert got.status_code == 200 and got.headers["Cache-Control"] == "no-store"
    ticket = got.text.strip()
    ws = _ws(base, session, f"client-id=tab1&ws-ticket={ticket}")
    try:
        assert '"chsk/handshake"' in ws.recv()
    finally:
        ws.close()
    # single use; bound to its client id; a forged one and none at all are refused
    for query in (f"client-id=tab1&ws-ticket={ticket}",
                  f"client-id=tab2&ws-ticket={_ticket(base, session, token, 'tab1').text}",
                  "client-id=tab1&ws-ticket=1.2.3", "client-id=tab1"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            _ws(base, session, query)
        assert refused.value.status_code == 403, query
    # a ticket needs the token (in a header)
    assert _ticket(base, session, None, "tab1").status_code == 403
    # the token itself in the URL (older clients, Sente's own) still works: redacted
    ws = _ws(base, session, f"client-id=tab3&csrf-token={token}")
    ws.close()
    text = "".join(log.lines)
    assert ticket not in text and token not in text, text
    assert "ws-ticket=[redacted]" in text and "csrf-token=[redacted]" in text


def test_gunicorn_access_log_redacts_the_token(tmp_path):
    proc = Proc([sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker",
                 "-b", "127.0.0.1:0", "-w", "1", "--access-logfile", "-",
                 "--graceful-timeout", "3", "--no-control-socket",
                 "tests.server.drain_app:create_app()"], tmp_path, dict(os.environ))
    try:
        port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        proc.wait_for(r"Booting worker")
        url = f"http://127.0.0.1:{port}/chsk"
        got = requests.get(url, params={"client-id": "c", "handshake": 1,
                                        "csrf-token": "S3CRET-TOKEN"}, timeout=5)
        assert got.status_code == 200
        ws = ws_connect(f"ws://127.0.0.1:{port}/chsk?client-id=w&ws-ticket=S3CRET-TICKET")
        ws.close()
        assert proc.terminate() == 0
    finally:
        proc.kill()
    out, err = proc.output()
    assert "csrf-token=[redacted]" in out and "ws-ticket=[redacted]" in out, out
    assert "S3CRET" not in out + err
