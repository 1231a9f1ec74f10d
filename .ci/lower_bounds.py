"""Print pip constraints that pin each requirement of setup.cfg to its lower bound.

``make test-min`` installs with them: the direct requirements (``install_requires`` and the
extras named on the command line) at the lowest versions their ranges allow, the rest
resolved as a user's pip would. A requirement with no lower bound is left free.

    python .ci/lower_bounds.py setup.cfg test,redis > lower-bounds.txt
"""
from __future__ import annotations

import configparser
import re
import sys

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")
LOWER = re.compile(r">=\s*([0-9][^,;\s]*)")


def lower_bounds(setup_cfg: str, extras: list[str]) -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(setup_cfg)
    lines = config["options"]["install_requires"].splitlines()
    for extra in extras:
        lines += config["options.extras_require"][extra].splitlines()
    bounds: dict[str, tuple[int, ...]] = {}
    texts: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = REQUIREMENT.match(line)
        if not line or match is None:
            continue
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        lower = LOWER.search(match.group(2))
        if lower is None:
            continue
        version = lower.group(1)
        key = tuple(int(part) for part in re.findall(r"\d+", version))
        if name not in bounds or key > bounds[name]:  # the tighter of two bounds wins
            bounds[name], texts[name] = key, version
    return texts


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    extras = [e for e in argv[2].split(",") if e]
    for name, version in sorted(lower_bounds(argv[1], extras).items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
