"""The layering of the design brief, enforced: arrows only point down."""
import ast
import pathlib
import subprocess
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "flask_sente"


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _modules():
    return sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("third_party, allowed", [
    ("flask", {"ext.py", "views.py", "testing.py"}),
    ("geventwebsocket", {"transports/websocket.py"}),
    ("gunicorn", {"worker.py"}),
])
def test_only_named_modules_import(third_party, allowed):
    offenders = [str(p.relative_to(PKG)) for p in _modules()
                 if third_party in _imports(p) and str(p.relative_to(PKG)) not in allowed]
    assert offenders == []


def test_protocol_is_sans_io():
    for path in (PKG / "protocol").glob("*.py"):
        bad = _imports(path) & {"gevent", "flask", "socket", "time", "threading", "asyncio",
                                "select", "random"}
        assert not bad, f"{path.name} imports {bad}"


_SERVER_MODULES = {"hub", "ext", "views", "router", "server", "connections", "testing",
                   "transports", "worker"}


def _relative_imports(path: pathlib.Path) -> set[str]:
    """The first package-relative component of each relative import (``..hub`` -> hub)."""
    tree = ast.parse(path.read_text())
    return {n.module.split(".")[0] for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.level and n.module}


def test_clients_do_not_reach_into_the_server():
    paths = [PKG / "client_ws.py", *sorted((PKG / "client").glob("*.py"))]
    assert len(paths) > 2
    for path in paths:
        assert not _relative_imports(path) & _SERVER_MODULES, path
        assert not _imports(path) & {"flask", "gevent"}, path


def test_protocol_imports_only_protocol_and_exceptions():
    for path in (PKG / "protocol").glob("*.py"):
        outside = _relative_imports(path) - {"exceptions", "config", "events", "wire",
                                             "packers", "security", "backoff", "frames",
                                             "closecodes"}
        assert not outside, f"{path.name} imports {outside}"


def test_client_state_machine_is_sans_io():
    bad = _imports(PKG / "client" / "state.py") & {"socket", "threading", "http", "ssl",
                                                   "gevent", "flask", "random", "urllib"}
    assert not bad


def test_protocol_loads_without_gevent_or_flask():
    code = ("import sys; import flask_sente.protocol.wire, flask_sente.protocol.packers, "
            "flask_sente.protocol.security, flask_sente.protocol.backoff, "
            "flask_sente.protocol.frames, flask_sente.protocol.closecodes; "
            "bad = [m for m in ('gevent', 'flask') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    # Importing the package __init__ pulls in the extension; load the modules by path.
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=PKG.parent, env={"PYTHONPATH": str(PKG.parent)})
