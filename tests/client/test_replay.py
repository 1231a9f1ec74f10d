"""Positions and replay with the Python client (protocol 2): a numbered stream through a
proxy that cuts every connection arrives exactly once and in order with ``recovered: true``;
a restart or an overflowed history says ``recovered: false``; a kick drops the positions."""
from __future__ import annotations

import typing as t

import gevent
import pytest
from cutproxy import CutProxy

from .conftest import TIMEOUT, Server, wait_until

PUSHES = 300


def _collect(chsk: t.Any) -> tuple[list[int], list[t.Any]]:
    numbers: list[int] = []
    handshakes: list[t.Any] = []
    chsk.on("t/n", numbers.append)
    chsk.on("chsk/handshake", handshakes.append)
    return numbers, handshakes


@pytest.mark.parametrize("packer", ["json", "msgpack"])
def test_a_cut_stream_arrives_exactly_once_in_order(make_server, make_client, transport,
                                                    packer):
    server: Server = make_server(packer=packer, lp_timeout=1)
    port = int(server.base.rsplit(":", 1)[1])
    with CutProxy(port) as proxy:
        chsk = make_client(server.url.replace(str(port), str(proxy.port)), type=transport,
                           packer=packer, connect=False)
        numbers, handshakes = _collect(chsk)
        chsk.connect()
        assert chsk.wait_open(TIMEOUT)
        uid = chsk.state.uid

        def push() -> None:
            for n in range(PUSHES):
                server.sente.send(uid, ("t/n", n))
                gevent.sleep(1 / 200)

        def cut() -> None:
            while not pusher.dead:
                gevent.sleep(0.25)
                proxy.cut()

        pusher = gevent.spawn(push)
        cutter = gevent.spawn(cut)
        try:
            wait_until(lambda: len(numbers) >= PUSHES, timeout=30,
                       message=f"all pushes (got {len(numbers)})")
        finally:
            gevent.killall([pusher, cutter], timeout=5)
        assert proxy.cuts >= 3
        assert numbers == list(range(PUSHES))
        assert handshakes[0]["recovered"] is None
        assert all(h["recovered"] is True for h in handshakes[1:])
        if transport == "ajax":
            # Every poll names its positions: a cut poll is simply made again, with no new
            # handshake — unless both tries of one poll were cut, which reconnects.
            expected = None if len(handshakes) == 1 else True
        else:
            assert len(handshakes) > 3      # each cut: a new socket, handshake and replay
            expected = True
        # The state reports the last handshake's answer. (Shown to fail by having the
        # client's state keep the first handshake's ``recovered``: None after 7 handshakes.)
        assert chsk.state.recovered is expected


def test_a_restart_says_not_recovered(make_client, transport):
    server = Server()
    with server.running() as running:
        port = int(running.base.rsplit(":", 1)[1])
        chsk = make_client(running.url, type=transport, connect=False,
                           backoff=lambda attempt: 0.05)
        numbers, handshakes = _collect(chsk)
        chsk.connect()
        assert chsk.wait_open(TIMEOUT)
        running.sente.send(chsk.state.uid, ("t/n", 1), flush=True)
        wait_until(lambda: numbers == [1])
    with server.running(port=port):                   # history and epochs are gone
        wait_until(lambda: len(handshakes) >= 2, message="a new handshake")
        assert handshakes[-1]["recovered"] is False
        assert chsk.state.recovered is False


def test_overflowing_the_history_says_not_recovered(make_server, make_client):
    server: Server = make_server(history_size=5)
    port = int(server.base.rsplit(":", 1)[1])
    with CutProxy(port) as proxy:
        chsk = make_client(server.url.replace(str(port), str(proxy.port)), type="ws",
                           connect=False, backoff=lambda attempt: 0.5)
        numbers, handshakes = _collect(chsk)
        chsk.connect()
        assert chsk.wait_open(TIMEOUT)
        proxy.cut(down_for=0.4)                       # away while 30 pushes happen
        for n in range(30):
            server.sente.send(chsk.state.uid, ("t/n", n), flush=True)
        wait_until(lambda: len(handshakes) >= 2, message="the reconnect")
        assert handshakes[-1]["recovered"] is False
        server.sente.send(chsk.state.uid, ("t/n", 99), flush=True)
        wait_until(lambda: 99 in numbers)
        assert numbers == [99]                        # no half replay, no silent gap


def test_a_kick_drops_the_positions(make_server, make_client):
    server: Server = make_server()
    chsk = make_client(server.url, type="ws")
    assert chsk.wait_open(TIMEOUT)
    assert chsk._endpoint.positions.param() is not None
    server.sente.kick(chsk.state.uid)
    wait_until(lambda: not chsk.state.active, message="the kick")
    assert chsk._endpoint.positions.param() is None


def test_break_connection_reconnects_as_after_a_network_failure(make_server, make_client,
                                                                 transport):
    server: Server = make_server()
    chsk = make_client(server.url, type=transport, connect=False)
    numbers, handshakes = _collect(chsk)
    chsk.connect()
    assert chsk.wait_open(TIMEOUT)
    uid = chsk.state.uid
    chsk.break_connection()
    server.sente.send(uid, ("t/n", 1), flush=True)    # while it is (or was) away
    wait_until(lambda: len(handshakes) >= 2, message="a reconnect")
    wait_until(lambda: numbers == [1], message="the push, once")
    assert chsk.state.active and chsk.state.open
    assert chsk.state.last_close.reason == "unexpected"
    assert handshakes[-1]["recovered"] is True
