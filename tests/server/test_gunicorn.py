"""The full stack under real gunicorn with ``flask_sente.worker.SenteWorker``: the demo app,
a browser-like WebSocket client and an Ajax client, then SIGTERM."""
from __future__ import annotations

import json
import os
import re
import sys

import requests
import websocket

from tests.helpers import Proc

from .conftest import ws_connect


def _login(base: str, name: str) -> tuple[requests.Session, str]:
    s = requests.Session()
    page = s.get(base + "/", timeout=5).text
    token = re.search(r'name="csrf-token" value="([^"]+)"', page).group(1)
    s.post(base + "/login", data={"name": name, "csrf-token": token}, timeout=5)
    page = s.get(base + "/", timeout=5).text
    token = re.search(r'name="sente-csrf-token" content="([^"]+)"', page).group(1)
    return s, token


def test_demo_app_under_gunicorn_worker(tmp_path):
    env = dict(os.environ, FLASK_SECRET_KEY="gunicorn-test")
    proc = Proc([sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker",
                 "-b", "127.0.0.1:0", "-w", "1", "--access-logfile", "-",
                 "--graceful-timeout", "3", "--no-control-socket", "demo.app:create_app()"],
                tmp_path, env)
    ws = None
    try:
        port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        proc.wait_for(r"Booting worker")
        base = f"http://127.0.0.1:{port}"
        ada, ada_token = _login(base, "ada")
        bob, bob_token = _login(base, "bob")

        # Ada over WebSocket, with her session cookie and CSRF token.
        cookie = "; ".join(f"{k}={v}" for k, v in ada.cookies.items())
        ws = ws_connect(f"ws://127.0.0.1:{port}/chsk?client-id=ada-tab&csrf-token={ada_token}",
                        cookie=cookie)
        assert json.loads(ws.recv())[0] == ["chsk/handshake", {"uid": "ada",
                                                               "handshake_data": None,
                                                               "protocol": 1}]
        # Bob over Ajax.
        url = base + "/chsk"
        headers = {"X-CSRF-Token": bob_token}
        assert bob.get(url, params={"client-id": "bob-tab", "handshake": 1}, headers=headers,
                       timeout=5).json()[0][1]["uid"] == "bob"

        ws.send(json.dumps([["todo/add", {"text": "milk"}], "c1"]))
        reply = None
        while reply is None:
            msg = json.loads(ws.recv())
            if msg[1] == "c1":
                reply = msg
        assert reply[0][0] == "chsk/reply" and reply[0][1]["ok"] is True

        # Bob's next poll carries the push (kept for him between polls).
        pushed = []
        for _ in range(10):
            body = bob.get(url, params={"client-id": "bob-tab"}, headers=headers,
                           timeout=25).json()
            if isinstance(body[0][0], list):
                pushed += [e for e in body[0] if e[0] == "todo/added"]
            if pushed:
                break
        assert pushed == [["todo/added", {"id": 1, "text": "milk", "done": False,
                                          "author": "ada"}]]

        # Graceful stop: the WebSocket gets 1001 before the worker exits.
        assert proc.terminate() == 0
        code = None
        for _ in range(10):
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big")
                break
        assert code == 1001
        out, _ = proc.output()
        assert re.search(r'"GET /chsk\?client-id=ada-tab[^"]*" 101', out)
        assert re.search(r'"POST /login HTTP/1.1" 302', out)
    finally:
        if ws is not None:
            ws.close()
        proc.kill()
