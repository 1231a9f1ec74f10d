"""The demo in real headless Chromium: `python -m demo` in a subprocess, users in separate
browser contexts (separate sessions), plus the terminal client."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import typing as t

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, PAGE_TIMEOUT

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Short windows so the tests see presence changes quickly; the same keys a user would set.
DEMO_ENV = {
    "FLASK_SECRET_KEY": "demo-test-secret",
    "FLASK_SENTE_RECONNECT_GRACE_WS": "0.5",
    "FLASK_SENTE_RECONNECT_GRACE_AJAX": "1.5",
    "FLASK_SENTE_LP_TIMEOUT": "5",
}
WAIT = 10_000  # ms, for expect()


class Demo:
    """`python -m demo` on a free port; stop() + start() restarts it on the same port."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Demo:
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "demo", "--port", str(self.port)], cwd=ROOT,
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                env={**os.environ, **DEMO_ENV, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                match = re.search(rb"serving on http://127\.0\.0\.1:(\d+)", log.read())
            if match:
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the demo did not start: {self.log()}")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def demo(tmp_path: t.Any) -> t.Iterator[Demo]:
    server = Demo(str(tmp_path / "demo.log"))
    try:
        yield server.start()
    finally:
        server.stop()
        print(server.log()[-4000:])


@pytest.fixture
def browser() -> t.Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(browser: Browser, demo: Demo, name: str, query: str = "") -> Page:
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    context.set_default_timeout(PAGE_TIMEOUT)
    page = context.new_page()
    page.goto(demo.url + "/" + query)
    page.fill("#name", name)
    page.click("button[type=submit]")
    expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
    return page


def another_tab(page: Page, demo: Demo, query: str = "") -> Page:
    tab = page.context.new_page()
    tab.goto(demo.url + "/" + query)
    expect(tab.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
    return tab


def online_row(page: Page, uid: str) -> t.Any:
    return page.locator(f'#online li[data-uid="{uid}"]')


@pytest.mark.parametrize("query, transport", [("", "ws"), ("?type=ajax", "ajax")])
def test_two_users_share_the_list_live(browser, demo, query, transport):
    ada = sign_in(browser, demo, "ada", query)
    bob = sign_in(browser, demo, "bob", query)
    expect(ada.locator("#transport")).to_have_text(transport)

    ada.fill("#add-text", "buy milk")
    ada.click("#add-form button")
    expect(bob.locator(".todo .text")).to_have_text(["buy milk"], timeout=WAIT)
    expect(ada.locator("#add-text")).to_have_value("")     # the reply confirmed it

    bob.locator(".todo input[type=checkbox]").check()
    expect(ada.locator(".todo")).to_have_class(re.compile(r"\bdone\b"), timeout=WAIT)
    bob.locator(".todo .text").dblclick()
    bob.fill(".todo .edit-input", "buy oat milk")
    bob.press(".todo .edit-input", "Enter")
    expect(ada.locator(".todo .text")).to_have_text(["buy oat milk"], timeout=WAIT)
    ada.click(".todo .delete")
    expect(bob.locator(".todo")).to_have_count(0, timeout=WAIT)

    expect(online_row(ada, "bob").locator(f".badge.{transport}")).to_have_text(
        f"{transport} × 1", timeout=WAIT)


@pytest.mark.parametrize("query", ["", "?type=ajax"])
def test_online_panel_follows_tabs_and_the_grace_window(browser, demo, query):
    ada = sign_in(browser, demo, "ada", query)
    bob = sign_in(browser, demo, "bob", query)
    bob2 = another_tab(bob, demo, query)
    kind = "ajax" if query else "ws"
    expect(online_row(ada, "bob").locator(f".badge.{kind}")).to_have_text(f"{kind} × 2",
                                                                           timeout=WAIT)
    bob2.close()
    expect(online_row(ada, "bob").locator(f".badge.{kind}")).to_have_text(f"{kind} × 1",
                                                                           timeout=WAIT)
    bob.close()   # bob's last tab: gone once the grace window has passed
    expect(online_row(ada, "bob")).to_have_count(0, timeout=WAIT)
    expect(online_row(ada, "ada")).to_have_count(1)


def test_direct_message_reaches_every_tab_of_the_recipient(browser, demo):
    ada = sign_in(browser, demo, "ada")
    bob = sign_in(browser, demo, "bob")
    bob2 = another_tab(bob, demo)
    expect(ada.locator("#dm-to option[value=bob]")).to_have_count(1, timeout=WAIT)
    ada.select_option("#dm-to", "bob")
    ada.fill("#dm-text", "lunch?")
    ada.click("#dm-form button")
    for tab in (bob, bob2):
        expect(tab.locator("#inbox li")).to_have_text(["from ada: lunch?"], timeout=WAIT)


def test_pages_reconnect_after_a_server_restart(browser, demo):
    ada = sign_in(browser, demo, "ada")
    poller = sign_in(browser, demo, "pat", "?type=ajax")
    demo.stop()
    expect(ada.locator("#status")).not_to_have_attribute("data-state", "open", timeout=WAIT)
    demo.start()                       # same port; the session cookie is still valid
    for page in (ada, poller):
        expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=20_000)
    ada.fill("#add-text", "after restart")
    ada.click("#add-form button")
    expect(poller.locator(".todo .text")).to_have_text(["after restart"], timeout=WAIT)


def test_terminal_client_adds_a_todo_the_page_shows(browser, demo):
    ada = sign_in(browser, demo, "ada")
    result = subprocess.run([sys.executable, "-m", "demo.cli", "--url", demo.url, "--name", "cli",
                             "add", "from the terminal"], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "added [ ] #1 from the terminal" in result.stdout
    expect(ada.locator(".todo .text")).to_have_text(["from the terminal"], timeout=WAIT)
    expect(ada.locator(".todo .author")).to_have_text(["cli"])
    listed = subprocess.run([sys.executable, "-m", "demo.cli", "--url", demo.url, "--type",
                             "ajax", "list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert "#1 from the terminal  (cli)" in listed.stdout


def test_sign_out_kicks_every_tab_of_the_user(browser, demo):
    ada = sign_in(browser, demo, "ada")
    ada2 = another_tab(ada, demo)
    ada.click(".me button")
    expect(ada2.locator("#status")).to_have_attribute("data-state", "offline", timeout=WAIT)
    expect(ada.locator("#name")).to_be_visible()
