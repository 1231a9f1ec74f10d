"""Sharing a todo in real Chromium, over WebSocket and over Ajax: the server asks the other
user's open pages (a server -> client call each, answered by the page's
``chsk.answer("todo/share-offer", ...)``), every page shows the offer, the first to decide
wins and the others drop it; the sharer's dialog says what happened. Users are separate
browser contexts (separate sessions); the demo runs as ``python -m demo``
(tests/demo_app/test_demo_browser.py's fixture). Server side: tests/demo_app/test_share_handlers.py.
"""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.demo_app.test_demo_browser import (  # noqa: F401  (demo: the fixture)
    WAIT,
    another_tab,
    demo,
    online_row,
    sign_in,
)

TRANSPORTS = pytest.mark.parametrize("query, transport", [("", "ws"), ("?type=ajax", "ajax")])


def chip(page: Page, name: str) -> Locator:
    return page.locator(f'#lists li[data-list="{name}"]')


def add_and_share(page: Page, text: str, to: str) -> None:
    """Add ``text`` to the list on screen, then share it with ``to`` from its row."""
    page.fill("#add-text", text)
    page.click("#add-form button")
    expect(page.locator("#add-text")).to_have_value("", timeout=WAIT)   # the reply came
    page.locator(".todo", has_text=text).get_by_role("button", name="Share").click()
    expect(page.locator("#share-dialog")).to_be_visible()
    expect(page.locator("#share-what")).to_have_text(f"“{text}”")
    page.fill("#share-to", to)
    page.click("#share-send")


def offer(page: Page) -> Locator:
    return page.locator("#offers .offer")


@TRANSPORTS
def test_the_first_tab_to_accept_wins_and_the_todo_is_on_their_list(
        browser, demo, query, transport):  # noqa: F811
    ada = sign_in(browser, demo, "ada", query)
    bob = sign_in(browser, demo, "bob", query)
    bob2 = another_tab(bob, demo, query)
    expect(ada.locator("#transport")).to_have_text(transport)
    expect(chip(bob, "@bob")).to_have_text("mine", timeout=WAIT)
    expect(online_row(ada, "bob").locator(f".badge.{transport}")).to_have_text(
        f"{transport} × 2", timeout=WAIT)

    add_and_share(ada, "buy milk", "bob")
    expect(ada.locator("#share-status")).to_have_text("Asking bob…")
    for tab in (bob, bob2):   # every open tab of bob's is asked
        expect(offer(tab)).to_have_count(1, timeout=WAIT)
        expect(offer(tab)).to_contain_text("ada shares a todo with you: “buy milk”")
    offer(bob).get_by_role("button", name="Accept").click()

    expect(ada.locator("#share-status")).to_have_attribute("data-outcome", "accepted",
                                                           timeout=WAIT)
    expect(ada.locator("#share-status")).to_have_text(
        "bob accepted “buy milk”: it is on their list now.")
    expect(offer(bob2)).to_have_count(0, timeout=WAIT)   # the other tab drops the offer
    expect(offer(bob)).to_have_count(0)
    # The accepting tab shows bob's own list, where the todo landed (by ada).
    expect(chip(bob, "@bob")).to_have_class("chip selected")
    expect(bob.locator(".todo .text")).to_have_text(["buy milk"], timeout=WAIT)
    expect(bob.locator(".todo .author")).to_have_text(["ada"])
    expect(bob.locator("#viewers-box")).to_be_hidden()
    bob2.click('#lists li[data-list="@bob"] .chip-name')
    expect(bob2.locator(".todo .text")).to_have_text(["buy milk"], timeout=WAIT)
    # Nobody else's page has bob's list.
    expect(chip(ada, "@bob")).to_have_count(0)
    ada.click("#share-close")
    expect(ada.locator("#share-dialog")).to_be_hidden()


@TRANSPORTS
def test_a_decline_is_told_to_the_sharer(browser, demo, query, transport):  # noqa: F811
    ada = sign_in(browser, demo, "ada", query)
    bob = sign_in(browser, demo, "bob", query)
    expect(online_row(ada, "bob")).to_have_count(1, timeout=WAIT)
    add_and_share(ada, "walk the dog", "bob")
    expect(offer(bob)).to_have_count(1, timeout=WAIT)
    offer(bob).get_by_role("button", name="Decline").click()
    expect(ada.locator("#share-status")).to_have_attribute("data-outcome", "declined",
                                                           timeout=WAIT)
    expect(ada.locator("#share-status")).to_have_text("bob declined “walk the dog”.")
    expect(offer(bob)).to_have_count(0)
    bob.click('#lists li[data-list="@bob"] .chip-name')
    expect(bob.locator(".todo")).to_have_count(0)


@TRANSPORTS
def test_sharing_with_someone_offline_is_answered_at_once(
        browser, demo, query, transport):  # noqa: F811
    """Nobody to ask: "offline" at once, not after the offer's 15 s window."""
    ada = sign_in(browser, demo, "ada", query)
    bob = sign_in(browser, demo, "bob", query)
    expect(online_row(ada, "bob")).to_have_count(1, timeout=WAIT)
    bob.context.close()                        # bob's only tab: gone after the grace window
    expect(online_row(ada, "bob")).to_have_count(0, timeout=WAIT)
    for to in ("bob", "zed"):                  # zed never signed in
        started = time.monotonic()
        add_and_share(ada, f"for {to}", to)
        expect(ada.locator("#share-status")).to_have_attribute("data-outcome", "offline",
                                                               timeout=WAIT)
        assert time.monotonic() - started < 5.0
        expect(ada.locator("#share-status")).to_have_text(f"{to} is not online: nobody to ask.")
        ada.click("#share-close")
