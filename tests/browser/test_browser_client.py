"""sente.js in real headless Chromium against a real flask_sente server (a subprocess).

Each test opens pages of ``app_server.py`` whose harness (``window.start``) connects with the
given options and records states (``log.states``), pushed events (``log.events``) and
handshakes (``log.handshakes``). ``outcome(promise)`` turns a call into plain data.
"""
from __future__ import annotations

import os
import time

import pytest

from .conftest import MSGPACK_UMD, Pages, Server

OPEN = "() => chsk.state.open"


def state(page):
    return page.evaluate("() => chsk.state")


def call(page, event, timeout=5000):
    return page.evaluate("([ev, t]) => outcome(chsk.call(ev, {timeout: t}))", [event, timeout])


def wait_open(page, transport=None, timeout=10_000):
    if transport is None:
        page.wait_for_function(OPEN, timeout=timeout)
    else:
        page.wait_for_function("(t) => chsk.state.open && chsk.state.type === t", arg=transport,
                               timeout=timeout)


def wait_closed(page, reason=None, timeout=10_000):
    page.wait_for_function(
        "(r) => !chsk.state.open && chsk.state.lastClose && (!r || chsk.state.lastClose.reason === r)",
        arg=reason, timeout=timeout)


def client_id(page):
    return page.evaluate("() => chsk.clientId")


# --- handshake, state, calls --------------------------------------------------------------

def test_websocket_handshake_state_and_call(server: Server, pages: Pages):
    page = pages.open(server, "alice", type="ws")
    wait_open(page)
    assert state(page) == {
        "type": "ws", "open": True, "everOpened": True, "uid": "alice",
        "handshakeData": {"hello": "alice"}, "recovered": None, "lastClose": None,
        "nextReconnectAt": None, "active": True,
    }
    assert page.evaluate("() => log.handshakes") == [
        {"uid": "alice", "handshakeData": {"hello": "alice"}, "type": "ws", "firstHandshake": True,
         "recovered": None}]
    data = {"text": "milk", "n": [1, 2.5, None, True], "s": "é ✓"}
    assert call(page, ["t/echo", data]) == ["ok", data]
    assert call(page, ["t/whoami"]) == [
        "ok", {"uid": "alice", "transport": "ws", "client_id": client_id(page)}]

    # The server pings after 1 s of silence and closes after 1 s more without an answer:
    # the client's pongs keep the socket up.
    time.sleep(3)
    assert [s["open"] for s in page.evaluate("() => log.states")] == [True]
    assert server.hits(client_id(page)) == {"ws": 1}


def test_ajax_handshake_state_call_and_push(server: Server, pages: Pages):
    page = pages.open(server, "alice", type="ajax")
    wait_open(page)
    st = state(page)
    assert (st["type"], st["uid"], st["handshakeData"]) == ("ajax", "alice", {"hello": "alice"})
    assert call(page, ["t/echo", {"a": 1}]) == ["ok", {"a": 1}]
    assert call(page, ["t/whoami"])[1]["transport"] == "ajax"

    server.push("alice", "todo/added", {"id": 7})
    page.wait_for_function("() => log.events.length === 1")
    # send() needs no reply: the server answers the POST with an ack and pushes back.
    assert page.evaluate("() => chsk.send(['t/push-me', 'hi'])") is True
    page.wait_for_function("() => log.events.length === 2")
    assert page.evaluate("() => log.events") == [["todo/added", {"id": 7}], ["t/pushed", "hi"]]
    hits = server.hits(client_id(page))
    assert "ws" not in hits and hits["get"] >= 2 and hits["post"] == 3
    # The handshake gave the page its fast-path key: every later request carried it, and
    # Flask handled none of the posts (docs/protocol.md §6).
    assert hits["keyed"] == hits["get"] + hits["post"] - 1
    assert "flask-post" not in hits and hits["flask-get"] == 1


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_call_failures_are_typed(server: Server, pages: Pages, transport: str):
    page = pages.open(server, "alice", type=transport)
    wait_open(page)
    assert call(page, ["t/slow", 1], timeout=300) == [
        "error", "TimeoutError", "timeout", "no reply to t/slow within 300 ms"]
    assert call(page, ["t/boom"]) == [
        "error", "ReplyError", "error", "the handler for 't/boom' raised an error"]
    assert call(page, ["t/nothing"]) == [
        "error", "ReplyError", "error", "no handler for event 't/nothing'"]
    # The callback form gets (error, reply) and returns whether the event went out.
    assert page.evaluate("""() => new Promise((resolve) => {
        const sent = chsk.call(['t/echo', 5], {timeout: 3000}, (err, reply) => resolve([sent, err, reply]));
    })""") == [True, None, 5]
    # A reply that comes after the client gave up is dropped; the connection stays up.
    time.sleep(1)
    assert state(page)["open"] is True
    assert call(page, ["t/echo", "still here"]) == ["ok", "still here"]
    # Stopped: calls fail at once with ClosedError, send() says false.
    page.evaluate("() => chsk.disconnect()")
    assert call(page, ["t/echo", 1]) == [
        "error", "ClosedError", "closed",
        "not connected (requested-disconnect): the call was not sent"]
    assert page.evaluate("() => chsk.send(['t/echo', 1])") is False
    assert state(page)["lastClose"]["reason"] == "requested-disconnect"


