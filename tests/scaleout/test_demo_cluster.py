"""The demo under ``gunicorn -w 3`` with Redis, as ``make demo-cluster`` runs it: one todo
list, presence and direct messages whichever worker a request lands on."""
from __future__ import annotations

import json
import os
import sys
import typing as t

import gevent
import requests
import websocket

from tests.helpers import Proc
from tests.server.test_gunicorn import _login  # the demo's sign-in, shared

TIMEOUT = 10


def _call(session: requests.Session, base: str, token: str, event: t.Any) -> t.Any:
    # A fresh connection each time (not the session's pool): each may reach another worker.
    r = requests.post(base + "/chsk?client-id=cli&protocol=2", data=json.dumps([event, "ajax"]),
                      cookies=session.cookies,
                      headers={"Content-Type": "application/json", "X-CSRF-Token": token,
                               "Connection": "close"}, timeout=TIMEOUT)
    return r.json()[0][1]


def test_the_demo_on_three_workers_shows_one_list_and_one_presence(redis_server, tmp_path):
    env = dict(os.environ, FLASK_SENTE_BACKPLANE=redis_server.url)
    proc = Proc([sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker",
                 "-b", "127.0.0.1:0", "-w", "3", "--graceful-timeout", "3",
                 "--no-control-socket", f"demo.app:create_app('{tmp_path / 'instance'}')"],
                tmp_path, env)
    ws = None
    try:
        port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        proc.wait_for(r"(?s)(Booting worker.*){3}")
        base = f"http://127.0.0.1:{port}"
        ada, ada_token = _login(base, "ada")
        bob, bob_token = _login(base, "bob")
        cookie = "; ".join(f"{k}={v}" for k, v in ada.cookies.items())
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/chsk?client-id=ada-tab&protocol=2&csrf-token={ada_token}",
            cookie=cookie, timeout=TIMEOUT)
        assert json.loads(ws.recv())[0][1]["uid"] == "ada"
        for n in range(6):                      # Bob adds from whichever worker
            assert _call(bob, base, bob_token, ["todo/add", {"text": f"item {n}"}])["ok"]
        added: list[str] = []
        with gevent.Timeout(TIMEOUT):
            while len(added) < 6:
                payload = json.loads(ws.recv())[0]
                if isinstance(payload[0], list):
                    added += [e[1]["text"] for e in payload if e[0] == "todo/added"]
        assert added == [f"item {n}" for n in range(6)]
        lists = {json.dumps(_call(bob, base, bob_token, ["todo/list", None]))
                 for _ in range(9)}             # asked of every worker
        assert len(lists) == 1 and len(json.loads(lists.pop())["todos"]) == 6
    finally:
        if ws is not None:
            ws.close()
        proc.terminate()
        proc.kill()
