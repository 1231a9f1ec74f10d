"""Issue 16 item 2: ``<url>/health`` is a readiness probe — 200 while the worker takes new
clients, 503 while it drains or its backplane is down — checked on real servers."""
from __future__ import annotations

import json
import pathlib
import re
import typing as t

import gevent
import gevent.event
import requests

from flask_sente.testing import serve
from tests.scaleout.conftest import RedisServer, redis_server  # noqa: F401 (a fixture)

from .conftest import TIMEOUT, build_app, ws_connect

READY = {"status": "ready", "accepting": True, "draining": False, "backplane": "up"}
DRAINING = {"status": "draining", "accepting": False, "draining": True, "backplane": "up"}
#: Every status the probe answers with (the three tests here reach each one).
STATUSES = {"ready", "draining", "backplane-down"}
ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
GOING_AWAY = [["chsk/close", {"code": 1001, "reason": "server shutting down"}], None]


def probe(get: t.Callable[..., requests.Response], base: str) -> tuple[int, dict[str, t.Any]]:
    resp = get(base + "/chsk/health", timeout=TIMEOUT)
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    return resp.status_code, resp.json()


def test_a_serving_worker_is_ready():
    app, _ = build_app()
    with serve(app) as base:
        assert probe(requests.get, base) == (200, {**READY, "kind": "memory"})


def test_an_apps_own_backplane_object_is_custom():
    """``kind`` said "redis" for any backplane that was not None (a stale guess): a
    backplane object of the app's is ``custom``."""
    from flask_sente.backplanes import LocalBackplane

    app, _ = build_app(backplane=LocalBackplane(history_size=10, history_ttl=10))
    with serve(app) as base:
        assert probe(requests.get, base) == (200, {**READY, "kind": "custom"})


def _slow_app() -> tuple[t.Any, gevent.event.Event, gevent.event.Event]:
    app, sente = build_app(lp_timeout=30)
    started, release = gevent.event.Event(), gevent.event.Event()

    @sente.on("t/slow")
    def slow(msg: t.Any) -> None:
        started.set()
        release.wait(TIMEOUT)
        msg.reply("done")

    return app, started, release


def test_a_shutdown_makes_the_worker_unready_while_it_drains():
    """``shutdown`` with a WebSocket whose call is in flight: the probe says draining at
    once (and a poll is told to go elsewhere) while the handler finishes and replies."""
    app, started, release = _slow_app()
    with serve(app) as base:
        url = base + "/chsk"
        ws = ws_connect(url.replace("http", "ws") + "?client-id=w&u=ann")
        stopper = None
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
            ws.send(json.dumps([["t/slow", None], "cb"]))
            assert started.wait(TIMEOUT)
            assert probe(requests.get, base)[0] == 200
            stopper = gevent.spawn(app.extensions["sente"].shutdown, TIMEOUT)
            gevent.sleep(0)
            assert probe(requests.get, base) == (503, {**DRAINING, "kind": "memory"})
            poll = requests.get(url, params={"client-id": "a", "u": "bob"}, timeout=TIMEOUT)
            assert poll.json() == GOING_AWAY
            assert not stopper.ready()  # still draining: the handler has not replied
            release.set()
            assert json.loads(ws.recv()) == [["chsk/reply", "done"], "cb"]
            stopper.get(timeout=TIMEOUT)
            assert probe(requests.get, base)[0] == 503  # stopped: still not ready
        finally:
            release.set()
            ws.close()
            if stopper is not None:
                stopper.kill()


def test_a_lost_backplane_makes_the_worker_unready_until_it_is_back(
        redis_server: RedisServer):  # noqa: F811
    app, _ = build_app(backplane=redis_server.url)
    with serve(app) as base:
        ws = ws_connect(base.replace("http", "ws") + "/chsk?client-id=w&u=ann")
        try:
            assert json.loads(ws.recv())[0][0] == "chsk/handshake"
            assert probe(requests.get, base) == (200, {**READY, "kind": "redis"})
            redis_server.stop()
            down = {"status": "backplane-down", "accepting": True, "draining": False,
                    "backplane": "down", "kind": "redis"}
            with gevent.Timeout(TIMEOUT, AssertionError("never reported the backplane down")):
                while probe(requests.get, base) != (503, down):
                    gevent.sleep(0.05)
            redis_server.start()
            with gevent.Timeout(TIMEOUT, AssertionError("never ready again")):
                while probe(requests.get, base)[0] != 200:
                    gevent.sleep(0.05)
        finally:
            ws.close()


def test_the_docs_show_the_bodies_the_probe_returns():
    """The example body of docs/deployment/health.md has the keys a ready worker answers
    with, and every ``"status": "…"`` the README and the docs show is one the probe gives.
    Broken once by putting back docs/deployment.md's ``{"status": "ok", …}`` (before issue
    26): it fails naming that file and ``ok``."""
    app, _ = build_app()
    with serve(app) as base:
        _, ready = probe(requests.get, base)
    health = (ROOT / "docs" / "deployment" / "health.md").read_text()
    example = re.search(r"```json\n(.*?)```", health, re.S)
    assert example is not None
    assert set(json.loads(example.group(1))) == set(ready)
    assert ready["status"] in STATUSES
    shown = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if "_build" in path.parts:
            continue
        for status in re.findall(r'"status": "([^"]*)"', path.read_text()):
            shown.append((path.relative_to(ROOT).as_posix(), status))
    assert len(shown) >= 4, shown
    assert [(path, status) for path, status in shown if status not in STATUSES] == []
