"""Merge ``pip freeze --all`` outputs made on several Pythons into one constraints file.

``make lock`` resolves the project's tooling afresh on each Python it finds (the default
``python3`` and the lowest, 3.10, when present) and calls this. A package pinned alike on
every one is written as it is; one that only some Pythons need (``tomli`` below 3.11, say)
or that resolved differently gets an environment marker per Python (the newest one's pins
stand for later Pythons too), so the one file pins every Python it was made on and the
completeness test (``tests/test_lock.py``) holds on each.

    python .ci/lock.py 3.11=freeze-311.txt 3.10=freeze-310.txt > constraints.txt
"""
from __future__ import annotations

import datetime
import re
import sys


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_freeze(path: str) -> dict[str, tuple[str, str]]:
    """normalized name -> (name as pip spells it, version)."""
    pins: dict[str, tuple[str, str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", "-e ")) or "==" not in line:
                continue
            name, version = line.split("==", 1)
            pins[normalize(name)] = (name, version)
    return pins


def merge(freezes: dict[str, dict[str, tuple[str, str]]]) -> list[str]:
    pythons = sorted(freezes, key=lambda py: tuple(int(p) for p in py.split(".")))
    names = sorted({n for pins in freezes.values() for n in pins})
    lines = []
    for name in names:
        seen = {py: freezes[py][name] for py in pythons if name in freezes[py]}
        versions = {version for _, version in seen.values()}
        if len(seen) == len(pythons) and len(versions) == 1:
            spelled, version = next(iter(seen.values()))
            lines.append(f"{spelled}=={version}")
            continue
        for py, (spelled, version) in seen.items():
            # The newest Python's pins also stand for the Pythons after it (never resolved
            # here): the lock then still pins every package there.
            op = ">=" if py == pythons[-1] else "=="
            lines.append(f'{spelled}=={version}; python_version {op} "{py}"')
    return lines


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in arg for arg in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    freezes = {}
    for arg in argv[1:]:
        py, path = arg.split("=", 1)
        freezes[py] = read_freeze(path)
    print("# The exact versions of everything make test, lint, docs, bench and soak install")
    print("# (pip's constraints: they pin what is installed, they install nothing themselves).")
    print(f"# Made by 'make lock' on {datetime.date.today().isoformat()} for Python "
          f"{', '.join(sorted(freezes))}; do not edit by hand.")
    for line in merge(freezes):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