# --- push ---------------------------------------------------------------------------------

def test_push_reaches_every_page_of_a_user(server: Server, pages: Pages):
    alice_ws = pages.open(server, "alice", type="ws")
    alice_ajax = pages.open(server, "alice", type="ajax")
    bob = pages.open(server, "bob")
    for page in (alice_ws, alice_ajax, bob):
        wait_open(page)
    assert client_id(alice_ws) != client_id(alice_ajax)
    for i in range(3):
        server.push("alice", "todo/added", {"id": i})
    expected = [["todo/added", {"id": i}] for i in range(3)]
    for page in (alice_ws, alice_ajax):
        page.wait_for_function("() => log.events.length >= 3")
        assert page.evaluate("() => log.events") == expected
    server.push("bob", "chat/msg", "hi bob")
    bob.wait_for_function("() => log.events.length === 1")
    assert bob.evaluate("() => log.events") == [["chat/msg", "hi bob"]]
    time.sleep(0.3)
    for page in (alice_ws, alice_ajax):
        assert page.evaluate("() => log.events.length") == 3


# --- auto mode ----------------------------------------------------------------------------

def test_auto_falls_back_to_ajax_and_moves_back_up(server: Server, pages: Pages):
    server.post("/test/refuse-ws", on=True)
    page = pages.open(server, "alice", upgradeRetryMs=700)
    wait_open(page, "ajax")
    last = state(page)["lastClose"]
    assert (last["reason"], last["code"]) == ("unexpected", 1006) and "HTTP works" in last["message"]
    assert call(page, ["t/whoami"])[1]["transport"] == "ajax"
    hits = server.hits(client_id(page))
    # one refused upgrade, then the probe's handshake GET was kept as the Ajax handshake
    assert hits["ws"] >= 1 and hits["get"] >= 1

    time.sleep(1.6)  # two upgrade attempts, refused: Ajax stays in use
    assert state(page)["type"] == "ajax" and server.hits(client_id(page))["ws"] >= 2
    server.post("/test/refuse-ws", on=False)
    wait_open(page, "ws", timeout=5000)
    assert call(page, ["t/whoami"])[1]["transport"] == "ws"
    server.push("alice", "todo/added", 1)
    page.wait_for_function("() => log.events.length === 1")
    time.sleep(0.5)
    assert page.evaluate("() => log.events") == [["todo/added", 1]]  # once, not twice
    # It stayed open through the switch: one open state, then a type change.
    assert [(s["open"], s["type"]) for s in page.evaluate("() => log.states")
            if s["open"]][-1] == (True, "ws")
    assert all(s["open"] for s in page.evaluate("() => log.states")
               if s["everOpened"])


