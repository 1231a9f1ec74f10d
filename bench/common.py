"""Shared plumbing of the benchmarks: paths, core pinning, the npm load clients, server
processes, file-descriptor limits, statistics and version strings.

Servers run as ``python -m bench.serve KIND`` pinned to core 0 and print ``PORT <n>`` once
listening; load clients are Node.js scripts in ``bench/clients/`` (npm ``ws`` and
``socket.io-client``, installed at run time with ``npm ci`` from ``bench/package-lock.json``
into the ignored ``bench/node_modules``), pinned to core 1, which print one JSON object as
their last line.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NODE_MODULES = BENCH / "node_modules"
CLIENTS = BENCH / "clients"
RESULTS = BENCH / "results"

#: npm packages of the load clients, at the versions bench/package-lock.json pins.
NPM_PACKAGES = ("ws", "socket.io-client")
SERVER_CORE = 0
CLIENT_CORE = 1
#: The file-descriptor limit we ask for (servers and clients hold thousands of sockets).
NOFILE = 65536


def raise_nofile(want: int = NOFILE) -> int:
    """Raise this process's RLIMIT_NOFILE to ``want`` (the hard limit too, where allowed, as
    for root), else as far as the hard limit goes; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
        except (ValueError, OSError):
            target = want if hard == resource.RLIM_INFINITY else min(want, hard)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pinned(core: int, argv: list[str]) -> list[str]:
    """``argv`` run on one core (``taskset`` execs, so the pid stays the program's)."""
    return (["taskset", "-c", str(core)] if shutil.which("taskset") else []) + argv


def ensure_node_packages(quiet: bool = False) -> None:
    """Install the npm load-client packages into ``bench/node_modules`` with ``npm ci``:
    exactly the versions of ``bench/package-lock.json``, so numbers stay comparable."""
    stamp = NODE_MODULES / ".package-lock.json"
    lock = BENCH / "package-lock.json"
    if (all((NODE_MODULES / name / "package.json").is_file() for name in NPM_PACKAGES)
            and stamp.is_file() and stamp.stat().st_mtime >= lock.stat().st_mtime):
        return
    if not quiet:
        print("installing the npm load clients into bench/node_modules (npm ci)", flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=BENCH,
                   check=True, timeout=300, stdout=subprocess.DEVNULL)


def npm_version(name: str) -> str:
    try:
        return str(json.loads((NODE_MODULES / name / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


class Server:
    """A server under test in its own process (``python -m bench.serve KIND``), pinned."""

    def __init__(self, kind: str, *extra: str, core: int = SERVER_CORE,
                 start_timeout: float = 30.0, cwd: Path = ROOT,
                 env: dict[str, str] | None = None) -> None:
        self.kind = kind
        #: Variables added to this process's environment for the server's.
        self.env = env
        #: The tree whose ``bench.serve`` and ``flask_sente`` run (``python -m`` puts the
        #: working directory first on sys.path): another checkout for a baseline.
        self.cwd = cwd
        self.argv = pinned(core, [sys.executable, "-m", "bench.serve", kind, *extra])
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **self.env} if self.env else None)
        try:
            self.port = self._read_port()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self) -> int:
        import selectors

        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise RuntimeError(f"server {self.kind} did not start in time")
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"server {self.kind} exited: {self.proc.wait()}")
                if line.startswith("PORT "):
                    return int(line.split()[1])

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
        reap(proc)


def reap(proc: subprocess.Popen[t.Any], wait: float = 5.0) -> None:
    """Let ``proc`` end (killed past ``wait`` s, then waited for) and close its stdout:
    what stopping any process of a run ends with."""
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def run_client(script: str, params: dict[str, t.Any], timeout: float,
               core: int = CLIENT_CORE,
               on_mark: t.Callable[[str], str | None] | None = None) -> dict[str, t.Any]:
    """Run ``bench/clients/<script>`` with ``params`` (JSON); return its last JSON line.

    ``on_mark(name)`` is called as the client prints each ``MARK name`` line (bench.cluster
    reads Redis's counters at the start and end of the measured phases); a string it returns
    is written to the client's stdin as one line (bench.capacity steers its client so). The
    client is killed if ``on_mark`` raises."""
    argv = pinned(core, ["node", str(CLIENTS / script), json.dumps(params)])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=BENCH, stdin=subprocess.PIPE if on_mark else subprocess.DEVNULL)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        stdout = []
        for line in proc.stdout:
            if line.startswith("MARK ") and on_mark is not None:
                answer = on_mark(line[5:].strip())
                if answer is not None and proc.stdin is not None:
                    proc.stdin.write(answer + "\n")
                    proc.stdin.flush()
            else:
                stdout.append(line)
        stderr = proc.stderr.read()
        returncode = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait(timeout=10)
        raise
    finally:
        timed_out = not timer.is_alive()
        timer.cancel()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
    if timed_out:
        raise RuntimeError(f"{script} {params.get('mode')} timed out after {timeout:.0f} s")
    lines = [ln for ln in stdout if ln.startswith("{")]
    if returncode != 0 or not lines:
        raise RuntimeError(f"{script} {params.get('mode')} failed ({returncode}): "
                           f"{(stderr or ''.join(stdout))[-800:]}")
    return t.cast("dict[str, t.Any]", json.loads(lines[-1]))


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def summary(values: list[float]) -> dict[str, t.Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def versions(extra: t.Iterable[str] = ()) -> dict[str, str]:
    """Versions of everything measured, and the machine."""
    from importlib.metadata import PackageNotFoundError, version

    def pyver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"python": platform.python_version(), "platform": platform.platform(terse=True),
            "cpu": f"{cpu} ({os.cpu_count()} cores)", "node": node}
    for name in ("flask_sente", "flask", "gevent", "gevent-websocket", *extra):
        info[name] = pyver(name)
    for name in ("ws", "socket.io-client"):
        info[f"{name} (npm)"] = npm_version(name)
    return info


def export_revision(rev: str) -> Path:
    """The tree of git revision ``rev`` in ``bench/results/baseline-<rev>`` (ignored), for a
    before/after comparison in one run; exported once and reused."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                            capture_output=True, text=True, timeout=30).stdout.strip()
    tree = RESULTS / f"baseline-{commit}"
    if not (tree / "flask_sente").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True,
                                 capture_output=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True, timeout=60)
    return tree
