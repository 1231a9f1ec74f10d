"""The admin dashboard (issue 29) in Chromium, against one server process (in-memory
backplane): what it shows of scripted Python clients on both transports, its actions
through the UI, its users search and pagination, and its refusals at the wire.

The server is tests/browser/admin_server.py (the admin is ``root``). The Python clients run
in this process (greenlets: the root conftest monkey-patched it) and are all closed by the
``clients`` fixture. The cluster twin (gunicorn -w 3 + Redis) is
tests/scaleout/test_admin_cluster_browser.py.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import typing as t

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from flask_sente.client import Client
from flask_sente.exceptions import ReplyError
from tests.helpers import wait_for

from .conftest import HERE, PAGE_TIMEOUT, Server, script_servers

TIMEOUT = 10.0
OVERVIEW = "sente.admin/overview"
TEST_PUSH = "sente.admin/test-push"
QUERY = {"users": {"search": "", "offset": 0, "limit": 50},
         "topics": {"search": "", "offset": 0, "limit": 50}}


# --- fixtures and helpers (the cluster test uses them too) ----------------------------------

@pytest.fixture
def make_admin_server(tmp_path: t.Any) -> t.Iterator[t.Callable[..., Server]]:
    with script_servers(tmp_path, "admin_server.py") as make:
        yield lambda admin=True: make(*([] if admin else ["--no-admin"]))


def login(base: str, uid: str) -> tuple[requests.Session, str]:
    """A signed-in session for ``uid`` and its CSRF token."""
    session = requests.Session()
    resp = session.get(base + "/login", params={"uid": uid}, timeout=5)
    resp.raise_for_status()
    return session, t.cast(str, resp.json()["csrf"])


class Clients:
    """Python clients signed in as users; each records the test pushes it gets."""

    def __init__(self) -> None:
        self.all: list[Client] = []
        self.pushes: dict[str, list[t.Any]] = {}

    def connect(self, base: str, uid: str, transport: str, *, wait: bool = True) -> Client:
        session, token = login(base, uid)
        client = Client(base + "/chsk", type=transport, cookies=session.cookies,
                        csrf_token=token, backoff=lambda attempt: 0.05, connect_timeout=5.0,
                        keepalive=None)
        self.all.append(client)
        got = self.pushes[client.client_id] = []
        client.on(TEST_PUSH, got.append)
        client.connect()
        if wait:
            assert client.wait_open(TIMEOUT), f"{uid} ({transport}) did not connect"
        return client

    def close(self) -> None:
        for client in self.all:
            client.close()


@pytest.fixture
def clients() -> t.Iterator[Clients]:
    made = Clients()
    try:
        yield made
    finally:
        made.close()


def open_dashboard(browser: Browser, base: str, uid: str = "root") -> Page:
    """The dashboard in a fresh context signed in as ``uid``, once it shows a snapshot.
    Page errors and console errors (a CSP violation is one) are collected in
    ``page.problems``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(PAGE_TIMEOUT)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    page.on("response", lambda resp: resp.status >= 400 and problems.append(
        f"HTTP {resp.status}: {resp.request.method} {resp.url}"))
    page.problems = problems  # type: ignore[attr-defined]
    assert context.request.get(base + f"/login?uid={uid}", timeout=PAGE_TIMEOUT).ok  # the cookie
    page.goto(base + "/chsk/admin", timeout=PAGE_TIMEOUT)
    expect(page.get_by_test_id("updated")).not_to_have_attribute("data-now", "")
    return page


def user_row(page: Page, uid: str) -> t.Any:
    return page.locator(f'[data-testid="user-row"][data-uid="{uid}"]')


def client_row(page: Page, client_id: str) -> t.Any:
    return page.locator(f'[data-testid="client-row"][data-client-id="{client_id}"]')


def topic_row(page: Page, topic: str) -> t.Any:
    return page.locator(f'[data-testid="topic-row"][data-topic="{topic}"]')


def expect_totals(page: Page, **totals: int) -> None:
    for name, value in totals.items():
        expect(page.get_by_test_id(f"totals-{name}")).to_have_text(f"{value:,}")


def confirm(page: Page) -> None:
    page.get_by_test_id("dialog-confirm").click()


def stopped_by_server(client: Client) -> bool:
    """The client was told not to reconnect (close 4001) and stopped."""
    close = client.state.last_close
    return (not client.state.active and close is not None and close.reason == "kicked"
            and close.code == 4001)


# --- what the page shows, and its actions ----------------------------------------------------

