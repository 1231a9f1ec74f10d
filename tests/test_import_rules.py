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
    ("flask", {"ext.py", "views.py", "fastpath.py", "admission.py", "testing.py", "admin.py",
               "pytest_plugin.py"}),
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
    paths = sorted((PKG / "client").glob("*.py"))
    assert len(paths) > 2
    for path in paths:
        assert not _relative_imports(path) & _SERVER_MODULES, path
        assert not _imports(path) & {"flask", "gevent"}, path


def test_protocol_imports_only_protocol_and_exceptions():
    for path in (PKG / "protocol").glob("*.py"):
        outside = _relative_imports(path) - {"exceptions", "config", "events", "wire",
                                             "packers", "security", "backoff", "frames",
                                             "closecodes", "edn"}
        assert not outside, f"{path.name} imports {outside}"


def test_client_state_machine_is_sans_io():
    bad = _imports(PKG / "client" / "state.py") & {"socket", "threading", "http", "ssl",
                                                   "gevent", "flask", "random", "urllib"}
    assert not bad


def test_protocol_loads_without_gevent_or_flask():
    code = ("import sys; import flask_sente.protocol.wire, flask_sente.protocol.packers, "
            "flask_sente.protocol.security, flask_sente.protocol.backoff, "
            "flask_sente.protocol.frames, flask_sente.protocol.closecodes, "
            "flask_sente.protocol.edn; "
            "bad = [m for m in ('gevent', 'flask') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    # Importing the package __init__ pulls in the extension; load the modules by path.
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=PKG.parent, env={"PYTHONPATH": str(PKG.parent)})


def test_the_ajax_pipeline_is_framework_free():
    """``ajax.py`` answers Ajax requests for Flask's route and for the WSGI fast path in
    front of Flask alike: it imports neither Flask nor Werkzeug, also not indirectly.
    Shown to fail with ``import flask`` added to it (both checks), and with ``from .views
    import LazyRequestInfo`` (the fresh interpreter's)."""
    assert not _imports(PKG / "ajax.py") & {"flask", "werkzeug"}
    code = ("import sys; import flask_sente.ajax; "
            "bad = [m for m in ('flask', 'werkzeug') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=PKG.parent, env={"PYTHONPATH": str(PKG.parent)})


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _internal_imports(path: pathlib.Path, known: set[str]) -> set[str]:
    """Every flask_sente module ``path`` imports anywhere in it (functions and
    ``TYPE_CHECKING`` blocks included: a circle is a circle even when it is lazy)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from .x import y" imports x.y when y is a module, else x
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def test_no_import_circles():
    paths = {_module_name(p): p for p in _modules()}
    known = set(paths)
    graph = {name: _internal_imports(path, known) for name, path in paths.items()}
    # A package's __init__ only re-exports; a module importing its own package's
    # __init__ for a constant is not a circle through the package's other modules.
    cycles = []

    def visit(node, stack, on_stack, done):
        on_stack.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, stack, on_stack, done)
        stack.pop()
        on_stack.discard(node)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [], set(), done)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_core_and_backplane_seam_are_sans_io():
    for folder in ("core",):
        for path in (PKG / folder).glob("*.py"):
            bad = _imports(path) & {"gevent", "flask", "socket", "time", "threading",
                                    "asyncio", "select", "random", "secrets"}
            assert not bad, f"{folder}/{path.name} imports {bad}"
    # The seam and the bookkeeping every backplane shares (broken once: common.py
    # importing gevent for its listener reports; this failed).
    for name in ("base.py", "common.py"):
        assert not _imports(PKG / "backplanes" / name) & {"gevent", "flask", "socket"}, name


def test_what_the_emitter_runs_on_needs_no_gevent_nor_flask():
    """The Emitter runs in plain processes (Celery, cron): it and the Redis modules it
    shares with the backplane import neither gevent nor Flask."""
    for path in (PKG / "emitter.py", PKG / "backplanes" / "redis_connect.py",
                 PKG / "backplanes" / "redis_scripts.py"):
        assert not _imports(path) & {"gevent", "flask"}, path.name


def _package_imports(path: pathlib.Path) -> set[str]:
    """The modules of flask_sente ``path`` imports at run time (``TYPE_CHECKING`` blocks and
    imports inside functions left out), as dotted names relative to the package."""
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    package = ".".join(parts[:-1])  # a module's package; an __init__'s is its own folder
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If):  # if t.TYPE_CHECKING: ... (types only)
            continue
        if isinstance(node, ast.ImportFrom) and node.level and node.module is not None:
            base = package.split(".") if package else []
            base = base[:len(base) - (node.level - 1)]
            target = ".".join([*base, *node.module.split(".")])
            found.add(target)
    return found


def test_the_package_has_no_import_cycles():
    """Arrows only point down, so no module imports one that imports it back (directly or
    through others). Checked over the modules' run-time imports."""
    modules = {".".join(p.relative_to(PKG).with_suffix("").parts).removesuffix(".__init__"):
               p for p in _modules()}
    graph = {name: {m for m in _package_imports(path) if m in modules}
             for name, path in modules.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt):], nxt] if nxt in trail else [nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles
    assert graph["hub.hub"] >= {"hub.websockets", "hub.longpolls", "hub.topics"}


def test_the_hubs_services_do_not_import_the_facade():
    """The hub's services get what they need in their constructors; none reaches up into
    the facade that builds them."""
    for path in (PKG / "hub").glob("*.py"):
        if path.name not in ("hub.py", "__init__.py"):
            assert "hub.hub" not in _package_imports(path), path.name