@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_reconnects_after_server_restart(server: Server, pages: Pages, transport: str):
    page = pages.open(server, "alice", type=transport)
    wait_open(page)
    cid = client_id(page)
    server.stop()
    wait_closed(page)
    if transport == "ws":
        first_close = next(s for s in page.evaluate("() => log.states") if not s["open"])
        at = first_close["lastClose"].pop("at")
        assert first_close["lastClose"] == {"reason": "clean", "code": 1001, "status": None,
                                            "message": "server shutting down"}
        assert at <= page.evaluate("() => Date.now()")  # when it happened, ms since the epoch
    # A call made while reconnecting waits for the open (within its timeout).
    page.evaluate("() => { window.early = outcome(chsk.call(['t/echo', 'early'], {timeout: 15000})); }")
    assert page.evaluate("() => chsk.send(['t/push-me', 'sent early'])") is True
    server.start()  # same port, a fresh process that has never seen this client
    wait_open(page, timeout=15_000)
    assert page.evaluate("() => early") == ["ok", "early"]
    page.wait_for_function("() => log.events.length === 1")
    assert page.evaluate("() => log.events") == [["t/pushed", "sent early"]]
    assert call(page, ["t/whoami"]) == ["ok", {"uid": "alice", "transport": transport,
                                               "client_id": cid}]
    assert len(page.evaluate("() => log.handshakes")) == 2


def test_calls_waiting_for_the_open_fail_when_the_client_stops(server: Server, pages: Pages):
    server.post("/test/refuse-http", on=True)
    page = pages.open(server, "alice", start=False)
    page.evaluate("""() => {
        start({type: "ajax"});
        window.early = outcome(chsk.call(['t/echo', 1], {timeout: 15000}));
    }""")
    wait_closed(page, "rejected")
    # Failed by the stop, not by its 15 s timeout (that message would say "within").
    assert page.evaluate("() => early") == [
        "error", "ClosedError", "closed", "not connected (rejected 403): the call was not sent"]


# --- reconnect rules ----------------------------------------------------------------------

def test_replaced_clients_back_off_instead_of_flapping(server: Server, pages: Pages):
    """Two pages with one client id replace each other (close 4003) as soon as they connect.
    Each close follows a short-lived connection, so the attempt count keeps growing
    (without the flap guard every close would be attempt 1, retried at once, forever)."""
    # Two browser contexts (two windows, both in the foreground), one user.
    first = pages.open(server, "alice", type="ws", clientId="shared-id", retryMs=100)
    wait_open(first)
    second = pages.open(server, "alice", jar="alice-2", type="ws", clientId="shared-id",
                        retryMs=100)
    for page in (first, second):
        page.wait_for_function("() => log.attempts.some((n) => n >= 4)", timeout=15_000)
        closes = [s["lastClose"] for s in page.evaluate("() => log.states") if s["lastClose"]]
        assert any(c["code"] == 4003 for c in closes)
    for page in (first, second):
        page.evaluate("() => chsk.disconnect()")


def test_break_connection_reconnects_as_after_a_network_failure(server: Server, pages: Pages):
    ws = pages.open(server, "alice", type="ws", keepAliveMs=300, pingTimeoutMs=300)
    ajax = pages.open(server, "alice", type="ajax")
    for page, code in ((ws, 3000), (ajax, None)):
        wait_open(page)
        page.evaluate("() => { window.pending = outcome(chsk.call(['t/slow', 2], {timeout: 10000})); }")
        assert page.evaluate("() => chsk.breakConnection()") is True
        assert page.evaluate("() => pending")[:3] == ["error", "ClosedError", "closed"]
        wait_open(page)
        closes = [s["lastClose"] for s in page.evaluate("() => log.states") if not s["open"]]
        assert (closes[0]["reason"], closes[0]["code"]) == ("unexpected", code)
        assert "breakConnection" in closes[0]["message"]
        assert call(page, ["t/echo", "again"]) == ["ok", "again"]
    # closeWs: false — the WebSocket stays up but unheard: the keep-alive finds out.
    assert ws.evaluate("() => chsk.breakConnection({closeWs: false})") is True
    assert state(ws)["open"] is True
    wait_closed(ws, "ping-timeout")
    wait_open(ws)
    assert server.hits(client_id(ws))["ws"] == 3
    ws.evaluate("() => chsk.disconnect()")
    assert ws.evaluate("() => chsk.breakConnection()") is False, "nothing to break"


