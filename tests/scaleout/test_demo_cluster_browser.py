"""``make demo-cluster`` in Chromium (issue 25 #4): the demo on ``gunicorn -w 3`` with Redis,
an observer's "who is online" panel following other users' sign-ins and departures, with
the default grace windows.

The panel is rebuilt at the presence signals. Before one presence model, with Redis, it was
rebuilt from a copy of the online sets that did not have the new user yet (7 of 8 sign-ins
missed) and that still had a departed one (kept without a badge for 75 s and more, 4 of 5):
each user below must appear within seconds and go within the grace window plus seconds.

Run once on the backplane and presence code of before (flask_sente/backplanes/redis.py,
redis_scripts.py and core/presence.py as they were): the first sign-in never showed.
"""
from __future__ import annotations

import sys
import typing as t

from playwright.sync_api import expect

from tests.browser.conftest import (
    Server,
    browser,  # noqa: F401  (the fixture)
)
from tests.demo_app.test_demo_browser import online_row, sign_in
from tests.helpers import gunicorn_args

SIGN_INS = 8
DEPARTURES = 5
APPEAR = 5_000   # ms: the panel is pushed at the sign-in's client_connected
GO = 2_500 + 6_000   # ms: the WebSocket grace window (default 2.5 s), then the panel's push


def test_the_cluster_demos_online_panel_follows_sign_ins_and_departures(
        browser: t.Any, redis_server: t.Any, tmp_path: t.Any) -> None:  # noqa: F811
    instance = tmp_path / "instance"
    server = Server(
        str(tmp_path / "gunicorn.log"),
        command=lambda port: gunicorn_args([
            sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker", "-w", "3",
            "-b", f"127.0.0.1:{port}", "--graceful-timeout", "3", "--no-control-socket",
            f"demo.app:create_app('{instance}')"]),
        ready=r"Listening at: http://127\.0\.0\.1:(\d+)(?s:.*?Booting worker){3}",
        env={"FLASK_SENTE_BACKPLANE": redis_server.url})
    server.start()
    try:
        observer = sign_in(browser, server, "olga")
        users = {}
        for n in range(SIGN_INS):
            uid = f"user{n}"
            users[uid] = sign_in(browser, server, uid)
            expect(online_row(observer, uid)).to_have_count(1, timeout=APPEAR)
        for n in range(DEPARTURES):
            uid = f"user{n}"
            users.pop(uid).context.close()
            expect(online_row(observer, uid)).to_have_count(0, timeout=GO)
        for uid in users:                       # the others are still there
            expect(online_row(observer, uid)).to_have_count(1, timeout=APPEAR)
    finally:
        server.stop(graceful=False)
        print(server.log()[-3000:])
