"""Real deployments for the tests: gunicorn with flask_sente's worker and the Redis
backplane, and Debian's nginx in front of it running docs/deployment/nginx.conf itself.

nginx runs as the current user with its pid, logs and temp files in the test's tmp dir, in
the foreground, on a free loopback port; every process is stopped by its fixture.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import pathlib
import shutil
import subprocess
import sys
import typing as t

import gevent
import pytest
import requests

from tests.helpers import (
    Proc,
    free_port,  # noqa: F401 (used here and imported from here)
)
from tests.scaleout.conftest import RedisServer, redis_server  # noqa: F401 (a fixture)

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
DEPLOYMENT = ROOT / "docs" / "deployment"
TIMEOUT = 10.0
PLACEHOLDERS = ("@LISTEN@", "@SERVER_NAME@", "@UPSTREAM@", "@RUNTIME_DIR@")


@contextlib.contextmanager
def gunicorn(tmp_path: pathlib.Path, env: dict[str, str],
             workers: int) -> t.Iterator[tuple[Proc, int]]:
    """gunicorn with docs/deployment/gunicorn.conf.py serving the deployment test app, for
    the ``with`` block; yields the process and its port."""
    proc = Proc([sys.executable, "-m", "gunicorn", "-c", str(DEPLOYMENT / "gunicorn.conf.py"),
                 "-b", "127.0.0.1:0", "-w", str(workers), "--graceful-timeout", "3",
                 "--no-control-socket", "tests.deployment.app:create_app()"], tmp_path, env)
    try:
        port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        proc.wait_for(rf"(?s)(Booting worker.*){{{workers}}}")
        yield proc, port
    finally:
        proc.terminate()
        proc.kill()


@pytest.fixture
def gunicorn_cluster(redis_server: RedisServer,  # noqa: F811
                     tmp_path: pathlib.Path) -> t.Iterator[int]:
    """``gunicorn -k flask_sente.worker.SenteWorker -w 3`` sharing a Redis; its port."""
    (tmp_path / "gunicorn").mkdir()
    env = dict(os.environ, SENTE_TEST_REDIS=redis_server.url)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with gunicorn(tmp_path / "gunicorn", env, 3) as (_, port):
        yield port


def render_nginx_conf(listen: str, upstream: str, runtime_dir: pathlib.Path) -> str:
    """docs/deployment/nginx.conf with its placeholders filled in, and nothing else changed."""
    text = (DEPLOYMENT / "nginx.conf").read_text()
    for placeholder in PLACEHOLDERS:
        assert placeholder in text, placeholder
    text = (text.replace("@LISTEN@", listen).replace("@SERVER_NAME@", "localhost")
            .replace("@UPSTREAM@", upstream).replace("@RUNTIME_DIR@", str(runtime_dir)))
    assert "@" not in "".join(line.split("#")[0] for line in text.splitlines())
    return text


@pytest.fixture
def nginx(gunicorn_cluster: int, tmp_path: pathlib.Path) -> t.Iterator[str]:
    """nginx with docs/deployment/nginx.conf in front of the cluster; its base URL."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                       else None)
    if binary is None:
        pytest.fail("nginx is not installed: run make test (its nginx-deps target installs "
                    "Debian's nginx)")
    runtime = tmp_path / "nginx"
    runtime.mkdir()
    port = free_port()
    conf = runtime / "nginx.conf"
    conf.write_text(render_nginx_conf(f"127.0.0.1:{port}", f"127.0.0.1:{gunicorn_cluster}",
                                      runtime))
    directives = "daemon off;"
    if os.geteuid() == 0:  # a root master hands its workers to "nobody" unless told
        directives += f" user {getpass.getuser()};"
    log = open(runtime / "stderr.log", "wb")
    proc = subprocess.Popen([binary, "-p", str(runtime), "-c", str(conf), "-e",
                             str(runtime / "error.log"), "-g", directives],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with gevent.Timeout(TIMEOUT, AssertionError("nginx did not start: " + _logs(runtime))):
            while True:
                if proc.poll() is not None:
                    raise AssertionError("nginx exited: " + _logs(runtime))
                try:
                    if requests.get(base + "/chsk/health", timeout=2).status_code == 200:
                        break
                except requests.RequestException:  # not listening yet, or gunicorn booting
                    pass
                gevent.sleep(0.05)
        yield base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=TIMEOUT)
        log.close()


def _logs(runtime: pathlib.Path) -> str:
    return " ".join(p.read_text(errors="replace") for p in sorted(runtime.glob("*.log")))
