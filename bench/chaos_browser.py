"""The chaos drill's browser tabs: sente.js in headless Chromium (Debian's
``/usr/bin/chromium`` through Playwright), in a process of its own.

    python -m bench.chaos_browser --base-url http://127.0.0.1:PORT --pages '[{...}]'

Each page (``{"id", "uid", "type", "topics", "cid"}``) opens the chaos app's ``/chaos/page``,
which connects with client id ``cid``, joins its topics, answers the drill's calls and
records every event it gets and every call it answers (``window.rec``, see
``bench/chaos_app.py``). Twice a second this process takes the new records of every page and
prints them as a line of JSON ``{"page": id, "recs": [...]}`` on stdout; ``{"ready": id}``
says a page is connected and in its topics.

Commands on stdin, one a line: ``break <id>`` (``chsk.breakConnection()``), ``state``
(prints ``{"state": {id: {"open", "type", "topics", "lastClose"}}}``), ``quit``. It exits
when stdin closes. Every Playwright call has a timeout.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
import typing as t
import urllib.parse

from playwright.sync_api import ConsoleMessage, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Playwright's timeout for every page action (ms).
PAGE_TIMEOUT = 15_000
#: How often the pages' records are taken (s).
DRAIN_EVERY = 0.5

DRAIN = "() => window.rec ? window.rec.splice(0) : []"
STATE = """() => window.chsk ? {open: chsk.state.open, type: chsk.state.type,
  topics: chsk.topics(), lastClose: chsk.state.lastClose, ready: window.ready} : null"""


def emit(record: dict[str, t.Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--pages", required=True, help="JSON list of {id, uid, type, topics, cid}")
    args = parser.parse_args(argv)
    specs: list[dict[str, t.Any]] = json.loads(args.pages)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True, timeout=30_000)
        try:
            context = browser.new_context()
            context.set_default_timeout(PAGE_TIMEOUT)
            pages: dict[str, Page] = {}
            for spec in specs:
                page = context.new_page()
                page.on("console", console_relay(spec["id"]))
                query = urllib.parse.urlencode({"uid": spec["uid"], "type": spec["type"],
                                                "topics": ",".join(spec["topics"]),
                                                "cid": spec.get("cid", "")})
                page.goto(f"{args.base_url}/chaos/page?{query}")
                pages[spec["id"]] = page
            waiting = set(pages)
            deadline = time.monotonic() + 60
            while waiting and time.monotonic() < deadline:
                for pid in sorted(waiting):
                    if pages[pid].evaluate("() => window.ready === true"):
                        waiting.discard(pid)
                        emit({"ready": pid})
                drain(pages)
                time.sleep(0.2)
            for pid in sorted(waiting):
                emit({"not-ready": pid})
            serve(pages)
        finally:
            browser.close()


def console_relay(page_id: str) -> t.Callable[[ConsoleMessage], None]:
    """Pass the page's console errors and warnings on (sente.js warns there)."""
    def relay(msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            emit({"console": page_id, "type": msg.type, "text": msg.text[:300]})

    return relay


def drain(pages: dict[str, Page]) -> None:
    for pid, page in pages.items():
        recs = page.evaluate(DRAIN)
        if recs:
            emit({"page": pid, "recs": recs})


def serve(pages: dict[str, Page]) -> None:
    next_drain = time.monotonic()
    pending = b""
    fd = sys.stdin.fileno()
    while True:
        wait = max(0.0, next_drain - time.monotonic())
        readable, _, _ = select.select([fd], [], [], wait)
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                return  # stdin closed: the drill is gone
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if not command(pages, line.decode("utf-8", "replace").split()):
                    return
        if time.monotonic() >= next_drain:
            drain(pages)
            next_drain = time.monotonic() + DRAIN_EVERY


def command(pages: dict[str, Page], words: list[str]) -> bool:
    """Run one command; False for quit."""
    if not words:
        return True
    if words[0] == "quit":
        drain(pages)
        return False
    if words[0] == "break" and len(words) > 1 and words[1] in pages:
        broke = pages[words[1]].evaluate("() => chsk.breakConnection()")
        emit({"broke": words[1], "was_open": broke})
    elif words[0] == "state":
        emit({"state": {pid: page.evaluate(STATE) for pid, page in pages.items()}})
    else:
        emit({"error": f"unknown command {' '.join(words)!r}: break <id>, state, quit"})
    return True


if __name__ == "__main__":
    main()
