"""Backplanes: where logs and presence live, so that every process sees the same ones.

:class:`~flask_sente.backplanes.base.Backplane` is the seam; :class:`LocalBackplane`
(one process, in memory) is the default.
"""
from __future__ import annotations

from .base import Backplane, BackplaneListener
from .local import LocalBackplane

__all__ = ["Backplane", "BackplaneListener", "LocalBackplane"]
