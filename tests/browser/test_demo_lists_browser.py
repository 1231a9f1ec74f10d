"""The demo's named lists in real Chromium: each is a topic (``list/<name>``) the page joins.
Users in separate browser contexts (separate sessions) open a list, see each other's todos
and each other in its viewers; a user who leaves, or never opened it, gets none of its
todos. The demo runs as ``python -m demo`` (tests/demo_app/test_demo_browser.py's fixture).
"""
from __future__ import annotations

import subprocess
import sys
import types
import typing as t

import pytest
from cutproxy import CutProxy
from playwright.sync_api import Locator, Page, expect

from tests.demo_app.test_demo_browser import (  # noqa: F401  (demo: the fixture)
    ROOT,
    WAIT,
    demo,
    sign_in,
)

from .conftest import Server

# Every todo/added the page gets, as [text, meta.topic].
RECORD = """() => { window.added = [];
  chsk.on("todo/added", (todo, event, meta) => added.push([todo.text, meta.topic])); }"""


def chip(page: Page, name: str) -> Locator:
    return page.locator(f'#lists li[data-list="{name}"]')


def open_list(page: Page, name: str) -> None:
    page.fill("#join-name", name)
    page.click("#join-form button")
    expect(chip(page, name)).to_have_class("chip selected", timeout=WAIT)


def add(page: Page, text: str) -> None:
    page.fill("#add-text", text)
    page.click("#add-form button")
    expect(page.locator("#add-text")).to_have_value("", timeout=WAIT)   # the reply came


@pytest.mark.parametrize("query", ["", "?type=ajax"])
def test_a_named_list_reaches_its_viewers_only(browser, demo, query):  # noqa: F811
    ada = sign_in(browser, demo, "ada", query)
    bob = sign_in(browser, demo, "bob", query)
    cat = sign_in(browser, demo, "cat", query)      # never opens the list
    for page in (ada, bob, cat):
        page.evaluate(RECORD)
    open_list(ada, "groceries")
    open_list(bob, "groceries")
    expect(ada.locator("#viewers li")).to_have_text(["ada (you)", "bob"], timeout=WAIT)
    expect(bob.locator("#viewers li")).to_have_text(["ada", "bob (you)"])

    add(ada, "apples")
    expect(bob.locator(".todo .text")).to_have_text(["apples"], timeout=WAIT)
    expect(ada.locator(".todo .text")).to_have_text(["apples"])
    # The shared list is another list: "apples" is not in it.
    bob.click('#lists li[data-list=""] .chip-name')
    expect(bob.locator("#viewers-box")).to_be_hidden()
    expect(bob.locator(".todo")).to_have_count(0)
    bob.click('#lists li[data-list="groceries"] .chip-name')
    expect(bob.locator(".todo .text")).to_have_text(["apples"])

    # Bob leaves: ada sees him go, and his page gets the list's todos no more.
    bob.click('#lists li[data-list="groceries"] .leave')
    expect(chip(bob, "groceries")).to_have_count(0)
    expect(ada.locator("#viewers li")).to_have_text(["ada (you)"], timeout=WAIT)
    add(ada, "pears")
    expect(ada.locator(".todo .text")).to_have_text(["apples", "pears"])
    # A todo on the shared list, added after: once the others have it, they would have had
    # "pears" too had it been sent to them (one connection delivers in order).
    ada.click('#lists li[data-list=""] .chip-name')
    add(ada, "for everyone")
    for page in (bob, cat):
        expect(page.locator(".todo .text")).to_have_text(["for everyone"], timeout=WAIT)
    assert bob.evaluate("() => added") == [["apples", "list/groceries"], ["for everyone", None]]
    assert cat.evaluate("() => added") == [["for everyone", None]]
    # Nor can cat read or change it without opening it.
    reply = cat.evaluate("() => chsk.call(['todo/list', {list: 'groceries'}])")
    assert reply == {"ok": False, "error": "open the list groceries first"}
    reply = cat.evaluate("() => chsk.call(['todo/add', {list: 'groceries', text: 'x'}])")
    assert reply["ok"] is False


