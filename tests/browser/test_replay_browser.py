"""Protocol 2 in real Chromium: a page receiving a numbered push stream through a TCP proxy
that cuts every connection mid-stream gets every push exactly once and in order, and each
re-handshake says ``recovered: true``; a server restart is told as ``recovered: false``.

The proxy (tests/cutproxy.py) runs on gevent in this process: Playwright's sync API waits
through gevent's patched selectors, so the proxy's greenlets pump while a test waits on the
page. The page is loaded through the proxy too, so it is same-origin with its socket.
"""
from __future__ import annotations

import types

import pytest
from cutproxy import CutProxy

from .conftest import Pages, Server

PUSHES = 300
RATE = 200  # pushes per second: the stream lasts 1.5 s
CUT_EVERY = 50  # pushes received between two cuts: five cuts, all mid-stream

NUMBERS = "() => log.events.filter((e) => e[0] === 't/n').map((e) => e[1])"
RECOVERED = "() => log.handshakes.map((h) => h.recovered)"


def through(proxy: CutProxy) -> types.SimpleNamespace:
    """What Pages.open needs of a server (its URL), pointing at the proxy."""
    return types.SimpleNamespace(url=f"http://127.0.0.1:{proxy.port}")


@pytest.mark.parametrize("packer", ["json", "msgpack"])
@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_stream_through_cuts_arrives_exactly_once_in_order(make_server, pages: Pages,
                                                           transport: str, packer: str):
    server: Server = make_server(packer)
    with CutProxy(server.port) as proxy:
        # A short fixed backoff: five cuts in 1.5 s would otherwise grow the default's waits.
        codec = {"msgpack": True} if packer == "msgpack" else {}
        page = pages.open(through(proxy), "sam", type=transport, retryMs=20, **codec)
        page.wait_for_function("() => chsk.state.open")
        server.post("/test/stream", uid="sam", n=PUSHES, rate=RATE)
        cut = 0
        for k in range(1, PUSHES // CUT_EVERY):
            # Cut once the page is k * 50 pushes in: each cut lands while more are coming.
            page.wait_for_function(f"() => ({NUMBERS})().length >= {k * CUT_EVERY}",
                                   timeout=20_000)
            # Every other cut is a short outage (new connections refused for 0.2 s): a bare
            # cut of an Ajax poll is retried by Chromium itself on a new connection, an
            # outage makes the client reconnect with a new handshake.
            cut += bool(proxy.cut(down_for=0.2 if k % 2 else 0))
        page.wait_for_function("() => log.events.some((e) => e[0] === 't/end')", timeout=30_000)
        numbers = page.evaluate(NUMBERS)
        recovered = page.evaluate(RECOVERED)
    assert cut >= 3, "the proxy had no connection to cut mid-stream"
    assert numbers == list(range(PUSHES)), (len(numbers), recovered)
    assert recovered[0] is None                     # the first connection brought no positions
    # Each WebSocket cut is a new connection and a handshake; an Ajax client reconnects after
    # the outages (a poll cut in flight is answered again, from the same position).
    assert len(recovered) > (3 if transport == "ws" else 1), recovered
    assert all(r is True for r in recovered[1:]), recovered
    assert page.evaluate("() => chsk.state.recovered") is True


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_server_restart_is_told_as_not_recovered(server: Server, pages: Pages, transport: str):
    page = pages.open(server, "rita", type=transport, retryMs=50)
    page.wait_for_function("() => chsk.state.open")
    server.push("rita", "t/n", 0)
    page.wait_for_function("() => log.events.length === 1")
    before = page.evaluate("() => chsk.positions")
    assert set(before) == {"u", "*"} and before["u"][1] >= 1

    server.stop()                                   # history and epochs are gone with it
    page.wait_for_function("() => !chsk.state.open")
    server.start()
    page.wait_for_function("() => chsk.state.open && chsk.state.recovered === false",
                           timeout=20_000)
    assert page.evaluate(RECOVERED) == [None, False]
    after = page.evaluate("() => chsk.positions")
    assert after["u"][0] != before["u"][0]          # the new process's epoch
    server.push("rita", "t/n", 1)
    page.wait_for_function("() => log.events.length === 2")
    assert page.evaluate(NUMBERS) == [0, 1]


def test_kick_drops_the_positions(server: Server, pages: Pages):
    page = pages.open(server, "kim", type="ws")
    page.wait_for_function("() => chsk.state.open")
    assert page.evaluate("() => chsk.positions") is not None
    server.post("/test/kick", uid="kim")
    page.wait_for_function("() => chsk.state.lastClose && chsk.state.lastClose.reason === 'kicked'")
    assert page.evaluate("() => chsk.positions") is None
    page.evaluate("() => chsk.reconnect()")
    page.wait_for_function("() => chsk.state.open")
    assert page.evaluate(RECOVERED) == [None, None]  # a fresh start, not a resume


def test_moving_up_from_ajax_to_websocket_mid_stream_loses_and_repeats_nothing(
        server: Server, pages: Pages):
    """Auto mode on Ajax (upgrades refused), then upgrades allowed while the stream runs:
    trials fail and then one opens mid-stream. What the long-poll gets while a trial runs
    waits (the trial asked for a replay from where the client stood), so the switch neither
    drops nor repeats a push."""
    server.post("/test/refuse-ws", on=True)
    page = pages.open(server, "uma", upgradeRetryMs=50)
    page.wait_for_function("() => chsk.state.open && chsk.state.type === 'ajax'")
    server.post("/test/stream", uid="uma", n=PUSHES, rate=RATE)
    page.wait_for_function(f"() => ({NUMBERS})().length >= {PUSHES // 3}")
    assert page.evaluate("() => chsk.state.type") == "ajax"   # trials refused so far
    server.post("/test/refuse-ws", on=False)
    page.wait_for_function("() => log.events.some((e) => e[0] === 't/end')", timeout=30_000)
    assert page.evaluate("() => chsk.state.type") == "ws"
    assert page.evaluate(NUMBERS) == list(range(PUSHES))
    assert server.hits(page.evaluate("() => chsk.clientId"))["ws"] >= 3   # refused trials too
    # The trial's handshake resumed the positions the Ajax connection had reached.
    assert page.evaluate(RECOVERED)[1:] == [True]
