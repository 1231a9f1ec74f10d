"""The project's own tooling is locked: nothing in the venv is unpinned, nothing from npm floats.

``make test`` installs with ``-c constraints.txt`` (``make lock`` writes it). A package the
lock does not name — a new transitive dependency, or a Python the lock was not made for —
would be resolved to whatever the index has that day and could turn a fresh clone red
(issue 23: redis-py 8.2.0 did). These checks fail as soon as one slips in.

``make test-latest`` runs the suite on purpose without the lock and leaves this file out.
"""
from __future__ import annotations

import importlib.metadata
import json
import pathlib
import re

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parent.parent
NPM_FOLDERS = ("tests/js", "tests/ts", "bench")
EXACT = re.compile(r"^\d+\.\d+\.\d+$")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(text: str, environment: dict[str, str]) -> dict[str, str]:
    """name -> the exact version the lock gives it on this Python (markers evaluated)."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(environment):
            continue
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"not an exact pin: {line}"
        pins[_normalize(req.name)] = specs[0].version
    return pins


def _installed() -> dict[str, str]:
    return {_normalize(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def test_every_installed_package_is_pinned_by_the_lock():
    environment = dict(default_environment())
    pins = locked_versions((ROOT / "constraints.txt").read_text(), environment)
    assert pins, "constraints.txt pins nothing"
    installed = _installed()
    installed.pop("flask-sente", None)  # the project itself, installed editable
    unpinned = sorted(name for name in installed if name not in pins)
    assert not unpinned, (f"installed but not in constraints.txt for Python "
                          f"{environment['python_version']}: {unpinned}; run `make lock`")
    moved = sorted(f"{name} {installed[name]} (lock: {pins[name]})"
                   for name in installed if installed[name] != pins[name])
    assert not moved, f"installed at another version than the lock: {moved}"


def test_the_lock_check_sees_an_unpinned_package():
    # The check above has teeth: a lock without one installed package misses it.
    pins = locked_versions("pytest==1.0\n# comment\nredis==1.0; python_version < '3'\n",
                           dict(default_environment()))
    assert pins == {"pytest": "1.0"}
    assert "gevent" in _installed() and "gevent" not in pins


def test_npm_dependencies_are_exact_and_locked():
    for folder in NPM_FOLDERS:
        manifest = json.loads((ROOT / folder / "package.json").read_text())
        lock = json.loads((ROOT / folder / "package-lock.json").read_text())
        wanted = {**manifest.get("dependencies", {}), **manifest.get("devDependencies", {})}
        assert wanted, folder
        for name, version in wanted.items():
            assert EXACT.match(version), f"{folder}: {name} {version!r} is a range"
            assert lock["packages"][f"node_modules/{name}"]["version"] == version, \
                f"{folder}/package-lock.json does not hold {name} {version}: run `make lock`"
        installed = ROOT / folder / "node_modules"
        if folder != "bench":  # make test installs these two; bench's on first use
            for name, version in wanted.items():
                got = json.loads((installed / name / "package.json").read_text())["version"]
                assert got == version, f"{folder}: {name} {got} installed, {version} locked"
