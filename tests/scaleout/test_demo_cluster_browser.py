"""``make demo-cluster`` in Chromium (issue 25 #4): the demo on ``gunicorn -w 3`` with Redis,
an observer's "who is online" panel following other users' sign-ins and departures, with
the default grace windows; and (issue 29) its admin dashboard as a person uses it: the three
workers, two users' windows with their transports and lists, a kick that makes one leave.

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


def cluster_demo(redis_server: t.Any, tmp_path: t.Any) -> Server:
    """The demo as ``make demo-cluster`` runs it (started; the caller stops it)."""
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
    return server


def test_the_cluster_demos_online_panel_follows_sign_ins_and_departures(
        browser: t.Any, redis_server: t.Any, tmp_path: t.Any) -> None:  # noqa: F811
    server = cluster_demo(redis_server, tmp_path)
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


def test_an_admin_sees_the_three_workers_and_kicks_a_user_on_the_cluster_demo(
        browser: t.Any, redis_server: t.Any, tmp_path: t.Any) -> None:  # noqa: F811
    """Issue 29's "done when", as a person does it: Ada and Grace (over Ajax) in two
    windows, "admin" follows the top bar's link to /chsk/admin, sees three workers and both
    users with their transports and lists, kicks Grace: her row goes and her window says
    she was disconnected; Ada stays."""
    server = cluster_demo(redis_server, tmp_path)
    try:
        ada = sign_in(browser, server, "Ada")
        grace = sign_in(browser, server, "Grace", "?type=ajax")
        admin = sign_in(browser, server, "admin")
        admin.click("#admin-link")
        expect(admin.get_by_test_id("proc-row")).to_have_count(3, timeout=APPEAR)
        for uid, transport in (("Ada", "ws"), ("Grace", "ajax")):
            row = admin.locator(f'[data-testid="user-row"][data-uid="{uid}"]')
            expect(row.get_by_test_id("client-row")).to_have_attribute(
                "data-transport", transport, timeout=APPEAR)
            expect(row).to_contain_text(f"list/@{uid}")  # her own list: a topic
        grace_row = admin.locator('[data-testid="user-row"][data-uid="Grace"]')
        grace_row.get_by_test_id("kick").click()
        admin.get_by_test_id("dialog-confirm").click()
        expect(grace_row).to_have_count(0, timeout=APPEAR)
        expect(grace.locator("#stopped")).to_be_visible(timeout=APPEAR)
        expect(admin.locator('[data-testid="user-row"][data-uid="Ada"]')).to_have_count(1)
        expect(ada.locator("#status")).to_have_attribute("data-state", "open")
    finally:
        server.stop(graceful=False)
        print(server.log()[-3000:])
