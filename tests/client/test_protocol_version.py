"""The handshake's protocol version: a server that speaks another version stops the client
with an error that says so, on every transport, instead of a reconnect loop."""
from __future__ import annotations

import logging
import typing as t

import pytest

from flask_sente.exceptions import ConnectionClosed
from flask_sente.protocol import wire

from .conftest import TIMEOUT, wait_until


def test_a_server_with_another_protocol_version_stops_the_client(
    make_server: t.Any, make_client: t.Any, transport: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server()
    # The server under test announces version 4 in its handshakes (it still accepts ours).
    real = wire.handshake
    monkeypatch.setattr(wire, "handshake",
                        lambda *args, **kwargs: real(*args, **{**kwargs, "version": 4}))
    attempts: list[int] = []
    with caplog.at_level(logging.ERROR, logger="flask_sente.client"):
        chsk = make_client(server.url, type=transport,
                           backoff=lambda n: attempts.append(n) or 0.0)
        wait_until(lambda: not chsk.state.active, message="the client to stop")
    last = chsk.state.last_close
    assert last.reason == "protocol-mismatch"
    assert "protocol version 4" in last.message and "this client 3" in last.message
    assert attempts == [1]  # no retry, no fallback to the other transport
    assert not chsk.state.open and not chsk.state.ever_opened
    with pytest.raises(ConnectionClosed, match="protocol-mismatch"):
        chsk.call(("t/echo", 1), timeout=TIMEOUT)
    with pytest.raises(ConnectionClosed, match="protocol version 4"):
        chsk.wait_open(TIMEOUT)
    assert any("protocol version 4" in r.getMessage() for r in caplog.records)


def test_matching_or_missing_versions_connect(server: t.Any, make_client: t.Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    chsk = make_client(server.url, type="ws")
    assert chsk.call(("t/echo", 1), timeout=TIMEOUT) == 1
    handshake = wire.handshake

    def without_version(*args: t.Any, **kwargs: t.Any) -> t.Any:
        message = handshake(*args, **kwargs)
        del message[0][1]["protocol"]
        return message

    monkeypatch.setattr(wire, "handshake", without_version)  # an older server names none
    chsk.reconnect()
    assert chsk.call(("t/echo", 2), timeout=TIMEOUT) == 2