def test_headers_option_reaches_the_server_on_ajax(server: Server, pages: Pages):
    page = pages.open(server, "alice", type="ajax", headers={"X-Test": "42"})
    wait_open(page)
    assert call(page, ["t/header"]) == ["ok", "42"]
    last = pages.open(server, "bob", type="ajax")
    wait_open(last)
    assert call(last, ["t/header"]) == ["ok", None]


# --- refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize("uid, options, status", [
    ("mallory", {}, 403),                               # authorize -> 403, auto mode, via the probe
    ("eve", {"type": "ajax"}, 401),                     # authorize -> False
    ("alice", {"type": "ws", "csrfToken": "wrong"}, 403),  # CSRF
])
def test_stops_on_401_and_403(server: Server, pages: Pages, uid, options, status):
    page = pages.open(server, uid, **options)
    wait_closed(page, "rejected")
    st = state(page)
    assert st["lastClose"]["status"] == status
    assert (st["open"], st["everOpened"], st["nextReconnectAt"]) == (False, False, None)
    hits = server.hits(client_id(page))
    time.sleep(1.5)
    assert server.hits(client_id(page)) == hits, "no retries"
    assert sum(hits.values()) <= 2


@pytest.mark.parametrize("transport", ["ws", "ajax", "auto"])
def test_stops_on_a_refusal_that_retrying_cannot_fix(server: Server, pages: Pages, transport):
    """The server refuses the positions the client sends with 400 (on a poll; on a
    WebSocket upgrade, which the browser hides, the probe reads it): the client stops,
    `active` false, with the status and the server's text, and tells its state listeners
    (issue 24). Broken on purpose by leaving 400 out of STOP_STATUSES: the client went on
    retrying (active, a retry planned) on all three transports."""
    page = pages.open(server, "alice", type=transport, retryMs=100)
    wait_open(page)
    server.post("/test/bad-positions", on=True)
    if transport == "ajax":
        server.push("alice", "t/x")  # ends the parked poll: the next one names positions
    else:
        page.evaluate("() => chsk.breakConnection()")  # the reconnect names them
    page.wait_for_function("() => !chsk.state.active", timeout=10_000)
    st = state(page)
    assert (st["open"], st["active"], st["nextReconnectAt"]) == (False, False, None)
    assert (st["lastClose"]["reason"], st["lastClose"]["status"]) == ("rejected", 400)
    assert st["lastClose"]["message"].startswith("Bad positions"), st["lastClose"]
    told = page.evaluate("() => log.states[log.states.length - 1]")
    assert (told["active"], told["lastClose"]["status"]) == (False, 400)
    assert call(page, ["t/echo", 1])[:3] == ["error", "ClosedError", "closed"]
    server.post("/test/bad-positions", on=False)
    page.evaluate("() => chsk.reconnect()")
    wait_open(page)
    assert state(page)["active"] is True
    assert call(page, ["t/echo", "back"]) == ["ok", "back"]


def test_reconnect_on_auth_failure_picks_up_a_login(server: Server, pages: Pages):
    page = pages.open(server, "eve", type="ajax", reconnectOnAuthFailure=True, retryMs=200)
    page.wait_for_function("() => chsk.state.lastClose && chsk.state.lastClose.status === 401")
    pages.open(server, "alice", start=False, jar="eve")  # logs in in another tab
    wait_open(page)
    assert state(page)["uid"] == "alice"