def test_the_dashboard_shows_users_clients_topics_and_acts_on_them(
        make_admin_server: t.Callable[..., Server], clients: Clients, browser: Browser) -> None:
    server = make_admin_server()
    base = server.url
    ann_ws = clients.connect(base, "ann", "ws")
    ann_ajax = clients.connect(base, "ann", "ajax")
    bob = clients.connect(base, "bob", "ws")
    cat1 = clients.connect(base, "cat", "ajax")
    cat2 = clients.connect(base, "cat", "ajax")
    dan = clients.connect(base, "dan", "ws")
    for topic, uid in (("room:1", "ann"), ("room:1", "bob"), ("room:2", "cat")):
        requests.post(base + "/test/join", json={"topic": topic, "uid": uid},
                      timeout=5).raise_for_status()

    page = open_dashboard(browser, base)
    # ann, bob, cat, dan and root (this page, over WebSocket).
    expect_totals(page, users=5, clients=7, ws=4, ajax=3, topics=2)
    procs = page.get_by_test_id("proc-row")
    expect(procs).to_have_count(1)
    expect(procs.locator('[data-field="ws"]')).to_have_text("4")
    expect(procs.locator('[data-field="ajax"]')).to_have_text("3")
    expect(procs.locator('[data-field="backplane"]')).to_have_text("memory")
    pid = procs.get_attribute("data-pid")

    expect(page.get_by_test_id("user-row")).to_have_count(5)
    assert page.get_by_test_id("user-row").evaluate_all(
        "rows => rows.map(r => r.dataset.uid)") == ["ann", "bob", "cat", "dan", "root"]
    ann = user_row(page, "ann")
    expect(ann.get_by_test_id("client-row")).to_have_count(2)
    for client, transport in ((ann_ws, "ws"), (ann_ajax, "ajax")):
        row = client_row(page, client.client_id)
        expect(row).to_have_attribute("data-transport", transport)
        expect(row).to_have_attribute("data-pid", pid or "")
        expect(row.locator('[data-field="topics"]')).to_have_text("room:1")
    expect(ann.get_by_test_id("leave-topic")).to_have_count(1)
    expect(ann.get_by_test_id("leave-topic")).to_have_attribute("data-topic", "room:1")
    cat = user_row(page, "cat")
    expect(cat.locator('[data-testid="client-row"][data-transport="ajax"]')).to_have_count(2)
    expect(user_row(page, "dan").get_by_test_id("leave-topic")).to_have_count(0)
    expect(topic_row(page, "room:1").locator('[data-field="members"]')).to_have_text("2")
    expect(topic_row(page, "room:2").locator('[data-field="members"]')).to_have_text("1")
    status = page.get_by_test_id("status")

    # Remove ann from room:1: one member left; her clients are out of it.
    ann.locator('[data-testid="leave-topic"][data-topic="room:1"]').click()
    expect(status).to_contain_text("Removed ann from room:1")
    expect(topic_row(page, "room:1").locator('[data-field="members"]')).to_have_text("1")
    expect(ann.get_by_test_id("leave-topic")).to_have_count(0)

    # Kick, cancelled: nothing happens (the push after it is the barrier).
    user_row(page, "bob").get_by_test_id("kick").click()
    page.get_by_test_id("dialog-cancel").click()
    user_row(page, "bob").get_by_test_id("push").click()
    expect(status).to_contain_text("Pushed sente.admin/test-push to bob")
    wait_for(lambda: len(clients.pushes[bob.client_id]) == 1, TIMEOUT, "bob's push")
    assert clients.pushes[bob.client_id][0]["from"] == "root"
    assert bob.state.open

    # Kick bob (confirmed): his row goes, his client was told not to reconnect.
    user_row(page, "bob").get_by_test_id("kick").click()
    expect(page.locator("#confirm-text")).to_contain_text("Kick bob?")
    confirm(page)
    expect(status).to_contain_text("Kicked bob")
    expect(user_row(page, "bob")).to_have_count(0)
    wait_for(lambda: stopped_by_server(bob), TIMEOUT, f"bob not kicked: {bob.state}")
    expect(topic_row(page, "room:1")).to_have_count(0)  # bob was its last member
    expect_totals(page, users=4, clients=6, ws=3, ajax=3, topics=1)

    # Close one of cat's clients: only that one goes.
    client_row(page, cat1.client_id).get_by_test_id("close-client").click()
    confirm(page)
    expect(status).to_contain_text(f"Closed client {cat1.client_id} of cat")
    expect(client_row(page, cat1.client_id)).to_have_count(0)
    expect(client_row(page, cat2.client_id)).to_have_count(1)
    wait_for(lambda: stopped_by_server(cat1), TIMEOUT, f"cat1 not closed: {cat1.state}")
    assert cat2.state.open
    expect_totals(page, users=4, clients=5, ws=3, ajax=2, topics=1)

    # Push to dan: each of his clients gets the test event from root.
    user_row(page, "dan").get_by_test_id("push").click()
    expect(status).to_contain_text("Pushed sente.admin/test-push to dan")
    wait_for(lambda: len(clients.pushes[dan.client_id]) == 1, TIMEOUT, "dan's push")
    push = clients.pushes[dan.client_id][0]
    assert push["from"] == "root" and isinstance(push["at"], (int, float))
    assert ann_ws.state.open and ann_ajax.state.open and dan.state.open

    # Recent refusals and errors: a forged action, a handler that raised.
    expect(page.get_by_test_id("recent-row")).to_have_count(0)
    root, _ = login(base, "root")
    assert root.post(base + "/chsk/admin/act", json={"action": "kick", "uid": "'dan'"},
                     headers={"X-CSRF-Token": "forged"}, timeout=5).status_code == 403
    with pytest.raises(ReplyError):
        dan.call(["t/fail", None], timeout=TIMEOUT)
    recent = page.get_by_test_id("recent-row")
    expect(recent).to_have_count(2)
    expect(recent.nth(0).locator('[data-field="kind"]')).to_have_text("error")  # newest first
    expect(recent.nth(0).locator('[data-field="reason"]')).to_have_text("ZeroDivisionError")
    expect(recent.nth(0).locator('[data-field="detail"]')).to_contain_text("t/fail")
    expect(recent.nth(1).locator('[data-field="kind"]')).to_have_text("refusal")
    expect(recent.nth(1).locator('[data-field="reason"]')).to_have_text("csrf")
    assert page.problems == []  # type: ignore[attr-defined]
    page.context.close()


