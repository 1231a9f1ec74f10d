"""Issue 16 item 4: docs/deployment/nginx.conf, run by Debian's nginx in front of
``gunicorn -k flask_sente.worker.SenteWorker -w 3`` with the Redis backplane, driven by
flask_sente's Python client over WebSocket and over Ajax."""
from __future__ import annotations

import typing as t

import pytest
import requests
import websocket

from flask_sente.client import Client

from .conftest import TIMEOUT


def _client(base: str, kind: str, uid: str, origin: str) -> Client:
    return Client(base + "/chsk", type=kind, params={"u": uid}, headers={"Origin": origin},
                  connect_timeout=TIMEOUT, upgrade_retry=None)


def test_websocket_and_ajax_clients_through_nginx(nginx: str):
    public = nginx  # the browser's origin: the proxy's own address, as the Host it sends
    with _client(nginx, "ws", "wsu", public) as ws, _client(nginx, "ajax", "axu", public) as ajax:
        assert ws.wait_open(TIMEOUT) and ajax.wait_open(TIMEOUT)
        assert ws.state.type == "ws" and ajax.state.type == "ajax"

        # A call with a reply; the app sees the public URL and Host through ProxyFix.
        for client, kind, uid in ((ws, "ws", "wsu"), (ajax, "ajax", "axu")):
            me = client.call(("t/whoami", None), timeout=TIMEOUT)
            assert me["uid"] == uid and me["transport"] == kind
            assert me["host"] == public.removeprefix("http://")
            assert me["url"].startswith(public + "/chsk?")

        # Push by uid, each made on whichever worker served the call, to the other client
        # wherever it is connected (the Redis backplane carries it across workers).
        for n in range(6):
            ws.call(("t/push", {"to": "axu", "n": n}), timeout=TIMEOUT)
            ajax.call(("t/push", {"to": "wsu", "n": n}), timeout=TIMEOUT)
        got: dict[str, list[t.Any]] = {"ws": [], "ajax": []}
        for name, client in (("ws", ws), ("ajax", ajax)):
            while len(got[name]) < 6:
                event = client.receive(timeout=TIMEOUT)
                assert event is not None, f"{name} got only {got[name]}"
                if event[0] == "t/pushed":
                    got[name].append(event[1])
        assert got == {"ws": list(range(6)), "ajax": list(range(6))}


def test_a_cross_origin_upgrade_is_refused_through_nginx(nginx: str):
    url = nginx.replace("http://", "ws://") + "/chsk?client-id=evil&u=mallory"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, origin="http://evil.example", timeout=TIMEOUT)
    assert refused.value.status_code == 403
    ajax = requests.get(nginx + "/chsk", params={"client-id": "evil", "handshake": 1},
                        headers={"Origin": "http://evil.example"}, timeout=TIMEOUT)
    assert ajax.status_code == 403
    assert "Unauthorized origin" in ajax.text
    # The same upgrade from the public origin goes through.
    ws = websocket.create_connection(url, origin=nginx, timeout=TIMEOUT)
    try:
        assert "chsk/handshake" in ws.recv()
    finally:
        ws.close()


def test_health_through_nginx(nginx: str):
    resp = requests.get(nginx + "/chsk/health", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready", "accepting": True, "draining": False,
                           "backplane": "up", "kind": "redis"}