def test_kick_stops_reconnecting_and_fails_pending_calls(server: Server, pages: Pages):
    ws = pages.open(server, "alice", type="ws")
    ajax = pages.open(server, "alice", type="ajax")
    for page in (ws, ajax):
        wait_open(page)
        page.evaluate("() => { window.pending = outcome(chsk.call(['t/slow', 3], {timeout: 10000})); }")
    started = time.monotonic()
    server.post("/test/kick", uid="alice")
    for page in (ws, ajax):
        wait_closed(page, "kicked", timeout=5000)
        assert state(page)["lastClose"]["code"] == 4001
        assert page.evaluate("() => pending")[:3] == ["error", "ClosedError", "closed"]
    assert time.monotonic() - started < 2.5, "pending calls fail fast, not at their timeout"
    hits = {p: server.hits(client_id(p)) for p in (ws, ajax)}
    time.sleep(1.5)
    assert {p: server.hits(client_id(p)) for p in (ws, ajax)} == hits, "no reconnects"


# --- page lifecycle -----------------------------------------------------------------------

def test_page_lifecycle_online_and_visibility(server: Server, pages: Pages):
    # A long backoff after the first retry, so only the page events can bring it back soon.
    page = pages.open(server, "alice", type="ws", retryMs=60_000)
    wait_open(page)

    page.evaluate("() => window.dispatchEvent(new PageTransitionEvent('pagehide', {persisted: true}))")
    server.stop()
    wait_closed(page)
    server.start()
    time.sleep(1)
    assert state(page)["open"] is False and server.hits(client_id(page)) == {}, \
        "no reconnect while the page is hidden in the back/forward cache"
    page.evaluate("() => window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))")
    wait_open(page, timeout=5000)

    for event in ("online", "visibilitychange"):
        server.stop()
        page.wait_for_function("() => !chsk.state.open && chsk.state.nextReconnectAt > Date.now() + 30000")
        server.start()
        time.sleep(0.5)
        assert state(page)["open"] is False
        target = "document" if event == "visibilitychange" else "window"
        page.evaluate(f"() => {target}.dispatchEvent(new Event('{event}'))")
        wait_open(page, timeout=5000)


# --- packers and loading ------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["ws", "ajax"])
def test_msgpack_with_the_npm_codec(make_server, pages: Pages, transport: str):
    assert os.path.exists(MSGPACK_UMD), "run `make browser-deps` (npm installs the codec)"
    server = make_server(packer="msgpack")
    page = pages.open(server, "alice", type=transport, msgpack=True)
    wait_open(page)
    assert state(page)["handshakeData"] == {"hello": "alice"}
    result = page.evaluate("""async () => {
        const data = {bin: new Uint8Array([0, 1, 255]), s: "é ✓", n: [1, 2.5, null, true, -7]};
        const r = await chsk.call(["t/echo", data], {timeout: 5000});
        chsk.send(["t/push-me", {bin: new Uint8Array([9, 8])}]);
        return {isBytes: r.bin instanceof Uint8Array, bin: Array.from(r.bin), s: r.s, n: r.n};
    }""")
    assert result == {"isBytes": True, "bin": [0, 1, 255], "s": "é ✓", "n": [1, 2.5, None, True, -7]}
    page.wait_for_function("() => log.events.length === 1")
    assert page.evaluate("() => [log.events[0][0], log.events[0][1].bin instanceof Uint8Array, "
                         "Array.from(log.events[0][1].bin)]") == ["t/pushed", True, [9, 8]]


def test_loads_as_a_module_script(server: Server, pages: Pages):
    page = pages.open(server, "alice", path="/module-page", start=False)
    page.wait_for_function("() => window.moduleReady === true")
    assert page.evaluate("() => window.moduleConnect === globalThis.Sente.connect")
    page.evaluate("() => start({})")  # auto mode, url and CSRF token from the meta tags
    wait_open(page, "ws")
    assert call(page, ["t/echo", [1, "two"]]) == ["ok", [1, "two"]]
