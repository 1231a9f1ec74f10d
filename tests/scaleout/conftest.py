"""A real redis-server per test (Debian's package, installed by make test), on a free
loopback port with persistence off; stopped and its files removed after the test."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t

import pytest
import redis

from tests.helpers import Proc, free_port, gunicorn_args  # noqa: F401 (free_port: imported from here)


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


def cluster_app_hosts(redis_url: str, tmp_path: t.Any, workers: int, name: str,
                      **env: str) -> t.Iterator[str]:
    """``cluster_app`` under gunicorn with ``workers`` workers on one Redis (a generator:
    ``next()`` gives ``host:port`` once every worker booted; closing it stops them); ``env``
    adds environment variables (``SENTE_TEST_ADMIN="1"``)."""
    path = tmp_path / name
    path.mkdir()
    proc = Proc([sys.executable, "-m", "gunicorn", *gunicorn_args([
        "-k", "flask_sente.worker.SenteWorker", "-b", "127.0.0.1:0", "-w", str(workers),
        "--graceful-timeout", "3", "tests.scaleout.cluster_app:create_app()"])], path,
        dict(os.environ, SENTE_TEST_REDIS=redis_url, **env))
    try:
        port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        for i in range(workers):
            proc.wait_for(rf"(?s)(Booting worker.*){{{i + 1}}}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.kill()
