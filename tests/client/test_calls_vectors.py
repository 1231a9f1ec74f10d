"""``tests/vectors/calls.json`` against the real Python client, over real sockets.

Each case runs on both transports (``type="ws"`` and ``type="ajax"``): a real
:class:`~flask_sente.client.Client` connects on 127.0.0.1 to a *scripted server*
(:class:`ScriptedServer`, a WSGI app served by flask_sente's own server,
:func:`flask_sente.server.make_server`, so its WebSocket transport is the real one). The
script speaks just enough of the protocol for one case: a protocol-3 handshake for uid
``"alice"`` at positions ``{"u": ["eu", 0], "*": ["eb", 0]}``, then the case's
``messages`` — over WebSocket as frames, all at once; over Ajax one per long-poll, later
polls held a moment and answered ``chsk/timeout`` — and it records every envelope the
client sends (WebSocket frames; Ajax POST bodies, each acked ``["chsk/ack"]`` after a
round trip's delay), keep-alive pings and pongs left out. The runner registers the case's
answer handlers, waits (bounded) until the expected answers came and every message was
taken (over Ajax: until the poll after the last one, so the client has processed them
all), then a short grace in which nothing more may come, and compares the answers with
``sent`` — exactly, with JSON's types (``0`` is not ``false``) — and what ``receive()``
got with ``delivered``. tests/js/vectors.test.mjs runs the same file against sente.js
over fakes.

Order: over WebSocket the answers are compared in order, as the vector says. Over Ajax
each answer is a POST of its own, sent from the answer's own thread on a connection of
its own, so the order they reach a server in is not the client's: the runner compares
them without their order there (a first version compared it, and "null, 0, false ..."
and "calls are answered in batch order ..." failed now and then, c2's POST arriving
before c1's). On both transports it checks instead what the Python client does promise:
the handlers ran once each, in batch order.

Broken on purpose, each time on both transports unless said: without the
``req.id in self._seen`` check of ``Answers.request``, "a repeated call id is ignored"
failed (three answers instead of one); before this module's fixes, the echo case and
"an event without data gives the handler null" failed (no ``info`` for handlers), and
"a call without a timeout is still answered" timed out waiting for c2 (a request without
``timeout`` was dropped as malformed); with an answer's POST bounded by what is left of
the call's timeout again (none, for c2), that case failed over Ajax on the log line of an
answer whose POST timed out after 1 ms.
"""
from __future__ import annotations

import json
import logging
import pathlib
import threading
import time
import typing as t
from urllib.parse import parse_qs

import pytest

from flask_sente.client import CallInfo, Client
from flask_sente.exceptions import ConnectionClosed
from flask_sente.protocol import PROTOCOL_VERSION, calls
from flask_sente.protocol import events as ev
from flask_sente.server import make_server
from flask_sente.transports.base import UPGRADE_ENVIRON_KEY

from .conftest import TIMEOUT

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "vectors"
DATA = json.loads((VECTORS / "calls.json").read_text())

#: The handshake every case starts from (calls.json's "about").
HANDSHAKE = [[ev.HANDSHAKE, {"uid": "alice", "handshake_data": None, "protocol": 3,
                             "positions": {"u": ["eu", 0], "*": ["eb", 0]},
                             "recovered": None}], None]
#: How long a long-poll with nothing left to give is held before its ``chsk/timeout``.
POLL_HOLD = 0.5
#: How long an Ajax POST waits for its ack: a network's round trip, so that a client
#: bounding an answer's POST by what is left of the call's timeout (none, for a call that
#: names no timeout) is caught.
ACK_DELAY = 0.03
#: After the expected answers: how long nothing more may be sent.
GRACE = 0.15
#: Keep-alive traffic, which does not count.
KEEPALIVE = {ev.WS_PING, ev.WS_PONG}


def expand(value: t.Any) -> t.Any:
    """``value`` with every ``{"$repeat": [text, n]}`` written out."""
    if isinstance(value, list):
        return [expand(item) for item in value]
    if isinstance(value, dict):
        if set(value) == {"$repeat"}:
            text, count = value["$repeat"]
            return text * count
        return {key: expand(item) for key, item in value.items()}
    return value


CASES = expand(DATA["cases"])