def test_users_search_and_pagination(make_admin_server: t.Callable[..., Server],
                                     clients: Clients, browser: Browser) -> None:
    server = make_admin_server()
    uids = [f"u{n:03d}" for n in range(120)]
    for uid in uids:
        clients.connect(server.url, uid, "ws", wait=False)
    for client in clients.all:
        assert client.wait_open(TIMEOUT)
    page = open_dashboard(browser, server.url)
    shown = sorted(["root", *uids])  # users are sorted by their display string
    rng, prev, nxt = (page.get_by_test_id(n) for n in ("users-range", "users-prev", "users-next"))
    rows = page.get_by_test_id("user-row")

    def page_uids() -> list[str]:
        return t.cast("list[str]", rows.evaluate_all("rows => rows.map(r => r.dataset.uid)"))

    expect(rng).to_have_text("1–50 of 121")
    expect(rows).to_have_count(50)
    assert page_uids() == shown[:50]
    expect(prev).to_be_disabled()
    nxt.click()
    expect(rng).to_have_text("51–100 of 121")
    expect(rows.first).to_have_attribute("data-uid", shown[50])
    assert page_uids() == shown[50:100]
    nxt.click()
    expect(rng).to_have_text("101–121 of 121")
    expect(rows).to_have_count(21)
    expect(nxt).to_be_disabled()
    prev.click()
    expect(rng).to_have_text("51–100 of 121")

    search = page.get_by_test_id("users-search")
    search.fill("U01")  # case-insensitive substring; back to the first page
    expect(rng).to_have_text("1–10 of 10")
    assert page_uids() == [f"u01{n}" for n in range(10)]
    expect(nxt).to_be_disabled()
    search.fill("nobody")
    expect(rng).to_have_text("0 of 0")
    expect(rows).to_have_count(0)
    search.fill("")
    expect(rng).to_have_text("1–50 of 121")
    # The search box kept the focus through the refreshes.
    assert page.evaluate("() => document.activeElement.dataset.testid") == "users-search"
    # So does a button in the table: its row is updated in place, not rebuilt.
    kick = user_row(page, "u007").get_by_test_id("kick")
    kick.focus()
    for _ in range(2):  # two more snapshots
        now = page.get_by_test_id("updated").get_attribute("data-now")
        expect(page.get_by_test_id("updated")).not_to_have_attribute("data-now", now or "")
    assert kick.evaluate("(b) => b === document.activeElement")
    assert page.problems == []  # type: ignore[attr-defined]
    page.context.close()


# --- refusals at the wire ---------------------------------------------------------------------

def test_the_page_is_served_with_its_config_and_headers(
        make_admin_server: t.Callable[..., Server]) -> None:
    base = make_admin_server().url
    session, token = login(base, "root")
    resp = session.get(base + "/chsk/admin", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    csp = resp.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                      "frame-ancestors 'none'"):
        assert directive in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "__SENTE_" not in resp.text and "__ADMIN_" not in resp.text
    start = resp.text.index('id="sente-admin-config">') + len('id="sente-admin-config">')
    config = json.loads(resp.text[start:resp.text.index("</script>", start)])
    assert config["url"] == "/chsk" and config["adminUrl"] == "/chsk/admin"
    assert config["uid"] == "root" and config["csrfToken"] == token
    for name in ("admin.js", "admin.css"):
        assert session.get(f"{base}/chsk/admin/{name}", timeout=5).status_code == 200


