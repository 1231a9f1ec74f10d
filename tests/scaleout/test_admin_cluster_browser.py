"""The admin dashboard (issue 29) on ``gunicorn -w 3`` with Redis, in Chromium: the page
shows the three processes with the connections each one holds, and its Kick and Close act
on clients held by other workers than the one the page talks to.

WebSocket clients are opened until each worker holds some (the kernel spreads the
connections); which worker holds one is asked over its own socket (``t/pid``), not read from
the page. The app is tests/browser/admin_server.py's, the helpers test_admin_browser.py's.
"""
from __future__ import annotations

import collections
import sys
import typing as t

from playwright.sync_api import Browser, expect

from tests.browser.conftest import (
    Server,
    browser,  # noqa: F401  (the fixture)
)
from tests.browser.test_admin_browser import (
    TIMEOUT,
    Clients,
    client_row,
    clients,  # noqa: F401  (the fixture)
    confirm,
    expect_totals,
    open_dashboard,
    stopped_by_server,
    user_row,
)
from tests.helpers import gunicorn_args, wait_for

#: At most this many WebSockets opened to land some on each of the three workers.
MAX_SOCKETS = 30


def test_three_workers_on_the_dashboard(browser: Browser, clients: Clients,  # noqa: F811
                                        redis_server: t.Any, tmp_path: t.Any) -> None:
    server = Server(
        str(tmp_path / "gunicorn.log"),
        command=lambda port: gunicorn_args([
            sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker", "-w", "3",
            "-b", f"127.0.0.1:{port}", "--graceful-timeout", "3", "--no-control-socket",
            "tests.browser.admin_server:create_app()"]),
        ready=r"Listening at: http://127\.0\.0\.1:(\d+)(?s:.*?Booting worker){3}",
        env={"SENTE_TEST_REDIS": redis_server.url})
    server.start()
    try:
        base = server.url
        held: dict[int, list[t.Any]] = collections.defaultdict(list)  # pid -> its clients
        uid_of: dict[str, str] = {}
        n = 0
        while len(held) < 3 or min(len(c) for c in held.values()) < 2:
            assert n < MAX_SOCKETS, f"the sockets reached {len(held)} workers only"
            client = clients.connect(base, f"w{n:02d}", "ws")
            uid_of[client.client_id] = f"w{n:02d}"
            held[client.call(["t/pid", None], timeout=TIMEOUT)].append(client)
            n += 1
        ajax = clients.connect(base, "ajax-user", "ajax")

        page = open_dashboard(browser, base)
        me = user_row(page, "root").get_by_test_id("client-row")
        expect(me).to_have_count(1)
        page_pid = int(me.get_attribute("data-pid") or 0)
        assert page_pid in held
        procs = page.get_by_test_id("proc-row")
        expect(procs).to_have_count(3)
        for pid, on_it in held.items():
            row = page.locator(f'[data-testid="proc-row"][data-pid="{pid}"]')
            expect(row.locator('[data-field="ws"]')).to_have_text(
                str(len(on_it) + (pid == page_pid)))
            expect(row.locator('[data-field="backplane"]')).to_have_text("up")
        # n WebSocket users, the Ajax one and root; the Ajax client is held by one process.
        expect_totals(page, users=n + 2, clients=n + 2, ws=n + 1, ajax=1)
        assert sum(int(c) for c in procs.locator('[data-field="ajax"]').all_text_contents()) == 1
        for pid, on_it in held.items():
            for client in on_it:
                expect(client_row(page, client.client_id)).to_have_attribute("data-pid", str(pid))
        expect(client_row(page, ajax.client_id)).to_have_attribute("data-transport", "ajax")

        # Kick a user held by a worker the page does not talk to, then close another's client.
        others = [pid for pid in held if pid != page_pid]
        kicked = held[others[0]][0]
        kicked_uid = uid_of[kicked.client_id]
        user_row(page, kicked_uid).get_by_test_id("kick").click()
        confirm(page)
        expect(page.get_by_test_id("status")).to_contain_text(f"Kicked {kicked_uid}")
        wait_for(lambda: stopped_by_server(kicked), TIMEOUT, f"not kicked: {kicked.state}")
        expect(user_row(page, kicked_uid)).to_have_count(0)

        closed = held[others[1]][0]
        client_row(page, closed.client_id).get_by_test_id("close-client").click()
        confirm(page)
        expect(page.get_by_test_id("status")).to_contain_text(f"Closed client {closed.client_id}")
        wait_for(lambda: stopped_by_server(closed), TIMEOUT, f"not closed: {closed.state}")
        expect(client_row(page, closed.client_id)).to_have_count(0)
        expect_totals(page, users=n, clients=n, ws=n - 1, ajax=1)
        untouched = [c for on_it in held.values() for c in on_it if c not in (kicked, closed)]
        assert all(c.state.open for c in untouched)
        assert page.problems == []  # type: ignore[attr-defined]
        page.context.close()
    finally:
        clients.close()  # before the server goes: no reconnect attempts against a dead port
        server.stop(graceful=False)
        print(server.log()[-3000:])
