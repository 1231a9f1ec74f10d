"""``make chaos`` (= ``python -m bench.chaos``): the chaos drill (issue 24).

A realistic deployment, on 127.0.0.1 only, written from the docs as a user would set it up:

- ``gunicorn -k flask_sente.worker.SenteWorker -w 3`` serving ``bench/chaos_app.py`` with
  the Redis backplane, and a ``redis-server`` this drill starts on a free port
  (``--save '' --appendonly no``);
- a cutting TCP proxy in front of gunicorn (``bench/cutproxy.py``, a process of its own),
  with a second port that refuses WebSocket upgrades;
- Python clients (:class:`flask_sente.client.Client`) of every transport — ``ws``,
  ``ajax``, ``auto``, and ``auto`` behind the port that refuses upgrades (so on Ajax) —
  several tabs per user, most in topics; and sente.js pages in headless Chromium
  (``bench/chaos_browser.py``);
- traffic with a counter per stream: HTTP requests to the app that ``send`` to users,
  ``broadcast`` and ``publish`` to topics (from whichever worker answers), and an
  :class:`~flask_sente.emitter.Emitter` in a process of its own (``bench/chaos_emitter.py``);
- server -> client calls (protocol 3): HTTP requests that have whichever worker answers
  ``sente.call`` a random client, each with a nonce, in a greenlet that writes down the
  one outcome; every client (Python and sente.js) answers ``chaos/ask`` and records what it
  computed;
- faults at random, from a seed printed for replay: cut every connection (sometimes with a
  short outage), SIGKILL a worker (gunicorn respawns it), SIGSTOP Redis for 1–4.5 s
  (around redis-py's 2 s socket timeout), restart Redis empty, clients'
  ``break_connection()``, a proxy that refuses upgrades for a while, and a combination (a
  cut while Redis is stopped while a worker dies).

After the chaos phase it settles (every client open again), pushes a final marker on every
stream, waits for them, checks presence (``connected_uids``) and ``members(topic)`` on every
worker, counts tracebacks in the workers' log, and checks every client's records
(``bench/chaos_check.py``: no silent gap, no duplicate, no reordering, no stuck client, not
kept off) and every call (none lost, none answered twice, no handler run twice, no wrong
value, no failure that no fault explains). It prints a table and exits 1 on any violation
(2 when the drill itself could not run). Every process it starts is in a process group of
its own, killed on the way out (Ctrl-C and errors included), and dies with the drill if the
drill is killed.

    python -m bench.chaos                         # the long run: 10 min, a random seed
    python -m bench.chaos --mode short            # ~90 s, seed 24 (what make test runs)
    python -m bench.chaos --seed 7 --duration 300 # replay a seed, or another length
    python -m bench.chaos --analyze DIR/data.json # check a recorded run again

docs/chaos.md has the latest results.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import dataclasses
import http.client
import json
import logging
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import typing as t
from pathlib import Path

from bench import chaos_check as cc

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("bench.chaos")


@dataclasses.dataclass
class Mode:
    duration: float            #: the chaos phase (s)
    seed: int | None           #: None: a random one
    users: int                 #: Python users, `tabs` clients each
    tabs: int
    http_rate: float           #: HTTP push requests a second
    emit_rate: float           #: Emitter pushes a second
    gap: tuple[float, float]   #: pause between two faults (s)
    call_rate: float = 3.0     #: server -> client calls a second
    call_timeout: float = 8.0  #: each call's timeout (s)
    #: Bounds of the settle phase (s): every client open again (traffic goes on), the final
    #: markers in, every worker's presence right. A client's backoff after repeated
    #: failures is at most 16 s until its 7th attempt in a row (30 s after that).
    open_wait: float = 30.0
    final_wait: float = 20.0
    presence_wait: float = 15.0


MODES = {
    # Short enough for make test (under 120 s with its settle bounds used up).
    "short": Mode(duration=45, seed=24, users=4, tabs=3, http_rate=6, emit_rate=6,
                  gap=(1.5, 3.5), open_wait=20.0, final_wait=15.0, presence_wait=10.0),
    "long": Mode(duration=600, seed=None, users=8, tabs=3, http_rate=10, emit_rate=10,
                 gap=(4.0, 12.0)),
}
TOPICS = ["room/0", "room/1", "room/2"]
#: Python clients cycle through these transports (and, independently, the topic sets).
TRANSPORTS = ["ws", "ajax", "auto", "auto/no-upgrade"]
TOPIC_SETS = [["room/0"], ["room/1", "room/2"], ["room/0", "room/2"]]
#: The Chromium pages: their own users, and one more tab of user u0.
PAGES: list[dict[str, t.Any]] = [{"id": "js0", "uid": "b0", "type": "ws", "topics": ["room/0"]},
         {"id": "js1", "uid": "b1", "type": "ajax", "topics": ["room/1"]},
         {"id": "js2", "uid": "u0", "type": "auto", "topics": ["room/2"]}]
#: How the faults are drawn after each kind has come once.
FAULT_WEIGHTS = {"cut": 3, "kill-worker": 2, "redis-freeze": 2, "redis-restart": 1,
                 "client-break": 2, "no-upgrade": 1, "combo": 1}
BROADCAST_SHARE = 0.3
TOPIC_SHARE = 0.5
#: Presence is checked this long after the last fault ended at the earliest (a killed
#: worker's users are closed after 6 s of heartbeat lapse plus the grace window:
#: docs/scaleout.md).
PRESENCE_AFTER = 13.0
#: The whole run is stopped (everything killed, exit 143) past its duration plus this.
HARD_LIMIT_EXTRA = 150.0
#: Seconds past a call's timeout the drill waits for its outcome at the end: the hub's
#: timer settles it at the timeout (calls.SLACK is what a caller waits past that).
CALL_OUTCOME_SLACK = 7.0
HTTP_TIMEOUT = 5.0


class DrillError(Exception):
    """The drill itself could not run (a process did not start, ...): exit 2."""


# --- processes -----------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """(In the child, before exec) SIGKILL when the drill's main thread dies: a drill
    killed with SIGKILL leaves nothing behind either."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Procs:
    """Every process the drill starts, each in a process group of its own (so a Ctrl-C in
    the terminal reaches the drill only, which then stops them in order) and killed, group
    and all, by :meth:`kill_all`. Start them from the main thread only: the kernel's
    parent-death signal follows the thread that forked."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[t.Any]] = []

    def spawn(self, argv: list[str], *, log: Path | None = None, pipes: bool = False,
              env: dict[str, str] | None = None) -> subprocess.Popen[t.Any]:
        assert threading.current_thread() is threading.main_thread()
        out: t.Any = subprocess.PIPE if pipes else (open(log, "ab") if log else
                                                    subprocess.DEVNULL)
        err: t.Any = open(log, "ab") if log else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL, stdout=out,
                stderr=err, start_new_session=True, preexec_fn=_die_with_parent,
                text=pipes, bufsize=1 if pipes else -1)
        finally:
            for f in (out, err):
                if hasattr(f, "close"):
                    f.close()
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, procs: Procs, folder: Path) -> None:
        self.procs = procs
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[t.Any] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = self.procs.spawn(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            log=self.folder / f"redis-{self.starts}.log")
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise DrillError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)


class Gunicorn:
    def __init__(self, procs: Procs, folder: Path, redis_url: str) -> None:
        self.log = folder / "gunicorn.log"
        self.proc = procs.spawn(
            [sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker",
             "-w", "3", "-b", "127.0.0.1:0", "--graceful-timeout", "3",
             "--no-control-socket", "bench.chaos_app:create_app()"],
            log=self.log, env={"CHAOS_REDIS_URL": redis_url, "CHAOS_LOG_DIR": str(folder)})
        self.folder = folder
        deadline = time.monotonic() + 60
        while True:
            text = self.text()
            match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
            pids = self.worker_pids()
            # Each worker opens its log when it has loaded the app (bench/chaos_app.py).
            if match and len(pids) == 3 and all(
                    (folder / f"worker-{pid}.log").exists() for pid in pids):
                self.port = int(match.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise DrillError(f"gunicorn did not start:\n{text[-3000:]}")
            time.sleep(0.1)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def logs(self) -> dict[str, str]:
        """The master's log and each worker's (killed ones included), by file name."""
        return {p.name: p.read_text(errors="replace")
                for p in [self.log, *sorted(self.folder.glob("worker-*.log"))]}

    def worker_pids(self) -> list[int]:
        """The master's children now, from /proc."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                pids.append(int(entry))
        return sorted(pids)