def test_a_bad_list_name_is_refused_with_the_reason_and_open_lists_come_back(browser,
                                                                             demo):  # noqa: F811
    ada = sign_in(browser, demo, "ada")
    ada.fill("#join-name", "Not OK!")
    ada.click("#join-form button")
    expect(ada.locator(".toast.error")).to_contain_text(
        "Cannot open Not OK!: a list name is 1 to 24 lowercase letters, digits or dashes",
        timeout=WAIT)
    expect(ada.locator("#lists li")).to_have_count(2)     # the shared list and her own
    open_list(ada, "work")
    add(ada, "ship it")
    ada.reload()                                          # the page remembers its lists
    expect(ada.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
    expect(chip(ada, "work")).to_have_count(1, timeout=WAIT)
    ada.click('#lists li[data-list="work"] .chip-name')
    expect(ada.locator(".todo .text")).to_have_text(["ship it"], timeout=WAIT)
    expect(ada.locator("#viewers li")).to_have_text(["ada (you)"])


def test_the_terminal_client_opens_a_list_and_adds_to_it(browser, demo):  # noqa: F811
    ada = sign_in(browser, demo, "ada")
    open_list(ada, "groceries")

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "demo.cli", "--url", demo.url, "--name",
                               "cli", *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=30)

    added = cli("--list", "groceries", "add", "from the terminal")
    assert added.returncode == 0, added.stderr
    expect(ada.locator(".todo .text")).to_have_text(["from the terminal"], timeout=WAIT)
    listed = cli("--type", "ajax", "--list", "groceries", "list")
    assert "from the terminal  (cli)" in listed.stdout
    refused = cli("--list", "No Such!", "list")
    assert refused.returncode == 1
    assert "cannot open No Such!: a list name is 1 to 24" in refused.stderr


@pytest.mark.parametrize("query", ["", "?type=ajax"])
def test_a_list_cut_off_gets_what_it_missed_on_rejoin(browser, demo, query):  # noqa: F811
    """sente.js rejoins the list's topic after the reconnect, from its position: bob's todo
    added meanwhile is replayed, the page does not ask for the list again."""
    with CutProxy(demo.port) as proxy:
        via = types.SimpleNamespace(url=f"http://127.0.0.1:{proxy.port}")
        ada = sign_in(browser, t.cast(Server, via), "ada", query)
        bob = sign_in(browser, demo, "bob")
        open_list(ada, "groceries")
        open_list(bob, "groceries")
        expect(ada.locator("#viewers li")).to_have_text(["ada (you)", "bob"], timeout=WAIT)
        ada.evaluate("""() => { window.calls = []; window.rejoined = [];
            chsk.on("chsk/rejoined", (r) => rejoined.push(r));
            const call = chsk.call.bind(chsk);
            chsk.call = (ev, ...rest) => { calls.push(ev[0]); return call(ev, ...rest); }; }""")
        proxy.cut(down_for=120)
        expect(ada.locator("#status")).not_to_have_attribute("data-state", "open", timeout=WAIT)
        add(bob, "while ada was away")
        proxy.cut(down_for=0)
        ada.evaluate("() => window.dispatchEvent(new Event('online'))")
        expect(ada.locator("#status")).to_have_attribute("data-state", "open", timeout=20_000)
        expect(ada.locator(".todo .text")).to_have_text(["while ada was away"], timeout=WAIT)
        ada.wait_for_function("() => rejoined.length === 2")   # groceries and her own list
        assert sorted(ada.evaluate("() => rejoined"), key=lambda r: r["topic"]) == [
            {"topic": "list/@ada", "recovered": True},
            {"topic": "list/groceries", "recovered": True}]
        assert ada.evaluate("() => calls") == []
