"""Outbound bounds and thread-safe pushes, on real sockets.

A client that stops reading is closed by bytes as well as by message count, and its 1013
close frame still reaches it; big batches are split below ``max_message_size``; pushes made
from real OS threads arrive, in order, and leave the server working; so do a topic's
joins, publishes and leaves.
"""
from __future__ import annotations

import json
import socket
import time
import typing as t

import gevent
import gevent.monkey
import pytest
import websocket

from tests.scaleout.conftest import redis_server  # noqa: F401 (a fixture)

from .conftest import TIMEOUT, running, ws_connect

_start_thread = gevent.monkey.get_original("_thread", "start_new_thread")


def _frames_until_close(ws: websocket.WebSocket) -> tuple[list[str], int | None]:
    """Every data frame, then the close code (None if the socket just died)."""
    frames: list[str] = []
    while True:
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return frames, None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return frames, int.from_bytes(data[:2], "big") if len(data) >= 2 else None
        if opcode == websocket.ABNF.OPCODE_TEXT:
            frames.append(data.decode())


def test_big_batches_are_split_below_max_message_size():
    limit = 64 * 1024
    with running(max_message_size=limit) as h:
        ws = h.ws("c", uid="big")
        try:
            payload = "x" * 20_000
            for i in range(10):
                h.sente.send("big", ("t/n", {"i": i, "pad": payload}))
            h.sente.send("big", ("t/n", {"i": 10, "pad": ""}), flush=True)
            got: list[int] = []
            sizes = []
            while len(got) < 11:
                data = ws.recv()
                sizes.append(len(data.encode()))
                batch = json.loads(data)[0]
                got += [event[1]["i"] for event in batch]
            assert got == list(range(11))
            assert len(sizes) > 1 and max(sizes) <= limit
        finally:
            ws.close()


