"""The demo in real headless Chromium: `python -m demo` in a subprocess, users in separate
browser contexts (separate sessions), plus the terminal client."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import types
import typing as t

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import (
    PAGE_TIMEOUT,
    Server,
    browser,  # noqa: F401  (the fixture)
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Short windows so the tests see presence changes quickly; the same keys a user would set.
DEMO_ENV = {
    "FLASK_SECRET_KEY": "demo-test-secret",
    "FLASK_SENTE_RECONNECT_GRACE_WS": "0.5",
    "FLASK_SENTE_RECONNECT_GRACE_AJAX": "1.5",
    "FLASK_SENTE_LP_TIMEOUT": "5",
}
WAIT = 10_000  # ms, for expect()


def demo_server(log_path: str, instance_path: str | None = None,
                env: dict[str, str] | None = None) -> Server:
    """`python -m demo` on a free port; stop() + start() restarts it on the same port."""
    extra = ["--instance-path", instance_path] if instance_path else []
    return Server(log_path, command=lambda port: [sys.executable, "-m", "demo", "--port",
                                                  str(port), *extra],
                  ready=r"serving on http://127\.0\.0\.1:(\d+)", env=env or DEMO_ENV)


@pytest.fixture
def demo(tmp_path: t.Any) -> t.Iterator[Server]:
    server = demo_server(str(tmp_path / "demo.log"))
    try:
        yield server.start()
    finally:
        server.stop()
        print(server.log()[-4000:])


def sign_in(browser: Browser, demo: Server, name: str, query: str = "") -> Page:
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    context.set_default_timeout(PAGE_TIMEOUT)
    page = context.new_page()
    page.goto(demo.url + "/" + query)
    page.fill("#name", name)
    page.click("button[type=submit]")
    expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
    return page


def another_tab(page: Page, demo: Server, query: str = "") -> Page:
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


def test_restart_keeps_the_key_and_a_new_key_asks_for_a_reload(browser, tmp_path):
    """No FLASK_SECRET_KEY, as with `make demo`: the key made into the instance folder on the
    first start is used again after a restart, so open pages come back on their own. With
    another key their session is gone: the page says so and offers a reload."""
    instance = tmp_path / "instance"
    env = {**DEMO_ENV, "FLASK_SECRET_KEY": ""}  # empty = not set: the instance key is used
    demo = demo_server(str(tmp_path / "demo.log"), str(instance), env)
    demo.start()
    try:
        ada = sign_in(browser, demo, "ada")
        expect(ada.locator("#stopped")).to_be_hidden()
        key = (instance / "secret_key").read_text()

        demo.stop()
        expect(ada.locator("#status")).not_to_have_attribute("data-state", "open", timeout=WAIT)
        demo.start()
        expect(ada.locator("#status")).to_have_attribute("data-state", "open", timeout=20_000)
        assert (instance / "secret_key").read_text() == key
        ada.fill("#add-text", "after restart")
        ada.click("#add-form button")
        expect(ada.locator(".todo .text")).to_have_text(["after restart"], timeout=WAIT)

        demo.stop()
        (instance / "secret_key").write_text("a-different-key\n")
        demo.start()
        expect(ada.locator("#stopped")).to_be_visible(timeout=20_000)
        expect(ada.locator("#stopped-text")).to_contain_text("refused this page (403)")
        expect(ada.locator("#status")).to_have_attribute("data-state", "offline")
        assert ada.evaluate("() => chsk.state.nextReconnectAt") is None
        ada.click("#reload")
        expect(ada.locator("#name")).to_be_visible(timeout=WAIT)  # signed out: the login page
    finally:
        demo.stop()
        print(demo.log()[-4000:])


def test_offline_page_counts_down_and_disables_changes(browser, demo):
    ada = sign_in(browser, demo, "ada")
    missing: list[str] = []
    ada.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    ada.reload()
    expect(ada.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
    expect(ada.locator("#transport")).to_have_text("ws")
    expect(ada.locator("#add-form button")).to_be_enabled()
    assert missing == [], "no 404 (the favicon is inline)"
    ada.fill("#add-text", "milk")
    ada.click("#add-form button")
    expect(ada.locator(".todo .delete")).to_be_enabled(timeout=WAIT)

    demo.stop()
    expect(ada.locator("#status")).to_have_attribute("data-state", "reconnecting", timeout=WAIT)
    expect(ada.locator("#transport")).to_be_hidden()
    for control in ("#add-form button", "#dm-form button", ".todo .delete",
                    ".todo input[type=checkbox]"):
        expect(ada.locator(control)).to_be_disabled()
    # The countdown runs down while one retry is planned: two texts for one nextReconnectAt.
    ada.wait_for_function("""() => {
        const seen = (window.countdownSeen = window.countdownSeen || {});
        const at = chsk.state.nextReconnectAt;
        const text = document.getElementById("status-text").textContent;
        if (at === null || !/^reconnecting in \\d+ s$/.test(text)) return false;
        (seen[at] = seen[at] || new Set()).add(text);
        return seen[at].size >= 2;
    }""", timeout=20_000, polling=100)

    demo.start()
    expect(ada.locator("#status")).to_have_attribute("data-state", "open", timeout=20_000)
    expect(ada.locator("#add-form button")).to_be_enabled()
    expect(ada.locator("#transport")).to_be_visible()
    expect(ada.locator(".todo .text")).to_have_count(0)  # a new process: the list is empty


@pytest.mark.parametrize("query", ["", "?type=ajax"])
def test_a_page_that_missed_pushes_it_cannot_get_back_reloads_the_list(browser, demo, query):
    """A restart while ada is cut off: the new process has no history of what she missed
    (bob's sign-in and todo), so her reconnect says recovered: false and the page loads the
    list and the online panel again — not the stale list from before the restart."""
    from cutproxy import CutProxy

    with CutProxy(demo.port) as proxy:
        via = types.SimpleNamespace(url=f"http://127.0.0.1:{proxy.port}")
        ada = sign_in(browser, t.cast(Server, via), "ada", query)
        ada.fill("#add-text", "before the restart")
        ada.click("#add-form button")
        expect(ada.locator(".todo .text")).to_have_text(["before the restart"], timeout=WAIT)
        proxy.cut(down_for=120)              # ada is offline until the test says otherwise
        expect(ada.locator("#status")).not_to_have_attribute("data-state", "open", timeout=WAIT)
        demo.stop()
        demo.start()                         # an empty list, and no history of it
        bob = sign_in(browser, demo, "bob")  # directly, while ada is still cut off
        bob.fill("#add-text", "while ada was away")
        bob.click("#add-form button")
        expect(bob.locator(".todo .text")).to_have_text(["while ada was away"], timeout=WAIT)
        proxy.cut(down_for=0)                # the network is back
        ada.evaluate("() => window.dispatchEvent(new Event('online'))")  # skip the backoff
        expect(ada.locator("#status")).to_have_attribute("data-state", "open", timeout=20_000)
        assert ada.evaluate("() => chsk.state.recovered") is False
        expect(ada.locator(".todo .text")).to_have_text(["while ada was away"], timeout=WAIT)
        expect(online_row(ada, "bob")).to_have_count(1, timeout=WAIT)


@pytest.mark.parametrize("query", ["", "?type=ajax"])
def test_a_recovered_page_gets_what_it_missed_without_reloading(browser, demo, query):
    """Cut off without a restart: the reconnect is recovered: true and what ada missed is
    replayed; the page does not ask for the list again."""
    from cutproxy import CutProxy

    with CutProxy(demo.port) as proxy:
        via = types.SimpleNamespace(url=f"http://127.0.0.1:{proxy.port}")
        ada = sign_in(browser, t.cast(Server, via), "ada", query)
        bob = sign_in(browser, demo, "bob")
        expect(online_row(ada, "bob")).to_have_count(1, timeout=WAIT)
        calls: list[str] = []
        ada.expose_function("noteCall", lambda name: calls.append(name))
        ada.evaluate("""() => {
            const call = chsk.call.bind(chsk);
            chsk.call = (ev, ...rest) => { noteCall(ev[0]); return call(ev, ...rest); };
        }""")
        proxy.cut(down_for=120)
        expect(ada.locator("#status")).not_to_have_attribute("data-state", "open", timeout=WAIT)
        bob.fill("#add-text", "while ada was away")
        bob.click("#add-form button")
        expect(bob.locator(".todo .text")).to_have_text(["while ada was away"], timeout=WAIT)
        proxy.cut(down_for=0)
        ada.evaluate("() => window.dispatchEvent(new Event('online'))")
        expect(ada.locator("#status")).to_have_attribute("data-state", "open", timeout=20_000)
        expect(ada.locator(".todo .text")).to_have_text(["while ada was away"], timeout=WAIT)
        assert ada.evaluate("() => chsk.state.recovered") is True
        assert "todo/list" not in calls and "presence/list" not in calls
