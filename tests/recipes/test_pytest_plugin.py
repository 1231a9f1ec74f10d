"""Recipe docs/recipes/pytest-fixtures.md: flask_sente's pytest plugin, tested the way users
meet it — installed (entry point ``pytest11``), in a pytest run of their own project.

Each test lays out a small project with ``pytester`` and runs pytest on it in a subprocess:
the recipe's example project as the page shows it, and the plugin's error messages and
clean-up in projects made here.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

from .conftest import EXAMPLES

pytest_plugins = ["pytester"]

DEMO = EXAMPLES / "pytest_demo"
#: A whole inner pytest run (a new interpreter importing gevent, Flask, the app).
RUN_TIMEOUT = 120


def _project(pytester, *, ini: bool = True) -> None:
    """The recipe's example project, file for file (its pytest.ini only if ``ini``)."""
    for path in sorted(DEMO.iterdir()):
        if path.is_file() and (ini or path.name != "pytest.ini"):
            (pytester.path / path.name).write_text(path.read_text())


def _run(pytester, *args: str):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args,
                                         timeout=RUN_TIMEOUT)


def test_the_recipes_project_passes_with_the_plugins_fixtures(pytester):
    _project(pytester)
    result = _run(pytester, "-v")
    result.assert_outcomes(passed=3)


def test_an_unpatched_process_gets_an_error_saying_how_to_patch(pytester):
    _project(pytester, ini=False)
    result = _run(pytester)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(["*not monkey-patched: set `sente_monkey_patch = true`*"])


def test_a_project_without_a_sente_app_fixture_is_told_to_write_one(pytester):
    pytester.makeini("[pytest]\nsente_monkey_patch = true\n")
    pytester.makepyfile(test_nothing="def test_it(sente_server):\n    pass\n")
    result = _run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a fixture named sente_app*"])


def test_servers_and_clients_end_with_their_test(pytester):
    """The server's port is closed and the clients' threads are gone once a test ends."""
    _project(pytester)
    pytester.makepyfile(test_cleanup=textwrap.dedent("""
        import socket
        import threading

        import pytest

        seen = {}


        def test_first(sente_server, sente_client_factory):
            seen["port"] = int(sente_server.url.rsplit(":", 1)[1])
            seen["client"] = sente_client_factory(session={"uid": "ada"})
            seen["threads"] = {t for t in threading.enumerate()
                               if t is not threading.main_thread()}
            assert seen["client"].state.open and seen["threads"]


        def test_second():
            assert not seen["client"].state.active
            assert not {t for t in seen["threads"] if t.is_alive()}
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", seen["port"]), timeout=5)
    """))
    result = _run(pytester, "test_cleanup.py", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_loading_the_plugin_imports_neither_gevent_nor_flask():
    """pytest loads the plugin before any conftest.py: beyond what pytest itself imports, it
    must not import the modules a project's own monkey-patching has to come before."""
    script = ("import sys, pytest\n"
              "before = set(sys.modules)\n"
              "import flask_sente.pytest_plugin\n"
              "print(sorted(m for m in ('gevent', 'flask', 'werkzeug', 'socket', 'ssl', "
              "'threading', 'select', 'queue') if m in sys.modules and m not in before))\n")
    probe = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, check=True)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