def test_refusals_at_the_wire(make_admin_server: t.Callable[..., Server],
                              clients: Clients) -> None:
    base = make_admin_server().url
    bob = clients.connect(base, "bob", "ws")
    bob_session, bob_token = login(base, "bob")
    act = base + "/chsk/admin/act"
    kick_bob = {"action": "kick", "uid": "'bob'"}

    # Not an admin: the page, its files and the actions, even with a good token.
    for path in ("/chsk/admin", "/chsk/admin/admin.js"):
        resp = bob_session.get(base + path, timeout=5)
        assert resp.status_code == 403 and resp.headers["Content-Type"].startswith("text/plain")
    resp = bob_session.post(act, json=kick_bob, headers={"X-CSRF-Token": bob_token}, timeout=5)
    assert resp.status_code == 403
    assert requests.post(act, json=kick_bob, timeout=5).status_code == 403  # no session
    # Not an admin over the channel either.
    assert bob.call([OVERVIEW, QUERY], timeout=TIMEOUT) == {"error": "forbidden"}

    # An admin without the token, with a wrong one, or from another origin.
    root, token = login(base, "root")
    assert root.post(act, json=kick_bob, timeout=5).status_code == 403
    assert root.post(act, json=kick_bob, headers={"X-CSRF-Token": "x" * len(token)},
                     timeout=5).status_code == 403
    assert root.post(act, json=kick_bob, timeout=5, headers={
        "X-CSRF-Token": token, "Origin": "http://evil.example"}).status_code == 403
    assert bob.state.open  # none of these reached him

    # Bad requests, and a user connected nowhere.
    good = {"X-CSRF-Token": token, "Origin": base}
    for body in ({"action": "explode", "uid": "'bob'"}, {"action": "kick"},
                 {"action": "leave-topic", "uid": "'bob'"}):
        resp = root.post(act, json=body, headers=good, timeout=5)
        assert resp.status_code == 400 and "error" in resp.json(), body
    resp = root.post(act, data="{not json", timeout=5,
                     headers={**good, "Content-Type": "application/json"})
    assert resp.status_code == 400
    resp = root.post(act, json={"action": "kick", "uid": "'nobody'"}, headers=good, timeout=5)
    assert resp.status_code == 404 and resp.json() == {"error": "not connected"}

    # The admin's own channel gets the overview.
    admin = clients.connect(base, "root", "ajax")
    reply = admin.call([OVERVIEW, QUERY], timeout=TIMEOUT)
    assert [row["uid"] for row in reply["users"]["rows"]] == ["bob", "root"]
    assert reply["totals"]["ws"] == 1 and reply["totals"]["ajax"] == 1
    # And a good action works (same origin, good token).
    resp = root.post(act, json=kick_bob, headers=good, timeout=5)
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    wait_for(lambda: stopped_by_server(bob), TIMEOUT, f"bob not kicked: {bob.state}")


def test_without_the_admin_option_there_is_no_dashboard(
        make_admin_server: t.Callable[..., Server], clients: Clients) -> None:
    base = make_admin_server(admin=False).url
    root, token = login(base, "root")
    for path in ("/chsk/admin", "/chsk/admin/admin.js", "/chsk/admin/admin.css"):
        assert root.get(base + path, timeout=5).status_code == 404
    resp = root.post(base + "/chsk/admin/act", json={"action": "kick", "uid": "'root'"},
                     headers={"X-CSRF-Token": token, "Origin": base}, timeout=5)
    assert resp.status_code == 404
    admin = clients.connect(base, "root", "ws")
    with pytest.raises(ReplyError, match="no handler"):  # nobody answers the overview
        admin.call([OVERVIEW, QUERY], timeout=TIMEOUT)


def test_the_page_files_are_packaged() -> None:
    """Every file of the page is in the wheel's package data (setup.cfg): without them an
    installed flask_sente serves no dashboard."""
    root = os.path.dirname(os.path.dirname(HERE))
    with open(os.path.join(root, "setup.cfg"), encoding="utf-8") as f:
        line = re.search(r"^flask_sente = (.*)$", f.read(), re.MULTILINE)
    assert line is not None
    globs = [g.strip() for g in line.group(1).split(",")]
    static = os.path.join(root, "flask_sente", "static", "admin")
    names = sorted(os.listdir(static))
    assert names == ["admin.css", "admin.html", "admin.js"]
    for name in names:
        assert any(fnmatch.fnmatch(f"static/admin/{name}", g) for g in globs), name
