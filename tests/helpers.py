"""What many test modules need, in one place: real processes (gunicorn and friends) with
their output read back, free loopback ports, and waiting for a condition with a bound.

Every wait here has a timeout; every process started here is stopped by its owner (the
tests call ``terminate``/``kill`` in ``finally``).
"""
from __future__ import annotations

import importlib.metadata
import re
import signal
import socket
import subprocess
import typing as t
from pathlib import Path

import gevent
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5


def free_port() -> int:
    """A loopback port free now (for servers that need one before they start: Redis)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: t.Callable[[], bool], timeout: float = TIMEOUT,
             what: str = "condition not met in time") -> None:
    """Poll ``pred`` until it holds; an ``AssertionError`` saying ``what`` after
    ``timeout``."""
    with gevent.Timeout(timeout, AssertionError(what)):
        while not pred():
            gevent.sleep(0.02)


def gunicorn_args(args: list[str]) -> list[str]:
    """``args`` for the installed gunicorn: the tests turn off the control socket (a file
    gunicorn 26 and later make in the working directory) with a flag older versions lack
    (``make test-min`` runs gunicorn 21)."""
    if Version(importlib.metadata.version("gunicorn")) >= Version("26"):
        return args
    return [arg for arg in args if arg != "--no-control-socket"]


class Proc:
    """A server subprocess whose output goes to files (read back by the test)."""

    def __init__(self, args: list[str], tmp_path: Path, env: dict[str, str]) -> None:
        args = gunicorn_args(args)
        self.out_path = tmp_path / "stdout.log"
        self.err_path = tmp_path / "stderr.log"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=env)

    def output(self) -> tuple[str, str]:
        return (self.out_path.read_text(errors="replace"),
                self.err_path.read_text(errors="replace"))

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        with gevent.Timeout(timeout, AssertionError(f"no {pattern!r} in {self.output()}")):
            while True:
                match = re.search(pattern, self.output()[1])
                if match:
                    return match
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited early: {self.output()}")
                gevent.sleep(0.05)

    def terminate(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