class Proxy:
    def __init__(self, procs: Procs, folder: Path, target_port: int) -> None:
        self.proc = procs.spawn([sys.executable, "-m", "bench.cutproxy", "--target-port",
                                 str(target_port)], pipes=True, log=folder / "proxy.log")
        line = _readline(self.proc, 20)
        match = re.match(r"PORTS (\d+) (\d+)", line)
        if not match:
            raise DrillError(f"the proxy did not start: {line!r}")
        self.port, self.no_upgrade_port = int(match.group(1)), int(match.group(2))

    def command(self, text: str) -> dict[str, t.Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return t.cast("dict[str, t.Any]", json.loads(_readline(self.proc, 10)))


def _readline(proc: subprocess.Popen[t.Any], timeout: float) -> str:
    """One line of a child's stdout within ``timeout`` (its stdout is read by nobody
    else)."""
    box: queue.Queue[str] = queue.Queue()
    stdout = t.cast("t.TextIO", proc.stdout)
    threading.Thread(target=lambda: box.put(stdout.readline()), daemon=True).start()
    try:
        return box.get(timeout=timeout)
    except queue.Empty:
        raise DrillError(f"no answer from {proc.args!r} within {timeout} s") from None


class EmitterProc:
    """The Emitter process and what it reports (read on a thread of its own)."""

    def __init__(self, procs: Procs, folder: Path, redis_url: str, uids: list[str],
                 rate: float, seed: int,
                 record: t.Callable[[str, int, float, bool, int], None]) -> None:
        self.proc = procs.spawn(
            [sys.executable, "-m", "bench.chaos_emitter", "--redis-url", redis_url,
             "--uids", ",".join(uids), "--rate", str(rate), "--seed", str(seed),
             "--broadcast-share", str(BROADCAST_SHARE)],
            pipes=True, log=folder / "emitter.log")
        self.done = threading.Event()
        self.errors: dict[str, int] = {}
        self.pushes = 0
        self._record = record
        threading.Thread(target=self._read, name="emitter-reader", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg.get("done"):
                self.errors = msg.get("errors", {})
                self.done.set()
            elif "s" in msg:
                self.pushes += 1
                self._record(msg["s"], int(msg["n"]), float(msg["ti"]), bool(msg.get("f")),
                             int(msg.get("tries", 1)))
        self.done.set()

    def final(self, timeout: float) -> bool:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write("final\n")
            self.proc.stdin.flush()
        return self.done.wait(timeout)


class BrowserProc:
    """The Chromium pages' process; their records arrive on a reader thread."""

    def __init__(self, procs: Procs, folder: Path, base_url: str,
                 pages: list[dict[str, t.Any]]) -> None:
        self.proc = procs.spawn([sys.executable, "-m", "bench.chaos_browser", "--base-url",
                                 base_url, "--pages", json.dumps(pages)],
                                pipes=True, log=folder / "browser.log")
        self.recs: dict[str, list[cc.Rec]] = {p["id"]: [] for p in pages}
        self.ready: dict[str, bool] = {}
        self.answers: queue.Queue[dict[str, t.Any]] = queue.Queue()
        self.console: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, name="browser-reader", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "page" in msg:
                with self.lock:
                    self.recs[msg["page"]].extend(msg["recs"])
            elif "ready" in msg:
                self.ready[msg["ready"]] = True
            elif "not-ready" in msg:
                self.ready[msg["not-ready"]] = False
            elif "console" in msg:
                self.console.append(f"{msg['console']} {msg['type']}: {msg['text']}")
            else:
                self.answers.put(msg)

    def command(self, text: str, answer: bool = True, timeout: float = 20) -> dict[str, t.Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
            return self.answers.get(timeout=timeout) if answer else {}
        except (OSError, queue.Empty):
            return {}

    def quit(self) -> None:
        self.command("quit", answer=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)


# --- clients -------------------------------------------------------------------------------

class PyClient:
    """One Python client and the records its handlers make (on its dispatcher thread, in
    the order it saw things)."""

    def __init__(self, label: str, uid: str, requested: str, topics: list[str],
                 proxy: Proxy) -> None:
        from flask_sente.client import Client

        self.label, self.uid, self.requested, self.topics = label, uid, requested, topics
        self.recs: list[cc.Rec] = []
        port = proxy.no_upgrade_port if requested == "auto/no-upgrade" else proxy.port
        self.client = Client(f"http://127.0.0.1:{port}/chsk", type=requested.split("/")[0],
                             params={"uid": uid}, client_id=f"{label}-{os.urandom(6).hex()}",
                             upgrade_retry=5.0)
        rec = self.recs.append
        c = self.client

        def event(data: t.Any) -> None:
            rec(["e", data["s"], data["n"], data["t"], time.time(), data.get("f", 0)])

        c.on("chaos/ev", event)

        def ask(data: t.Any) -> t.Any:
            value = cc.answer_value(data["nonce"], data["x"], c.client_id)
            rec(["ans", data["nonce"], value, time.time()])
            return value

        c.answer("chaos/ask", ask)
        for topic in topics:
            c.on_topic(topic, lambda _id, data: event(data))
        c.on("chsk/handshake", lambda h: rec(["hs", h.get("recovered"), h.get("type"),
                                              time.time(), h.get("first_handshake")]))
        c.on("chsk/rejoined", lambda r: rec(["rj", r["topic"], r["recovered"], time.time()]))
        c.on("chsk/left", lambda r: rec(["left", r["topic"], r.get("reason"), time.time()]))

        @c.on_state
        def state(old: t.Any, new: t.Any) -> None:
            close = None if new.last_close is None else {
                k: getattr(new.last_close, k, None) for k in ("reason", "code", "status",
                                                              "message")}
            if old.open != new.open:
                rec(["st", new.open, new.type, time.time(), close])
            if new.last_close is not old.last_close and close is not None and not new.open:
                rec(["cl", close, new.type, time.time()])

    def end_state(self) -> dict[str, t.Any]:
        state = self.client.state
        close = state.last_close
        return {"open": state.open, "type": state.type, "topics": self.client.topics,
                "last_close": None if close is None else {
                    k: getattr(close, k, None) for k in ("reason", "code", "status", "message")}}


# --- traffic -------------------------------------------------------------------------------

class Streams:
    """What the producers report: per stream, when each counter was issued, its final."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.logs: dict[str, cc.StreamLog] = {}

    def record(self, stream: str, n: int, issued: float, final: bool, tries: int = 1) -> None:
        with self.lock:
            log = self.logs.setdefault(stream, cc.StreamLog(stream, {}))
            log.issued[n] = issued
            if tries > 1:
                log.retried[n] = tries
            log.acked_max = max(log.acked_max, n)
            if final:
                log.final = n


def request(port: int, method: str, path: str, body: t.Any = None) -> t.Any:
    """One request on a fresh connection (so the kernel spreads them over the workers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload, headers={
            "Content-Type": "application/json", "Connection": "close"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise OSError(f"{method} {path}: {resp.status} {data[:200]!r}")
        return json.loads(data)
    finally:
        conn.close()


class HttpPusher(threading.Thread):
    def __init__(self, port: int, uids: list[str], rate: float, seed: int,
                 streams: Streams) -> None:
        super().__init__(name="http-pusher", daemon=True)
        self.port, self.uids, self.rate, self.streams = port, uids, rate, streams
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.requests = 0
        self.failures: collections.Counter[str] = collections.Counter()

    def run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            body = {"u": [self.rng.choice(self.uids)], "b": self.rng.random() < BROADCAST_SHARE,
                    "t": [self.rng.choice(TOPICS)] if self.rng.random() < TOPIC_SHARE else []}
            issued = time.time()
            try:
                answer = request(self.port, "POST", "/chaos/push", body)
                for stream, n in answer["pushed"]:
                    self.streams.record(stream, int(n), issued, False)
                self.requests += 1
            except (OSError, ValueError, http.client.HTTPException) as exc:
                self.failures[type(exc).__name__] += 1
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            self.stop.wait(max(0.0, next_at - time.monotonic()))


class Caller(threading.Thread):
    """Asks a random worker (a fresh connection) to call a random client, ``rate`` times a
    second; keeps what it asked and which worker took it (``made``)."""

    def __init__(self, port: int, targets: list[tuple[str, str, str]], rate: float,
                 timeout: float, seed: int) -> None:
        super().__init__(name="caller", daemon=True)
        self.port, self.targets, self.rate, self.timeout = port, targets, rate, timeout
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.made: list[dict[str, t.Any]] = []
        self.failures: collections.Counter[str] = collections.Counter()

    def run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            label, uid, client_id = self.rng.choice(self.targets)
            nonce = f"c{len(self.made) + 1}"
            x = self.rng.randrange(10**6)
            made: dict[str, t.Any] = {"nonce": nonce, "target": label, "client_id": client_id,
                                      "x": x, "t": time.time(), "timeout": self.timeout,
                                      "pid": None, "http_error": ""}
            self.made.append(made)
            try:
                answer = request(self.port, "POST", "/chaos/call", {
                    "nonce": nonce, "uid": uid, "client": client_id, "x": x,
                    "timeout": self.timeout})
                made["pid"] = int(answer["pid"])
            except (OSError, ValueError, http.client.HTTPException) as exc:
                made["http_error"] = f"{type(exc).__name__}: {exc}"[:200]
                self.failures[type(exc).__name__] += 1
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            self.stop.wait(max(0.0, next_at - time.monotonic()))


def call_lines(folder: Path) -> list[dict[str, t.Any]]:
    """Every line of the workers' calls logs (``calls-<pid>.jsonl``; killed ones too)."""
    lines = []
    for path in sorted(folder.glob("calls-*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    return lines


def _wait_call_outcomes(folder: Path, caller: Caller, chaos: Chaos) -> float:
    """Wait until every call a live worker started has its outcome, at most until the last
    call's timeout plus CALL_OUTCOME_SLACK; returns how long it waited."""
    started = time.monotonic()
    last = max((m["t"] for m in caller.made), default=time.time())
    deadline = last + caller.timeout + CALL_OUTCOME_SLACK
    while time.time() < deadline:
        killed = {pid for pid, _ in chaos.killed}
        pending = {}
        for line in call_lines(folder):
            if line.get("ev") == "start" and line.get("pid") not in killed:
                pending[line["nonce"]] = line
            elif line.get("ev") == "end":
                pending.pop(line.get("nonce"), None)
        if not pending:
            break
        time.sleep(0.25)
    return time.monotonic() - started


# --- faults --------------------------------------------------------------------------------

@dataclasses.dataclass
class Planned:
    kind: str
    gap: float
    params: dict[str, float]


def plan_faults(rng: random.Random, gap: tuple[float, float], n: int = 400) -> list[Planned]:
    """The seed's faults, drawn up front so a replay gets the same ones in the same order:
    every kind once (shuffled), then at random by FAULT_WEIGHTS."""
    kinds = list(cc.FAULT_KINDS)
    rng.shuffle(kinds)
    names, weights = zip(*FAULT_WEIGHTS.items(), strict=True)
    kinds += rng.choices(names, weights, k=n - len(kinds))
    plan = []
    for kind in kinds:
        plan.append(Planned(kind, rng.uniform(*gap), {
            "down": rng.choice([0.0, rng.uniform(0.5, 3.0)]),
            "freeze": rng.uniform(1.0, 4.5),
            "restart_pause": rng.uniform(0.3, 1.5),
            "block": rng.uniform(5.0, 10.0),
            "combo": rng.uniform(2.0, 4.0),
            "pick": rng.random(),
            "break_seed": rng.random(),
        }))
    return plan


class Chaos:
    """Runs the faults; each one is recorded as a :class:`chaos_check.Fault`."""

    def __init__(self, redis: Redis, gunicorn: Gunicorn, proxy: Proxy,
                 clients: list[PyClient], browser: BrowserProc | None,
                 page_ids: list[str]) -> None:
        self.redis, self.gunicorn, self.proxy = redis, gunicorn, proxy
        self.clients = {c.label: c for c in clients}
        self.browser, self.page_ids = browser, page_ids
        self.faults: list[cc.Fault] = []
        self.killed: list[tuple[int, float]] = []   #: (worker pid, when), for the calls

    def run(self, planned: Planned) -> cc.Fault:
        p = planned.params
        start = time.time()
        kind, detail, targets, parts = planned.kind, "", None, []
        if kind == "cut":
            cut = self.proxy.command(f"cut {p['down']:.2f}")["cut"]
            detail = f"{cut} connections, refused for {p['down']:.1f} s"
            end = start + p["down"]
        elif kind == "kill-worker":
            detail = self._kill_worker(p["pick"])
            end = time.time()
        elif kind == "redis-freeze":
            self.redis.signal(signal.SIGSTOP)
            time.sleep(p["freeze"])
            self.redis.signal(signal.SIGCONT)
            end = time.time()
            detail = f"SIGSTOP for {end - start:.1f} s"
        elif kind == "redis-restart":
            self.redis.kill()
            time.sleep(p["restart_pause"])
            self.redis.start()
            end = time.time()
            detail = f"SIGKILL, restarted empty {end - start:.1f} s later"
        elif kind == "client-break":
            labels = sorted(self.clients) + list(self.page_ids)
            rng = random.Random(p["break_seed"])
            targets = rng.sample(labels, max(1, round(len(labels) / 3)))
            for label in targets:
                if label in self.clients:
                    self.clients[label].client.break_connection()
                elif self.browser is not None:
                    self.browser.command(f"break {label}", answer=False)
            end = time.time()
            detail = f"{len(targets)} clients: {' '.join(sorted(targets))}"
        elif kind == "no-upgrade":
            self.proxy.command(f"block {p['block']:.2f}")
            cut = self.proxy.command("cut 0")["cut"]
            end = start + p["block"]
            detail = f"upgrades refused for {p['block']:.1f} s, {cut} connections cut"
        elif kind == "combo":
            self.redis.signal(signal.SIGSTOP)
            time.sleep(0.3)
            killed = self._kill_worker(p["pick"])
            time.sleep(0.3)
            cut = self.proxy.command("cut 0")["cut"]
            time.sleep(max(0.0, p["combo"] - 0.6))
            self.redis.signal(signal.SIGCONT)
            end = time.time()
            parts = ["redis-freeze", "kill-worker", "cut"]
            detail = (f"Redis SIGSTOP {end - start:.1f} s; {killed}; cut {cut} connections")
        else:  # pragma: no cover - the plan only holds the kinds above
            raise DrillError(f"unknown fault {kind}")
        fault = cc.Fault(kind, start, end, detail, targets, parts)
        self.faults.append(fault)
        logger.info("fault %s %s", kind, detail)
        return fault

    def _kill_worker(self, pick: float) -> str:
        pids = self.gunicorn.worker_pids()
        if not pids:
            return "no worker to kill"
        pid = pids[int(pick * len(pids))]
        self.killed.append((pid, time.time()))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return f"SIGKILL worker {pid}"


# --- the run -------------------------------------------------------------------------------

def tracebacks(logs: dict[str, str]) -> list[cc.Violation]:
    """One violation per distinct traceback in the workers' logs (``{name: text}``), with
    its count. A chain ("During handling of the above exception ...") is one traceback; it
    is named by its last exception's type and the outermost flask_sente frame of its last
    part, and shown with the greenlet gevent says failed, if any."""
    groups: collections.Counter[str] = collections.Counter()
    samples: dict[str, list[str]] = {}
    for name, text in logs.items():
        _tracebacks_in(name, text.splitlines(), groups, samples)
    return [cc.Violation("traceback", expected="no traceback in the workers' log",
                         got=f"{n} x {key}", context=samples[key], count=n)
            for key, n in groups.items()]


def _tracebacks_in(name: str, lines: list[str], groups: collections.Counter[str],
                   samples: dict[str, list[str]]) -> None:
    i = 0
    while i < len(lines):
        if not lines[i].startswith("Traceback (most recent call last)"):
            i += 1
            continue
        j = i
        while True:
            j += 1
            frames = []
            while j < len(lines) and lines[j].startswith((" ", "\t")):
                if lines[j].strip().startswith("File "):
                    frames.append(lines[j].strip())
                j += 1
            error = lines[j].strip() if j < len(lines) else "?"
            k = j + 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k < len(lines) and lines[k].startswith(("During handling", "The above exc")):
                k += 1
                while k < len(lines) and not lines[k].strip():
                    k += 1
                if k < len(lines) and lines[k].startswith("Traceback"):
                    j = k
                    continue
            break
        greenlet = lines[j + 1].strip() if j + 1 < len(lines) and " failed with " in lines[
            j + 1] else ""
        own = [f for f in frames if "flask_sente" in f]
        where = re.sub(r'File ".*?(flask_sente/|site-packages/)', r'File "\1',
                       (own or frames or ["?"])[0])
        key = f"{error.split(':')[0]} in {where}"
        groups[key] += 1
        samples.setdefault(key, [f"{name}: {error[:200]}"] + ([greenlet[:200]] if greenlet
                                                               else []))
        i = j + 1


def presence_check(gunicorn: Gunicorn, expect: t.Callable[[], dict[str, t.Any]],
                   wait: float) -> tuple[list[cc.Violation], str]:
    """Ask every worker (fresh connections until each answered) for connected_uids and
    members(topic) until all agree with what the clients' states say (``expect()``, asked
    again each round: an ``auto`` client may move up to WebSocket meanwhile) or ``wait``
    seconds pass."""
    query = "/chaos/presence?" + "&".join(f"topic={tp}" for tp in TOPICS)
    deadline = time.monotonic() + wait
    started = time.monotonic()
    last: dict[int, dict[str, t.Any]] = {}
    expected: dict[str, t.Any] = {}
    while True:
        pids = set(gunicorn.worker_pids())
        answers: dict[int, dict[str, t.Any]] = {}
        for _ in range(40):
            if pids <= set(answers):
                break
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                answer = request(gunicorn.port, "GET", query)
                answers[int(answer["pid"])] = answer
        last = answers
        expected = expect()
        wrong = {pid: _presence_diff(a, expected) for pid, a in answers.items()}
        if answers and pids <= set(answers) and not any(wrong.values()):
            return [], f"presence and members right on {len(answers)} workers " \
                       f"{time.monotonic() - started:.1f} s after the check began"
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    violations = []
    for pid, answer in sorted(last.items()):
        for line in _presence_diff(answer, expected):
            violations.append(cc.Violation("presence", expected="as the clients are",
                                            got=f"worker {pid}: {line}"))
    missing = set(gunicorn.worker_pids()) - set(last)
    if missing:
        violations.append(cc.Violation("presence", expected="an answer from every worker",
                                       got=f"no answer from {sorted(missing)}"))
    return violations, f"presence still wrong after {wait:.0f} s"


def _presence_diff(answer: dict[str, t.Any], expected: dict[str, t.Any]) -> list[str]:
    lines = []
    for key in ("ws", "ajax", "any"):
        got, want = set(answer[key]), set(expected[key])
        if got != want:
            lines.append(f"connected_uids.{key} lacks {sorted(want - got)}, "
                         f"has extra {sorted(got - want)}")
    for topic in TOPICS:
        got, want = set(answer["members"].get(topic, [])), set(expected["members"][topic])
        if got != want:
            lines.append(f"members({topic!r}) lacks {sorted(want - got)}, "
                         f"has extra {sorted(got - want)}")
    return lines


def run(args: argparse.Namespace, folder: Path) -> dict[str, t.Any]:
    """Set up, run the chaos phase, settle; returns what was recorded (data.json)."""
    mode = MODES[args.mode]
    seed = args.seed
    duration = args.duration
    procs = Procs()
    clients: list[PyClient] = []
    browser: BrowserProc | None = None
    emitter: EmitterProc | None = None
    pusher: HttpPusher | None = None
    caller: Caller | None = None
    notes: list[str] = []
    try:
        redis = Redis(procs, folder)
        redis.start()
        gunicorn = Gunicorn(procs, folder, redis.url)
        proxy = Proxy(procs, folder, gunicorn.port)
        base = f"http://127.0.0.1:{proxy.port}"
        pages = [{**p, "cid": f"{p['id']}-{os.urandom(6).hex()}"} for p in PAGES
                 ] if args.browser else []
        if pages:
            browser = BrowserProc(procs, folder, base, pages)
        users = [f"u{i}" for i in range(mode.users)]
        for i in range(mode.users * mode.tabs):
            clients.append(PyClient(f"py{i:02d}", users[i // mode.tabs],
                                    TRANSPORTS[i % len(TRANSPORTS)],
                                    TOPIC_SETS[i % len(TOPIC_SETS)], proxy))
        for c in clients:
            c.client.connect()
        join_errors = _join_all(clients)
        notes += join_errors
        if browser is not None:
            deadline = time.monotonic() + 60
            while len(browser.ready) < len(pages) and time.monotonic() < deadline:
                time.sleep(0.1)
            not_ready = [p["id"] for p in pages if not browser.ready.get(p["id"])]
            if not_ready:
                notes.append(f"pages not ready before the chaos phase: {not_ready}")
        streams = Streams()
        all_uids = users + sorted({p["uid"] for p in pages} - set(users))
        t0 = time.time()
        emitter = EmitterProc(procs, folder, redis.url, all_uids, mode.emit_rate, seed + 2,
                              streams.record)
        pusher = HttpPusher(gunicorn.port, all_uids, mode.http_rate, seed + 1, streams)
        pusher.start()
        caller = Caller(gunicorn.port, [(c.label, c.uid, c.client.client_id) for c in clients]
                        + [(p["id"], p["uid"], p["cid"]) for p in pages],
                        mode.call_rate, mode.call_timeout, seed + 3)
        caller.start()
        chaos = Chaos(redis, gunicorn, proxy, clients, browser, [p["id"] for p in pages])
        plan = plan_faults(random.Random(seed), mode.gap)
        chaos_end = t0 + duration
        next_at = t0 + min(3.0, duration / 10) + plan[0].gap
        print(f"chaos phase: {duration:.0f} s, seed {seed}; work folder {folder}", flush=True)
        for planned in plan:
            next_at = max(next_at, time.time())
            # Leave the last seconds quiet, so each fault has time to show its effect.
            if next_at + 5 > chaos_end:
                break
            time.sleep(max(0.0, next_at - time.time()))
            fault = chaos.run(planned)
            print(f"  +{fault.start - t0:6.1f}s {fault.kind:14} {fault.detail}", flush=True)
            next_at = fault.end + planned.gap
        time.sleep(max(0.0, chaos_end - time.time()))
        last_fault_end = max((f.end for f in chaos.faults), default=t0)

        # Settle: every client open again (traffic goes on meanwhile), then the finals.
        deadline = time.monotonic() + mode.open_wait
        while time.monotonic() < deadline:
            states = _browser_states(browser)
            if all(c.client.state.open for c in clients) and all(
                    s and s.get("open") for s in states.values()):
                break
            time.sleep(0.25)
        time.sleep(2.0)  # rejoins after the last reconnects
        traffic_end = time.time()
        pusher.stop.set()
        caller.stop.set()
        pusher.join(HTTP_TIMEOUT + 2)
        caller.join(HTTP_TIMEOUT + 2)
        if not emitter.final(35):
            notes.append("the Emitter did not finish its final markers within 35 s")
        finals_from = _http_finals(gunicorn, streams, notes)
        expected_finals = _expected_finals(clients, browser, pages, streams, users)
        final_deadline = time.monotonic() + mode.final_wait
        while time.monotonic() < final_deadline:
            if not _missing_finals(clients, browser, expected_finals):
                break
            time.sleep(0.25)
        finals_done = time.time()
        calls_wait = _wait_call_outcomes(folder, caller, chaos)
        time.sleep(max(0.0, last_fault_end + PRESENCE_AFTER - time.time()))
        end_states: dict[str, dict[str, t.Any]] = {}

        def expect() -> dict[str, t.Any]:
            end_states.update({c.label: c.end_state() for c in clients})
            page_states = _browser_states(browser)
            for page in pages:
                state = page_states.get(page["id"]) or {}
                end_states[page["id"]] = {
                    "open": state.get("open"), "type": state.get("type"),
                    "topics": state.get("topics", []), "last_close": state.get("lastClose")}
            return _expected_presence(clients, pages, end_states)

        presence, presence_note = presence_check(gunicorn, expect, mode.presence_wait)
        notes.append(presence_note)
        if browser is not None:
            browser.quit()
        stats = {}
        with contextlib.suppress(DrillError, OSError, ValueError):
            stats = proxy.command("stats")
        _close_clients(clients)
        logs = gunicorn.logs()
        return {
            "seed": seed, "mode": args.mode, "duration": duration, "t0": t0,
            "traffic_end": traffic_end, "finals_done": finals_done,
            "finals_from_workers": finals_from,
            "clients": [dataclasses.asdict(cc.ClientLog(
                c.label, c.uid, "python", c.requested, c.topics, c.recs,
                end_states[c.label])) for c in clients] + [
                dataclasses.asdict(cc.ClientLog(
                    p["id"], p["uid"], "chromium", p["type"], p["topics"],
                    browser.recs[p["id"]] if browser else [], end_states[p["id"]]))
                for p in pages],
            "streams": {s: dataclasses.asdict(log) for s, log in streams.logs.items()},
            "faults": [dataclasses.asdict(f) for f in chaos.faults],
            "presence": [dataclasses.asdict(v) for v in presence],
            "calls": {"made": caller.made, "lines": call_lines(folder),
                      "killed": chaos.killed, "timeout": mode.call_timeout,
                      "rate": mode.call_rate, "http_failures": dict(caller.failures),
                      "outcome_wait": calls_wait},
            "tracebacks": [dataclasses.asdict(v) for v in tracebacks(logs)],
            "notes": notes,
            "traffic": {"http_requests": pusher.requests,
                        "http_failures": dict(pusher.failures),
                        "emitter_pushes": emitter.pushes, "emitter_errors": emitter.errors,
                        "proxy": stats, "redis_starts": redis.starts,
                        "browser_console": browser.console[-20:] if browser else []},
            "setup": {"python_clients": len(clients), "pages": len(pages),
                      "users": len(all_uids), "http_rate": mode.http_rate,
                      "emit_rate": mode.emit_rate},
        }
    finally:
        if pusher is not None:
            pusher.stop.set()
        if caller is not None:
            caller.stop.set()
        if browser is not None and browser.proc.poll() is None:
            browser.command("quit", answer=False)
        _close_clients(clients)
        procs.kill_all()


def _join_all(clients: list[PyClient], bound: float = 40.0) -> list[str]:
    """Wait for every client to open and join its topics, within ``bound`` seconds."""
    errors = []
    deadline = time.monotonic() + bound
    for c in clients:
        if not c.client.wait_open(max(0.1, deadline - time.monotonic())):
            errors.append(f"{c.label} did not open before the chaos phase")
            continue
        for topic in c.topics:
            try:
                c.client.join(topic, timeout=max(0.1, min(10.0, deadline - time.monotonic())))
                c.recs.append(["jn", topic, None, time.time()])
            except Exception as exc:  # noqa: BLE001 - reported, the drill goes on
                c.recs.append(["jerr", topic, repr(exc), time.time()])
                errors.append(f"{c.label} could not join {topic}: {exc!r}")
    return errors


def _close_clients(clients: list[PyClient]) -> None:
    threads = [threading.Thread(target=c.client.close, daemon=True) for c in clients]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 15
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))


def _browser_states(browser: BrowserProc | None) -> dict[str, t.Any]:
    if browser is None:
        return {}
    return t.cast("dict[str, t.Any]", browser.command("state").get("state", {}))


def _http_finals(gunicorn: Gunicorn, streams: Streams, notes: list[str]) -> list[int]:
    """POST /chaos/final on fresh connections until every live worker has answered."""
    done: set[int] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = set(gunicorn.worker_pids())
        if pids and pids <= done:
            break
        try:
            answer = request(gunicorn.port, "POST", "/chaos/final")
        except (OSError, ValueError, http.client.HTTPException):
            time.sleep(0.1)
            continue
        if answer["pid"] in done:
            continue
        done.add(int(answer["pid"]))
        issued = time.time()
        for stream, n in answer["pushed"]:
            streams.record(stream, int(n), issued, True)
    else:
        notes.append(f"final markers from workers {sorted(done)} only")
    return sorted(done)


def _expected_finals(clients: list[PyClient], browser: BrowserProc | None,
                     pages: list[dict[str, t.Any]], streams: Streams,
                     users: list[str]) -> dict[str, dict[str, int]]:
    """label -> {stream: final counter} for the finals each client must get."""
    out: dict[str, dict[str, int]] = {}
    owners = [(c.label, c.uid, c.client.topics) for c in clients] + [
        (p["id"], p["uid"], p["topics"]) for p in pages]
    with streams.lock:
        logs = list(streams.logs.values())
    for label, uid, topics in owners:
        want = {}
        for log in logs:
            if log.final is None:
                continue
            if log.kind == "*" or (log.kind == "u" and log.target == uid) or (
                    log.kind == "t" and log.target in topics):
                want[log.stream] = log.final
        out[label] = want
    return out


def _missing_finals(clients: list[PyClient], browser: BrowserProc | None,
                    expected: dict[str, dict[str, int]]) -> list[str]:
    missing = []
    recs: dict[str, list[cc.Rec]] = {c.label: c.recs for c in clients}
    if browser is not None:
        with browser.lock:
            recs.update({k: list(v) for k, v in browser.recs.items()})
    for label, want in expected.items():
        got = {(r[1], r[2]) for r in list(recs.get(label, [])) if r[0] == "e" and r[5]}
        missing += [f"{label} {s}" for s, n in want.items() if (s, n) not in got]
    return missing


def _expected_presence(clients: list[PyClient], pages: list[dict[str, t.Any]],
                       states: dict[str, dict[str, t.Any]]) -> dict[str, t.Any]:
    owners = [(c.label, c.uid) for c in clients] + [(p["id"], p["uid"]) for p in pages]
    expected: dict[str, t.Any] = {"ws": set(), "ajax": set(), "any": set(),
                                  "members": {tp: set() for tp in TOPICS}}
    for label, uid in owners:
        state = states[label]
        if not state.get("open"):
            continue
        expected["any"].add(uid)
        if state.get("type") in ("ws", "ajax"):
            expected[state["type"]].add(uid)
        for topic in state.get("topics") or []:
            if topic in expected["members"]:
                expected["members"][topic].add(uid)
    return expected


# --- the report ----------------------------------------------------------------------------

def analyze(data: dict[str, t.Any], off_bound: float) -> cc.Report:
    clients = [cc.ClientLog(**c) for c in data["clients"]]
    streams = {s: cc.StreamLog(stream=d["stream"], issued={int(k): v for k, v in
                                                          d["issued"].items()},
                               final=d["final"], acked_max=d["acked_max"],
                               retried={int(k): v for k, v in d.get("retried", {}).items()})
               for s, d in data["streams"].items()}
    faults = [cc.Fault(**f) for f in data["faults"]]
    extra = [cc.Violation(**v) for v in data["presence"] + data["tracebacks"]]
    calls = data.get("calls") or {}
    return cc.check(clients, streams, faults, t0=data["t0"],
                    traffic_end=data["traffic_end"], off_bound=off_bound, extra=extra,
                    calls=cc.merge_calls(calls.get("made", []), calls.get("lines", [])),
                    killed={int(pid): float(tm) for pid, tm in calls.get("killed", [])})


def render(data: dict[str, t.Any], report: cc.Report, folder: Path, max_lines: int) -> str:
    t0 = data["t0"]
    out: list[str] = []
    w = out.append
    setup = data["setup"]
    w(f"# chaos drill: seed {data['seed']}, mode {data['mode']}, {data['duration']:.0f} s of "
      "faults")
    w("")
    w(f"replay: python -m bench.chaos --mode {data['mode']} --seed {data['seed']} "
      f"--duration {data['duration']:g}")
    w(f"setup: gunicorn -w 3 (SenteWorker) + Redis backplane + cutting proxy; "
      f"{setup['python_clients']} Python clients (ws / ajax / auto / auto behind a proxy "
      f"that refuses upgrades), {setup['pages']} Chromium pages, {setup['users']} users, "
      f"{len(TOPICS)} topics")
    traffic = data["traffic"]
    w(f"traffic: {traffic['http_requests']} HTTP push requests "
      f"({sum(traffic['http_failures'].values())} failed), {traffic['emitter_pushes']} "
      f"Emitter pushes (BackplaneError retries: {sum(traffic['emitter_errors'].values())}), "
      f"{report.deliveries.get('all', 0)} deliveries; Redis started {traffic['redis_starts']}"
      f" times; proxy: {traffic['proxy'].get('accepted', '?')} connections, "
      f"{traffic['proxy'].get('upgrades_refused', '?')} upgrades refused; work folder "
      f"{folder}")
    w("")
    w("## faults")
    w("")
    for f in data["faults"]:
        w(f"- +{f['start'] - t0:6.1f}s ({f['end'] - f['start']:4.1f} s) {f['kind']}: "
          f"{f['detail']}")
    w("")
    w("## checks")
    w("")
    kinds = collections.Counter(v.kind for v in report.violations)
    counts = report.counts
    rows = [
        ("silent gaps (violation)", f"{kinds['silent-gap']} ({counts.get('silent-entries', 0)}"
                                    " entries)"),
        ("gaps announced by recovered:false (allowed)",
         f"{counts.get('announced-gaps', 0)} ({counts.get('announced-entries', 0)} entries)"),
        ("duplicates", f"{kinds['duplicate']} ({counts.get('retried-duplicates', 0)} of "
                       "them an Emitter push retried after a BackplaneError)"),
        ("reorderings", str(kinds["reordered"])),
        ("stuck clients (a final marker missing)",
         f"{kinds['stuck']} ({counts.get('stuck-streams', 0)} streams)"),
        ("taken out of a topic (chsk/left)", str(kinds["left-topic"])),
        ("never connected / never joined",
         f"{kinds['never-connected']} / {kinds['never-joined']}"),
        ("events of another user or topic", str(kinds["misdelivered"])),
        ("presence or members wrong after settling", str(kinds["presence"])),
        ("tracebacks in the workers' log", str(sum(v.count for v in report.violations
                                                    if v.kind == "traceback"))),
        (f"attempts refused > {data.get('off_bound', 10):g} s after the faults ended "
         "(clients)", str(kinds["refused"])),
        (f"open > {data.get('off_bound', 10):g} s without an event",
         str(kinds["silent-while-open"])),
    ]
    if report.calls:
        killed = report.calls["rows"].get("caller killed", {}).get("calls", 0)
        rows += [
            ("calls lost (no outcome at the caller)",
             f"{kinds['call-lost']} ({killed} more whose calling worker was SIGKILLed)"),
            ("calls with two outcomes / handlers run twice for one call",
             f"{kinds['call-answered-twice']} / {kinds['handler-twice']}"),
            ("calls answered by another client / wrong values",
             f"{kinds['call-misrouted']} / {kinds['call-wrong-value']}"),
            ("call errors the drill's clients never cause / failures no fault explains",
             f"{kinds['call-error']} / {kinds['call-unexplained']}"),
        ]
    w("| check | result |")
    w("|---|---|")
    for name, value in rows:
        w(f"| {name} | {value} |")
    w("")
    if report.calls:
        _render_calls(w, data, report.calls)
    w("## kept off per fault kind (s until the first event pushed after the fault arrived)")
    w("")
    w("| fault | count | clients measured | from its start p50 / max | from its end p50 / max "
      "| from its end, clients fed when it began | never back (stuck) |")
    w("|---|---|---|---|---|---|---|")
    for kind, f in report.off.items():
        w(f"| {kind} | {f['faults']} | {f['measured']} | {f['start_p50']:.2f} / "
          f"{f['start_max']:.2f} | {f['end_p50']:.2f} / {f['end_max']:.2f} | "
          f"{f.get('live_end_p50', float('nan')):.2f} / "
          f"{f.get('live_end_max', float('nan')):.2f} | {f['never']} |")
    w("")
    w("## per client group (violations by kind; push-to-handler latency)")
    w("")
    w("| group | deliveries | p50 / p99 / max (s) | violations |")
    w("|---|---|---|---|")
    for group in sorted(report.deliveries):
        if group == "all":
            continue
        lat = report.latency[group]
        vs = ", ".join(f"{k} {n}" for k, n in sorted(report.group_violations[group].items()))
        w(f"| {group} | {report.deliveries[group]} | {lat['p50']:.3f} / {lat['p99']:.3f} / "
          f"{lat['max']:.2f} | {vs or '0'} |")
    total = report.latency.get("all")
    if total:
        w(f"| all | {report.deliveries['all']} | {total['p50']:.3f} / {total['p99']:.3f} / "
          f"{total['max']:.2f} | {len(report.violations)} |")
    for line in report.info + data["notes"]:
        w(f"- {line}")
    if report.violations:
        w("")
        w(f"## violations ({len(report.violations)}; all in {folder / 'report.txt'})")
        w("")
        groups: dict[tuple[str, str, str], list[cc.Violation]] = {}
        for v in report.violations:
            groups.setdefault((v.kind, v.stream, v.expected if v.stream else v.got), []
                              ).append(v)
        w(f"{len(groups)} distinct (same kind, stream and expected counters), "
          "each shown once with the other clients it happened to:")
        w("")
        for same in list(groups.values())[:max_lines]:
            w(_violation_text(same[0]))
            if len(same) > 1:
                w(f"    also at {len(same) - 1} more: " + ", ".join(
                    f"{v.client} ({v.transport})" for v in same[1:]))
    w("")
    verdict = "PASS" if not report.violations else f"FAIL ({len(report.violations)} violations)"
    w(f"RESULT: {verdict}, seed {data['seed']}")
    return "\n".join(out)


def _render_calls(w: t.Callable[[str], None], data: dict[str, t.Any],
                  calls: dict[str, t.Any]) -> None:
    meta = data.get("calls", {})
    rows = calls["rows"]
    not_started = rows.get("not started", {}).get("calls", 0)
    w("## calls (server -> client, protocol 3)")
    w("")
    w(f"{calls['asked']} asked ({meta.get('rate', '?')} a second, timeout "
      f"{meta.get('timeout', '?')} s, each to a random client by whichever worker took the "
      f"POST), {calls['made']} made ({not_started} not: the drill's POST failed), "
      f"{calls['handler_runs']} answer handler runs; the last outcomes came "
      f"{meta.get('outcome_wait', 0):.1f} s after the final markers")
    w("")
    w("| outcome | calls | handler ran | client open throughout | no fault near "
      "| faults near (calls) |")
    w("|---|---|---|---|---|---|")
    for kind, r in rows.items():
        if kind == "not started":
            continue
        faults = ", ".join(f"{k} {n}" for k, n in sorted(r["faults"].items(),
                                                          key=lambda kv: -kv[1]))
        w(f"| {kind} | {r['calls']} | {r['handler_ran']} | {r['open']} | {r['no_fault']} "
          f"| {faults or '-'} |")
    answered = calls["answered_timeouts"]
    faults = ", ".join(f"{k} {n}" for k, n in sorted(answered["faults"].items(),
                                                      key=lambda kv: -kv[1]))
    w("")
    w(f"CallTimeout although the handler ran and the client stayed open {cc.ANSWER_OPEN_AFTER:g}"
      f" s after it (or to the outcome) — the answer lost on its way back: {answered['calls']}"
      + (f" (faults near: {faults})" if faults else ""))
    late = calls.get("late_runs", {})
    w("")
    w("Calls whose handler ran after the caller had already failed (the request reached the "
      f"client later, after a reconnect): {sum(late.values())}"
      + (" (" + ", ".join(f"{k} {n}" for k, n in sorted(late.items())) + ")" if late else ""))
    w("")


def _violation_text(v: cc.Violation) -> str:
    head = f"- {v.kind}"
    if v.client:
        head += f" {v.client} ({v.transport})"
    if v.stream:
        head += f" stream {v.stream}"
    if v.t:
        head += f" at {v.t:+.2f}s"
    head += f": expected {v.expected}; got {v.got}"
    return "\n".join([head] + [f"    {line}" for line in v.context])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="long")
    parser.add_argument("--seed", type=int, default=None, help="default: the mode's")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of faults (default: the mode's)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where logs, data.json and report.txt go (default: a new "
                             "temporary folder, kept)")
    parser.add_argument("--no-browser", dest="browser", action="store_false")
    parser.add_argument("--off-bound", type=float, default=10.0,
                        help="seconds a client may stay without events after a fault ended")
    parser.add_argument("--max-lines", type=int, default=40,
                        help="violations printed in full")
    parser.add_argument("--analyze", type=Path, default=None,
                        help="check a recorded run's data.json again instead of running")
    args = parser.parse_args(argv)
    mode = MODES[args.mode]
    if args.duration is None:
        args.duration = mode.duration
    if args.seed is None:
        args.seed = mode.seed if mode.seed is not None else random.SystemRandom().randrange(
            1, 10**6)
    if args.analyze is not None:
        data = json.loads(args.analyze.read_text())
        folder = args.analyze.parent
        logs = {p.name: p.read_text(errors="replace")
                for p in [folder / "gunicorn.log", *sorted(folder.glob("worker-*.log"))]
                if p.exists()}
        if logs:  # the rules may have changed since: read the logs again
            data["tracebacks"] = [dataclasses.asdict(v) for v in tracebacks(logs)]
        report = analyze(data, args.off_bound)
        print(render(data, report, args.analyze.parent, args.max_lines))
        return 1 if report.violations else 0
    for tool in ("redis-server",):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (make redis-deps)", file=sys.stderr)
            return 2
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="sente-chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=folder / "drill.log", level=logging.INFO,
                        format="%(asctime)s %(threadName)s %(levelname)s %(name)s: "
                               "%(message)s")
    print(f"chaos drill: mode {args.mode}, seed {args.seed} (replay: python -m bench.chaos "
          f"--mode {args.mode} --seed {args.seed} --duration {args.duration:g})", flush=True)

    def stop(signum: int, _frame: t.Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through run()'s cleanup

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    started = time.monotonic()
    limit = args.duration + HARD_LIMIT_EXTRA

    def overrun() -> None:
        print(f"the drill ran over its {limit:.0f} s: stopping it", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGTERM)

    watchdog = threading.Timer(limit, overrun)
    watchdog.daemon = True
    watchdog.start()
    try:
        data = run(args, folder)
        data["off_bound"] = args.off_bound
        (folder / "data.json").write_text(json.dumps(data))
        report = analyze(data, args.off_bound)
        (folder / "report.txt").write_text(render(data, report, folder, 10**6) + "\n")
    except DrillError as exc:
        print(f"the drill could not run: {exc}\nlogs in {folder}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; every process it started is stopped; logs in {folder}",
              file=sys.stderr)
        return 130
    except Exception:  # a defect of the drill, not a finding: never exit 1 for it
        traceback.print_exc()
        print(f"the drill failed; logs in {folder}", file=sys.stderr)
        return 2
    finally:
        watchdog.cancel()
    print(render(data, report, folder, args.max_lines))
    print(f"wall time {time.monotonic() - started:.0f} s")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
