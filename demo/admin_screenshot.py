"""Make the admin dashboard's screenshot: ``python -m demo.admin_screenshot docs/admin.png``.

Runs the demo in-process on a free port (its dashboard is on for the user "admin") and
signs in, in headless Chromium (Debian's ``/usr/bin/chromium``): Ada in two tabs over
WebSocket, Grace over Ajax, Linus over WebSocket. Ada and Grace open the list "release" (a
topic), Linus the list "ops"; they add todos for a few seconds, so the chart has connections
and events to draw. Then "admin" opens ``/chsk/admin``; the page is saved once the chart
has about fifteen seconds of snapshots.
"""
from gevent import monkey

monkey.patch_all()

import secrets  # noqa: E402
import sys  # noqa: E402

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


def main(out: str) -> None:
    app = create_app(SECRET_KEY=secrets.token_hex(16))  # one run: no key file needed
    with serve(app) as base, sync_playwright() as pw:
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
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/admin.png")
