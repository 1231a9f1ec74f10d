"""A real redis-server per test (Debian's package, installed by make test), on a free
loopback port with persistence off; stopped and its files removed after the test."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import typing as t

import pytest
import redis

from tests.helpers import free_port  # noqa: F401 (used here and imported from here)


class RedisServer:
    """One redis-server; ``extra`` arguments make it a replica, a Sentinel (a config file
    first, then ``--sentinel``) or a Cluster node."""

    def __init__(self, *extra: str, config: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="sente-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra = list(extra)
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server"]
        if self.config is not None:  # a Sentinel rewrites its config file: one per server
            path = os.path.join(self.dir, "redis.conf")
            with open(path, "w") as f:
                f.write(self.config)
            command.append(path)
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir, *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server {self.extra} exited at start") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


@contextlib.contextmanager
def running(*servers: RedisServer) -> t.Iterator[None]:
    """Start these in order; stop them all and remove their files afterwards."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run make test (it installs Debian's "
                    "redis-server)")
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> t.Iterator[RedisServer]:
    server = RedisServer()
    with running(server):
        yield server
