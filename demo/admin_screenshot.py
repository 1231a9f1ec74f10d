"""Make the admin dashboard's screenshot: ``python -m demo.admin_screenshot docs/admin.png``
(``--cluster``: the demo as ``make demo-cluster`` runs it, three gunicorn workers sharing a
fresh redis-server, so the page shows the three processes).

Runs the demo in-process on a free port (its dashboard is on for the user "admin") and
signs in, in headless Chromium (Debian's ``/usr/bin/chromium``): Ada in two tabs over
WebSocket, Grace over Ajax, Linus over WebSocket. Ada and Grace open the list "release" (a
topic), Linus the list "ops"; they add todos for a few seconds, so the chart has connections
and events to draw. Then "admin" opens ``/chsk/admin``; the page is saved once the chart
has about fifteen seconds of snapshots.
"""
from gevent import monkey

monkey.patch_all()

import contextlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright  # noqa: E402

from flask_sente.testing import serve  # noqa: E402

from .app import create_app  # noqa: E402
from .screenshot import ARGS  # noqa: E402

TIMEOUT = 10_000  # ms, every wait
SNAPSHOTS = 15  # the chart's points before the picture


def sign_in(browser: Browser, base: str, name: str, query: str = "",
            context: BrowserContext | None = None) -> Page:
    """A demo page signed in as ``name`` (a new tab of ``context``'s user when given)."""
    if context is None:
        context = browser.new_context(viewport={"width": 900, "height": 560})
    page = context.new_page()
    page.goto(base + "/" + query, timeout=TIMEOUT)
    if page.locator("#name").count():  # not signed in yet in this context
        page.fill("#name", name)
        page.click("button[type=submit]")
    page.wait_for_selector('#status[data-state="open"]', timeout=TIMEOUT)
    return page


def open_list(page: Page, name: str) -> None:
    page.fill("#join-name", name)
    page.click("#join-form button")
    page.wait_for_selector(f'#lists li[data-list="{name}"].selected', timeout=TIMEOUT)


def add(page: Page, text: str) -> None:
    page.fill("#add-text", text)
    page.click("#add-form button")


@contextlib.contextmanager
def cluster() -> t.Iterator[str]:
    """redis-server and ``gunicorn -w 3`` with the demo (as ``make demo-cluster``), both on
    free ports and stopped afterwards; yields the base URL once the three workers booted."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        redis_port = s.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="admin-shot-")
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", folder],
                             stdout=subprocess.DEVNULL)
    env = dict(os.environ, FLASK_SECRET_KEY=secrets.token_hex(16),
               FLASK_SENTE_BACKPLANE=f"redis://127.0.0.1:{redis_port}/0")
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker", "-w", "3",
         "-b", "127.0.0.1:0", "demo.app:create_app()"], env=env, stderr=subprocess.PIPE,
        text=True)
    try:
        assert gunicorn.stderr is not None
        port, booted, deadline = None, 0, time.monotonic() + 30
        while booted < 3 and time.monotonic() < deadline:
            line = gunicorn.stderr.readline()
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else port
            booted += "Booting worker" in line
        if port is None or booted < 3:
            raise RuntimeError("gunicorn did not start three workers in 30 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in (gunicorn, redis):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def main(out: str, in_cluster: bool = False) -> None:
    if in_cluster:
        where: t.ContextManager[str] = cluster()
    else:
        where = serve(create_app(SECRET_KEY=secrets.token_hex(16)))  # one run: no key file
    with where as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            ada = sign_in(browser, base, "Ada")
            ada2 = sign_in(browser, base, "Ada", context=ada.context)  # a second tab
            grace = sign_in(browser, base, "Grace", "?type=ajax")
            linus = sign_in(browser, base, "Linus")
            for page in (ada, ada2, grace):
                open_list(page, "release")
            open_list(linus, "ops")

            admin = sign_in(browser, base, "admin",
                            context=browser.new_context(viewport={"width": 1280, "height": 1000}))
            admin.goto(base + "/chsk/admin", timeout=TIMEOUT)
            admin.wait_for_selector('[data-testid="user-row"][data-uid="Grace"]', timeout=TIMEOUT)
            todos = ["Write the release notes", "Review the Redis backplane design",
                     "Tag v1.0", "Rotate the TLS certificates", "Buy oat milk"]
            last = 0.0
            for n in range(SNAPSHOTS):
                # One snapshot a second: wait for the next, adding a todo meanwhile.
                writer = (ada, grace, linus)[n % 3]
                add(writer, todos[n % len(todos)] + ("" if n < len(todos) else f" ({n})"))
                admin.wait_for_function(
                    "(last) => Number(document.querySelector('[data-testid=updated]')"
                    ".dataset.now) > last", arg=last, timeout=TIMEOUT)
                last = float(admin.get_by_test_id("updated").get_attribute("data-now") or 0)
            admin.screenshot(path=out, full_page=True)
        finally:
            browser.close()


if __name__ == "__main__":
    paths = [arg for arg in sys.argv[1:] if arg != "--cluster"]
    main(paths[0] if paths else "docs/admin.png", "--cluster" in sys.argv[1:])