def pack(value: t.Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class ScriptedServer:
    """A WSGI app that plays one case of calls.json to one client and records what the
    client sends (see the module docstring)."""

    def __init__(self, messages: list[t.Any]) -> None:
        self._lock = threading.Lock()
        self._messages = list(messages)  # what is still to be given, in order
        #: Envelopes the client sent (keep-alive left out), in the order they arrived.
        self.sent: list[t.Any] = []
        #: Long-polls made once every message was given: the client processed them all.
        self.polls_after = 0
        #: Whatever in the client's requests breaks the protocol (the test fails on it).
        self.problems: list[str] = []
        #: Set at the end of the test: held polls and WebSocket loops end at once.
        self.stopping = threading.Event()

    @property
    def given_all(self) -> bool:
        with self._lock:
            return not self._messages

    def __call__(self, environ: dict[str, t.Any],
                 start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if environ.get("PATH_INFO") != "/chsk":
            return self._respond(start_response, "404 Not Found", b"no such path")
        for name, want in (("protocol", str(PROTOCOL_VERSION)), ("packer", "json")):
            if query.get(name) != want:
                self.problems.append(f"{environ['REQUEST_METHOD']} with {name}="
                                     f"{query.get(name)!r}")
        if not query.get("client-id"):
            self.problems.append("a request without client-id")
        upgrade = environ.get(UPGRADE_ENVIRON_KEY)
        if upgrade is not None:
            self._serve_websocket(upgrade.accept())
            return []
        if environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            self._record(environ["wsgi.input"].read(length).decode("utf-8"))
            self.stopping.wait(ACK_DELAY)
            return self._respond(start_response, "200 OK", pack([[ev.ACK], None]))
        if "handshake" in query:
            return self._respond(start_response, "200 OK", pack(HANDSHAKE))
        if "pos" not in query:
            self.problems.append("a long-poll without pos")
        with self._lock:
            message = self._messages.pop(0) if self._messages else None
            if message is None:
                self.polls_after += 1
        if message is None:
            self.stopping.wait(POLL_HOLD)
            message = [[ev.TIMEOUT], None]
        return self._respond(start_response, "200 OK", pack(message))

    def _serve_websocket(self, ws: t.Any) -> None:
        ws.send(pack(HANDSHAKE))
        with self._lock:
            messages, self._messages = self._messages, []
        for message in messages:
            ws.send(pack(message))
        while not self.stopping.is_set():
            try:
                frame = ws.receive(timeout=0.2)
            except ConnectionClosed:
                return
            if frame is None:
                continue
            envelope = self._record(frame)
            if envelope is not None and envelope[0][:1] == [ev.WS_PING] and envelope[1]:
                ws.send(pack([[ev.REPLY, "pong"], envelope[1]]))
        ws.close(1001, "the test is over")

    def _record(self, text: str | bytes) -> t.Any:
        try:
            envelope = json.loads(text)
        except ValueError:
            self.problems.append(f"not JSON: {text!r}")
            return None
        event = envelope[0] if isinstance(envelope, list) and len(envelope) == 2 else None
        if not isinstance(event, list) or not event:
            self.problems.append(f"not an envelope: {envelope!r}")
            return None
        if event[0] not in KEEPALIVE:
            with self._lock:
                self.sent.append(envelope)
        return envelope

    @staticmethod
    def _respond(start_response: t.Callable[..., t.Any], status: str,
                 body: str | bytes) -> list[bytes]:
        data = body.encode("utf-8") if isinstance(body, str) else body
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(data)))])
        return [data]


def answer_handler(event_id: str, spec: dict[str, t.Any],
                   runs: list[str]) -> t.Callable[..., t.Any]:
    """The answer handler a vector describes; each run appends ``event_id`` to ``runs``.
    Only the echo handler takes the call's :class:`~flask_sente.client.CallInfo`: the
    others have the one-argument form."""
    if spec.get("echo"):
        def echo(data: t.Any, info: CallInfo) -> t.Any:
            runs.append(info.event_id)
            return [data, info.id, info.event_id]

        return echo

    def handler(data: t.Any) -> t.Any:
        runs.append(event_id)
        if "return" in spec:
            return spec["return"]
        if "raise" in spec:
            raise RuntimeError(spec["raise"])
        if spec.get("return_unpackable"):
            return object()  # not JSON
        raise AssertionError(f"unknown handler {spec!r}")

    return handler


