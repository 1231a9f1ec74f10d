"""A reply never overtakes its handler's pushes, as the Python client's caller sees it
(issue 25 #2, docs/protocol.md §6 "Replies after their pushes").

The README quickstart's handler broadcasts, then replies. When ``call()`` returns, the
client's ``on()`` handler for the broadcast must have run already:

- over Ajax the push comes through a poll, the reply through the POST, in either order:
  the client holds the reply until its positions reach the reply's ``X-Sente-After``;
- over WebSocket the server sends the push first, but ``on()`` handlers run on the
  dispatcher thread while ``call()`` returns on the caller's: ``call()`` waits until the
  handlers of what came before its reply have run.

Broken on purpose once each: with ``AjaxLink.call`` not calling ``settle`` the Ajax run
failed at the first call (the broadcast's handler had not run); with ``WsLink.call`` not
calling it the ws and auto runs failed at the first call too (the handler sleeps 5 ms, so
the caller gets there first). With ``Dispatcher.wait_done`` not returning at once on the
dispatcher thread, the call made from a handler waited out its whole timeout for itself.
"""
from __future__ import annotations

import json
import threading
import time
import typing as t

from flask_sente.client import Client
from flask_sente.protocol import wire

from .conftest import TIMEOUT, Server

ROUNDS = 30


def quickstart(server: Server) -> None:
    """The README quickstart's handler, on the test server."""
    sente = server.sente

    @sente.on("chat/say")
    def say(msg: t.Any) -> None:
        sente.broadcast(("chat/said", {"who": msg.uid, "text": msg.data}))
        msg.reply({"ok": True})


def test_call_returns_after_the_handlers_of_its_pushes_ran(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client],
        transport: str) -> None:
    server = make_server()
    quickstart(server)
    chsk = make_client(server.url, type=transport)
    seen: list[str] = []

    @chsk.on("chat/said")
    def said(data: t.Any) -> None:
        time.sleep(0.005)  # an app's handler takes a moment: the caller must wait for it
        seen.append(data["text"])

    for n in range(ROUNDS):
        assert chsk.call(("chat/say", f"hi {n}"), timeout=TIMEOUT) == {"ok": True}
        assert f"hi {n}" in seen, (n, seen)
    assert seen == [f"hi {n}" for n in range(ROUNDS)]


def test_receive_has_the_push_when_call_returns(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client],
        transport: str) -> None:
    """Without a handler the push goes to receive(): there when call() returns."""
    server = make_server()
    quickstart(server)
    chsk = make_client(server.url, type=transport)
    for n in range(ROUNDS):
        assert chsk.call(("chat/say", f"hi {n}"), timeout=TIMEOUT) == {"ok": True}
        event = chsk.receive(timeout=0)
        assert event is not None and event[1]["text"] == f"hi {n}", (n, event)


def test_a_call_from_a_handler_does_not_wait_for_itself(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client],
        transport: str) -> None:
    server = make_server()
    quickstart(server)
    chsk = make_client(server.url, type=transport)
    answers: list[t.Any] = []
    done = threading.Event()

    @chsk.on("chat/said")
    def said(data: t.Any) -> None:
        if data["text"] == "first":  # the handler calls too: its own push comes after it
            # Far beyond the wait below: a call that waited for its own handler would wait
            # all of it (and then deliver anyway), so the test would fail on done.wait.
            answers.append(chsk.call(("chat/say", "second"), timeout=6 * TIMEOUT))
            done.set()

    assert chsk.call(("chat/say", "first"), timeout=TIMEOUT) == {"ok": True}
    assert done.wait(TIMEOUT)
    assert answers == [{"ok": True}]


def test_a_handler_slower_than_the_timeout_gets_the_reply_delivered_anyway(
        make_server: t.Callable[..., Server], make_client: t.Callable[..., Client],
        transport: str) -> None:
    """The wait is bounded by the call's timeout: then the reply is delivered, not lost."""
    server = make_server()
    quickstart(server)
    chsk = make_client(server.url, type=transport)
    release = threading.Event()
    chsk.on("chat/said", lambda data: release.wait(TIMEOUT))
    try:
        assert chsk.call(("chat/say", "slow"), timeout=0.5) == {"ok": True}
        assert not release.is_set()
    finally:
        release.set()


class AfterInjector:
    """WSGI middleware that sets an Ajax reply's ``X-Sente-After`` to ``value`` (a
    server whose pushes this client will never see, as far as the client can tell)."""

    def __init__(self, app: t.Any) -> None:
        self.app = app
        self.value: str | None = None

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if environ["REQUEST_METHOD"] != "POST" or self.value is None:
            return self.app(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], *args: t.Any) -> t.Any:
            headers = [h for h in headers if h[0] != wire.AFTER_HEADER]
            return start_response(status, [*headers, (wire.AFTER_HEADER, self.value)], *args)

        return self.app(environ, start)


def test_an_ajax_reply_whose_pushes_never_come_is_delivered_at_its_timeout(
        make_client: t.Callable[..., Client]) -> None:
    """Broken on purpose: with settle raising ReplyTimeout at the deadline, the call
    raised instead of answering."""
    server = Server()
    quickstart(server)
    injector = AfterInjector(server.app.wsgi_app)
    server.app.wsgi_app = injector  # type: ignore[method-assign]
    with server.running():
        chsk = make_client(server.url, type="ajax")
        assert chsk.wait_open(TIMEOUT)
        epoch, seq = chsk._endpoint.positions.current["*"]
        injector.value = json.dumps({"*": [epoch, seq + 1000]})
        assert chsk.call(("chat/say", "x"), timeout=0.5) == {"ok": True}
        chsk.close()