def test_a_client_that_stops_reading_is_closed_by_bytes_and_gets_its_1013():
    """100 KB pushes to a client that reads nothing: the server stops queueing at
    send_queue_bytes (not at 1,000 messages) and the close frame follows what was in flight."""
    with running(send_queue_bytes=1 << 20, write_timeout=10) as h:
        ws = ws_connect(h.ws_url + "?client-id=slow&u=slow",
                        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        try:
            ws.recv()                                    # the handshake
            chunk = "y" * 100_000
            conn = h.app.extensions["sente"].hub.table.ws("slow", "slow")
            for i in range(100):                         # 10 MB offered in all
                h.sente.send("slow", ("t/n", {"i": i, "pad": chunk}), flush=True)
                gevent.sleep(0)
                if not conn.open:
                    break
            assert not conn.open, "never closed although the client read nothing"
            assert i < 40, f"queued {i} pushes of 100 KB past a 1 MiB bound"
            frames, code = _frames_until_close(ws)
            assert code == 1013
            received = [e[1]["i"] for f in frames for e in json.loads(f)[0]]
            assert received == list(range(len(received)))  # in order, no gap before it
        finally:
            ws.close()


def test_pushes_from_os_threads_arrive_in_order_and_later_pushes_still_work():
    with running() as h:
        ws = h.ws("c", uid="thr")
        try:
            def push_range(start: int, stop: int) -> None:
                for i in range(start, stop):
                    h.sente.send("thr", ("t/n", i))

            # gevent's threadpool (real threads), then a raw OS thread, then greenlets.
            h.app.extensions["sente"]  # noqa: B018 - the app is initialised
            gevent.get_hub().threadpool.spawn(push_range, 0, 50).get(timeout=5)
            done: list[bool] = []
            _start_thread(lambda: (push_range(50, 100), h.sente.send(
                "thr", ("t/n", 100), flush=True), done.append(True)), ())
            h.wait_for(lambda: bool(done))
            got: list[int] = []
            # The thread's sends are queued for the hub's thread when ``done`` is set: a
            # push made here now could overtake them (no order exists between the two), so
            # the later pushes wait until the thread's have arrived.
            with gevent.Timeout(5, AssertionError(f"only got {got}")):
                while len(got) < 101:
                    got += [event[1] for event in h.recv(ws)[0]]
            push_range(101, 150)
            h.sente.send("thr", ("t/n", 150), flush=True)
            with gevent.Timeout(5, AssertionError(f"only got {got}")):
                while len(got) < 151:
                    got += [event[1] for event in h.recv(ws)[0]]
            assert got == list(range(151))
        finally:
            ws.close()


def test_broadcast_and_kick_from_a_thread():
    with running() as h:
        ws = h.ws("c", uid="kt")
        try:
            gevent.get_hub().threadpool.spawn(
                h.sente.broadcast, ("t/all", 1), flush=True).get(timeout=5)
            assert h.recv(ws) == [[["t/all", 1]], None]
            gevent.get_hub().threadpool.spawn(h.sente.kick, "kt").get(timeout=5)
            frames, code = _frames_until_close(ws)
            assert code == 4001
            h.wait_for(lambda: "kt" not in h.sente.connected_uids.any)
        finally:
            ws.close()


def _server_side(server_port: int, client_port: int) -> list[tuple[str, int]]:
    """The kernel's sockets of the server's side of one loopback connection, as (TCP state,
    bytes queued to send), from /proc/net/tcp: what the server holds for that peer."""
    states = {"01": "ESTABLISHED", "04": "FIN-WAIT-1", "05": "FIN-WAIT-2", "06": "TIME-WAIT",
              "07": "CLOSE", "08": "CLOSE-WAIT", "09": "LAST-ACK", "0B": "CLOSING"}
    found = []
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if (int(local.split(":")[1], 16) == server_port
                    and int(remote.split(":")[1], 16) == client_port):
                found.append((states.get(state, state), int(fields[4].split(":")[0], 16)))
    return found


def test_a_peer_that_stopped_reading_is_aborted_with_a_reset():
    """A write stuck past ``write_timeout`` aborts the socket with a TCP reset: the server
    holds nothing for the peer afterwards, and the peer reads ECONNRESET. With a graceful
    close (a FIN queued behind the megabytes the peer never read) the socket sat in
    FIN-WAIT-1 with them, for minutes, per stalled peer.

    Broken once by tearing down with ``shutdown(SHUT_RDWR)`` alone (no ``SO_LINGER`` of 0,
    as before issue 26): the server's side stayed in FIN-WAIT-1 with 2.8 MB queued,
    and this failed waiting for it to go."""
    with running(send_queue_bytes=64 << 20, send_queue_size=10_000, write_timeout=0.5) as h:
        ws = ws_connect(h.ws_url + "?client-id=stalled&u=stalled",
                        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        try:
            ws.recv()                                    # the handshake; then nothing
            client_port = ws.sock.getsockname()[1]
            server_port = int(h.base.rsplit(":", 1)[1])
            conn = h.app.extensions["sente"].hub.table.ws("stalled", "stalled")
            chunk = "z" * 100_000
            for i in range(100):                         # 10 MB: more than the kernels hold
                h.sente.send("stalled", ("t/n", {"i": i, "pad": chunk}), flush=True)
                gevent.sleep(0)
            h.wait_for(lambda: not conn.open)            # the write timed out: aborted
            h.wait_for(lambda: h.app.extensions["sente"].hub.table.ws("stalled", "stalled") is None)
            with gevent.Timeout(TIMEOUT, AssertionError(
                    f"the server still holds {_server_side(server_port, client_port)}")):
                while _server_side(server_port, client_port):
                    gevent.sleep(0.05)
            ws.sock.settimeout(TIMEOUT)
            with pytest.raises(ConnectionResetError):
                while ws.sock.recv(1 << 16):             # what was delivered, then the reset
                    pass
                raise AssertionError("a FIN (a graceful close), not a reset")
        finally:
            ws.shutdown()


@pytest.mark.parametrize("backplane", ["memory", "redis"])
def test_join_publish_and_leave_from_os_threads(backplane, request):
    """``join``, ``publish`` and ``leave`` called from real OS threads (gevent's threadpool,
    and raw threads from the unpatched ``_thread``), as from a worker thread of the app:
    the client is joined, gets the thread's publishes in order, then ``chsk/left``; a
    publish made from a thread once it has left does not reach it. Each step is read at
    the wire up to a marker the same thread pushes after it (one thread's calls keep their
    order). ``leave`` takes effect when ``chsk/left`` goes out, not when the call returns
    (it is a command every process applies; what was published and not yet sent is not
    sent), hence one thread per step.

    With the in-memory and the Redis backplane. Shown to fail by letting ``leave`` (then
    ``join``) run on the calling thread (the ``_on_hub_thread()`` hand-off removed): no
    ``chsk/left`` (no ``chsk/joined``) ever came, the thread got "Cannot switch to a
    different thread"; and by dropping a publish made off the hub's thread: no topic event
    came. Removing only ``publish``'s hand-off was not seen: that unsafe call happened to
    work in these runs (a race, not a failure this test can show every time).
    """
    options = {}
    if backplane == "redis":
        options["backplane"] = request.getfixturevalue("redis_server").url
    with running(**options) as h:
        ws = h.ws("c", uid="tia", protocol="2")
        pool = gevent.get_hub().threadpool
        got: list[t.Any] = []

        def read_until(event_id: str) -> None:
            with gevent.Timeout(5, AssertionError(f"no {event_id} in {got}")):
                while not any(e[0] == event_id for e in got):
                    got.extend(h.recv(ws)[0])

        def in_a_thread(*calls: t.Callable[[], t.Any]) -> None:
            failures: list[BaseException] = []
            done: list[bool] = []

            def run() -> None:
                try:
                    for call in calls:
                        call()
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    failures.append(exc)
                finally:
                    done.append(True)

            _start_thread(run, ())
            h.wait_for(lambda: bool(done))
            assert failures == []

        try:
            pool.spawn(h.sente.join, "news", "tia").get(timeout=5)
            read_until("chsk/joined")
            in_a_thread(*[lambda n=n: h.sente.publish("news", ("t/n", n)) for n in range(20)],
                        lambda: h.sente.send("tia", ("t/published", None), flush=True))
            read_until("t/published")
            assert [e[1][1][1] for e in got if e[0] == "chsk/topic"] == list(range(20))
            in_a_thread(lambda: h.sente.leave("news", "tia"))
            read_until("chsk/left")
            in_a_thread(lambda: h.sente.publish("news", ("t/n", "after the leave")),
                        lambda: h.sente.send("tia", ("t/end", None), flush=True))
            read_until("t/end")
            assert [e[1][1][1] for e in got if e[0] == "chsk/topic"] == list(range(20))
            assert [e[1] for e in got if e[0] == "chsk/left"] == [
                {"topic": "news", "reason": "removed"}]
            h.wait_for(lambda: h.sente.members("news") == frozenset())
        finally:
            ws.close()


_allocate_lock = gevent.monkey.get_original("_thread", "allocate_lock")


def _in_os_threads(h: t.Any, *bodies: t.Callable[[], t.Any]) -> None:
    """Run each body in a real OS thread of its own (the unpatched ``_thread``: under the
    test process's monkey-patching ``threading.Thread`` makes greenlets), all let go at
    once; wait for all of them (they only hand calls to the hub, so they end quickly) and
    fail with what any of them raised."""
    gate = _allocate_lock()
    gate.acquire()
    failures: list[BaseException] = []
    done: list[bool] = []

    def run(body: t.Callable[[], t.Any]) -> None:
        try:
            gate.acquire()
            gate.release()
            body()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)
        finally:
            done.append(True)

    for body in bodies:
        _start_thread(run, (body,))
    gate.release()
    h.wait_for(lambda: len(done) == len(bodies))
    assert failures == []


@pytest.mark.parametrize("backplane", ["memory", "redis"])
def test_join_publish_and_leave_from_several_os_threads_at_once(backplane, request):
    """Several OS threads call ``join``, ``publish`` and ``leave`` at the same time against
    a served app with three members' WebSockets (read at the wire).

    Joins: each thread puts its user in ``room`` and then in and out of ``flip`` five times;
    every call takes effect in the thread's order — each user gets ``chsk/joined`` for
    ``room`` and ten ``flip`` events alternating joined, left, and is not in ``flip`` at the
    end. Publishes: four threads publish 40 events each to ``room``; every member gets each
    thread's events once and in its order. Leaves: every user is taken out of ``room`` by
    its own thread at once; each gets ``chsk/left`` and ``members`` is empty.

    With Redis this failed before two fixes: the flip events of a user came out of order
    and short — ``join`` and ``leave`` make Redis round trips before they append their
    command, and each call handed from a thread ran in a greenlet of its own, started at
    once, so a later call could append first (now a thread's calls run one after another:
    ``HubLoop.call_from_thread``'s lane); and a ``leave`` command applied while the ``join``
    before it still waited for Redis found the client not in the topic and was lost (now a
    user's commands are applied in order: ``TopicService.command``'s lane). Shown to fail
    again by removing either fix (two runs of three without the first, every run without
    the second)."""
    options = {}
    if backplane == "redis":
        options["backplane"] = request.getfixturevalue("redis_server").url
    users = ["m0", "m1", "m2"]
    with running(**options) as h:
        sockets = {uid: h.ws(f"{uid}-tab", uid=uid, protocol="2") for uid in users}
        got: dict[str, list[t.Any]] = {uid: [] for uid in users}

        def read_until(uid: str, pred: t.Callable[[list[t.Any]], bool], what: str) -> None:
            deadline = time.monotonic() + 10
            while not pred(got[uid]):
                try:
                    if time.monotonic() > deadline:
                        raise websocket.WebSocketTimeoutException
                    batch = h.recv(sockets[uid])[0]             # TIMEOUT at most
                except websocket.WebSocketTimeoutException:
                    raise AssertionError(f"{uid}: no {what} in {got[uid]}") from None
                got[uid].extend(e for e in batch if e[0] != "chsk/pos")

        def topic_events(uid: str, name: str) -> list[t.Any]:
            return [e for e in got[uid] if e[0] in ("chsk/joined", "chsk/left")
                    and e[1]["topic"] == name]

        def joins_and_flips(uid: str) -> None:
            h.sente.join("room", uid)
            for _ in range(5):
                h.sente.join("flip", uid)
                h.sente.leave("flip", uid)

        try:
            _in_os_threads(h, *[lambda uid=uid: joins_and_flips(uid) for uid in users])
            for uid in users:
                read_until(uid, lambda _, uid=uid: len(topic_events(uid, "flip")) >= 10
                           and topic_events(uid, "room"), "room join and ten flips")
                assert [e[0] for e in topic_events(uid, "flip")] == [
                    "chsk/joined", "chsk/left"] * 5, uid
                assert [e[0] for e in topic_events(uid, "room")] == ["chsk/joined"]
            h.wait_for(lambda: h.sente.members("room") == set(users)
                       and h.sente.members("flip") == frozenset())

            def publish(thread: int) -> None:
                for n in range(40):
                    h.sente.publish("room", ("t/n", [thread, n]))
                h.sente.publish("room", ("t/end", thread), flush=True)

            _in_os_threads(h, *[lambda i=i: publish(i) for i in range(4)])
            for uid in users:
                read_until(uid, lambda events: sum(
                    1 for e in events if e[0] == "chsk/topic" and e[1][1][0] == "t/end") == 4,
                    "end of every thread's publishes")
                published = [e[1][1][1] for e in got[uid]
                             if e[0] == "chsk/topic" and e[1][1][0] == "t/n"]
                for thread in range(4):
                    assert [n for i, n in published if i == thread] == list(range(40)), uid
                assert len(published) == 160, uid

            _in_os_threads(h, *[lambda uid=uid: h.sente.leave("room", uid) for uid in users])
            for uid in users:
                read_until(uid, lambda _, uid=uid: len(topic_events(uid, "room")) == 2,
                           "chsk/left for room")
                assert topic_events(uid, "room")[1] == [
                    "chsk/left", {"topic": "room", "reason": "removed"}]
            h.wait_for(lambda: h.sente.members("room") == frozenset())
        finally:
            for ws in sockets.values():
                ws.close()
