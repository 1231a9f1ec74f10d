"""The cutting TCP proxy the tests put between clients and servers lives in
:mod:`bench.cutproxy` (the chaos drill, ``python -m bench.chaos``, runs it too); tests keep
importing it as ``from cutproxy import CutProxy, cutting``."""
from __future__ import annotations

from bench.cutproxy import CutProxy as CutProxy
from bench.cutproxy import cutting as cutting

__all__ = ["CutProxy", "cutting"]