def handler_runs(case: dict[str, t.Any]) -> list[str]:
    """The event ids whose handlers the expected answers come from, in their order (a
    ``no-handler`` answer runs none)."""
    event_of: dict[str, str] = {}
    for message in case["messages"]:
        for event in message[0]:
            data = event[1] if event[0] == ev.CALL and len(event) == 2 else None
            if (isinstance(data, dict) and isinstance(data.get("id"), str)
                    and isinstance(data.get("event"), list) and data["event"]):
                event_of.setdefault(data["id"], data["event"][0])
    return [event_of[answer[0][1]["id"]] for answer in case["sent"]
            if answer[0][1].get("error", {}).get("kind") != calls.NO_HANDLER]


def with_any_messages(expected: list[t.Any], got: list[t.Any]) -> list[t.Any]:
    """``expected`` with each error message ``"$ANY"`` replaced by what the client sent
    there, when that is a non-empty string (else it stays ``"$ANY"`` and fails)."""
    out = []
    for n, envelope in enumerate(expected):
        error = envelope[0][1].get("error")
        if error is not None and error.get("message") == "$ANY" and n < len(got):
            try:
                message = got[n][0][1]["error"]["message"]
            except (IndexError, KeyError, TypeError):
                message = None
            if isinstance(message, str) and message:
                envelope = [[envelope[0][0], {**envelope[0][1],
                                              "error": {**error, "message": message}}],
                            envelope[1]]
        out.append(envelope)
    return out


def answer_id(envelope: t.Any) -> str:
    """The call id an answer envelope names ("" if it names none): the Ajax order."""
    try:
        return str(envelope[0][1]["id"])
    except (IndexError, KeyError, TypeError):
        return ""


def canonical(value: t.Any) -> str:
    """One JSON text per value: compared as text, ``0``, ``false`` and ``0.0`` differ."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def wait_for(predicate: t.Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_the_constants() -> None:
    assert calls.SEEN_CALLS == DATA["remembered_call_ids"]
    assert calls.MAX_CALL_ID == DATA["max_call_id_length"]
    assert calls.MAX_ERROR_MESSAGE == DATA["max_message_length"]


@pytest.mark.parametrize("transport", ["ws", "ajax"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_what_the_client_answers(case: dict[str, t.Any], transport: str,
                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_sente.client")
    script = ScriptedServer(case["messages"])
    server = make_server(script, log=None)
    server.start()
    client: Client | None = None
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}/chsk", type=transport,
                        connect_timeout=5.0, backoff=lambda attempt: 0.05)
        runs: list[str] = []
        for event_id, spec in case["handlers"].items():
            client.answer(event_id, answer_handler(event_id, spec, runs))
        client.connect()
        assert client.wait_open(TIMEOUT)
        expected = case["sent"]
        delivered: list[list[t.Any]] = []

        def done() -> bool:
            while (event := client.receive(timeout=0)) is not None:
                delivered.append(list(event))
            return (len(script.sent) >= len(expected) and script.given_all
                    and (transport == "ws" or script.polls_after > 0)
                    and len(delivered) >= len(case.get("delivered", [])))

        wait_for(done, f"{len(expected)} answers and every message taken")
        time.sleep(GRACE)  # nothing more comes
        done()
        got = list(script.sent)
        if transport == "ajax":  # one POST each, side by side: see the module docstring
            got, expected = sorted(got, key=answer_id), sorted(expected, key=answer_id)
        assert [canonical(e) for e in got] == [
            canonical(e) for e in with_any_messages(expected, got)], case["name"]
        assert runs == handler_runs(case)  # the handlers ran in batch order, each once
        if "delivered" in case:
            assert [canonical(e) for e in delivered] == [
                canonical(e) for e in case["delivered"]]
        else:  # nothing is pushed, and a call never reaches the app
            assert not [e for e in delivered if ev.is_reserved(e[0])], delivered
        assert script.problems == []
        assert not [r.getMessage() for r in caplog.records
                    if r.getMessage().startswith("the answer to call")]  # none lost
        assert client.state.open and client.state.uid == "alice"
    finally:
        if client is not None:
            client.close()
        script.stopping.set()
        server.stop(timeout=2)
