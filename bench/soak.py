"""``make soak`` (= ``python -m bench.soak``): the soak and the abuse scenarios of issue 14.

Each scenario starts its own server process (``bench/soak_app.py``: ``flask_sente.run``,
or gunicorn with ``SenteWorker`` for the SIGTERM drain) on 127.0.0.1, drives it with bounded
loops of plain clients (websocket-client, requests, raw sockets) from this process (gevent),
stops it and prints its figures. Nothing leaves 127.0.0.1; the whole run takes about two
minutes. Not part of ``make test``: no assertion, figures only (docs/soak.md has a run).

    python -m bench.soak                     # every scenario
    python -m bench.soak --only 1,5          # some (0 = the plain soak)
    python -m bench.soak --seconds 60        # a longer plain soak
"""
from __future__ import annotations

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import requests  # noqa: E402
import websocket  # noqa: E402

from bench.soak_app import TOKEN  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"X-CSRF-Token": TOKEN}


class Server:
    """A soak server process; its stderr (logs, access log) goes to a temporary file."""

    def __init__(self, env: dict[str, str], gunicorn: bool = False,
                 graceful: int = 10) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="soak-", suffix=".log", delete=False)
        full_env = dict(os.environ, **{"SOAK_" + k: v for k, v in env.items()})
        if gunicorn:
            argv = [sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker",
                    "-b", "127.0.0.1:0", "-w", "1", "--graceful-timeout", str(graceful),
                    "--access-logfile", "-", "--no-control-socket",
                    "bench.soak_app:create_app()"]
            pattern = r"Listening at: http://127\.0\.0\.1:(\d+)"
        else:
            argv = [sys.executable, "-m", "bench.soak_app"]
            pattern = r"serving on http://127\.0\.0\.1:(\d+)"
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            match = re.search(pattern, self.text())
            if match and (not gunicorn or "Booting worker" in self.text()):
                self.port = int(match.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"soak server did not start: {self.text()[-2000:]}")
            gevent.sleep(0.05)
        gevent.sleep(0.3)
        self.url = f"http://127.0.0.1:{self.port}/chsk"

    def text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def rss_kib(self) -> int:
        """The server's resident memory (gunicorn: the master's child is not followed)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self, timeout: float = 20) -> float:
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return time.monotonic() - started

    def close(self) -> None:
        self.stop()
        os.unlink(self.log.name)


def ws_open(server: Server, uid: str, timeout: float = 10) -> websocket.WebSocket:
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/chsk?client-id={uuid.uuid4().hex}&u={uid}",
        header=[f"X-CSRF-Token: {TOKEN}"], timeout=timeout)
    assert json.loads(ws.recv())[0][0] == "chsk/handshake"
    return ws


def call(ws: websocket.WebSocket, event: list[t.Any], cb: str) -> t.Any:
    ws.send(json.dumps([event, cb]))
    while True:
        msg = json.loads(ws.recv())
        if msg[1] == cb:
            return msg[0]
        if msg[0] == ["chsk/ws-ping"]:
            ws.send(json.dumps([["chsk/ws-pong"], None]))


def tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")


def report(title: str, rows: list[tuple[str, t.Any]]) -> None:
    print(f"\n## {title}\n")
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    sys.stdout.flush()


# --- scenarios ----------------------------------------------------------------------------

def plain_soak(seconds: float, n_ws: int = 200, n_ajax: int = 20) -> None:
    """0: WebSocket and Ajax clients in closed loops of echo calls; lost replies, memory,
    and whether the CSRF token ever reached the access log (item 8)."""
    server = Server({})
    sent = {"ws": 0, "ajax": 0}
    got = {"ws": 0, "ajax": 0}
    errors: list[str] = []
    try:
        rss0 = server.rss_kib()
        stop_at = time.monotonic() + seconds

        def ws_client(i: int) -> None:
            ws = ws_open(server, f"w{i % 50}")
            try:
                n = 0
                while time.monotonic() < stop_at:
                    n += 1
                    sent["ws"] += 1
                    if call(ws, ["t/echo", n], f"c{n}") == ["chsk/reply", n]:
                        got["ws"] += 1
                    gevent.sleep(0.2)
            finally:
                ws.close()

        def ajax_client(i: int) -> None:
            s = requests.Session()
            cid = uuid.uuid4().hex
            params = {"client-id": cid, "u": f"a{i}"}
            s.get(server.url, params={**params, "handshake": 1}, headers=HEADERS, timeout=10)
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                sent["ajax"] += 1
                r = s.post(server.url, params=params, headers=dict(HEADERS, **{
                    "Content-Type": "application/json"}),
                    data=json.dumps([["t/echo", n], "ajax"]), timeout=10)
                if r.json() == [["chsk/reply", n], None]:
                    got["ajax"] += 1
                gevent.sleep(0.2)
            s.close()

        def guarded(fn: t.Callable[[int], None], i: int) -> None:
            try:
                fn(i)
            except Exception as exc:  # counted, not raised: the soak reports
                errors.append(repr(exc)[:120])

        # One browser-like client: the ticket over Ajax, then the WebSocket with the ticket;
        # one old-style client with the token in the URL. Neither may leave it in the log.
        s = requests.Session()
        ticket = s.get(server.url, params={"client-id": "tk", "new-ws-ticket": 1},
                       headers=HEADERS, timeout=10).text
        websocket.create_connection(f"ws://127.0.0.1:{server.port}/chsk?client-id=tk&"
                                    f"ws-ticket={ticket}", timeout=10).close()
        websocket.create_connection(f"ws://127.0.0.1:{server.port}/chsk?client-id=old&"
                                    f"csrf-token={TOKEN}", timeout=10).close()
        group = gevent.pool.Group()
        for i in range(n_ws):
            group.spawn(guarded, ws_client, i)
        for i in range(n_ajax):
            group.spawn(guarded, ajax_client, i)
        group.join(timeout=seconds + 30)
        group.kill(timeout=5)
        rss1 = server.rss_kib()
    finally:
        server.stop()
    log = server.text()
    report(f"0. plain soak: {n_ws} WebSocket + {n_ajax} Ajax clients, {seconds:g} s", [
        ("WebSocket calls sent / answered", f"{sent['ws']} / {got['ws']}"),
        ("Ajax calls sent / answered", f"{sent['ajax']} / {got['ajax']}"),
        ("client errors", len(errors)),
        ("server RSS before / after", f"{rss0 // 1024} MiB / {rss1 // 1024} MiB"),
        ("access-log lines containing the CSRF token (item 8)", log.count(TOKEN)),
        ("access-log lines with `ws-ticket=[redacted]` / `csrf-token=[redacted]`",
         f"{log.count('ws-ticket=[redacted]')} / {log.count('csrf-token=[redacted]')}"),
        ("tracebacks in the server log", tracebacks(log)),
    ])
    server.close()


def slowloris(n: int = 500, nofile: int = 256, header_timeout: float = 3) -> None:
    """1: n sockets send part of a request line and stall, against ``ulimit -n`` nofile."""
    rows = []
    for limit in ("default", "none"):
        server = Server({"NOFILE": str(nofile), "HEADER_TIMEOUT": str(header_timeout),
                         "MAX_CONNECTIONS": limit})
        socks: list[socket.socket] = []
        outcomes = {"503": 0, "closed": 0, "held": 0}
        started = time.monotonic()
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                s.sendall(b"GET /chsk?client-id=x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                socks.append(s)
            last = 0.0

            def outcome(s: socket.socket, outcomes: t.Any = outcomes,
                        started: float = started) -> None:
                nonlocal last
                s.settimeout(header_timeout + 10)
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    outcomes["held"] += 1
                    return
                except OSError:
                    data = b""
                outcomes["503" if data.startswith(b"HTTP/1.1 503") else "closed"] += 1
                last = max(last, time.monotonic() - started)

            group = gevent.pool.Group()
            for s in socks:
                group.spawn(outcome, s)
            group.join(timeout=header_timeout + 20)
            group.kill(timeout=1)
            for s in socks:
                s.close()
            t0 = time.monotonic()
            ok = False
            while time.monotonic() - t0 < 10 and not ok:
                try:
                    ok = requests.get(server.url, params={"client-id": "h", "handshake": 1},
                                      headers=HEADERS, timeout=2).status_code == 200
                except requests.RequestException:
                    gevent.sleep(0.1)
        finally:
            for s in socks:
                s.close()
            server.stop()
        log = server.text()
        rows += [
            (f"max_connections={limit}: got 503 / closed by header timeout / still held",
             f"{outcomes['503']} / {outcomes['closed']} / {outcomes['held']}"),
            (f"max_connections={limit}: last one answered after", f"{last:.1f} s"),
            (f"max_connections={limit}: a handshake after the stall", "200" if ok else "FAILED"),
            (f"max_connections={limit}: tracebacks / warning lines in the log",
             f"{tracebacks(log)} / {log.count('WARNING')}"),
        ]
        server.close()
    report(f"1. slowloris: {n} stalled request heads, ulimit -n {nofile}, header_timeout "
           f"{header_timeout:g} s", rows)


def fairness(flooders: int = 20, events: int = 100, slow: float = 10, idle: int = 100,
             pool: int = 1000) -> None:
    """2: fire-and-forget events to a slow handler from a few clients, while idle clients
    answer server pings and other clients make calls."""
    server = Server({"POOL": str(pool), "KEEPALIVE": "2", "PING_TIMEOUT": "3"})
    latencies: list[float] = []
    dropped = {"n": 0}
    missed_pongs = {"n": 0}
    stop_at = time.monotonic() + slow + 2
    try:
        floods = [ws_open(server, f"f{i}") for i in range(flooders)]
        for ws in floods:
            for _ in range(events):
                ws.send(json.dumps([["t/slow", slow], None]))

        def bystander(i: int) -> None:
            ws = ws_open(server, f"b{i}", timeout=5)
            n = 0
            try:
                while time.monotonic() < stop_at:
                    n += 1
                    ws.send(json.dumps([["chsk/ws-ping"], f"p{n}"]))
                    deadline = time.monotonic() + 3
                    while True:
                        try:
                            msg = json.loads(ws.recv())
                        except websocket.WebSocketTimeoutException:
                            missed_pongs["n"] += 1
                            break
                        if msg[0] == ["chsk/ws-ping"]:
                            ws.send(json.dumps([["chsk/ws-pong"], None]))
                        elif msg[1] == f"p{n}" or time.monotonic() > deadline:
                            break
                    gevent.sleep(1)
            except (websocket.WebSocketException, OSError):
                dropped["n"] += 1
            finally:
                ws.close()

        def caller(i: int) -> None:
            ws = ws_open(server, f"c{i}")
            try:
                n = 0
                while time.monotonic() < stop_at:
                    n += 1
                    started = time.monotonic()
                    call(ws, ["t/echo", n], f"e{n}")
                    latencies.append(time.monotonic() - started)
                    gevent.sleep(0.5)
            finally:
                ws.close()

        group = gevent.pool.Group()
        for i in range(idle):
            group.spawn(bystander, i)
        for i in range(20):
            group.spawn(caller, i)
        group.join(timeout=slow + 30)
        group.kill(timeout=5)
        for ws in floods:
            ws.close()
    finally:
        server.stop()
    latencies.sort()
    report(f"2. fairness: {flooders} clients x {events} events to a {slow:g} s handler "
           f"(pool {pool}), {idle} idle clients, 20 callers", [
               ("other clients' calls: median / max latency",
                f"{latencies[len(latencies) // 2] * 1000:.1f} ms / {latencies[-1] * 1000:.1f} ms"
                if latencies else "none answered"),
               ("idle clients dropped", f"{dropped['n']} of {idle}"),
               ("idle clients' pings not answered within 3 s", missed_pongs["n"]),
               ("tracebacks in the server log", tracebacks(server.text())),
           ])
    server.close()


def drain(n_calls: int = 15, n_polls: int = 10, graceful: int = 10) -> None:
    """4: gunicorn SIGTERM during calls to a 2 s handler, with parked polls."""
    server = Server({}, gunicorn=True, graceful=graceful)
    replies = {"ok": 0, "other": 0}
    closes: list[int] = []
    polls: list[t.Any] = []
    try:
        sockets = [ws_open(server, f"d{i}", timeout=15) for i in range(n_calls)]

        def one_call(i: int, ws: websocket.WebSocket) -> None:
            ws.send(json.dumps([["t/slow", 2], f"s{i}"]))
            while True:
                opcode, data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    closes.append(int.from_bytes(data[:2], "big"))
                    return
                msg = json.loads(data)
                if msg[1] == f"s{i}":
                    replies["ok" if msg[0] == ["chsk/reply", "slept"] else "other"] += 1

        def one_poll(i: int) -> None:
            s = requests.Session()
            params = {"client-id": f"poll{i}", "u": f"p{i}"}
            s.get(server.url, params={**params, "handshake": 1}, headers=HEADERS, timeout=10)
            polls.append(s.get(server.url, params=params, headers=HEADERS, timeout=30).json())

        group = gevent.pool.Group()
        for i, ws in enumerate(sockets):
            group.spawn(one_call, i, ws)
        for i in range(n_polls):
            group.spawn(one_poll, i)
        gevent.sleep(0.8)
        exit_time = server.stop(timeout=graceful + 10)
        group.join(timeout=10)
        group.kill(timeout=1)
        for ws in sockets:
            ws.close()
    finally:
        server.stop()
    going_away = sum(1 for p in polls if p[0][0] == "chsk/close" and p[0][1]["code"] == 1001)
    report(f"4. gunicorn SIGTERM (--graceful-timeout {graceful}) at 0.8 s into {n_calls} "
           f"calls to a 2 s handler, {n_polls} parked polls", [
               ("calls answered with their reply / otherwise", f"{replies['ok']} / "
                                                               f"{replies['other']}"),
               ("WebSocket close codes", ", ".join(f"{c}×{closes.count(c)}"
                                                   for c in sorted(set(closes))) or "none"),
               ("parked polls answered chsk/close 1001", f"{going_away} of {n_polls}"),
               ("SIGTERM to exit", f"{exit_time:.1f} s"),
               ("'Worker graceful timeout' / tracebacks in the log",
                f"{server.text().count('Worker graceful timeout')} / "
                f"{tracebacks(server.text())}"),
           ])
    server.close()


def error_logs(clients: int = 100, seconds: float = 10) -> None:
    """5: a handler that raises on every call, many clients calling it."""
    server = Server({"ERROR_INTERVAL": "60"})
    answered = {"error": 0, "other": 0}
    try:
        size0 = len(server.text())
        stop_at = time.monotonic() + seconds

        def client(i: int) -> None:
            ws = ws_open(server, f"e{i}")
            try:
                n = 0
                while time.monotonic() < stop_at:
                    n += 1
                    got = call(ws, ["t/boom", n], f"b{n}")
                    answered["error" if got[0] == "chsk/error" else "other"] += 1
                    gevent.sleep(0.05)
            finally:
                ws.close()

        group = gevent.pool.Group()
        for i in range(clients):
            group.spawn(client, i)
        group.join(timeout=seconds + 30)
        group.kill(timeout=5)
        grown = len(server.text()) - size0
    finally:
        server.stop()
    log = server.text()
    report(f"5. a handler failing on every call, {clients} clients, {seconds:g} s", [
        ("calls answered chsk/error / otherwise", f"{answered['error']} / {answered['other']}"),
        ("log growth (access log of the upgrades included)", f"{grown / 1024:.1f} KiB"),
        ("handler tracebacks logged", log.count("RuntimeError: soak")),
    ])
    server.close()


SCENARIOS = {"0": "plain", "1": "slowloris", "2": "fairness", "4": "drain", "5": "errors"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="e.g. 1,5")
    parser.add_argument("--seconds", type=float, default=30, help="the plain soak's length")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    only = set(args.only.split(","))
    started = time.monotonic()
    print(f"# make soak (python -m bench.soak --only {args.only} --seconds {args.seconds:g})")
    print("\nItems 3 (byte-bounded queues), 6 (thread-safe push) and 7 (presence on the Ajax "
          "handshake) are not in this branch: no scenario for them here.")
    if "0" in only:
        plain_soak(args.seconds)
    if "1" in only:
        slowloris()
    if "2" in only:
        fairness()
    if "4" in only:
        drain()
    if "5" in only:
        error_logs()
    print(f"\nTotal: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
