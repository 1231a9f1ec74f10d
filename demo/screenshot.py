"""Make the README's screenshot: ``python -m demo.screenshot docs/demo.png``.

Runs the demo in-process on a free port, signs in two users in headless Chromium (Debian's
``/usr/bin/chromium``): both open the named list "release" (a topic), Ada over WebSocket
adds a few todos to it, Grace over Ajax ticks one and sends Ada a direct message. Saves
Ada's page, which shows both users' changes and both viewing the list.
"""
from gevent import monkey

monkey.patch_all()

import secrets  # noqa: E402
import sys  # noqa: E402

from playwright.sync_api import sync_playwright  # noqa: E402

from flask_sente.testing import serve  # noqa: E402

from .app import create_app  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(out: str) -> None:
    app = create_app(SECRET_KEY=secrets.token_hex(16))  # one run: no key file needed
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            pages = []
            for name, query in (("Ada", ""), ("Grace", "?type=ajax")):
                page = browser.new_context(viewport={"width": 900, "height": 560}).new_page()
                page.goto(base + "/" + query)
                page.fill("#name", name)
                page.click("button[type=submit]")
                page.wait_for_selector('#status[data-state="open"]', timeout=10_000)
                pages.append(page)
            ada, grace = pages
            for page in pages:
                page.fill("#join-name", "release")
                page.click("#join-form button")
                page.wait_for_selector('#lists li[data-list="release"].selected', timeout=10_000)
            ada.wait_for_selector('#viewers li[data-uid="Grace"]', timeout=10_000)
            for text in ("Write the release notes", "Review the Redis backplane design",
                         "Buy oat milk"):
                ada.fill("#add-text", text)
                ada.click("#add-form button")
                grace.wait_for_selector(f'.todo .text:text-is("{text}")', timeout=10_000)
            grace.locator(".todo input[type=checkbox]").nth(2).check()
            ada.wait_for_selector(".todo.done", timeout=10_000)
            grace.select_option("#dm-to", "Ada")
            grace.fill("#dm-text", "Notes look great!")
            grace.click("#dm-form button")
            ada.wait_for_selector("#inbox li", timeout=10_000)
            ada.wait_for_timeout(4500)  # let the toast fade
            ada.screenshot(path=out)
        finally:
            browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/demo.png")
