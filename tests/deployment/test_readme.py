"""The README's Quickstart app as the README's other sections use it, run as written: the
Python client example talks to it (served by ``flask_sente.run``, as ``python app.py``
does, and by the gunicorn line of Deploying), and that gunicorn line serves it.

The blocks are cut out of README.md by their markers, so a doc that drifts from the code
(an example that gets ``403 Bad CSRF token``, a gunicorn target the Quickstart does not
have) fails here. Only addresses change: port 0 instead of 5000 and 8000.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time
import typing as t

import requests

from tests.browser.conftest import HERE as BROWSER_TESTS
from tests.browser.conftest import Server
from tests.browser.test_readme import quickstart_blocks
from tests.helpers import gunicorn_args

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
TIMEOUT = 60.0
#: The address the client example and ``python app.py`` use.
QUICKSTART_URL = "http://127.0.0.1:5000"


def client_block() -> str:
    """The Python client section's example, the block after its marker."""
    after = README.split("<!-- docs:python-client ", 1)[1]
    block = re.search(r"```python\n(.*?)```", after, re.S)
    assert block is not None
    assert block.group(1).count(QUICKSTART_URL) == 1
    return block.group(1)


def gunicorn_line() -> list[str]:
    """The first gunicorn command of the Deploying section (the one-worker one)."""
    deploying = README.split("<!-- docs:deploying ", 1)[1].split("<!-- /docs:deploying -->")[0]
    line = next(line for line in deploying.splitlines() if line.startswith("gunicorn "))
    argv = shlex.split(line.split("#")[0])
    assert "0.0.0.0:8000" in argv, argv
    return argv


def quickstart_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    """``app.py`` and ``templates/index.html`` of the Quickstart, as a user saves them."""
    app_py, index_html = quickstart_blocks()
    folder = tmp_path / "quickstart"
    (folder / "templates").mkdir(parents=True)
    (folder / "app.py").write_text(app_py, encoding="utf-8")
    (folder / "templates" / "index.html").write_text(index_html, encoding="utf-8")
    return folder


def run_client_example(tmp_path: pathlib.Path, base: str) -> list[str]:
    """Run the client example against ``base`` in a plain Python process (no gevent, as a
    user's script); its printed lines. Whatever it logs (a handler's traceback) fails."""
    script = tmp_path / "client_example.py"
    script.write_text(client_block().replace(QUICKSTART_URL, base), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=TIMEOUT, check=False,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout.splitlines()


def assert_the_documented_output(lines: list[str]) -> None:
    """What the README says the example prints: ``open`` comes from the dispatcher thread,
    so it may follow the reply; ``closed`` is the last thing the ``with`` block prints."""
    assert lines[-1] == "closed: requested-disconnect", lines
    assert sorted(lines[:-1]) == sorted([
        "open", "reply: {'ok': True}", "('chat/said', {'who': 'guest', 'text': 'hello'})"]), lines
    assert lines.index("reply: {'ok': True}") < len(lines) - 2, lines  # receive() follows


def test_the_python_client_example_talks_to_the_quickstart(tmp_path: pathlib.Path) -> None:
    """The Quickstart served by ``flask_sente.run`` (``python app.py``, on port 0). Broken
    once by taking ``csrf_token=token`` out of the example, as it was before issue 26: the
    client stops with ``rejected`` 403 (Bad CSRF token) and the first line is not
    ``open``."""
    folder = quickstart_folder(tmp_path)
    server = Server(str(tmp_path / "server.log"),
                    command=lambda port: [sys.executable,
                                          os.path.join(BROWSER_TESTS, "quickstart_server.py"),
                                          str(folder)],
                    ready=r"serving on http://127\.0\.0\.1:(\d+)")
    server.start()
    try:
        assert_the_documented_output(run_client_example(tmp_path, server.url))
    finally:
        server.stop(graceful=False)


@contextlib.contextmanager
def readme_gunicorn(folder: pathlib.Path) -> t.Iterator[str]:
    """The README's gunicorn line, run in the Quickstart's folder on a free loopback port
    (instead of ``0.0.0.0:8000``); its base URL."""
    argv = [sys.executable, "-m", *gunicorn_line()]
    argv[argv.index("0.0.0.0:8000")] = "127.0.0.1:0"
    argv = gunicorn_args(argv + ["--graceful-timeout", "3", "--no-control-socket"])
    log_path = folder.parent / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=folder, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
    try:
        port = wait_for_port(proc, log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_for_port(proc: subprocess.Popen[bytes], log_path: pathlib.Path) -> int:
    """The port gunicorn listens on, once its worker booted."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        log = log_path.read_text(errors="replace")
        listening = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", log)
        if listening and "Booting worker" in log:
            return int(listening.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"gunicorn did not start:\n{log_path.read_text(errors='replace')}")


def test_the_gunicorn_line_serves_the_quickstart(tmp_path: pathlib.Path) -> None:
    """Deploying's gunicorn line on the Quickstart's folder: ready, and the client example
    works through it. Broken once by putting back ``'app:create_app()'`` (the line before
    issue 26): the worker cannot load the app ("Failed to find attribute 'create_app' in
    'app'") and the probe's connection is reset."""
    folder = quickstart_folder(tmp_path)
    with readme_gunicorn(folder) as base:
        health = requests.get(base + "/chsk/health", timeout=10)
        assert (health.status_code, health.json()["status"]) == (200, "ready")
        assert_the_documented_output(run_client_example(tmp_path, base))
