"""Auto mode's transport rule, sente.js in Chromium against a real server: every scenario of
tests/vectors/auto_mode.json, the vectors the Python client's tests run too
(tests/client/test_auto_mode_rule.py).

The drop in each scenario is ``chsk.breakConnection()`` (after the server's behaviour was
switched), or stopping the server for ``http: down``.
"""
from __future__ import annotations

import json
import os
import time
import typing as t

import pytest

from .conftest import ROOT, Pages, Server

with open(os.path.join(ROOT, "tests", "vectors", "auto_mode.json"), encoding="utf-8") as _f:
    SCENARIOS = json.load(_f)["scenarios"]

WAIT = 10_000  # ms
#: Options of every scenario: auto mode, no upgrade retries (the vectors say so), quick
#: retries after the first.
OPTIONS = {"upgradeRetryMs": 0, "retryMs": 100}


def behave(server: Server, ws: str, http: str) -> None:
    """Make the server answer upgrades per ``ws`` and Ajax per ``http`` (not ``down``)."""
    server.post("/test/refuse-ws", on=ws == "refused")
    server.post("/test/refuse-http", on=http == "403")


def wait_state(page: t.Any, check: str, what: str) -> None:
    try:
        page.wait_for_function(f"() => {{ const s = chsk.state; return {check}; }}", timeout=WAIT)
    except Exception as exc:
        raise AssertionError(f"{what}: state {page.evaluate('() => chsk.state')}") from exc


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_auto_mode_vector(server: Server, pages: Pages, scenario: dict[str, t.Any]) -> None:
    before, ws, http, expect = (scenario[k] for k in ("before", "ws", "http", "expect"))
    page = pages.open(server, "alice", start=False)
    if before == "fresh":
        if http == "down":
            server.stop()
        else:
            behave(server, ws, http)
        page.evaluate("(o) => start(o)", OPTIONS)
    else:
        behave(server, "refused" if before == "ajax-fallback" else "accepts", "handshakes")
        page.evaluate("(o) => start(o)", OPTIONS)
        opened_on = "ajax" if before == "ajax-fallback" else "ws"
        wait_state(page, f"s.open && s.type === '{opened_on}'", f"open over {opened_on}")
        if http == "down":
            server.stop()  # drops the connection too
        else:
            behave(server, ws, http)
            assert page.evaluate("() => chsk.breakConnection()") is True

    if expect["open"]:
        if before != "fresh":
            # Wait past the drop first: the state may still be the one before it.
            page.wait_for_function("() => log.states.some((s) => !s.open && s.everOpened)",
                                   timeout=WAIT)
        wait_state(page, f"s.open && s.type === '{expect['type']}'", scenario["name"])
        reply = page.evaluate("() => outcome(chsk.call(['t/whoami'], {timeout: 5000}))")
        assert reply[0] == "ok" and reply[1]["transport"] == expect["type"]
        return
    wait_state(page, f"!s.open && s.lastClose && s.lastClose.reason === '{expect['reason']}'",
               scenario["name"])
    state = page.evaluate("() => chsk.state")
    if "status" in expect:
        assert state["lastClose"]["status"] == expect["status"]
    if "type" in expect:
        assert state["type"] == expect["type"]
    if expect["stopped"]:
        assert state["nextReconnectAt"] is None
        hits = server.hits(page.evaluate("() => chsk.clientId"))
        time.sleep(0.5)  # several retry periods: a stopped client makes no request
        assert server.hits(page.evaluate("() => chsk.clientId")) == hits
    else:
        # Still trying: more attempts come, on WebSocket first (never downgraded).
        count = len(page.evaluate("() => log.attempts"))
        page.wait_for_function("(n) => log.attempts.length > n + 1", arg=count, timeout=WAIT)
        assert page.evaluate("() => chsk.state.type") == expect["type"]
