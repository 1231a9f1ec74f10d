"""Why docs/deployment/nginx.md asks for ``ProxyFix``: behind a proxy that terminates TLS,
the browser's ``Origin`` is ``https://<public host>`` while the app, without ProxyFix, sees
``http://<whatever Host the proxy sent>`` — every upgrade and request would be refused.
The headers are those nginx.conf sets; the server is real."""
from __future__ import annotations

import pytest
import requests
import websocket
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_sente import Sente
from flask_sente.testing import serve

from .conftest import TIMEOUT

PUBLIC = "https://chat.example.com"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example.com",
             "X-Forwarded-For": "198.51.100.7"}


def _app(proxy_fix: bool) -> Flask:
    app = Flask(__name__)
    app.secret_key = "proxy-fix-test"
    if proxy_fix:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    Sente(app, csrf=False)
    return app


@pytest.mark.parametrize("proxy_fix, status", [(True, 200), (False, 403)])
def test_the_origin_check_needs_proxy_fix_behind_a_tls_proxy(proxy_fix: bool, status: int):
    with serve(_app(proxy_fix)) as base:
        resp = requests.get(base + "/chsk", params={"client-id": "a", "handshake": 1},
                            headers={"Origin": PUBLIC, **FORWARDED}, timeout=TIMEOUT)
        assert resp.status_code == status, resp.text
        url = base.replace("http://", "ws://") + "/chsk?client-id=w"
        header = [f"{k}: {v}" for k, v in FORWARDED.items()]
        if proxy_fix:
            ws = websocket.create_connection(url, origin=PUBLIC, header=header,
                                             timeout=TIMEOUT)
            try:
                assert "chsk/handshake" in ws.recv()
            finally:
                ws.close()
        else:
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                websocket.create_connection(url, origin=PUBLIC, header=header,
                                            timeout=TIMEOUT)
            assert refused.value.status_code == 403
