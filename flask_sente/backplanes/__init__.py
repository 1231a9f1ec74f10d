"""Backplanes: where logs and presence live, so that every process sees the same ones.

:class:`~flask_sente.backplanes.base.Backplane` is the seam (four small Protocols:
:class:`LogBroker`, :class:`PresenceManager`, :class:`ClientStore`,
:class:`Capabilities`); :class:`BackplaneBase` owns what every implementation shares;
:class:`LocalBackplane` (one process, in memory) is the default, and
``flask_sente.backplanes.redis.RedisBackplane`` (imported on demand: it needs redis-py)
shares them through Redis.
"""
from __future__ import annotations

from .base import (
    Backplane,
    BackplaneListener,
    Capabilities,
    ClientStore,
    LogBroker,
    PresenceManager,
)
from .common import BackplaneBase
from .local import LocalBackplane

__all__ = ["Backplane", "BackplaneBase", "BackplaneListener", "Capabilities", "ClientStore",
           "LocalBackplane", "LogBroker", "PresenceManager"]
